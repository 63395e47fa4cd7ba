"""Holds: request (the gate), settle (the atomic move), release, confirm, expire.

Lock order, everywhere: reservation rows, then the allocation row, then the stock item.
The settle path locks the allocation and then only *pending* rows, which no other path
locks, so no cycle can form.

Rows are locked ``FOR NO KEY UPDATE`` (``no_key=True``): that still serialises writers
of the same row, but does not block the ``FOR KEY SHARE`` lock PostgreSQL takes on a
referenced row when a new reservation or ledger entry is inserted. A plain ``FOR
UPDATE`` on the allocation would make every incoming request wait for the settle in
progress.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from inventory import events, gate
from inventory.exceptions import (
    DropNotLive,
    HoldExpired,
    IdempotencyKeyReused,
    InvalidInput,
    LimitReached,
    NotFound,
    RequestInProgress,
    ReservationNotHeld,
    SoldOut,
    TooManyHolds,
)
from inventory.models import Allocation, Reservation, StockItem, StockMovement
from inventory.services._common import validate_quantity
from inventory.services.allocations import allocation_changed_event
from inventory.services.gate_sync import gate_rebuild

logger = logging.getLogger(__name__)

Status = Reservation.Status
Reason = StockMovement.Reason

MAX_IDEMPOTENCY_KEY_LENGTH = 255
# How long a repeated request waits for its concurrent twin to write the reservation.
REPLAY_WAIT_SECONDS = 2.0

_GATE_ERRORS = {
    gate.GateDecision.NOT_LIVE: DropNotLive,
    gate.GateDecision.SOLD_OUT: SoldOut,
    gate.GateDecision.LIMIT_REACHED: LimitReached,
}


def _reservation_event(reservation: Reservation) -> events.ReservationChanged:
    return events.ReservationChanged(
        reservation_id=reservation.pk,
        customer_id=reservation.customer_id,
        allocation_id=reservation.allocation_id,
        status=reservation.status,
    )


# --- request ---------------------------------------------------------------------------


def reservation_request(
    *,
    customer_id: int,
    allocation_id: int,
    quantity: int,
    idempotency_key: str,
    unit_price: Decimal,
    currency: str,
) -> Reservation:
    """Ask for ``quantity`` units; returns the reservation (``pending`` until the reserve
    task settles it, or already settled when tasks run eagerly).

    Guarantees:
    * with the gate on, a request the gate turns away (``SoldOut``, ``LimitReached``,
      ``DropNotLive``) touches no database row;
    * one hold per (customer, idempotency key): a repeat returns the first reservation;
      the same key with another allocation or quantity raises ``IdempotencyKeyReused``
      (with the gate on, the gate remembers keys per allocation: a key reused on another
      allocation that the gate turns away gets that refusal, found without SQL; the
      HTTP API's own idempotency store answers such a reuse with 422 before this);
    * units the gate took for a request that then fails are given back.
    """
    quantity = validate_quantity(quantity)
    if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= (
        MAX_IDEMPOTENCY_KEY_LENGTH
    ):
        raise InvalidInput(
            f"An idempotency key of 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters is required.",
            field="idempotency_key",
        )
    if gate.gate_enabled():
        return _request_through_gate(
            customer_id=customer_id,
            allocation_id=allocation_id,
            quantity=quantity,
            idempotency_key=idempotency_key,
            unit_price=unit_price,
            currency=currency,
        )
    return _request_without_gate(
        customer_id=customer_id,
        allocation_id=allocation_id,
        quantity=quantity,
        idempotency_key=idempotency_key,
        unit_price=unit_price,
        currency=currency,
    )


def _admit(*, allocation_id: int, customer_id: int, quantity: int, idempotency_key: str) -> bool:
    """Take units at the gate or raise the rejection; False when this key was admitted
    before (the caller replays). Rebuilds a missing gate, and reclaims expired holds
    once when they stand between a buyer and the units."""

    def ask() -> gate.GateDecision:
        return gate.gate_admit(
            allocation_id=allocation_id,
            customer_id=customer_id,
            quantity=quantity,
            idempotency_key=idempotency_key,
            now=time.time(),
        )

    decision = ask()
    if decision is gate.GateDecision.MISSING:
        if gate_rebuild(allocation_id=allocation_id) is None:
            raise NotFound("No such allocation.")
        decision = ask()
    if decision is gate.GateDecision.RECLAIMABLE:
        reservations_expire(allocation_id=allocation_id)
        decision = ask()
        if decision is gate.GateDecision.RECLAIMABLE:
            _forget_stale_expiries(allocation_id)
            decision = ask()
        if decision is gate.GateDecision.RECLAIMABLE:
            # The due holds are being returned by another process right now: answer
            # with what is true this instant; their units reach the gate in moments.
            decision = _refusal_without_reclaim(allocation_id, customer_id, quantity)
    if decision is gate.GateDecision.REPLAY:
        return False
    if decision is not gate.GateDecision.ADMITTED:
        raise _GATE_ERRORS.get(decision, SoldOut)()
    return True


def _forget_stale_expiries(allocation_id: int) -> None:
    """Drop expiry entries of holds that are no longer held (a return whose gate update
    was lost), so they stop sending sold-out answers to the database."""
    due = gate.gate_due_holds(allocation_id=allocation_id, now=time.time())
    still_held = set(
        Reservation.objects.filter(pk__in=due, status=Status.HELD).values_list("pk", flat=True)
    )
    gate.gate_forget_holds(
        allocation_id=allocation_id, reservation_ids=[r for r in due if r not in still_held]
    )


def _refusal_without_reclaim(
    allocation_id: int, customer_id: int, quantity: int
) -> gate.GateDecision:
    state = gate.gate_read(allocation_id=allocation_id)
    if state and state.limit and state.customers.get(customer_id, 0) + quantity > state.limit:
        return gate.GateDecision.LIMIT_REACHED
    return gate.GateDecision.SOLD_OUT


def _request_through_gate(
    *,
    customer_id: int,
    allocation_id: int,
    quantity: int,
    idempotency_key: str,
    unit_price: Decimal,
    currency: str,
) -> Reservation:
    identity = {
        "customer_id": customer_id,
        "allocation_id": allocation_id,
        "quantity": quantity,
        "idempotency_key": idempotency_key,
    }
    if not _admit(**identity):
        # A twin request may still be writing its row: give it a moment.
        return _replay(**identity, wait_seconds=REPLAY_WAIT_SECONDS)
    try:
        reservation = _create_pending(**identity, unit_price=unit_price, currency=currency)
    except IntegrityError:
        # The key was used before (Redis forgot it, or on another allocation): no second
        # hold. The gate keeps remembering the key, which is right either way.
        gate.gate_give_back(allocation_id=allocation_id, customer_id=customer_id, quantity=quantity)
        return _replay(**identity)
    except BaseException:
        gate.gate_give_back(
            allocation_id=allocation_id,
            customer_id=customer_id,
            quantity=quantity,
            forget_idempotency_key=idempotency_key,
        )
        raise
    return _after_request(reservation)


def _request_without_gate(
    *,
    customer_id: int,
    allocation_id: int,
    quantity: int,
    idempotency_key: str,
    unit_price: Decimal,
    currency: str,
) -> Reservation:
    """The database alone: answer the obvious rejections from the allocation row, then
    write the pending hold; the settle step decides under the allocation's lock."""
    if Reservation.objects.filter(
        customer_id=customer_id, idempotency_key=idempotency_key
    ).exists():
        return _replay(
            customer_id=customer_id,
            allocation_id=allocation_id,
            quantity=quantity,
            idempotency_key=idempotency_key,
        )
    allocation = Allocation.objects.filter(pk=allocation_id).first()
    if allocation is None:
        raise NotFound("No such allocation.")
    if allocation.status != Allocation.Status.OPEN:
        raise DropNotLive()
    refusal = _refusal_from_rows(allocation, customer_id=customer_id, quantity=quantity)
    if refusal is not None and reservations_expire(allocation_id=allocation_id):
        # Expired holds stood in the way: they are returned now, look again.
        allocation.refresh_from_db()
        refusal = _refusal_from_rows(allocation, customer_id=customer_id, quantity=quantity)
    if refusal is not None:
        raise refusal
    try:
        reservation = _create_pending(
            customer_id=customer_id,
            allocation_id=allocation_id,
            quantity=quantity,
            idempotency_key=idempotency_key,
            unit_price=unit_price,
            currency=currency,
        )
    except IntegrityError:
        return _replay(
            customer_id=customer_id,
            allocation_id=allocation_id,
            quantity=quantity,
            idempotency_key=idempotency_key,
        )
    return _after_request(reservation)


def _refusal_from_rows(
    allocation: Allocation, *, customer_id: int, quantity: int
) -> SoldOut | LimitReached | None:
    if allocation.remaining < quantity:
        return SoldOut(remaining=allocation.remaining)
    if allocation.per_customer_limit is not None:
        taken = (
            Reservation.objects.filter(
                allocation_id=allocation.pk,
                customer_id=customer_id,
                status__in=Reservation.ACTIVE_STATUSES,
            ).aggregate(t=Sum("quantity"))["t"]
            or 0
        )
        if taken + quantity > allocation.per_customer_limit:
            return LimitReached(limit=allocation.per_customer_limit)
    return None


def _create_pending(
    *,
    customer_id: int,
    allocation_id: int,
    quantity: int,
    idempotency_key: str,
    unit_price: Decimal,
    currency: str,
) -> Reservation:
    from inventory.tasks import reserve  # tasks import services; import here, not at the top

    with transaction.atomic():
        # The customer's row is the lock that makes the cap exact: one customer's
        # requests queue here, everyone else's pass (and the insert's own FK check
        # takes a share lock that this one does not block).
        list(
            get_user_model()
            .objects.select_for_update(no_key=True)
            .filter(pk=customer_id)
            .values_list("pk")
        )
        # Holds past their expiry no longer count, swept or not.
        active = Reservation.objects.filter(
            Q(status=Status.PENDING) | Q(status=Status.HELD, expires_at__gt=timezone.now()),
            customer_id=customer_id,
        ).count()
        if active >= settings.RESERVATION_MAX_ACTIVE_PER_CUSTOMER:
            raise TooManyHolds(limit=settings.RESERVATION_MAX_ACTIVE_PER_CUSTOMER)
        reservation = Reservation.objects.create(
            customer_id=customer_id,
            allocation_id=allocation_id,
            quantity=quantity,
            unit_price=unit_price,
            currency=currency,
            idempotency_key=idempotency_key,
        )
        transaction.on_commit(lambda: reserve.delay(reservation.pk))
    return reservation


def _after_request(reservation: Reservation) -> Reservation:
    from inventory.tasks import reserve

    if reserve.app.conf.task_always_eager:
        # The task already ran on commit: answer with the settled state.
        reservation.refresh_from_db()
    return reservation


def _replay(
    *,
    customer_id: int,
    allocation_id: int,
    quantity: int,
    idempotency_key: str,
    wait_seconds: float = 0,
) -> Reservation:
    """The reservation an earlier request with this key made."""
    deadline = time.monotonic() + wait_seconds
    while True:
        existing = Reservation.objects.filter(
            customer_id=customer_id, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            break
        if time.monotonic() >= deadline:
            raise RequestInProgress()
        time.sleep(0.01)
    if existing.allocation_id != allocation_id or existing.quantity != quantity:
        raise IdempotencyKeyReused()
    return existing


# --- settle ----------------------------------------------------------------------------


@dataclass
class SettleResult:
    held: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)


def reservation_reserve(*, reservation_id: int) -> Reservation | None:
    """Settle a pending reservation (and the pending ones queued before and with it on
    the same allocation). Idempotent: a settled reservation is left as it is."""
    row = Reservation.objects.filter(pk=reservation_id).values("status", "allocation_id").first()
    if row is None:
        return None
    if row["status"] == Status.PENDING:
        allocation_settle_pending(allocation_id=row["allocation_id"])
    return Reservation.objects.get(pk=reservation_id)


def allocation_settle_pending(*, allocation_id: int, batch_size: int | None = None) -> SettleResult:
    """Turn pending reservations into holds or rejections, oldest first, in batches.

    Guarantee: per batch one transaction, with the allocation row locked, one
    conditional ``UPDATE`` for the units of all accepted holds, one ledger entry and
    one multi-row write of the reservations. A hold is granted only while units remain
    and within the customer's limit; the CHECK constraints back both.
    """
    batch_size = batch_size or settings.RESERVATION_SETTLE_BATCH
    # Return holds past their expiry first, so they never block a buyer, whether or not
    # the sweep has run (a separate short transaction: no lock is held across both).
    reservations_expire(allocation_id=allocation_id)
    result = SettleResult()
    while True:
        settled = _settle_batch(allocation_id=allocation_id, batch_size=batch_size)
        result.held += settled.held
        result.rejected += settled.rejected
        if len(settled.held) + len(settled.rejected) < batch_size:
            return result


def _settle_batch(*, allocation_id: int, batch_size: int) -> SettleResult:
    result = SettleResult()
    with transaction.atomic():
        allocation = (
            Allocation.objects.select_for_update(no_key=True).filter(pk=allocation_id).first()
        )
        if allocation is None:
            return result
        pending = list(
            Reservation.objects.filter(allocation_id=allocation_id, status=Status.PENDING).order_by(
                "id"
            )[:batch_size]
        )
        if not pending:
            return result
        is_open = allocation.status == Allocation.Status.OPEN
        free = allocation.remaining
        limit = allocation.per_customer_limit
        taken: dict[int, int] = defaultdict(int)
        if limit is not None:
            taken.update(
                Reservation.objects.filter(
                    allocation_id=allocation_id,
                    customer_id__in={r.customer_id for r in pending},
                    status__in=(Status.HELD, Status.CONFIRMED),
                )
                .values("customer_id")
                .annotate(units=Sum("quantity"))
                .values_list("customer_id", "units")
            )
        now = timezone.now()
        expires_at = now + timedelta(seconds=settings.RESERVATION_HOLD_SECONDS)
        units_held = 0
        for reservation in pending:
            reason = ""
            if not is_open:
                reason = DropNotLive.code
            elif (
                limit is not None and taken[reservation.customer_id] + reservation.quantity > limit
            ):
                reason = LimitReached.code
            elif reservation.quantity > free:
                reason = SoldOut.code
            if reason:
                reservation.status, reservation.reject_reason = Status.REJECTED, reason
                result.rejected.append(reservation.pk)
            else:
                reservation.status, reservation.expires_at = Status.HELD, expires_at
                free -= reservation.quantity
                taken[reservation.customer_id] += reservation.quantity
                units_held += reservation.quantity
                result.held.append(reservation.pk)
            reservation.updated_at = now
        if units_held:
            moved = Allocation.objects.filter(
                pk=allocation_id, held__lte=F("quantity") - F("sold") - units_held
            ).update(held=F("held") + units_held)
            if moved != 1:  # impossible under the row lock; refuse rather than oversell
                raise RuntimeError(f"allocation {allocation_id} changed under its lock")
            allocation.held += units_held
            StockMovement.objects.create(
                stock_item_id=allocation.stock_item_id,
                allocation_id=allocation_id,
                reason=Reason.HOLD,
                held_delta=units_held,
                reference=f"holds:{','.join(map(str, result.held))}"[:200],
            )
        Reservation.objects.bulk_update(
            pending, ["status", "expires_at", "reject_reason", "updated_at"]
        )
        events.emit_on_commit(
            [_reservation_event(r) for r in pending]
            + ([allocation_changed_event(allocation)] if units_held else [])
        )
        if gate.gate_enabled():
            rejected = [r for r in pending if r.status == Status.REJECTED]
            held = {r.pk: expires_at.timestamp() for r in pending if r.status == Status.HELD}
            transaction.on_commit(
                lambda: _gate_after_settle(
                    allocation_id=allocation_id, rejected=rejected, held=held
                )
            )
    return result


def _gate_after_settle(
    *, allocation_id: int, rejected: list[Reservation], held: dict[int, float]
) -> None:
    for reservation in rejected:
        gate.gate_give_back(
            allocation_id=allocation_id,
            customer_id=reservation.customer_id,
            quantity=reservation.quantity,
        )
    gate.gate_track_expiries(allocation_id=allocation_id, expiries=held)


def _lock_reservation(reservation_id: int, *, customer_id: int | None = None) -> Reservation:
    """The reservation, locked for this transaction (``customer_id``: only theirs)."""
    queryset = Reservation.objects.select_for_update(no_key=True).filter(pk=reservation_id)
    if customer_id is not None:
        queryset = queryset.filter(customer_id=customer_id)
    reservation = queryset.first()
    if reservation is None:
        raise NotFound("No such reservation.")
    return reservation


# --- release, expire -------------------------------------------------------------------


def _return_holds(
    *, allocation_id: int, reservations: list[Reservation], status: str, reason: str, actor=None
) -> None:
    """Inside a transaction, with the reservation rows locked: mark them ``status`` and
    move their units back to the allocation, or to stock if the allocation is closed."""
    units = sum(r.quantity for r in reservations)
    allocation = Allocation.objects.select_for_update(no_key=True).get(pk=allocation_id)
    closed = allocation.status == Allocation.Status.CLOSED
    if closed:
        # The allocation no longer sells: the units go back to stock.
        Allocation.objects.filter(pk=allocation_id).update(
            held=F("held") - units, quantity=F("quantity") - units
        )
        StockItem.objects.filter(pk=allocation.stock_item_id).update(reserved=F("reserved") - units)
    else:
        Allocation.objects.filter(pk=allocation_id).update(held=F("held") - units)
    now = timezone.now()
    Reservation.objects.filter(pk__in=[r.pk for r in reservations]).update(
        status=status, updated_at=now
    )
    for reservation in reservations:
        reservation.status = status
    StockMovement.objects.create(
        stock_item_id=allocation.stock_item_id,
        allocation_id=allocation_id,
        reservation=reservations[0] if len(reservations) == 1 else None,
        reason=reason,
        held_delta=-units,
        reserved_delta=-units if closed else 0,
        actor=actor,
        reference=f"holds:{','.join(str(r.pk) for r in reservations)}"[:200],
    )
    allocation.refresh_from_db()
    events.emit_on_commit(
        [_reservation_event(r) for r in reservations] + [allocation_changed_event(allocation)]
    )
    if gate.gate_enabled():
        returned = [(r.customer_id, r.quantity, r.pk) for r in reservations]
        transaction.on_commit(lambda: _gate_give_back_all(allocation_id, returned))


def _gate_give_back_all(allocation_id: int, returned: Iterable[tuple[int, int, int]]) -> None:
    for customer_id, quantity, reservation_id in returned:
        gate.gate_give_back(
            allocation_id=allocation_id,
            customer_id=customer_id,
            quantity=quantity,
            reservation_id=reservation_id,
        )


def reservation_release(
    *, reservation_id: int, customer_id: int | None = None, actor=None
) -> Reservation:
    """Give a held reservation's units back (by its customer, or by ops when
    ``customer_id`` is None). Idempotent for an already released hold."""
    with transaction.atomic():
        reservation = _lock_reservation(reservation_id, customer_id=customer_id)
        if reservation.status == Status.RELEASED:
            return reservation
        if reservation.status != Status.HELD:
            raise ReservationNotHeld(status=reservation.status)
        _return_holds(
            allocation_id=reservation.allocation_id,
            reservations=[reservation],
            status=Status.RELEASED,
            reason=Reason.HOLD_RELEASE,
            actor=actor,
        )
    return reservation


def reservations_expire(
    *, now: datetime | None = None, allocation_id: int | None = None, limit: int = 500
) -> int:
    """Expire held reservations past their time and return their units. Returns how
    many expired. Rows another transaction holds are skipped, never waited for."""
    now = now or timezone.now()
    expired = 0
    while True:
        with transaction.atomic():
            due = Reservation.objects.select_for_update(skip_locked=True, no_key=True).filter(
                status=Status.HELD, expires_at__lte=now
            )
            if allocation_id is not None:
                due = due.filter(allocation_id=allocation_id)
            rows = list(due.order_by("allocation_id", "id")[:limit])
            by_allocation: dict[int, list[Reservation]] = defaultdict(list)
            for reservation in rows:
                by_allocation[reservation.allocation_id].append(reservation)
            for alloc_id in sorted(by_allocation):
                _return_holds(
                    allocation_id=alloc_id,
                    reservations=by_allocation[alloc_id],
                    status=Status.EXPIRED,
                    reason=Reason.HOLD_EXPIRE,
                )
        expired += len(rows)
        if len(rows) < limit:
            return expired


# --- confirm ---------------------------------------------------------------------------


def reservation_confirm(*, reservation_id: int, now: datetime | None = None) -> Reservation:
    """Payment confirmed: the held units are sold and leave stock (idempotent).

    A hold past its expiry is expired on the spot and ``HoldExpired`` raised: its units
    may already be someone else's.
    """
    now = now or timezone.now()
    with transaction.atomic():
        reservation = _lock_reservation(reservation_id)
        if reservation.status == Status.CONFIRMED:
            return reservation
        if reservation.status == Status.HELD and reservation.expires_at <= now:
            _return_holds(
                allocation_id=reservation.allocation_id,
                reservations=[reservation],
                status=Status.EXPIRED,
                reason=Reason.HOLD_EXPIRE,
            )
            expired = True
        else:
            expired = reservation.status == Status.EXPIRED
            if reservation.status != Status.HELD and not expired:
                raise ReservationNotHeld(status=reservation.status)
            if not expired:
                _sell(reservation)
    if expired:
        raise HoldExpired()
    return reservation


def _sell(reservation: Reservation) -> None:
    units = reservation.quantity
    allocation = Allocation.objects.select_for_update(no_key=True).get(pk=reservation.allocation_id)
    Allocation.objects.filter(pk=allocation.pk).update(
        held=F("held") - units, sold=F("sold") + units
    )
    StockItem.objects.filter(pk=allocation.stock_item_id).update(
        on_hand=F("on_hand") - units, reserved=F("reserved") - units
    )
    Reservation.objects.filter(pk=reservation.pk).update(
        status=Status.CONFIRMED, updated_at=timezone.now()
    )
    reservation.status = Status.CONFIRMED
    StockMovement.objects.create(
        stock_item_id=allocation.stock_item_id,
        allocation_id=allocation.pk,
        reservation=reservation,
        reason=Reason.SALE,
        on_hand_delta=-units,
        reserved_delta=-units,
        held_delta=-units,
        sold_delta=units,
        reference=f"reservation:{reservation.pk}",
    )
    allocation.refresh_from_db()
    events.emit_on_commit([_reservation_event(reservation), allocation_changed_event(allocation)])
    if gate.gate_enabled():
        allocation_id, reservation_id = allocation.pk, reservation.pk
        transaction.on_commit(
            lambda: gate.gate_forget_holds(
                allocation_id=allocation_id, reservation_ids=[reservation_id]
            )
        )


# --- late payment, refund --------------------------------------------------------------


def reservation_reinstate(*, reservation_id: int) -> Reservation:
    """Hold again the units of an expired reservation (its payment arrived late), if
    they are still free and within the customer's limit; raises ``SoldOut`` or
    ``LimitReached`` otherwise and changes nothing.

    Units come from the allocation while it sells; once it is closed, from stock that
    is free, carved back into the allocation. Never oversells either way.
    """
    with transaction.atomic():
        reservation = _lock_reservation(reservation_id)
        if reservation.status == Status.HELD:
            return reservation
        if reservation.status != Status.EXPIRED:
            raise ReservationNotHeld(status=reservation.status)
        units = reservation.quantity
        allocation = Allocation.objects.select_for_update(no_key=True).get(
            pk=reservation.allocation_id
        )
        limit = allocation.per_customer_limit
        if limit is not None:
            taken = (
                Reservation.objects.filter(
                    allocation_id=allocation.pk,
                    customer_id=reservation.customer_id,
                    status__in=(Status.HELD, Status.CONFIRMED),
                ).aggregate(t=Sum("quantity"))["t"]
                or 0
            )
            if taken + units > limit:
                raise LimitReached(limit=limit)
        if allocation.status == Allocation.Status.CLOSED:
            carved = StockItem.objects.filter(
                pk=allocation.stock_item_id, on_hand__gte=F("reserved") + units
            ).update(reserved=F("reserved") + units)
            if not carved:
                raise SoldOut()
            Allocation.objects.filter(pk=allocation.pk).update(
                quantity=F("quantity") + units, held=F("held") + units
            )
            reserved_delta = units
        else:
            taken = Allocation.objects.filter(
                pk=allocation.pk, held__lte=F("quantity") - F("sold") - units
            ).update(held=F("held") + units)
            if not taken:
                raise SoldOut(remaining=allocation.remaining)
            reserved_delta = 0
        reservation.status = Status.HELD
        reservation.expires_at = timezone.now() + timedelta(
            seconds=settings.RESERVATION_HOLD_SECONDS
        )
        reservation.save(update_fields=["status", "expires_at", "updated_at"])
        StockMovement.objects.create(
            stock_item_id=allocation.stock_item_id,
            allocation_id=allocation.pk,
            reservation=reservation,
            reason=Reason.HOLD_REINSTATE,
            held_delta=units,
            reserved_delta=reserved_delta,
            reference=f"reservation:{reservation.pk}",
        )
        allocation.refresh_from_db()
        events.emit_on_commit(
            [_reservation_event(reservation), allocation_changed_event(allocation)]
        )
        if gate.gate_enabled():
            # The gate did not count these units as taken any more: take them again
            # (a rebuild would count them from the rows all the same).
            transaction.on_commit(lambda: gate_rebuild(allocation_id=allocation.pk))
    return reservation


def reservation_refund(*, reservation_id: int, actor=None) -> Reservation:
    """The order of a confirmed reservation was cancelled or refunded: its units come
    back on hand, to the allocation while it sells, else to free stock (idempotent)."""
    with transaction.atomic():
        reservation = _lock_reservation(reservation_id)
        if reservation.status == Status.REFUNDED:
            return reservation
        if reservation.status != Status.CONFIRMED:
            raise ReservationNotHeld(status=reservation.status)
        units = reservation.quantity
        allocation = Allocation.objects.select_for_update(no_key=True).get(
            pk=reservation.allocation_id
        )
        back_on_sale = allocation.status != Allocation.Status.CLOSED
        if back_on_sale:
            Allocation.objects.filter(pk=allocation.pk).update(sold=F("sold") - units)
            StockItem.objects.filter(pk=allocation.stock_item_id).update(
                on_hand=F("on_hand") + units, reserved=F("reserved") + units
            )
        else:
            Allocation.objects.filter(pk=allocation.pk).update(
                sold=F("sold") - units, quantity=F("quantity") - units
            )
            StockItem.objects.filter(pk=allocation.stock_item_id).update(
                on_hand=F("on_hand") + units
            )
        Reservation.objects.filter(pk=reservation.pk).update(
            status=Status.REFUNDED, updated_at=timezone.now()
        )
        reservation.status = Status.REFUNDED
        StockMovement.objects.create(
            stock_item_id=allocation.stock_item_id,
            allocation_id=allocation.pk,
            reservation=reservation,
            reason=Reason.SALE_REFUND,
            on_hand_delta=units,
            reserved_delta=units if back_on_sale else 0,
            sold_delta=-units,
            actor=actor,
            reference=f"reservation:{reservation.pk}",
        )
        allocation.refresh_from_db()
        events.emit_on_commit(
            [_reservation_event(reservation), allocation_changed_event(allocation)]
        )
        if back_on_sale and gate.gate_enabled():
            returned = [(reservation.customer_id, units, reservation.pk)]
            transaction.on_commit(lambda: _gate_give_back_all(allocation.pk, returned))
    return reservation
