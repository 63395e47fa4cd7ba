"""Writes of streams and drops. Units are never decided here: ``inventory.services``
carves, opens, closes and reserves them.

Every function that writes owns its transaction. Lock order: the stream row first
(``FOR NO KEY UPDATE``; it serialises every change of a stream's status and of which
drop is pinned), then whatever ``inventory`` locks (allocation, stock item). The
purchase path never locks a stream, so no cycle can form.

Each service ends with its state settled and asks for what viewers must hear of it
(``livestream.announce``: ``stream.started``, ``drop.pinned``, ...) and for its moments
of sale (``livestream.events``, which demand listens to), both sent on commit.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ObjectDoesNotExist
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.text import slugify

from core.exceptions import InvalidInput, NotFound
from inventory import services as inventory
from inventory.exceptions import AllocationClosed, DropNotLive, InsufficientStock
from inventory.models import Allocation, Reservation, WaitlistEntry
from inventory.services import MAX_QUANTITY
from livestream import announce, broadcast, events
from livestream.draw_mode import draw_hooks
from livestream.exceptions import (
    DropNotStarted,
    InvalidStreamTransition,
    NotStreamHost,
    RulesFixed,
    SlugTaken,
    StreamEnded,
    StreamNotLive,
    VariantNotForSale,
)
from livestream.models import (
    ASCII_SPACE,
    MAX_ENTRY_SECONDS,
    MIN_ENTRY_SECONDS,
    PLAYBACK_URL_RE,
    SLUG_RE,
    Drop,
    Stream,
)
from livestream.presence import presence_count
from livestream.selectors import drop_routing, drop_routing_forget, drops_for_snapshot
from shop.models import Variant

HOSTS_GROUP = "hosts"

TITLE_MAX_LENGTH = Stream._meta.get_field("title").max_length
SLUG_MAX_LENGTH = Stream._meta.get_field("slug").max_length
PLAYBACK_URL_MAX_LENGTH = Stream._meta.get_field("playback_url").max_length
SLUG_SUFFIX_LENGTH = 4
# Tries at a free "<slug>-<suffix>" before giving up (36**4 suffixes: collisions are rare).
SLUG_ATTEMPTS = 8
# DecimalField(max_digits=12, decimal_places=2).
MAX_PRICE = Decimal("9999999999.99")
CENT = Decimal("0.01")


# --- permissions -----------------------------------------------------------------------


def _is_active_user(user) -> bool:
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and getattr(user, "is_active", False)
    )


def user_can_host(user) -> bool:
    """Staff, or an active member of the "hosts" group."""
    if not _is_active_user(user):
        return False
    return user.is_staff or user.groups.filter(name=HOSTS_GROUP).exists()


def stream_check_control(*, stream: Stream, user) -> None:
    """Raise ``NotStreamHost`` unless ``user`` is the stream's host or staff."""
    if _is_active_user(user) and (user.is_staff or user.pk == stream.host_id):
        return
    raise NotStreamHost()


# --- input checks ----------------------------------------------------------------------


def _check_text(value: object, *, field: str, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be text.", field=field)
    if max_length is not None and len(value) > max_length:
        raise InvalidInput(f"{field} must be at most {max_length} characters.", field=field)
    return value


def _check_moment(value: object, *, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or timezone.is_naive(value):
        raise InvalidInput(f"{field} must be a date and time with a time zone.", field=field)
    return value


def _check_units(value: object, *, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be a whole number.", field=field)
    if not 1 <= value <= MAX_QUANTITY:
        raise InvalidInput(f"{field} must be between 1 and {MAX_QUANTITY}.", field=field)
    return value


def _check_price(value: object) -> Decimal:
    """A finite, non-negative amount with at most two decimal places (no floats: their
    binary value is not the price the host typed)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidInput("price must be a decimal amount.", field="price")
    if value < 0:
        raise InvalidInput("price must not be negative.", field="price")
    if value > MAX_PRICE:
        raise InvalidInput(f"price must be at most {MAX_PRICE}.", field="price")
    try:
        cents = value.quantize(CENT)
    except InvalidOperation:  # more digits than the context holds
        raise InvalidInput("price has too many digits.", field="price") from None
    if cents != value:
        raise InvalidInput("price must have at most two decimal places.", field="price")
    return cents


# --- streams ---------------------------------------------------------------------------


def _slug_suffix() -> str:
    return get_random_string(
        SLUG_SUFFIX_LENGTH, allowed_chars="abcdefghijklmnopqrstuvwxyz0123456789"
    )


def _insert_stream(**fields) -> Stream | None:
    """The new stream, or None when its slug is taken (checked, and by the unique
    index when a concurrent create wins the race)."""
    if Stream.objects.filter(slug=fields["slug"]).exists():
        return None
    try:
        with transaction.atomic():
            return Stream.objects.create(**fields)
    except IntegrityError:
        if Stream.objects.filter(slug=fields["slug"]).exists():
            return None
        raise


def stream_create(
    *,
    host,
    title: str,
    slug: str | None = None,
    scheduled_start: datetime | None = None,
    playback_url: str = "",
    description: str = "",
    expected_viewers: int | None = None,
) -> Stream:
    """Schedule a stream hosted by ``host`` (``expected_viewers``: the host's estimate of
    the audience, which the readiness report uses before any history).

    Guarantees: only a user who can host (staff or the "hosts" group) gets one
    (``NotStreamHost``); bad input raises ``InvalidInput`` naming the field; nothing is
    written on failure. Without ``slug`` the slug comes from the title and gets a short
    random suffix when taken; an explicit ``slug`` is used as given or refused when taken.
    """
    if not user_can_host(host):
        raise NotStreamHost("Only hosts and staff can create streams.")
    fields = {
        "host": host,
        **stream_details_check(
            title=title,
            description=description,
            scheduled_start=scheduled_start,
            playback_url=playback_url,
            expected_viewers=expected_viewers,
        ),
    }
    with transaction.atomic():
        if slug is not None:
            _check_text(slug, field="slug", max_length=SLUG_MAX_LENGTH)
            if not SLUG_RE.match(slug):
                raise InvalidInput(
                    "slug may hold only lowercase letters, digits, hyphens and underscores.",
                    field="slug",
                )
            stream = _insert_stream(**fields, slug=slug)
            if stream is None:
                raise SlugTaken(slug=slug)
            return stream
        base = slugify(title)[: SLUG_MAX_LENGTH - SLUG_SUFFIX_LENGTH - 1].strip("-_") or "stream"
        candidates = itertools.chain(
            [base], (f"{base}-{_slug_suffix()}" for _ in range(SLUG_ATTEMPTS))
        )
        for candidate in candidates:
            stream = _insert_stream(**fields, slug=candidate)
            if stream is not None:
                return stream
    raise InvalidInput("No free slug found; pass one.", field="slug")


_DETAIL_CHECKS = {
    "title": lambda v: _checked_title(v),
    "description": lambda v: _check_text(v, field="description"),
    "scheduled_start": lambda v: _check_moment(v, field="scheduled_start"),
    "playback_url": lambda v: _checked_playback_url(v),
    "expected_viewers": lambda v: None if v is None else _check_units(v, field="expected_viewers"),
}


def _checked_title(value: object) -> str:
    title = _check_text(value, field="title", max_length=TITLE_MAX_LENGTH).strip(ASCII_SPACE)
    if not title:
        raise InvalidInput("title must not be empty.", field="title")
    return title


def _checked_playback_url(value: object) -> str:
    url = _check_text(value, field="playback_url", max_length=PLAYBACK_URL_MAX_LENGTH).strip()
    if url and not PLAYBACK_URL_RE.match(url):
        raise InvalidInput("playback_url must be an http(s) URL.", field="playback_url")
    return url


def stream_details_check(**details) -> dict:
    """A stream's descriptive fields, checked (``InvalidInput`` naming the field); only
    those given."""
    unknown = set(details) - set(_DETAIL_CHECKS)
    if unknown:
        raise InvalidInput(f"{sorted(unknown)[0]} cannot be changed.", field=sorted(unknown)[0])
    return {name: _DETAIL_CHECKS[name](value) for name, value in details.items()}


def stream_update_details(*, stream_id: int, actor, **details) -> Stream:
    """Change a stream's descriptive fields (title, description, scheduled start,
    playback URL, expected viewers). Writes those fields and nothing else, so a status
    another transaction set meanwhile is never written back. Only the host or staff."""
    changes = stream_details_check(**details)
    with transaction.atomic():
        stream = _lock_stream(stream_id)
        stream_check_control(stream=stream, user=actor)
        for name, value in changes.items():
            setattr(stream, name, value)
        if changes:
            stream.save(update_fields=[*changes, "updated_at"])
    return stream


def _lock_stream(stream_id: int) -> Stream:
    if isinstance(stream_id, bool) or not isinstance(stream_id, int):
        raise NotFound("No such stream.")
    stream = Stream.objects.select_for_update(no_key=True).filter(pk=stream_id).first()
    if stream is None:
        raise NotFound("No such stream.")
    return stream


def stream_start(*, stream_id: int, actor) -> Stream:
    """Go live: ``scheduled`` becomes ``live`` with ``started_at`` set. Idempotent on a
    live stream; an ended stream cannot restart (``InvalidStreamTransition``). Only the
    host or staff (``NotStreamHost``)."""
    with transaction.atomic():
        stream = _lock_stream(stream_id)
        stream_check_control(stream=stream, user=actor)
        if stream.status == Stream.Status.LIVE:
            return stream
        if stream.status == Stream.Status.ENDED:
            raise InvalidStreamTransition(
                "An ended stream cannot start again.", status=stream.status
            )
        stream.status = Stream.Status.LIVE
        stream.started_at = timezone.now()
        stream.save(update_fields=["status", "started_at", "updated_at"])
        announce.stream_status_changed(stream)
    return stream


def stream_end(*, stream_id: int, actor) -> Stream:
    """End the stream (from ``scheduled`` or ``live``; idempotent once ended).

    Guarantees, all in one transaction: no drop stays pinned, a drop sold by draw still
    taking entries is drawn first (its winners keep their offers), and every drop's
    allocation is closed, which returns its unsold units to stock (holds still open keep
    theirs until checkout, release or expiry). Only the host or staff (``NotStreamHost``).
    """
    with transaction.atomic():
        stream = _lock_stream(stream_id)
        stream_check_control(stream=stream, user=actor)
        if stream.status == Stream.Status.ENDED:
            return stream
        unpinned = list(
            Drop.objects.filter(stream_id=stream.pk, is_pinned=True).values_list("pk", flat=True)
        )
        Drop.objects.filter(pk__in=unpinned).update(is_pinned=False)
        for drop_id in unpinned:
            announce.drop_unpinned(drop_id, stream.pk)
        draw_drops = list(
            Drop.objects.filter(stream_id=stream.pk, mode=Drop.Mode.DRAW).values_list(
                "pk", flat=True
            )
        )
        if draw_drops:
            # A draw still taking entries is drawn now, while its units are on stage.
            draw_hooks().entries_close_now(drop_ids=draw_drops, actor=actor)
        # All at once: every allocation, then every stock item, in the lock order.
        inventory.allocations_close(
            allocation_ids=list(
                Drop.objects.filter(stream_id=stream.pk).values_list("allocation_id", flat=True)
            ),
            actor=actor,
        )
        for drop_id in Drop.objects.filter(stream_id=stream.pk).values_list("pk", flat=True):
            events.emit_on_commit(events.DropClosed(drop_id=drop_id))
        stream.status = Stream.Status.ENDED
        stream.ended_at = timezone.now()
        stream.save(update_fields=["status", "ended_at", "updated_at"])
        announce.stream_status_changed(stream)
    return stream


# --- drops -----------------------------------------------------------------------------


def drop_create(
    *,
    stream_id: int,
    variant_id: int,
    quantity: int,
    price: Decimal,
    per_viewer_limit: int | None,
    actor,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    duration_seconds: int | None = None,
    mode: str = Drop.Mode.FIRST_COME,
    entry_seconds: int | None = None,
) -> Drop:
    """Put ``quantity`` units of a variant on the stream's stage at ``price``.

    A drop sold by draw (``mode="draw"``): pinning it opens entries for ``entry_seconds``
    (10 to 3600, required for a draw and refused otherwise), then one draw picks its
    buyers; it takes no reserves, and is not timed (its entries are its window).

    A timed drop: ``starts_at`` (its sale opens by itself then, pinned or not, once the
    stream is live; pinning it earlier shows the countdown) and ``ends_at`` or
    ``duration_seconds`` (counted from when the sale opens): its sale closes by itself,
    unsold units going back to stock (``drops_run_schedule``).

    Guarantees: only the host or staff (``NotStreamHost``), never on an ended stream
    (``StreamEnded``); the units are carved from free stock by
    ``inventory.services.allocation_create`` (``InsufficientStock`` otherwise); bad input
    raises ``InvalidInput`` naming the field. On any failure nothing is written. The new
    drop is not pinned and its allocation does not sell until the drop is pinned.
    """
    with transaction.atomic():
        # Locked so that a concurrent stream_end cannot miss the new drop's allocation.
        stream = _lock_stream(stream_id)
        stream_check_control(stream=stream, user=actor)
        if stream.status == Stream.Status.ENDED:
            raise StreamEnded()
        price = _check_price(price)
        quantity = _check_units(quantity, field="quantity")
        if per_viewer_limit is not None:
            per_viewer_limit = _check_units(per_viewer_limit, field="per_viewer_limit")
        starts_at = _check_moment(starts_at, field="starts_at")
        ends_at, duration = _check_sale_window(starts_at, ends_at, duration_seconds)
        _check_mode(mode, entry_seconds, timed=bool(starts_at or ends_at or duration))
        variant = _sellable_variant(variant_id)
        try:
            stock_item_id = variant.stock.pk
        except ObjectDoesNotExist:
            raise InsufficientStock("This variant has no stock.", available=0) from None
        allocation = inventory.allocation_create(
            stock_item_id=stock_item_id,
            quantity=quantity,
            per_customer_limit=per_viewer_limit,
            label=f"{stream.slug}: {variant.sku}",
            actor=actor,
        )
        drop = Drop.objects.create(
            stream=stream,
            variant=variant,
            allocation=allocation,
            price=price,
            currency=variant.currency,
            per_viewer_limit=per_viewer_limit,
            starts_at=starts_at,
            ends_at=ends_at,
            duration=duration,
            mode=mode,
            entry_seconds=entry_seconds,
        )
    drop_routing_forget(drop.pk)
    return drop


def _check_mode(mode: object, entry_seconds: object, *, timed: bool) -> None:
    if mode not in Drop.Mode.values:
        raise InvalidInput(f"mode must be one of {', '.join(Drop.Mode.values)}.", field="mode")
    if mode == Drop.Mode.FIRST_COME:
        if entry_seconds is not None:
            raise InvalidInput("entry_seconds is for a drop sold by draw.", field="entry_seconds")
        return
    if entry_seconds is None:
        raise InvalidInput("A drop sold by draw needs entry_seconds.", field="entry_seconds")
    if isinstance(entry_seconds, bool) or not isinstance(entry_seconds, int):
        raise InvalidInput("entry_seconds must be a whole number.", field="entry_seconds")
    if not MIN_ENTRY_SECONDS <= entry_seconds <= MAX_ENTRY_SECONDS:
        raise InvalidInput(
            f"entry_seconds must be between {MIN_ENTRY_SECONDS} and {MAX_ENTRY_SECONDS}.",
            field="entry_seconds",
        )
    if timed:
        # Its entries are its window: a start or end of sale would be a second one.
        raise InvalidInput("A drop sold by draw cannot be timed.", field="mode")


# A timed sale lasts at most a day (flash sales run seconds to minutes).
MAX_SALE_SECONDS = 24 * 3600


def _check_sale_window(
    starts_at: datetime | None, ends_at: object, duration_seconds: object
) -> tuple[datetime | None, timedelta | None]:
    ends_at = _check_moment(ends_at, field="ends_at")
    if ends_at is not None and duration_seconds is not None:
        raise InvalidInput("Give ends_at or duration_seconds, not both.", field="ends_at")
    if ends_at is not None:
        if ends_at <= (starts_at or timezone.now()):
            raise InvalidInput("ends_at must be after the sale starts.", field="ends_at")
        return ends_at, None
    if duration_seconds is None:
        return None, None
    if isinstance(duration_seconds, bool) or not isinstance(duration_seconds, int):
        raise InvalidInput("duration_seconds must be a whole number.", field="duration_seconds")
    if not 1 <= duration_seconds <= MAX_SALE_SECONDS:
        raise InvalidInput(
            f"duration_seconds must be between 1 and {MAX_SALE_SECONDS}.",
            field="duration_seconds",
        )
    return None, timedelta(seconds=duration_seconds)


def _sellable_variant(variant_id: object) -> Variant:
    if isinstance(variant_id, bool) or not isinstance(variant_id, int):
        raise InvalidInput("variant must be a variant id.", field="variant")
    variant = Variant.objects.select_related("product", "stock").filter(pk=variant_id).first()
    if variant is None:
        raise NotFound("No such variant.", field="variant")
    if not (variant.is_active and variant.product.is_active):
        raise VariantNotForSale(variant=variant.pk)
    return variant


def _lock_drop(drop_id: int, *, actor) -> tuple[Stream, Drop]:
    """Lock the drop's stream, check the actor controls it, and read the drop (with
    what its snapshot reads) under that lock."""
    stream_id = None
    if isinstance(drop_id, int) and not isinstance(drop_id, bool):
        stream_id = Drop.objects.filter(pk=drop_id).values_list("stream_id", flat=True).first()
    if stream_id is None:
        raise NotFound("No such drop.")
    stream = _lock_stream(stream_id)  # a drop never changes stream
    stream_check_control(stream=stream, user=actor)
    return stream, drops_for_snapshot().get(pk=drop_id)


def drop_pin(*, drop_id: int, actor) -> Drop:
    """Put the drop on stage and on sale. Idempotent.

    Guarantees: only the host or staff; only while the stream is live
    (``StreamNotLive``) and the drop's allocation is not closed (``AllocationClosed``);
    any other pinned drop of the stream is unpinned in the same transaction (at most one
    pinned drop per stream, also a database constraint); the allocation is opened, or,
    for a drop sold by draw, its entries (its allocation opens at the draw).
    """
    with transaction.atomic():
        stream, drop = _lock_drop(drop_id, actor=actor)
        if stream.status != Stream.Status.LIVE:
            raise StreamNotLive(status=stream.status)
        if drop.allocation.status == Allocation.Status.CLOSED:
            raise AllocationClosed("This drop's sale is closed.")
        build_pin = None
        if not drop.is_pinned:
            unpinned = list(
                Drop.objects.filter(stream_id=stream.pk, is_pinned=True).values_list(
                    "pk", flat=True
                )
            )
            Drop.objects.filter(pk__in=unpinned).update(is_pinned=False)
            now = timezone.now()
            Drop.objects.filter(pk=drop.pk).update(is_pinned=True, pinned_at=now)
            drop.is_pinned, drop.pinned_at = True, now
            for other in unpinned:
                announce.drop_unpinned(other, stream.pk)
            build_pin = announce.drop_pinned(drop.pk)
            broadcast.on_commit(lambda: _announce_audience_at_pin(drop))
        if drop.mode == Drop.Mode.DRAW:
            draw_hooks().entries_open(drop=drop, now=drop.pinned_at or timezone.now())
        # A timed drop pinned before its start shows the countdown; it opens on time.
        elif drop.allocation.status != Allocation.Status.OPEN and not _starts_later(drop):
            _open_sale(drop)
        if build_pin is not None:
            build_pin()  # the drop as this transaction leaves it: open, or taking entries
    return drop


def _starts_later(drop: Drop, now: datetime | None = None) -> bool:
    return drop.starts_at is not None and drop.starts_at > (now or timezone.now())


def _open_sale(drop: Drop, now: datetime | None = None) -> None:
    """Inside the stream's lock: open the drop's allocation; a duration starts now (the
    scheduler's moment, never before the drop's start)."""
    drop.allocation = inventory.allocation_open(allocation_id=drop.allocation_id)
    if drop.duration is not None and drop.ends_at is None:
        opened = max(filter(None, (now or timezone.now(), drop.starts_at)))
        drop.ends_at = opened + drop.duration
        Drop.objects.filter(pk=drop.pk).update(ends_at=drop.ends_at)


def _announce_audience_at_pin(drop: Drop) -> None:
    """Once the pin committed: who is watching as the drop goes on stage."""
    events.emit(
        events.DropPinned(
            drop_id=drop.pk,
            stream_id=drop.stream_id,
            pinned_at=drop.pinned_at,
            viewers=presence_count(drop.stream_id),
        )
    )


def drop_unpin(*, drop_id: int, actor) -> Drop:
    """Take the drop off stage. Its allocation stays open: units on sale stay buyable
    until the stream ends. Only the host or staff. Idempotent."""
    with transaction.atomic():
        _stream, drop = _lock_drop(drop_id, actor=actor)
        if drop.is_pinned:
            Drop.objects.filter(pk=drop.pk).update(is_pinned=False)
            drop.is_pinned = False
            announce.drop_unpinned(drop.pk, drop.stream_id)
    return drop


def drop_rules_change(*, drop_id: int, buyer_rules: bool) -> None:
    """Inside the caller's transaction, the drop's stream locked (as the pin locks it):
    the drop's entry rules are about to change, and a first-come drop's buyers will pass
    them (``buyer_rules``) or not. ``RulesFixed`` once the drop was pinned or went on
    sale: rules changing while viewers enter or buy would not be fair, and the purchase
    path caches them from then on."""
    drop = Drop.objects.filter(pk=drop_id).values("pinned_at", "allocation_id", "mode").first()
    if drop is None:
        raise NotFound("No such drop.")
    # The allocation's lock, as its opening takes it (a timed drop opens unpinned).
    allocation = inventory.allocation_lock(allocation_id=drop["allocation_id"])
    if drop["pinned_at"] is not None or allocation.opened_at is not None:
        raise RulesFixed()
    on = buyer_rules and drop["mode"] == Drop.Mode.FIRST_COME
    Drop.objects.filter(pk=drop_id).update(buyer_rules=on)


def drop_reserve(
    *,
    drop_id: int,
    customer_id: int,
    quantity: int,
    idempotency_key: str,
    client_address: str = "",
    challenge_token: str | None = None,
) -> Reservation:
    """Ask for ``quantity`` units of the drop at the drop's price.

    Everything ``inventory.services.reservation_request`` guarantees (no oversell, the
    per-viewer limit, one hold per idempotency key; ``SoldOut``, ``LimitReached``,
    ``DropNotLive`` when the drop is not pinned yet or the stream ended). Once this
    process has seen the drop, a request the Redis gate turns away runs no SQL at all.
    Unknown drop: ``NotFound``. A drop sold by draw takes no reserves (``DropNotLive``):
    its units go to the draw's winners, then to its line. A drop with ``buyer_rules``
    first checks the buyer against its entry rules (``NotEligible`` with a ``reason``,
    from the draws app; ``client_address`` and ``challenge_token`` are for them).
    """
    routing = drop_routing(drop_id)
    if routing.mode == Drop.Mode.DRAW:
        raise DropNotLive("This drop is sold by draw: enter the draw instead.")
    if routing.buyer_rules:
        draw_hooks().buyer_check(
            drop_id=drop_id,
            customer_id=customer_id,
            client_address=client_address,
            challenge_token=challenge_token,
        )
    return inventory.reservation_request(
        customer_id=customer_id,
        allocation_id=routing.allocation_id,
        quantity=quantity,
        idempotency_key=idempotency_key,
        unit_price=routing.price,
        currency=routing.currency,
    )


# --- timed drops -----------------------------------------------------------------------


def drops_run_schedule(*, now: datetime | None = None) -> dict[str, int]:
    """Open timed drops whose start has come (on a live stream) and close those whose
    end has come. Run every second by beat; idempotent, so a late or doubled run is
    harmless. Returns how many opened and closed."""
    now = now or timezone.now()
    due_to_open = Drop.objects.filter(
        starts_at__lte=now,
        allocation__status=Allocation.Status.READY,
        stream__status=Stream.Status.LIVE,
    ).values_list("pk", flat=True)
    due_to_close = (
        Drop.objects.filter(ends_at__lte=now)
        .exclude(allocation__status=Allocation.Status.CLOSED)
        .values_list("pk", flat=True)
    )
    opened = sum(_open_timed(drop_id, now) for drop_id in list(due_to_open))
    closed = sum(_close_timed(drop_id, now) for drop_id in list(due_to_close))
    return {"opened": opened, "closed": closed}


def _lock_drop_for_schedule(drop_id: int) -> tuple[Stream, Drop] | None:
    stream_id = Drop.objects.filter(pk=drop_id).values_list("stream_id", flat=True).first()
    if stream_id is None:
        return None
    stream = _lock_stream(stream_id)
    return stream, drops_for_snapshot().get(pk=drop_id)


def _open_timed(drop_id: int, now: datetime) -> bool:
    with transaction.atomic():
        locked = _lock_drop_for_schedule(drop_id)
        if locked is None:
            return False
        stream, drop = locked
        if (
            stream.status != Stream.Status.LIVE
            or drop.allocation.status != Allocation.Status.READY
            or _starts_later(drop, now)
        ):
            return False  # changed since it was found due
        if drop.ends_at is not None and drop.ends_at <= now:
            return False  # its whole window passed before the stream went live
        _open_sale(drop, now)
        announce.drop_opened(drop.pk)
    return True


def _close_timed(drop_id: int, now: datetime) -> bool:
    with transaction.atomic():
        locked = _lock_drop_for_schedule(drop_id)
        if locked is None:
            return False
        _stream, drop = locked
        if (
            drop.ends_at is None
            or drop.ends_at > now
            or drop.allocation.status == Allocation.Status.CLOSED
        ):
            return False
        _close_sale(drop)
    return True


def _close_sale(drop: Drop, *, actor=None) -> None:
    """Inside the stream's lock: the drop leaves the stage and its sale ends."""
    if drop.is_pinned:
        Drop.objects.filter(pk=drop.pk).update(is_pinned=False)
        drop.is_pinned = False
        announce.drop_unpinned(drop.pk, drop.stream_id)
    # Unsold units go back to stock with a ledger entry; open holds keep theirs until
    # checkout, release or expiry, then return to stock too.
    drop.allocation = inventory.allocation_close(allocation_id=drop.allocation_id, actor=actor)
    announce.drop_closed(drop.pk)
    events.emit_on_commit(events.DropClosed(drop_id=drop.pk))


def drop_open_by_hand(*, drop_id: int, actor) -> Drop:
    """Ops open a drop's sale without pinning it, by the rules every other opening keeps:
    only on a live stream (``StreamNotLive``), never before the drop's start
    (``DropNotStarted``), never once closed (``AllocationClosed``). Idempotent."""
    with transaction.atomic():
        stream, drop = _lock_drop(drop_id, actor=actor)
        if drop.allocation.status == Allocation.Status.OPEN:
            return drop
        if drop.allocation.status == Allocation.Status.CLOSED:
            raise AllocationClosed("This drop's sale is closed.")
        if drop.mode == Drop.Mode.DRAW:
            # Opened first come, its units would go to the fastest, not the winners.
            raise DropNotLive("A drop sold by draw opens at its draw.")
        if stream.status != Stream.Status.LIVE:
            raise StreamNotLive(status=stream.status)
        if _starts_later(drop):
            raise DropNotStarted(starts_at=drop.starts_at.isoformat())
        _open_sale(drop)
        announce.drop_opened(drop.pk)
    return drop


def drop_close_by_hand(*, drop_id: int, actor) -> Drop:
    """Ops end a drop's sale now, as its end time would: unpinned, unsold units back to
    stock, viewers told (``drop.unpinned``, ``drop.closed``). Idempotent."""
    with transaction.atomic():
        _stream, drop = _lock_drop(drop_id, actor=actor)
        if drop.allocation.status != Allocation.Status.CLOSED:
            _close_sale(drop, actor=actor)
    return drop


class DropAllocations:
    """Registered with inventory: opening or closing a drop's allocation by hand (the
    ops admin) goes through the drop's rules."""

    @staticmethod
    def _drop_of(allocation_id: int) -> int | None:
        return Drop.objects.filter(allocation_id=allocation_id).values_list("pk", flat=True).first()

    def open_by_hand(self, *, allocation_id: int, actor) -> bool:
        drop_id = self._drop_of(allocation_id)
        if drop_id is not None:
            drop_open_by_hand(drop_id=drop_id, actor=actor)
        return drop_id is not None

    def close_by_hand(self, *, allocation_id: int, actor) -> bool:
        drop_id = self._drop_of(allocation_id)
        if drop_id is not None:
            drop_close_by_hand(drop_id=drop_id, actor=actor)
        return drop_id is not None


# --- the waitlist ----------------------------------------------------------------------


def drop_waitlist_join(
    *, drop_id: int, customer_id: int, quantity: int = 1
) -> tuple[WaitlistEntry, bool]:
    """Queue for a sold-out drop at its price (``inventory.services.waitlist_join``:
    ``NotSoldOut`` while a unit is free, ``DropNotLive``, ``LimitReached``). Returns the
    entry, with its ``position``, and whether it is new."""
    routing = drop_routing(drop_id)
    return inventory.waitlist_join(
        allocation_id=routing.allocation_id,
        customer_id=customer_id,
        quantity=quantity,
        unit_price=routing.price,
        currency=routing.currency,
    )


def drop_waitlist_entry(*, drop_id: int, customer_id: int) -> WaitlistEntry:
    """The customer's latest entry for the drop (``NotOnWaitlist`` if none)."""
    routing = drop_routing(drop_id)
    return inventory.waitlist_entry_for(
        allocation_id=routing.allocation_id, customer_id=customer_id
    )


def drop_waitlist_leave(*, drop_id: int, customer_id: int) -> WaitlistEntry:
    routing = drop_routing(drop_id)
    return inventory.waitlist_leave(allocation_id=routing.allocation_id, customer_id=customer_id)
