"""Random sequences of everything that touches a sold-out allocation and its line:
requests, releases, expiries, sales, refunds, joining and leaving the line, closing
the sale. After every step: the inventory's invariants (the ledger balances, never
oversold, no unit free while anyone waits) and first come, first served (nobody waits
who joined before someone who got an offer)."""

from __future__ import annotations

import contextlib
import itertools
from datetime import timedelta
from decimal import Decimal

import hypothesis
import pytest
from django.db.models import Max, Min
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from core.exceptions import DomainError
from inventory import gate, services
from inventory.models import Allocation, Reservation, WaitlistEntry
from tests.factories import UserFactory, open_allocation
from tests.inventory.invariants import assert_inventory_invariants
from tests.inventory.test_stateful import SHRINK_TIMEOUT, _wipe_database, _wipe_gate

PRICE = Decimal("4.00")
N_CUSTOMERS = 6
Entry = WaitlistEntry.Status
Status = Reservation.Status


class WaitlistMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        _wipe_database()
        if gate.gate_enabled():
            _wipe_gate()
        self.keys = itertools.count()
        self.now = timezone.now()
        self.customers = [UserFactory().pk for _ in range(N_CUSTOMERS)]

    @initialize(quantity=st.integers(1, 3), limit=st.sampled_from([None, 1, 2]))
    def open_sale(self, quantity: int, limit: int | None) -> None:
        self.allocation = open_allocation(
            quantity=quantity, on_hand=quantity + 2, per_customer_limit=limit
        )
        services.gate_rebuild(allocation_id=self.allocation.pk)

    def _try(self, call) -> None:
        # Refusals are answers (sold out, limit, not held, not on the list...): the
        # invariants below judge what was written.
        with contextlib.suppress(DomainError):
            call()

    def _pick(self, data, **filters) -> Reservation | None:
        rows = list(
            Reservation.objects.filter(allocation=self.allocation, **filters).order_by("pk")
        )
        return data.draw(st.sampled_from(rows)) if rows else None

    @rule(customer=st.integers(0, N_CUSTOMERS - 1), quantity=st.integers(1, 2))
    def request(self, customer: int, quantity: int) -> None:
        self._try(
            lambda: services.reservation_request(
                customer_id=self.customers[customer],
                allocation_id=self.allocation.pk,
                quantity=quantity,
                idempotency_key=f"k{next(self.keys)}",
                unit_price=PRICE,
                currency="USD",
            )
        )

    @rule(data=st.data())
    def release(self, data) -> None:
        hold = self._pick(data, status=Status.HELD)
        if hold is not None:
            self._try(lambda: services.reservation_release(reservation_id=hold.pk))

    @rule(minutes=st.integers(1, 20))
    def time_passes(self, minutes: int) -> None:
        # Offers (a minute) and ordinary holds (ten) run out as the clock moves.
        self.now += timedelta(minutes=minutes)
        services.reservations_expire(now=self.now)

    @rule(data=st.data())
    def buy(self, data) -> None:
        hold = self._pick(data, status=Status.HELD)
        if hold is not None:
            self._try(lambda: services.reservation_confirm(reservation_id=hold.pk, now=self.now))

    @rule(data=st.data())
    def refund(self, data) -> None:
        sale = self._pick(data, status=Status.CONFIRMED)
        if sale is not None:
            self._try(lambda: services.reservation_refund(reservation_id=sale.pk))

    @rule(customer=st.integers(0, N_CUSTOMERS - 1))
    def join(self, customer: int) -> None:
        self._try(
            lambda: services.waitlist_join(
                allocation_id=self.allocation.pk,
                customer_id=self.customers[customer],
                unit_price=PRICE,
                currency="USD",
            )
        )

    @rule(customer=st.integers(0, N_CUSTOMERS - 1))
    def leave(self, customer: int) -> None:
        self._try(
            lambda: services.waitlist_leave(
                allocation_id=self.allocation.pk, customer_id=self.customers[customer]
            )
        )

    @rule()
    def close_sale(self) -> None:
        services.allocation_close(allocation_id=self.allocation.pk)

    @invariant()
    def the_books_balance(self) -> None:
        assert_inventory_invariants()

    @invariant()
    def first_come_first_served(self) -> None:
        entries = WaitlistEntry.objects.filter(allocation_id=self.allocation.pk)
        first_waiting = entries.filter(status=Entry.WAITING).aggregate(m=Min("pk"))["m"]
        last_offered = entries.filter(reservation__isnull=False).aggregate(m=Max("pk"))["m"]
        if first_waiting is not None and last_offered is not None:
            assert first_waiting > last_offered, "someone was served before an earlier joiner"

    @invariant()
    def an_offer_is_a_hold_of_the_one_in_line(self) -> None:
        for entry in WaitlistEntry.objects.filter(status=Entry.OFFERED).select_related(
            "reservation"
        ):
            assert entry.reservation.customer_id == entry.customer_id
            assert entry.reservation.status == Status.HELD

    @invariant()
    def the_gate_hands_out_no_unit_of_the_line(self) -> None:
        if not gate.gate_enabled():
            return
        state = gate.gate_read(allocation_id=self.allocation.pk)
        allocation = Allocation.objects.get(pk=self.allocation.pk)
        waiting = WaitlistEntry.objects.filter(allocation=allocation, status=Entry.WAITING).exists()
        if state is not None and waiting and allocation.status == Allocation.Status.OPEN:
            assert state.remaining == 0, "the gate would hand out a unit someone waits for"


# 20 examples per run keep the suite inside its time (40 took 50 s per test on the
# 2-core box); raise it locally to search harder.
MACHINE_SETTINGS = hypothesis.settings(
    max_examples=20,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SHRINK_TIMEOUT
@pytest.mark.django_db(transaction=True)
def test_the_line_holds_with_the_database_alone(gate_off):
    hypothesis.stateful.run_state_machine_as_test(WaitlistMachine, settings=MACHINE_SETTINGS)


@SHRINK_TIMEOUT
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_the_line_holds_behind_the_redis_gate(gate_on):
    hypothesis.stateful.run_state_machine_as_test(WaitlistMachine, settings=MACHINE_SETTINGS)
