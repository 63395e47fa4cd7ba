"""Writes of draws: entries opened at a draw drop's pin, entries taken, the draw.

Entries are a decision at the door, like a reserve: Redis's script (``draws.window``)
decides each one (window open, one per viewer) with no SQL, the rows of the entries
accepted meanwhile are written in one ``INSERT`` per batch (``draws.group_commit``), and
a viewer hears ``201`` only once their row is committed, so an answered entry is never
lost. Without Redis (or when it does not answer, or lost the window) the database
decides alone: the same batched write checks the window under the draw's row lock, and
the unique (draw, viewer) index keeps one entry per viewer whichever path wrote it.

The close is a fence on the draw's row: every batch takes it ``FOR SHARE`` and writes
only while the draw is not drawn and only entries accepted before the close; the draw
takes it ``FOR UPDATE``. So every entry committed before the draw is in it, and none
written after. Before locking, the draw closes the Redis window and waits (bounded) for
the entries Redis accepted to be written: an entry still unwritten after that wait was
never answered (its process died or stalled), and its late write is refused.

Lock order: a draw row, then whatever inventory locks (the allocation). The pin locks
the stream first and only inserts the draw row, which no one else can lock before it
commits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone
from redis.exceptions import RedisError

from core.exceptions import DomainError, InvalidInput, NotFound
from draws import announce, close_queue, eligibility, metrics, refusals, rule, window
from draws.exceptions import EntriesClosed, NotEligible
from draws.group_commit import GroupCommit
from draws.models import Draw, Entry, EntryRules
from inventory import gate
from inventory.exceptions import DropNotLive
from inventory.services.awards import Claim, allocation_award_in_order
from livestream import broadcast
from livestream.models import Drop, Stream
from livestream.selectors import iso_time
from livestream.services import drop_rules_change, stream_check_control

logger = logging.getLogger(__name__)

Status = Draw.Status


# --- the pin opens entries -----------------------------------------------------------------


class DrawDrops:
    """Registered with livestream (``livestream.draw_mode``): a draw drop's pin opens its
    entries, its body carries its draw's close and commitment, and a first-come drop's
    buyers pass its entry rules."""

    def buyer_check(
        self, *, drop_id: int, customer_id: int, client_address: str, challenge_token: str | None
    ) -> None:
        buyer_check(
            drop_id=drop_id,
            customer_id=customer_id,
            client_address=client_address,
            challenge_token=challenge_token,
        )

    def entries_open(self, *, drop: Drop, now: datetime) -> None:
        draw_entries_open(drop=drop, now=now)

    def entries_close_now(self, *, drop_ids: list[int], actor) -> None:
        open_draws = Draw.objects.filter(drop_id__in=drop_ids, status=Status.OPEN)
        for drop_id in open_draws.order_by("pk").values_list("drop_id", flat=True):
            draw_close_early(drop_id=drop_id, actor=actor)

    def drop_fields(self, *, drop_ids: list[int]) -> dict[int, dict[str, Any]]:
        rows = Draw.objects.filter(drop_id__in=drop_ids).values_list(
            "drop_id", "entries_close_at", "seed_commitment"
        )
        return {
            drop_id: {"entries_close_at": iso_time(close_at), "seed_commitment": commitment}
            for drop_id, close_at, commitment in rows
        }


def draw_entries_open(*, drop: Drop, now: datetime) -> Draw:
    """Inside the pin's transaction: open the drop's entries for its ``entry_seconds``,
    with a fresh secret seed whose commitment is published from now on. Once per drop:
    pinning it again returns the draw it has."""
    existing = Draw.objects.filter(drop_id=drop.pk).first()
    if existing is not None:
        return existing
    seed = rule.new_seed()
    draw = Draw.objects.create(
        drop=drop,
        seed=seed,
        seed_commitment=rule.seed_commitment(seed),
        entries_opened_at=now,
        entries_close_at=now + timedelta(seconds=drop.entry_seconds),
    )

    def after_commit() -> None:
        if gate.gate_enabled():
            try:
                window.window_prime(draw_id=draw.pk, close_at=draw.entries_close_at)
            except RedisError:
                logger.exception("draw %s: window not written; entries go to the database", draw.pk)
        close_queue.current().close_at(draw_id=draw.pk, at=draw.entries_close_at)

    transaction.on_commit(after_commit)
    announce.draw_opened(draw)
    return draw


# --- entries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropFacts:
    """What an entry (or a first-come buyer's check) needs of its drop: its draw and its
    entry rules, fixed once the drop was pinned or went on sale (a draw's close time is
    not: Redis and the draw's row hold it)."""

    drop_id: int
    mode: str
    draw_id: int | None  # None: not a draw drop, or its entries are not open yet
    stream_id: int
    most_units: int  # the per-viewer limit, or the drop's quantity without one
    min_account_age_seconds: int | None = None
    min_watch_seconds: int | None = None
    max_entries_per_address: int | None = None
    challenge_required: bool = False


FACTS_CACHE_SIZE = 10_000
_facts: OrderedDict[int, DropFacts] = OrderedDict()
_facts_lock = threading.Lock()


def _drop_facts(drop_id: object) -> DropFacts:
    """Cached per process once they are fixed (the drop was pinned or went on sale), so
    an entry on the fast path runs no SQL before its batch; read afresh before."""
    if isinstance(drop_id, bool) or not isinstance(drop_id, int):
        raise NotFound("No such drop.")
    with _facts_lock:
        facts = _facts.get(drop_id)
        if facts is not None:
            _facts.move_to_end(drop_id)
            return facts
    row = (
        Drop.objects.filter(pk=drop_id)
        .values_list(
            "mode",
            "pinned_at",
            "allocation__opened_at",
            "stream_id",
            "per_viewer_limit",
            "allocation__quantity",
            "draw__id",
            "entry_rules__min_account_age_seconds",
            "entry_rules__min_watch_seconds",
            "entry_rules__max_entries_per_address",
            "entry_rules__challenge_required",
        )
        .first()
    )
    if row is None:
        raise NotFound("No such drop.")
    mode, pinned_at, opened_at, stream_id, limit, quantity, draw_id, *rules = row
    min_age, min_watch, address_cap, challenge = rules
    facts = DropFacts(
        drop_id=drop_id,
        mode=mode,
        draw_id=draw_id,
        stream_id=stream_id,
        most_units=limit or quantity,
        min_account_age_seconds=min_age,
        min_watch_seconds=min_watch,
        max_entries_per_address=address_cap,
        challenge_required=bool(challenge),
    )
    if pinned_at is None and opened_at is None:
        return facts  # the host may still change its rules
    with _facts_lock:
        _facts[drop_id] = facts
        while len(_facts) > FACTS_CACHE_SIZE:
            _facts.popitem(last=False)
    return facts


def drop_facts_cached(drop_id: int) -> DropFacts | None:
    """The drop's facts if this process holds them (fixed by then); never queries."""
    with _facts_lock:
        return _facts.get(drop_id)


def draw_facts_forget() -> None:
    """Empty this process's caches (tests whose database reuses ids)."""
    with _facts_lock:
        _facts.clear()
    eligibility.eligibility_forget()
    refusals.refusals_forget()


def _check_quantity(value: object, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("quantity must be a whole number.", field="quantity")
    if not 1 <= value <= most:
        raise InvalidInput(f"quantity must be between 1 and {most}.", field="quantity")
    return value


@dataclass(frozen=True)
class Pending:
    draw_id: int
    customer_id: int
    quantity: int
    # Redis's time of acceptance; None: the database decides (its clock, in the batch).
    entered_at: datetime | None
    client_address: str = ""
    # Entries allowed from one address (None: no cap); the database path counts them.
    address_cap: int | None = None


def entry_submit(
    *,
    drop_id: int,
    customer_id: int,
    quantity: int,
    client_address: str = "",
    challenge_token: str | None = None,
) -> tuple[Entry, bool]:
    """Enter the viewer in the drop's draw. Returns their entry and whether it is new.

    Guarantees: one entry per viewer per draw (a viewer entering again gets the first
    entry back, whatever quantity they send now); ``quantity`` from 1 to the drop's
    per-viewer limit (``InvalidInput``); only while entries are open (``EntriesClosed``
    once closed, ``DropNotLive`` before the pin or on a drop not sold by draw); the
    drop's entry rules (``NotEligible`` with its ``reason``: ``account_too_new``,
    ``watch_too_short``, ``challenge_required``, ``challenge_failed``, ``address_cap``;
    ``ChallengeUnavailable`` when the challenge provider gives no verdict); an entry
    returned is committed, and is in the draw. Every refusal is counted for ops
    (``draws.refusals``).
    """
    facts = _drop_facts(drop_id)
    if facts.mode != Drop.Mode.DRAW:
        raise DropNotLive("This drop is not sold by draw.")
    if facts.draw_id is None:
        raise DropNotLive("Entries open when the drop is pinned.")
    quantity = _check_quantity(quantity, facts.most_units)
    try:
        entry, created = _entry_decide(
            facts, customer_id, quantity, client_address, challenge_token
        )
    except (EntriesClosed, NotEligible) as refusal:
        refusals.refusal_count(drop_id=facts.drop_id, reason=refusals.reason_of(refusal))
        raise
    metrics.ENTRY_DECISIONS.labels("entered" if created else "again").inc()
    return entry, created


def buyer_check(
    *, drop_id: int, customer_id: int, client_address: str, challenge_token: str | None
) -> None:
    """A first-come drop's buyer against its entry rules, before the gate decides their
    reserve: ``NotEligible`` with its ``reason`` (counted for ops), as for an entry;
    the per-address cap counts the accounts buying from one address."""
    facts = _drop_facts(drop_id)
    try:
        eligibility.entry_check(
            rules=facts,
            customer_id=customer_id,
            client_address=client_address,
            challenge_token=challenge_token,
        )
        cap = facts.max_entries_per_address
        if cap is not None and not eligibility.buyer_address_admit(
            drop_id=drop_id, customer_id=customer_id, client_address=client_address, cap=cap
        ):
            raise eligibility.address_cap_refusal(buying=True)
    except NotEligible as refusal:
        refusals.refusal_count(drop_id=drop_id, reason=refusals.reason_of(refusal))
        raise


def _entry_decide(
    facts: DropFacts,
    customer_id: int,
    quantity: int,
    client_address: str,
    challenge_token: str | None,
) -> tuple[Entry, bool]:
    try:
        eligibility.entry_check(
            rules=facts,
            customer_id=customer_id,
            client_address=client_address,
            challenge_token=challenge_token,
        )
    except NotEligible:
        # Whoever entered already keeps their entry (a retry without a fresh token).
        existing = Entry.objects.filter(draw_id=facts.draw_id, customer_id=customer_id).first()
        if existing is not None:
            return existing, False
        raise
    cap = facts.max_entries_per_address
    decision = None
    if gate.gate_enabled():
        try:
            decision = window.window_enter(
                draw_id=facts.draw_id,
                customer_id=customer_id,
                quantity=quantity,
                client_address=client_address,
                address_cap=cap,
            )
        except RedisError as exc:
            logger.warning("draw %s: Redis away, the database decides: %s", facts.draw_id, exc)
    by_database = Pending(facts.draw_id, customer_id, quantity, None, client_address, cap)
    if decision is None or decision.kind == window.NO_WINDOW:
        return _enter_by_database(by_database, prime=decision is not None)
    if decision.kind == window.CLOSED:
        raise EntriesClosed()
    if decision.kind == window.ADDRESS_CAP:
        raise eligibility.address_cap_refusal()
    if decision.kind == window.SEEN:
        existing = Entry.objects.filter(draw_id=facts.draw_id, customer_id=customer_id).first()
        if existing is not None:
            return existing, False
        # Accepted before, but its row was never committed (its write failed, or is
        # still on its way): the database decides, and waits for that write if so.
        return _enter_by_database(by_database, prime=False)
    pending = Pending(
        facts.draw_id, customer_id, quantity, decision.entered_at, client_address, cap
    )
    try:
        outcome = _write(pending)
    except BaseException:
        _settle_in_redis([pending], kept=False)
        raise
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def _write(pending: Pending) -> tuple[Entry, bool] | DomainError:
    """The entry's row, written with whatever other threads of the process are writing
    now; alone when the caller is inside a transaction already, since the others' rows
    would then commit only with the caller's and their answers must wait for a commit."""
    if connection.in_atomic_block:
        return _write_entries([pending])[0]
    if settings.DATABASES["default"].get("OPTIONS", {}).get("pool"):
        # A thread waiting for another's batch must not hold a pooled connection: were
        # the pool's every connection held by waiters, the batch's writer would wait
        # for one of them (until the pool's timeout), and the batch would fail.
        connection.close()
    return _writer.submit(pending)


def entries_write_at_door(batch: list[Pending]) -> list[tuple[Entry, bool] | DomainError | None]:
    """The entry door's batch (``draws.door``), in its writer thread: per entry what
    ``_write_entries`` answers, or None where the write failed (nothing was committed:
    Redis forgets the entries, and Django decides each one afresh)."""
    try:
        return _write_entries(batch)
    except Exception:
        logger.exception(
            "writing %d entries at the door failed; handing them to Django", len(batch)
        )
        connection.close()  # the next batch starts on a fresh connection
        _settle_in_redis(batch, kept=False)
        return [None] * len(batch)


def _enter_by_database(pending: Pending, *, prime: bool) -> tuple[Entry, bool]:
    outcome = _write(pending)
    if prime:
        _prime_window(pending.draw_id)
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def _prime_window(draw_id: int) -> None:
    """Redis lost the window (a restart): write it again from the row, so the next
    entries are decided there. Who entered is not restored: the unique index keeps one
    entry per viewer meanwhile."""
    row = Draw.objects.filter(pk=draw_id).values_list("status", "entries_close_at").first()
    if row is None:
        return
    try:
        window.window_prime(draw_id=draw_id, close_at=row[1], closed=row[0] != Status.OPEN)
    except RedisError:
        logger.warning("draw %s: window not restored in Redis", draw_id)


def _settle_in_redis(
    batch: list[Pending],
    *,
    kept: bool,
    committed: dict[tuple[int, int], Entry] | None = None,
) -> None:
    """Redis learns what became of the entries it accepted: written (``kept``, with the
    rows ``committed`` by (draw, viewer)), or refused."""
    if not gate.gate_enabled():
        return
    by_draw: dict[int, list[Pending]] = {}
    for item in batch:
        if item.entered_at is not None:  # accepted by Redis
            by_draw.setdefault(item.draw_id, []).append(item)
    for draw_id, items in by_draw.items():
        customers = [item.customer_id for item in items]
        rows = {
            customer: (entry.quantity, entry.pk, entry.entered_at)
            for (draw, customer), entry in (committed or {}).items()
            if draw == draw_id
        }
        try:
            window.window_settled(
                draw_id=draw_id,
                customer_ids=customers,
                kept=kept,
                addresses=[item.client_address for item in items if item.address_cap],
                committed=rows,
            )
        except RedisError:
            # The draw's wait times out on these instead; their rows are the truth.
            logger.warning("draw %s: %d entries left in flight in Redis", draw_id, len(customers))


def _lock_draws_shared(
    draw_ids: list[int], *, exclusive: bool = False
) -> dict[int, tuple[str, datetime]]:
    """The draws' status and close, each row locked ``FOR SHARE`` (the fence: the draw
    takes it ``FOR UPDATE``), or ``exclusive``ly where a batch counts entries per address
    itself (then no other batch of the draw writes meanwhile). SQLite has no row locks;
    it runs one writer at a time."""
    table = connection.ops.quote_name(Draw._meta.db_table)
    lock = ""
    if connection.vendor == "postgresql":
        lock = " FOR NO KEY UPDATE" if exclusive else " FOR SHARE"
    placeholders = ", ".join(["%s"] * len(draw_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, status, entries_close_at FROM {table} "
            f"WHERE id IN ({placeholders}) ORDER BY id{lock}",
            draw_ids,
        )
        rows = cursor.fetchall()
    return {pk: (status, _aware(close_at)) for pk, status, close_at in rows}


def _aware(value) -> datetime:
    # SQLite's raw cursor answers text or naive datetimes.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)


def _insert_entries(
    rows: list[tuple[int, int, int, datetime, str]],
) -> dict[tuple[int, int], Entry]:
    """One INSERT for the batch; an entry already there (the other path wrote it) is
    left as it is. Returns the new rows by (draw, viewer)."""
    if not rows:
        return {}
    table = connection.ops.quote_name(Entry._meta.db_table)
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows))
    params: list[Any] = []
    for draw_id, customer_id, quantity, entered_at, address in rows:
        params += [draw_id, customer_id, quantity, Entry.Status.ENTERED, entered_at, address]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} "
            "(draw_id, customer_id, quantity, status, entered_at, client_address) "
            f"VALUES {values} ON CONFLICT (draw_id, customer_id) DO NOTHING "
            "RETURNING id, draw_id, customer_id, quantity, entered_at",
            params,
        )
        returned = cursor.fetchall()
    return {
        (draw_id, customer_id): Entry(
            pk=pk,
            draw_id=draw_id,
            customer_id=customer_id,
            quantity=quantity,
            status=Entry.Status.ENTERED,
            entered_at=_aware(entered_at),
        )
        for pk, draw_id, customer_id, quantity, entered_at in returned
    }


def _write_entries(batch: list[Pending]) -> list[tuple[Entry, bool] | DomainError]:
    """The batch's rows in one transaction, behind the draws' fence. Per item: its entry
    and whether it is new, ``EntriesClosed`` (accepted after the close, or too late for
    the draw), or ``NotEligible`` (past the per-address cap, where the database
    decided)."""
    counting = [i for i in batch if i.entered_at is None and i.address_cap is not None]
    with transaction.atomic():
        states = _lock_draws_shared(
            sorted({item.draw_id for item in batch}), exclusive=bool(counting)
        )
        from_address = _entries_per_address(counting)
        now = timezone.now()
        admitted: list[Pending] = []
        refused: list[Pending] = []
        capped: set[int] = set()
        for index, item in enumerate(batch):
            status, close_at = states[item.draw_id]
            if not (status == Status.OPEN and (item.entered_at or now) < close_at):
                refused.append(item)
                continue
            if item.entered_at is None and item.address_cap is not None:
                key = (item.draw_id, item.client_address)
                if from_address.get(key, 0) >= item.address_cap:
                    capped.add(index)
                    continue
                from_address[key] = from_address.get(key, 0) + 1
            admitted.append(item)
        # One row per viewer per draw even within a batch (a double tap on two paths).
        rows = {(p.draw_id, p.customer_id): p for p in admitted}
        new = _insert_entries(
            [
                (d, c, p.quantity, p.entered_at or now, p.client_address)
                for (d, c), p in rows.items()
            ]
        )
        # Whoever entered already gets their entry back, even once entries closed.
        missing = [key for key in rows if key not in new]
        missing += [(p.draw_id, p.customer_id) for p in refused]
        missing += [(batch[i].draw_id, batch[i].customer_id) for i in capped]
        existing: dict[tuple[int, int], Entry] = {}
        if missing:
            query = Q()
            for draw_id, customer_id in missing:
                query |= Q(draw_id=draw_id, customer_id=customer_id)
            existing = {(e.draw_id, e.customer_id): e for e in Entry.objects.filter(query)}
        transaction.on_commit(lambda: _settle_in_redis(admitted, kept=True, committed=new))
        transaction.on_commit(lambda: _settle_in_redis(refused, kept=False))
        for draw_id in {d for d, _ in new}:
            broadcast.on_commit(lambda draw_id=draw_id: announce.entries_changed(draw_id))
    answered: set[tuple[int, int]] = set()
    results: list[tuple[Entry, bool] | DomainError] = []
    for index, item in enumerate(batch):
        key = (item.draw_id, item.customer_id)
        if key in new and key not in answered:
            answered.add(key)
            results.append((new[key], True))
        elif key in new or key in existing:
            results.append((new.get(key) or existing[key], False))
        elif index in capped:
            results.append(eligibility.address_cap_refusal())
        else:
            results.append(EntriesClosed())
    return results


def _entries_per_address(items: list[Pending]) -> dict[tuple[int, str], int]:
    """Entries committed per (draw, address) of these items (under the draws' lock)."""
    if not items:
        return {}
    query = Q()
    for item in items:
        query |= Q(draw_id=item.draw_id, client_address=item.client_address)
    rows = (
        Entry.objects.filter(query)
        .values("draw_id", "client_address")
        .annotate(entries=Count("id"))
        .values_list("draw_id", "client_address", "entries")
    )
    return {(draw_id, address): count for draw_id, address, count in rows}


# Up to this many entries per transaction (a batch is one INSERT statement).
ENTRY_BATCH_MOST = 500
_writer = GroupCommit(_write_entries, most=ENTRY_BATCH_MOST)


# --- the draw --------------------------------------------------------------------------------


def _wait_for_accepted_entries(draw_id: int) -> None:
    """Close the Redis window and give the entries it accepted until the deadline to
    be written. Those still unwritten were never answered; the fence refuses them."""
    if not gate.gate_enabled():
        return
    deadline = time.monotonic() + settings.DRAW_DURABLE_WAIT_SECONDS
    try:
        in_flight = window.window_close(draw_id=draw_id)
        while in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
            in_flight = window.window_in_flight(draw_id=draw_id)
    except RedisError:
        logger.warning("draw %s: Redis away at the close; drawing from the rows", draw_id)
        return
    if in_flight > 0:
        logger.warning("draw %s: %d accepted entries never written; left out", draw_id, in_flight)


def draw_run(*, draw_id: int, now: datetime | None = None) -> Draw | None:
    """Draw the winners of a draw whose entries closed. Idempotent: a draw happens once
    (concurrent runners serialise on the draw's row); before the close, nothing happens
    and None is returned.

    The entries are ordered by the contract's rule (``draws.rule``) from the secret
    seed; the drop's units go to them in that order through
    ``inventory.services.awards`` (each winner a held offer, never more units than the
    allocation has, ledger entries, the gate rebuilt); losers queue on the drop's line in
    the same order. The seed is revealed with the winners.
    """
    now = now or timezone.now()
    seen = Draw.objects.filter(pk=draw_id).values_list("status", "entries_close_at").first()
    if seen is None:
        raise NotFound("No such draw.")
    if seen[0] == Status.DRAWN:
        return Draw.objects.get(pk=draw_id)
    if seen[1] > now:
        return None
    _wait_for_accepted_entries(draw_id)
    with transaction.atomic():
        draw = Draw.objects.select_for_update().select_related("drop").get(pk=draw_id)
        if draw.status == Status.DRAWN:
            return draw
        drop = draw.drop
        entries = {entry.pk: entry for entry in Entry.objects.filter(draw_id=draw_id)}
        ranked = [entries[pk] for pk in rule.draw_order(draw.seed, entries)]
        outcome = allocation_award_in_order(
            allocation_id=drop.allocation_id,
            claims=[Claim(e.customer_id, e.quantity, f"draw-entry:{e.pk}") for e in ranked],
            unit_price=drop.price,
            currency=drop.currency,
            hold_seconds=settings.DRAW_WIN_HOLD_SECONDS,
        )
        for index, entry in enumerate(ranked):
            entry.rank = index + 1
            hold = outcome.holds.get(index)
            entry.status = Entry.Status.WON if hold is not None else Entry.Status.LOST
            entry.reservation = hold
            entry.waitlist_entry = outcome.waiting.get(index)
        Entry.objects.bulk_update(
            ranked, ["status", "rank", "reservation", "waitlist_entry"], batch_size=1000
        )
        draw.status, draw.drawn_at = Status.DRAWN, now
        draw.entry_count, draw.units = len(ranked), outcome.units
        draw.winners = [ranked[index].pk for index in sorted(outcome.holds)]
        draw.refusals = refusals.refusals_of(drop_id=drop.pk)
        draw.save(
            update_fields=["status", "drawn_at", "entry_count", "units", "winners", "refusals"]
        )
        announce.draw_drawn(draw, ranked)
    return draw


def draws_run_due(*, now: datetime | None = None) -> int:
    """Draw every draw whose entries closed and that was not drawn (Celery beat runs
    this every few seconds, beside the task due at each close). Returns how many."""
    now = now or timezone.now()
    due = list(
        Draw.objects.filter(status=Status.OPEN, entries_close_at__lte=now).values_list(
            "pk", flat=True
        )
    )
    drawn = 0
    for draw_id in due:
        try:
            drawn += draw_run(draw_id=draw_id, now=now) is not None
        except Exception:
            logger.exception("draw %s failed; the next sweep tries again", draw_id)
    return drawn


def draw_close_early(*, drop_id: int, actor) -> Draw:
    """Ops or the host close a draw's entries now; the draw runs at once. Only the
    stream's host or staff; idempotent (a drawn draw is returned as it is)."""
    draw = Draw.objects.select_related("drop__stream").filter(drop_id=drop_id).first()
    if draw is None:
        raise NotFound("This drop has no draw.")
    stream_check_control(stream=draw.drop.stream, user=actor)
    # Redis stops accepting first and what it accepted is written, before the row is
    # locked: inside a caller's transaction (a stream ending) the lock is held until
    # its commit, and writes waiting behind it would only be refused.
    _wait_for_accepted_entries(draw.pk)
    with transaction.atomic():
        locked = Draw.objects.select_for_update().get(pk=draw.pk)
        # The close is the moment the fence is ours: every batch that wrote before it
        # took its time (its entries' entered_at) before committing, so earlier.
        now = timezone.now()
        if locked.status == Status.OPEN and locked.entries_close_at > now:
            Draw.objects.filter(pk=draw.pk).update(entries_close_at=now)
    return draw_run(draw_id=draw.pk, now=now) or Draw.objects.get(pk=draw.pk)


# --- entry rules -------------------------------------------------------------------------


def _optional_whole(value: object, *, field: str, least: int, most: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise InvalidInput(f"{field} must be a whole number from {least} to {most}.", field=field)
    return value


def entry_rules_set(
    *,
    drop_id: int,
    actor,
    min_account_age_seconds: int | None = None,
    min_watch_seconds: int | None = None,
    max_entries_per_address: int | None = None,
    challenge_required: bool = False,
) -> EntryRules:
    """The host sets who may enter a draw drop, or buy a first-come one, before the drop
    is pinned or goes on sale (``RulesFixed`` after). Only the stream's host or staff.
    Every rule is written as given (an empty one is off); a first-come drop with any
    rule on is decided by Django, not the front door (each buyer checked first)."""
    min_age = _optional_whole(
        min_account_age_seconds,
        field="min_account_age_seconds",
        least=1,
        most=eligibility.MAX_ACCOUNT_AGE_SECONDS,
    )
    min_watch = _optional_whole(
        min_watch_seconds, field="min_watch_seconds", least=1, most=eligibility.MAX_WATCH_SECONDS
    )
    cap = _optional_whole(
        max_entries_per_address,
        field="max_entries_per_address",
        least=1,
        most=eligibility.MAX_ENTRIES_PER_ADDRESS,
    )
    if not isinstance(challenge_required, bool):
        raise InvalidInput("challenge_required must be true or false.", field="challenge_required")
    if isinstance(drop_id, bool) or not isinstance(drop_id, int):
        raise NotFound("No such drop.")
    with transaction.atomic():
        # The stream's lock, as the pin takes it: rules cannot change while entries open.
        drop = Drop.objects.select_related("stream").filter(pk=drop_id).first()
        if drop is None:
            raise NotFound("No such drop.")
        stream = Stream.objects.select_for_update(no_key=True).get(pk=drop.stream_id)
        stream_check_control(stream=stream, user=actor)
        any_rule = challenge_required or any(v is not None for v in (min_age, min_watch, cap))
        drop_rules_change(drop_id=drop_id, buyer_rules=any_rule)
        rules, _ = EntryRules.objects.update_or_create(
            drop_id=drop_id,
            defaults={
                "min_account_age_seconds": min_age,
                "min_watch_seconds": min_watch,
                "max_entries_per_address": cap,
                "challenge_required": challenge_required,
            },
        )
    return rules
