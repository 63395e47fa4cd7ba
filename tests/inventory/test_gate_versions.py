"""The gate's updates from the database side are ordered by the allocation's version: a
change is counted once whether it reaches the gate before or after a rebuild that read
it, a rebuild older than a change already applied is refused, and an admission is
undone only if no rebuild forgot it already."""

from __future__ import annotations

import time

import pytest

from inventory import gate
from inventory.gate import Applied, GateReturn, GateState

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("gate_on")]

GATE_ID = 434_343


def _rebuild(*, remaining: int, version: int, customers=None) -> bool:
    state = GateState(
        status="open", remaining=remaining, limit=0, customers=customers or {}, expiries={}
    )
    return gate.gate_write(allocation_id=GATE_ID, state=state, version=version)


def _return(version: int, *, customer: int = 1, units: int = 1, back: bool = True) -> Applied:
    return gate.gate_apply(
        allocation_id=GATE_ID,
        version=version,
        returns=[GateReturn(customer, units, back_on_sale=back)],
    )


def test_a_change_the_rebuild_read_is_not_applied_again():
    assert _rebuild(remaining=1, version=7, customers={1: 1})

    assert _return(7) is Applied.ALREADY_READ
    assert gate.gate_read(allocation_id=GATE_ID).remaining == 1


def test_a_change_newer_than_the_rebuild_is_applied_whatever_the_order_of_changes():
    assert _rebuild(remaining=0, version=7, customers={1: 1, 2: 1})

    assert _return(9, customer=2) is Applied.APPLIED
    assert _return(8, customer=1) is Applied.APPLIED

    state = gate.gate_read(allocation_id=GATE_ID)
    assert (state.remaining, state.customers) == (2, {})
    assert gate.gate_marks(allocation_id=GATE_ID) == {"version": 7, "seen": 9, "gen": 1}


def test_a_rebuild_older_than_an_applied_change_is_refused():
    assert _rebuild(remaining=0, version=7, customers={1: 1})
    assert _return(8) is Applied.APPLIED

    assert not _rebuild(remaining=0, version=7, customers={1: 1})
    assert gate.gate_read(allocation_id=GATE_ID).remaining == 1
    assert _rebuild(remaining=1, version=8)
    assert gate.gate_marks(allocation_id=GATE_ID) == {"version": 8, "seen": 8, "gen": 2}


def test_units_that_left_a_closed_allocation_only_leave_the_customer_count():
    assert _rebuild(remaining=0, version=1, customers={1: 2})

    assert _return(2, units=2, back=False) is Applied.APPLIED

    state = gate.gate_read(allocation_id=GATE_ID)
    assert (state.remaining, state.customers) == (0, {})


def test_a_change_for_a_missing_gate_waits_for_the_rebuild():
    assert _return(3) is Applied.NO_GATE
    assert gate.gate_read(allocation_id=GATE_ID) is None


def test_an_admission_is_undone_only_if_no_rebuild_forgot_it():
    assert _rebuild(remaining=2, version=1)
    decision, admitted_in = gate.gate_admit_stamped(
        allocation_id=GATE_ID, customer_id=5, quantity=1, idempotency_key="a", now=time.time()
    )
    assert (decision, admitted_in) == (gate.GateDecision.ADMITTED, 1)
    # A rebuild from the rows, which never had that request: the units are back already.
    assert _rebuild(remaining=2, version=1)

    assert not gate.gate_give_back(
        allocation_id=GATE_ID, customer_id=5, quantity=1, admitted_in=admitted_in
    )
    assert gate.gate_read(allocation_id=GATE_ID).remaining == 2

    _, second = gate.gate_admit_stamped(
        allocation_id=GATE_ID, customer_id=5, quantity=1, idempotency_key="b", now=time.time()
    )
    assert gate.gate_give_back(allocation_id=GATE_ID, customer_id=5, quantity=1, admitted_in=second)
    assert gate.gate_read(allocation_id=GATE_ID).remaining == 2
