"""Asking for units: input checks, the Redis admission gate, the pending hold that the
reserve task settles, and replays by idempotency key."""

from __future__ import annotations

import logging
import time
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from inventory import gate, locks
from inventory.exceptions import (
    DropNotLive,
    IdempotencyKeyReused,
    InvalidInput,
    LimitReached,
    NotFound,
    RequestInProgress,
    SoldOut,
    TooManyHolds,
)
from inventory.models import Allocation, Reservation, StockMovement
from inventory.services import demand
from inventory.services._common import customer_units, validate_quantity
from inventory.services.gate_sync import (
    gate_forget_stale_expiries,
    gate_rebuild,
    gate_undo_admission,
)
from inventory.services.holds import reservations_expire

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


def _admit(
    *, allocation_id: int, customer_id: int, quantity: int, idempotency_key: str
) -> tuple[bool, int | None]:
    """Take units at the gate or raise the rejection. Returns whether this request was
    admitted now (False: its key was admitted before, the caller replays) and the gate's
    generation it was admitted in (to undo it). Rebuilds a missing gate, and reclaims
    expired holds once when they stand between a buyer and the units."""
    admitted_in: int | None = None

    def ask() -> gate.GateDecision:
        nonlocal admitted_in
        decision, admitted_in = gate.gate_admit_stamped(
            allocation_id=allocation_id,
            customer_id=customer_id,
            quantity=quantity,
            idempotency_key=idempotency_key,
            now=time.time(),
        )
        return decision

    decision = ask()
    if decision is gate.GateDecision.MISSING:
        if gate_rebuild(allocation_id=allocation_id) is None:
            raise NotFound("No such allocation.")
        decision = ask()
    if decision is gate.GateDecision.RECLAIMABLE:
        reservations_expire(allocation_id=allocation_id)
        decision = ask()
        if decision is gate.GateDecision.RECLAIMABLE:
            gate_forget_stale_expiries(
                allocation_id=allocation_id,
                due=gate.gate_due_holds(allocation_id=allocation_id, now=time.time()),
            )
            decision = ask()
        if decision is gate.GateDecision.RECLAIMABLE:
            # The due holds are being returned by another process right now: answer
            # with what is true this instant; their units reach the gate in moments.
            decision = _refusal_without_reclaim(allocation_id, customer_id, quantity)
            gate.gate_record_demand(
                allocation_id=allocation_id,
                customer_id=customer_id,
                quantity=quantity,
                decision=decision,
            )
    if decision is gate.GateDecision.REPLAY:
        return False, None
    if decision is not gate.GateDecision.ADMITTED:
        raise _GATE_ERRORS.get(decision, SoldOut)()
    return True, admitted_in


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
    admitted, admitted_in = _admit(**identity)
    if not admitted:
        # A twin request may still be writing its row: give it a moment.
        return _replay(**identity, wait_seconds=REPLAY_WAIT_SECONDS)
    undo = {
        "allocation_id": allocation_id,
        "customer_id": customer_id,
        "quantity": quantity,
        "admitted_in": admitted_in,
    }
    try:
        reservation = _create_pending(**identity, unit_price=unit_price, currency=currency)
    except IntegrityError:
        # The key was used before (Redis forgot it, or on another allocation): no second
        # hold. The gate keeps remembering the key, which is right either way.
        gate_undo_admission(**undo)
        return _replay(**identity)
    except BaseException:
        gate_undo_admission(**undo, forget_key=idempotency_key)
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
    counted = {"allocation_id": allocation_id, "customer_id": customer_id, "quantity": quantity}
    if allocation.status != Allocation.Status.OPEN:
        demand.demand_record(**counted, outcome=demand.NOT_LIVE)
        raise DropNotLive()
    refusal = _refusal_from_rows(allocation, customer_id=customer_id, quantity=quantity)
    if refusal is not None and reservations_expire(allocation_id=allocation_id):
        # Expired holds stood in the way: they are returned now, look again.
        allocation.refresh_from_db()
        refusal = _refusal_from_rows(allocation, customer_id=customer_id, quantity=quantity)
    if refusal is not None:
        outcome = demand.LIMIT if isinstance(refusal, LimitReached) else demand.SOLD_OUT
        demand.demand_record(**counted, outcome=outcome)
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
    demand.demand_record(**counted, outcome=demand.ADMITTED)
    return _after_request(reservation)


def _refusal_from_rows(
    allocation: Allocation, *, customer_id: int, quantity: int
) -> SoldOut | LimitReached | None:
    if allocation.remaining < quantity:
        return SoldOut(remaining=allocation.remaining)
    if allocation.per_customer_limit is not None:
        taken = customer_units(allocation.pk, customer_id)
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
        locks.lock_customer(customer_id)
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
