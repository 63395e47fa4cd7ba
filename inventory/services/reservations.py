"""Asking for units: input checks, the Redis admission gate, the pending hold that the
reserve task settles, and replays by idempotency key."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.utils import timezone

from core.exceptions import IdempotencyKeyReused, InvalidInput, NotFound, RequestInProgress
from core.keys import MAX_KEY_LENGTH
from inventory import gate, locks, settle_queue
from inventory.exceptions import DropNotLive, LimitReached, SoldOut, TooManyHolds
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
    if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= (MAX_KEY_LENGTH):
        raise InvalidInput(
            f"An idempotency key of 1 to {MAX_KEY_LENGTH} characters is required.",
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
    except IntegrityError:  # a twin's row committed first (SQLite takes no row locks)
        reservation = None
    except BaseException:
        gate_undo_admission(**undo, forget_key=idempotency_key)
        raise
    if reservation is None:
        # The key was used before (Redis forgot it, or on another allocation): no second
        # hold. The gate keeps remembering the key, which is right either way.
        gate_undo_admission(**undo)
        return _replay(**identity)
    return reservation


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
    identity = {
        "customer_id": customer_id,
        "allocation_id": allocation_id,
        "quantity": quantity,
        "idempotency_key": idempotency_key,
    }
    try:
        reservation = _create_pending(**identity, unit_price=unit_price, currency=currency)
    except IntegrityError:  # a twin's row committed first (SQLite takes no row locks)
        reservation = None
    if reservation is None:
        return _replay(**identity)
    demand.demand_record(**counted, outcome=demand.ADMITTED)
    return reservation


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


@dataclass(frozen=True)
class AdmittedRequest:
    """A request the gate admitted (or, without the gate, one the rows did not refuse)
    whose pending hold is still to be written."""

    customer_id: int
    allocation_id: int
    quantity: int
    idempotency_key: str
    unit_price: Decimal
    currency: str


def reservations_create_pending(
    requests: Sequence[AdmittedRequest],
) -> list[Reservation | TooManyHolds | None]:
    """Write the pending holds of admitted requests in ONE transaction (the commit is
    the database's ceiling: the front door writes what a process admitted meanwhile in
    one go), and queue the settle task that settles them.

    Per request, in order: its new reservation (``pending``; already settled when tasks
    run eagerly); ``TooManyHolds`` when its customer has the most active holds allowed;
    else None when its customer already has a reservation with its key (the caller
    answers from that one, as a replay). Nothing is written for the last two.
    """
    queue = settle_queue.current()
    cap = settings.RESERVATION_MAX_ACTIVE_PER_CUSTOMER
    customers = {request.customer_id for request in requests}
    with transaction.atomic():
        # The customers' rows are the lock that makes the cap and the key check exact:
        # one customer's requests queue here, everyone else's pass (and the insert's own
        # FK check takes a share lock that this one does not block).
        locks.lock_customers(customers)
        # Their active holds (past their expiry they no longer count, swept or not) and
        # their reservations under the keys asked with, in one read: few rows, as the cap
        # bounds the first kind.
        is_active = Q(status=Status.PENDING) | Q(status=Status.HELD, expires_at__gt=timezone.now())
        active: dict[int, int] = defaultdict(int)
        used: set[tuple[int, str]] = set()
        for customer_id, key, counts in (
            Reservation.objects.filter(
                is_active | Q(idempotency_key__in={r.idempotency_key for r in requests}),
                customer_id__in=customers,
            )
            .annotate(counts=ExpressionWrapper(is_active, output_field=BooleanField()))
            .values_list("customer_id", "idempotency_key", "counts")
        ):
            used.add((customer_id, key))
            active[customer_id] += counts
        outcomes: list[Reservation | TooManyHolds | None] = []
        rows: list[Reservation] = []
        for request in requests:
            # The cap first, as when the insert itself found a used key.
            if active[request.customer_id] >= cap:
                outcomes.append(TooManyHolds(limit=cap))
                continue
            if (request.customer_id, request.idempotency_key) in used:
                outcomes.append(None)
                continue
            used.add((request.customer_id, request.idempotency_key))
            active[request.customer_id] += 1
            row = Reservation(
                customer_id=request.customer_id,
                allocation_id=request.allocation_id,
                quantity=request.quantity,
                unit_price=request.unit_price,
                currency=request.currency,
                idempotency_key=request.idempotency_key,
            )
            rows.append(row)
            outcomes.append(row)
        Reservation.objects.bulk_create(rows)
        # One task per allocation settles every pending hold queued on it.
        for allocation_id in dict.fromkeys(row.allocation_id for row in rows):
            transaction.on_commit(partial(queue.settle_soon, allocation_id))
    if rows and queue.settles_inline():
        # The settles already ran on commit: answer with the settled state.
        settled = Reservation.objects.in_bulk([row.pk for row in rows])
        outcomes = [
            settled[outcome.pk] if isinstance(outcome, Reservation) else outcome
            for outcome in outcomes
        ]
    return outcomes


def _create_pending(**request) -> Reservation | None:
    """One request's pending hold (``reservations_create_pending``): raises
    ``TooManyHolds``; None when the key has a reservation already."""
    [outcome] = reservations_create_pending([AdmittedRequest(**request)])
    if isinstance(outcome, TooManyHolds):
        raise outcome
    return outcome


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
