"""Held reservations: release, expiry, the sale, a late payment's reinstatement, and
refunds. Every change returns or takes units with a ledger entry."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.exceptions import NotFound
from inventory import events, locks
from inventory.exceptions import HoldExpired, LimitReached, ReservationNotHeld, SoldOut
from inventory.models import Allocation, Reservation, StockItem, StockMovement
from inventory.services._common import (
    SETTLED,
    allocation_changed_event,
    customer_units,
    reservation_changed_event,
)
from inventory.services.offers import offer_claimed, offer_returned_units, offers_returned

logger = logging.getLogger(__name__)

Status = Reservation.Status
Reason = StockMovement.Reason


def _lock_reservation(reservation_id: int, *, customer_id: int | None = None) -> Reservation:
    """The reservation, locked for this transaction (``customer_id``: only theirs)."""
    reservation = locks.lock_reservation(reservation_id, customer_id=customer_id)
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
    allocation = locks.lock_allocation(allocation_id)
    closed = allocation.status == Allocation.Status.CLOSED
    if closed:
        # The allocation no longer sells: the units go back to stock.
        locks.claim_stock_item(allocation.stock_item_id)
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
    offers_returned(reservations=reservations, status=status)
    # Units back on sale go to the first viewers in line before anyone else (the offers
    # then have the gate recount, so the units returned below are not handed out twice).
    if not closed:
        offer_returned_units(allocation_id=allocation_id)
    allocation.refresh_from_db()
    events.emit_on_commit(
        [reservation_changed_event(r) for r in reservations]
        + [
            events.UnitsReturned(
                allocation_id, r.customer_id, r.quantity, r.pk, back_on_sale=not closed
            )
            for r in reservations
        ]
        + [allocation_changed_event(allocation)]
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
    if allocation_id is None:
        allocation_ids = sorted(
            Reservation.objects.filter(status=Status.HELD, expires_at__lte=now)
            .order_by()  # the model's default ordering would make DISTINCT per row
            .values_list("allocation_id", flat=True)
            .distinct()
        )
    else:
        allocation_ids = [allocation_id]
    expired = 0
    # One allocation per transaction: reservations, then their allocation (then its
    # stock item), as every path locks them.
    for alloc_id in allocation_ids:
        while True:
            with transaction.atomic():
                rows = locks.lock_due_holds(allocation_id=alloc_id, now=now, limit=limit)
                if rows:
                    _return_holds(
                        allocation_id=alloc_id,
                        reservations=rows,
                        status=Status.EXPIRED,
                        reason=Reason.HOLD_EXPIRE,
                    )
            expired += len(rows)
            if len(rows) < limit:
                break
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
    allocation = locks.lock_allocation(reservation.allocation_id)
    locks.claim_stock_item(allocation.stock_item_id)
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
    offer_claimed(reservation=reservation)
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
    events.emit_on_commit(
        [
            reservation_changed_event(reservation),
            allocation_changed_event(allocation),
            events.HoldsSold(allocation.pk, (reservation.pk,)),
        ]
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
        allocation = locks.lock_allocation(reservation.allocation_id)
        limit = allocation.per_customer_limit
        if limit is not None:
            taken = customer_units(allocation.pk, reservation.customer_id, statuses=SETTLED)
            if taken + units > limit:
                raise LimitReached(limit=limit)
        if allocation.status == Allocation.Status.CLOSED:
            locks.claim_stock_item(allocation.stock_item_id)
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
            [
                reservation_changed_event(reservation),
                allocation_changed_event(allocation),
                # No delta tells a copy these units are taken again (it had them back
                # at the expiry, and may have handed them on): it recounts. Rare.
                events.AllocationRecounted(allocation.pk),
            ]
        )
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
        allocation = locks.lock_allocation(reservation.allocation_id)
        locks.claim_stock_item(allocation.stock_item_id)
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
        if back_on_sale:
            offer_returned_units(allocation_id=allocation.pk)
        allocation.refresh_from_db()
        # Told even when closed: the customer no longer has these units, whether or not
        # they go back on sale.
        events.emit_on_commit(
            [
                reservation_changed_event(reservation),
                allocation_changed_event(allocation),
                events.UnitsReturned(
                    allocation.pk,
                    reservation.customer_id,
                    units,
                    reservation.pk,
                    back_on_sale=back_on_sale,
                ),
            ]
        )
    return reservation
