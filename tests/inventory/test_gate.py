"""The Redis admission gate: its decisions, its agreement with the database, and its
repair after drift or data loss. The gate only ever turns requests away early; the
database decides, so a wrong gate may cost a retry but never oversells."""

from __future__ import annotations

import time

import pytest

from core.redis import get_redis
from inventory import gate, services
from inventory.exceptions import DropNotLive, HoldExpired, LimitReached, SoldOut
from inventory.gate import GateDecision, GateState
from inventory.models import Reservation, StockMovement
from tests.factories import UserFactory, open_allocation, stocked_variant
from tests.inventory.helpers import PRICE, open_primed, request_hold, settled_hold
from tests.inventory.invariants import assert_inventory_invariants, gate_state_from_rows

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("gate_on")]

Status = Reservation.Status

# Allocation ids for the script-level tests, which need no database row.
GATE_ID = 424_242


# --- helpers ---------------------------------------------------------------------------


def _write(
    *,
    status: str = "open",
    remaining: int = 5,
    limit: int = 0,
    customers: dict[int, int] | None = None,
    expiries: dict[int, float] | None = None,
) -> GateState:
    state = GateState(
        status=status,
        remaining=remaining,
        limit=limit,
        customers=customers or {},
        expiries=expiries or {},
    )
    gate.gate_write(allocation_id=GATE_ID, state=state)
    return state


def _admit(*, customer: int = 1, quantity: int = 1, key: str = "k", now: float | None = None):
    return gate.gate_admit(
        allocation_id=GATE_ID,
        customer_id=customer,
        quantity=quantity,
        idempotency_key=key,
        now=time.time() if now is None else now,
    )


def _key_exists(customer: int, key: str, allocation_id: int = GATE_ID) -> bool:
    return bool(get_redis().exists(f"gate:{{alloc:{allocation_id}}}:k:{customer}:{key}"))


def _delete_all_gate_keys() -> None:
    client = get_redis()
    keys = list(client.scan_iter(match="gate:*", count=1000))
    if keys:
        client.delete(*keys)


# --- the admission script --------------------------------------------------------------


def test_admit_takes_the_units_and_remembers_the_key():
    _write(remaining=5, customers={2: 1})

    assert _admit(customer=1, quantity=2, key="a") is GateDecision.ADMITTED

    assert gate.gate_read(allocation_id=GATE_ID) == GateState(
        status="open", remaining=3, limit=0, customers={2: 1, 1: 2}, expiries={}
    )
    assert _key_exists(1, "a")
    ttl = get_redis().ttl(f"gate:{{alloc:{GATE_ID}}}:k:1:a")
    assert 0 < ttl <= gate.IDEMPOTENCY_TTL_SECONDS


def test_admit_of_a_repeated_key_replays_and_takes_nothing():
    _write(remaining=5)
    assert _admit(customer=1, quantity=2, key="a") is GateDecision.ADMITTED
    after_first = gate.gate_read(allocation_id=GATE_ID)

    assert _admit(customer=1, quantity=2, key="a") is GateDecision.REPLAY
    # Even with another quantity: the service then compares it with the stored row.
    assert _admit(customer=1, quantity=3, key="a") is GateDecision.REPLAY

    assert gate.gate_read(allocation_id=GATE_ID) == after_first
    # The key is the customer's: another customer's identical key is a new request.
    assert _admit(customer=2, quantity=2, key="a") is GateDecision.ADMITTED


def test_admit_of_more_than_remains_is_sold_out_and_takes_nothing():
    state = _write(remaining=1)

    assert _admit(quantity=2, key="a") is GateDecision.SOLD_OUT

    assert gate.gate_read(allocation_id=GATE_ID) == state
    assert not _key_exists(1, "a")
    # The refusal was not remembered: the same key may ask again for what is there.
    assert _admit(quantity=1, key="a") is GateDecision.ADMITTED


def test_admit_of_the_last_units_then_sold_out():
    _write(remaining=2)

    assert _admit(customer=1, quantity=2, key="a") is GateDecision.ADMITTED
    assert _admit(customer=2, quantity=1, key="b") is GateDecision.SOLD_OUT

    assert gate.gate_read(allocation_id=GATE_ID).remaining == 0


def test_admit_past_the_limit_is_refused_and_takes_nothing():
    state = _write(remaining=10, limit=2, customers={1: 2})

    assert _admit(customer=1, quantity=1, key="a") is GateDecision.LIMIT_REACHED

    assert gate.gate_read(allocation_id=GATE_ID) == state
    assert not _key_exists(1, "a")
    assert _admit(customer=2, quantity=2, key="a") is GateDecision.ADMITTED
    assert _admit(customer=3, quantity=3, key="a") is GateDecision.LIMIT_REACHED


def test_admit_on_a_closed_gate_is_not_live():
    state = _write(status="closed", remaining=5)

    assert _admit(key="a") is GateDecision.NOT_LIVE

    assert gate.gate_read(allocation_id=GATE_ID) == state
    assert not _key_exists(1, "a")


def test_admit_without_a_gate_is_missing_and_writes_nothing():
    assert _admit(key="a") is GateDecision.MISSING

    assert gate.gate_read(allocation_id=GATE_ID) is None
    assert list(get_redis().scan_iter(match="gate:*")) == []


def test_admit_when_sold_out_but_a_tracked_hold_is_due_is_reclaimable():
    now = time.time()
    state = _write(remaining=0, expiries={77: now - 1, 78: now + 600})

    assert _admit(key="a", now=now) is GateDecision.RECLAIMABLE
    # A hold due exactly now counts (the database expires ``expires_at <= now``).
    assert _admit(key="a", now=now - 1) is GateDecision.RECLAIMABLE
    assert _admit(key="a", now=now - 2) is GateDecision.SOLD_OUT

    assert gate.gate_read(allocation_id=GATE_ID) == state
    assert not _key_exists(1, "a")


def test_admit_with_units_left_ignores_due_holds():
    now = time.time()
    _write(remaining=1, expiries={77: now - 1})

    assert _admit(key="a", now=now) is GateDecision.ADMITTED


def test_give_back_returns_units_and_forgets_the_hold_or_the_key():
    now = time.time()
    _write(remaining=0, customers={1: 3, 2: 1}, expiries={77: now + 60, 78: now + 60})
    get_redis().set(f"gate:{{alloc:{GATE_ID}}}:k:2:failed", 1)

    gate.gate_give_back(allocation_id=GATE_ID, customer_id=1, quantity=2, reservation_id=77)
    gate.gate_give_back(
        allocation_id=GATE_ID, customer_id=2, quantity=1, forget_idempotency_key="failed"
    )

    assert gate.gate_read(allocation_id=GATE_ID) == GateState(
        status="open", remaining=3, limit=0, customers={1: 1}, expiries={78: now + 60}
    )
    assert not _key_exists(2, "failed")


def test_give_back_to_a_missing_gate_leaves_it_missing():
    gate.gate_give_back(allocation_id=GATE_ID, customer_id=1, quantity=2, reservation_id=5)

    assert gate.gate_read(allocation_id=GATE_ID) is None
    assert list(get_redis().scan_iter(match="gate:*")) == []


def test_tracking_expiries_of_a_missing_gate_leaves_nothing_behind():
    gate.gate_apply(allocation_id=GATE_ID, version=1, tracked={5: time.time()})

    assert list(get_redis().scan_iter(match="gate:*")) == []


# --- the service behind the gate -------------------------------------------------------


@pytest.mark.django_db
def test_a_refusal_by_the_gate_touches_no_database_row(
    django_capture_on_commit_callbacks, django_assert_num_queries
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(2, limit=1)
    first, second = UserFactory(), UserFactory()
    settled_hold(capture, first.pk, allocation.pk, key="a")
    settled_hold(capture, second.pk, allocation.pk, key="b")
    buyer = UserFactory()
    gate_before = gate.gate_read(allocation_id=allocation.pk)

    with django_assert_num_queries(0):
        with pytest.raises(SoldOut):
            request_hold(buyer.pk, allocation.pk, key="c")
        with pytest.raises(LimitReached):
            request_hold(first.pk, allocation.pk, key="d")

    assert gate.gate_read(allocation_id=allocation.pk) == gate_before
    assert Reservation.objects.count() == 2


@pytest.mark.django_db
def test_a_closed_drop_is_refused_by_the_gate_without_a_query(
    django_capture_on_commit_callbacks, django_assert_num_queries
):
    allocation = open_primed(3)
    buyer = UserFactory()
    with django_capture_on_commit_callbacks(execute=True):
        services.allocation_close(allocation_id=allocation.pk)

    assert gate.gate_read(allocation_id=allocation.pk).status == "closed"
    with django_assert_num_queries(0), pytest.raises(DropNotLive):
        request_hold(buyer.pk, allocation.pk, key="late")
    assert Reservation.objects.count() == 0


@pytest.mark.django_db
def test_allocation_open_primes_the_gate_on_commit(django_capture_on_commit_callbacks):
    item = stocked_variant(on_hand=10).stock
    allocation = services.allocation_create(stock_item_id=item.pk, quantity=6, per_customer_limit=2)

    with django_capture_on_commit_callbacks(execute=True):
        services.allocation_open(allocation_id=allocation.pk)
        assert gate.gate_read(allocation_id=allocation.pk) is None

    assert gate.gate_read(allocation_id=allocation.pk) == GateState(
        status="open", remaining=6, limit=2, customers={}, expiries={}
    )


@pytest.mark.django_db
def test_allocation_close_closes_the_gate(django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)
    customer = UserFactory()
    hold = settled_hold(capture, customer.pk, allocation.pk, key="a")

    with capture(execute=True):
        services.allocation_close(allocation_id=allocation.pk)

    state = gate.gate_read(allocation_id=allocation.pk)
    assert state.status == "closed"
    assert state.customers == {customer.pk: 1}
    assert state.expiries == {hold.pk: hold.expires_at.timestamp()}


@pytest.mark.django_db
def test_the_first_request_builds_a_missing_gate(django_capture_on_commit_callbacks):
    allocation = open_allocation(quantity=4)  # its on-commit priming never ran
    assert gate.gate_read(allocation_id=allocation.pk) is None
    customer = UserFactory()

    hold = settled_hold(django_capture_on_commit_callbacks, customer.pk, allocation.pk, key="a")

    assert hold.status == Status.HELD
    assert gate.gate_read(allocation_id=allocation.pk) == GateState(
        status="open",
        remaining=3,
        limit=0,
        customers={customer.pk: 1},
        expiries={hold.pk: hold.expires_at.timestamp()},
    )
    assert_inventory_invariants()


@pytest.mark.django_db
def test_the_gate_follows_the_database_through_every_kind_of_change(
    django_capture_on_commit_callbacks,
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(10, limit=3)
    a, b, c, d = (UserFactory() for _ in range(4))
    settled_hold(capture, a.pk, allocation.pk, key="a1", quantity=2)
    bought = settled_hold(capture, b.pk, allocation.pk, key="b1", quantity=3)
    released = settled_hold(capture, c.pk, allocation.pk, key="c1")
    expiring = settled_hold(capture, d.pk, allocation.pk, key="d1", quantity=2)
    with capture(execute=True):
        services.reservation_confirm(reservation_id=bought.pk)
        services.reservation_release(reservation_id=released.pk)
        with pytest.raises(HoldExpired):
            services.reservation_confirm(reservation_id=expiring.pk, now=expiring.expires_at)
    with capture(execute=True), pytest.raises(LimitReached):
        request_hold(b.pk, allocation.pk, key="b2")

    assert gate.gate_read(allocation_id=allocation.pk) == gate_state_from_rows(allocation.pk)
    assert gate.gate_read(allocation_id=allocation.pk).remaining == 5
    assert services.gate_reconcile(allocation_id=allocation.pk) is False
    assert_inventory_invariants()


# --- rebuild and reconcile -------------------------------------------------------------


@pytest.mark.django_db
def test_rebuild_computes_the_gate_from_the_rows(django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(10, limit=5)
    holder, buyer, waiting, leaver, refused = (UserFactory() for _ in range(5))
    held = settled_hold(capture, holder.pk, allocation.pk, key="h", quantity=2)
    bought = settled_hold(capture, buyer.pk, allocation.pk, key="b", quantity=3)
    services.reservation_confirm(reservation_id=bought.pk)
    gone = settled_hold(capture, leaver.pk, allocation.pk, key="l", quantity=1)
    services.reservation_release(reservation_id=gone.pk)
    # A request admitted but not yet settled, and one the settle step turned away.
    Reservation.objects.create(
        customer=waiting,
        allocation=allocation,
        quantity=1,
        unit_price=PRICE,
        currency="USD",
        idempotency_key="w",
    )
    Reservation.objects.create(
        customer=refused,
        allocation=allocation,
        quantity=4,
        unit_price=PRICE,
        currency="USD",
        idempotency_key="r",
        status=Status.REJECTED,
        reject_reason="sold_out",
    )
    gate.gate_write(
        allocation_id=allocation.pk,
        state=GateState(status="closed", remaining=99, limit=1, customers={7: 7}, expiries={1: 1}),
    )

    state = services.gate_rebuild(allocation_id=allocation.pk)

    expected = GateState(
        status="open",
        remaining=10 - 2 - 3 - 1,
        limit=5,
        customers={holder.pk: 2, buyer.pk: 3, waiting.pk: 1},
        expiries={held.pk: held.expires_at.timestamp()},
    )
    assert state == expected
    assert gate.gate_read(allocation_id=allocation.pk) == expected


@pytest.mark.django_db
def test_rebuild_of_an_allocation_not_on_sale_builds_a_closed_gate():
    item = stocked_variant(on_hand=10).stock
    ready = services.allocation_create(stock_item_id=item.pk, quantity=3)
    closed = services.allocation_create(stock_item_id=item.pk, quantity=3)
    services.allocation_close(allocation_id=closed.pk)

    assert services.gate_rebuild(allocation_id=ready.pk) == GateState(
        status="closed", remaining=3, limit=0, customers={}, expiries={}
    )
    assert services.gate_rebuild(allocation_id=closed.pk) == GateState(
        status="closed", remaining=0, limit=0, customers={}, expiries={}
    )


@pytest.mark.django_db
def test_rebuild_of_an_unknown_allocation_removes_its_gate():
    _write(remaining=5)

    assert services.gate_rebuild(allocation_id=GATE_ID) is None

    assert gate.gate_read(allocation_id=GATE_ID) is None


@pytest.mark.django_db
def test_rebuild_does_nothing_when_the_gate_is_switched_off(settings):
    allocation = open_allocation(quantity=3)
    settings.INVENTORY_GATE_ENABLED = False

    assert services.gate_rebuild(allocation_id=allocation.pk) is None

    assert gate.gate_read(allocation_id=allocation.pk) is None


@pytest.mark.django_db
def test_reconcile_rebuilds_a_missing_gate(django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)
    settled_hold(capture, UserFactory().pk, allocation.pk, key="a", quantity=2)
    gate.gate_delete(allocation_id=allocation.pk)

    assert services.gate_reconcile(allocation_id=allocation.pk) is True

    assert gate.gate_read(allocation_id=allocation.pk) == gate_state_from_rows(allocation.pk)
    assert gate.gate_read(allocation_id=allocation.pk).remaining == 3


@pytest.mark.django_db
@pytest.mark.parametrize(
    "drift",
    [
        lambda c, base: c.hset(base, "remaining", 4),
        lambda c, base: c.hset(base, "remaining", 0),
        lambda c, base: c.hset(base, "status", "closed"),
        lambda c, base: c.hset(base, "limit", 9),
        lambda c, base: c.hdel(f"{base}:c", *c.hkeys(f"{base}:c")),
        lambda c, base: c.hset(f"{base}:c", "999", 2),
        lambda c, base: c.delete(f"{base}:exp"),
        lambda c, base: c.zadd(f"{base}:exp", {"999": 1.0}),
    ],
    ids=[
        "more-remaining",
        "less-remaining",
        "closed",
        "limit",
        "customers-lost",
        "stray-customer",
        "expiries-lost",
        "stray-expiry",
    ],
)
def test_reconcile_repairs_a_drifted_gate(drift, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5, limit=3)
    settled_hold(capture, UserFactory().pk, allocation.pk, key="a", quantity=2)
    expected = gate_state_from_rows(allocation.pk)
    assert gate.gate_read(allocation_id=allocation.pk) == expected
    drift(get_redis(), f"gate:{{alloc:{allocation.pk}}}")
    assert gate.gate_read(allocation_id=allocation.pk) != expected

    assert services.gate_reconcile(allocation_id=allocation.pk) is True

    assert gate.gate_read(allocation_id=allocation.pk) == expected


@pytest.mark.django_db
def test_reconcile_leaves_a_consistent_gate_alone(django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)
    settled_hold(capture, UserFactory().pk, allocation.pk, key="a", quantity=2)
    state = gate.gate_read(allocation_id=allocation.pk)
    # A marker the rebuild would wipe (it rewrites the whole hash).
    get_redis().hset(f"gate:{{alloc:{allocation.pk}}}", "marker", "kept")

    assert services.gate_reconcile(allocation_id=allocation.pk) is False

    assert gate.gate_read(allocation_id=allocation.pk) == state
    assert get_redis().hget(f"gate:{{alloc:{allocation.pk}}}", "marker") == "kept"


@pytest.mark.django_db
def test_reconcile_waits_for_a_quiet_moment_while_requests_are_pending():
    allocation = open_primed(5)
    # Admitted by the gate (remaining 4), row written, reserve task not yet run.
    pending = request_hold(UserFactory().pk, allocation.pk, key="p")
    assert pending.status == Status.PENDING
    get_redis().hset(f"gate:{{alloc:{allocation.pk}}}", "remaining", 1)

    assert services.gate_reconcile(allocation_id=allocation.pk) is False

    assert gate.gate_read(allocation_id=allocation.pk).remaining == 1


@pytest.mark.django_db
def test_reconcile_of_an_unknown_allocation_removes_its_gate():
    _write(remaining=5)

    assert services.gate_reconcile(allocation_id=GATE_ID) is True

    assert gate.gate_read(allocation_id=GATE_ID) is None


# --- Redis data loss and a too generous gate -------------------------------------------


@pytest.mark.django_db
def test_after_redis_data_loss_the_next_request_rebuilds_and_nothing_is_oversold(
    django_capture_on_commit_callbacks,
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(3)
    settled_hold(capture, UserFactory().pk, allocation.pk, key="a")
    settled_hold(capture, UserFactory().pk, allocation.pk, key="b")
    _delete_all_gate_keys()

    outcomes = []
    for n in range(3):
        try:
            outcomes.append(
                settled_hold(capture, UserFactory().pk, allocation.pk, key=f"n{n}").status
            )
        except SoldOut:
            outcomes.append("sold_out")

    assert outcomes == [Status.HELD, "sold_out", "sold_out"]
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (3, 0)
    assert Reservation.objects.count() == 3
    assert gate.gate_read(allocation_id=allocation.pk) == gate_state_from_rows(allocation.pk)
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_repeat_after_data_loss_replays_and_gives_its_admission_back(
    django_capture_on_commit_callbacks,
):
    """Redis forgot the key: the gate admits the repeat, the database's unique key
    refuses a second row, and the units the gate took go back."""
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(5)
    customer = UserFactory()
    first = settled_hold(capture, customer.pk, allocation.pk, key="a", quantity=2)
    _delete_all_gate_keys()
    movements_before = StockMovement.objects.count()

    again = settled_hold(capture, customer.pk, allocation.pk, key="a", quantity=2)

    assert again.pk == first.pk
    assert again.status == Status.HELD
    assert Reservation.objects.count() == 1
    assert StockMovement.objects.count() == movements_before
    state = gate.gate_read(allocation_id=allocation.pk)
    assert (state.remaining, state.customers) == (3, {customer.pk: 2})
    assert state == gate_state_from_rows(allocation.pk)
    assert_inventory_invariants()


@pytest.mark.django_db
@pytest.mark.parametrize("refusal", ["sold_out", "limit_reached", "drop_not_live"])
def test_a_repeat_after_data_loss_replays_even_when_the_gate_would_refuse_it(
    refusal, django_capture_on_commit_callbacks
):
    """One hold per (customer, key), a repeat returns the first reservation
    (``reservation_request``'s guarantee, kept without the gate and while Redis remembers
    the key). After Redis lost the key, the repeat of a request that *succeeded* must not
    be answered with a refusal: the client would give up a hold it has.

    Fails today: ``_admit`` asks the rebuilt gate first, which counts the customer's own
    hold (limit), has no units left (sold out) or is closed, and raises before the
    database is asked for the stored reservation.
    """
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(
        2 if refusal == "sold_out" else 5, limit=2 if refusal == "limit_reached" else None
    )
    customer = UserFactory()
    first = settled_hold(capture, customer.pk, allocation.pk, key="a", quantity=2)
    if refusal == "drop_not_live":
        with capture(execute=True):
            services.allocation_close(allocation_id=allocation.pk)
    _delete_all_gate_keys()
    movements_before = StockMovement.objects.count()

    again = settled_hold(capture, customer.pk, allocation.pk, key="a", quantity=2)

    assert again.pk == first.pk
    assert again.status == Status.HELD
    assert Reservation.objects.count() == 1
    assert StockMovement.objects.count() == movements_before
    assert_inventory_invariants()


@pytest.mark.django_db
def test_units_a_too_generous_gate_admits_are_rejected_by_the_database_and_given_back(
    django_capture_on_commit_callbacks,
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(2)
    holder = UserFactory()
    settled_hold(capture, holder.pk, allocation.pk, key="h")
    base = f"gate:{{alloc:{allocation.pk}}}"
    get_redis().hset(base, "remaining", 5)  # drifted: the gate believes in 5 units
    buyer = UserFactory()

    with capture(execute=True):
        reservation = request_hold(buyer.pk, allocation.pk, key="b", quantity=2)
        assert gate.gate_read(allocation_id=allocation.pk).remaining == 3

    reservation.refresh_from_db()
    assert (reservation.status, reservation.reject_reason) == (Status.REJECTED, "sold_out")
    allocation.refresh_from_db()
    assert (allocation.held, allocation.remaining) == (1, 1)
    state = gate.gate_read(allocation_id=allocation.pk)
    assert (state.remaining, state.customers) == (5, {holder.pk: 1})
    assert services.gate_reconcile(allocation_id=allocation.pk) is True
    assert gate.gate_read(allocation_id=allocation.pk) == gate_state_from_rows(allocation.pk)
    assert_inventory_invariants()


@pytest.mark.django_db
def test_a_request_settled_after_close_is_rejected_and_given_back(
    django_capture_on_commit_callbacks,
):
    capture = django_capture_on_commit_callbacks
    allocation = open_primed(4)
    buyer = UserFactory()
    pending = request_hold(buyer.pk, allocation.pk, key="p")  # admitted, not yet settled
    assert gate.gate_read(allocation_id=allocation.pk).customers == {buyer.pk: 1}
    with capture(execute=True):
        services.allocation_close(allocation_id=allocation.pk)

    with capture(execute=True):
        settled = services.reservation_reserve(reservation_id=pending.pk)

    assert (settled.status, settled.reject_reason) == (Status.REJECTED, "drop_not_live")
    state = gate.gate_read(allocation_id=allocation.pk)
    assert (state.status, state.customers) == ("closed", {})
    allocation.refresh_from_db()
    assert (allocation.quantity, allocation.held) == (0, 0)
    assert_inventory_invariants()
