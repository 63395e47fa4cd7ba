"""Demand capture: every decided request counted (next to the Redis gate, or in rows on
the database path), flushed into the drop's ``DropDemand`` with the audience, the timing
and the waitlist; a rejection still runs no SQL; figures survive Redis losing them; and
under a real race through the API, the gate and a worker the flushed figures are exact."""

from __future__ import annotations

import concurrent.futures
from decimal import Decimal

import pytest
from rest_framework.authtoken.models import Token

from core.redis import get_redis
from demand.capture import demand_flush, demand_flush_selling
from demand.models import DropDemand
from inventory import gate
from inventory import services as inventory
from inventory.exceptions import LimitReached, SoldOut
from inventory.models import Reservation
from livestream import selectors, services
from tests.factories import UserFactory, live_drop
from tests.processes import asgi_server, celery_worker, reserve_over_http, wait_until


@pytest.fixture(autouse=True)
def _fresh_routing_cache():
    selectors.drop_routing_cache_clear()
    yield
    selectors.drop_routing_cache_clear()


def _live_drop(*, quantity: int, capture, limit: int | None = None):
    """A pinned drop and its host, with what pinning does on commit done (the audience
    at pin is recorded then) and its gate built."""
    with capture(execute=True):
        drop = live_drop(
            quantity=quantity,
            on_hand=quantity + 5,
            per_viewer_limit=limit,
            price=Decimal("2.50"),
            title="Demand",
        )
    inventory.gate_rebuild(allocation_id=drop.allocation_id)
    return drop, drop.stream.host


def _try(drop, customer_id: int, key: str, capture, quantity: int = 1) -> str:
    try:
        with capture(execute=True):
            services.drop_reserve(
                drop_id=drop.pk, customer_id=customer_id, quantity=quantity, idempotency_key=key
            )
    except (SoldOut, LimitReached) as refused:
        return refused.code
    return "admitted"


@pytest.mark.django_db
def test_every_decision_is_counted_and_flushed_exactly(
    gate_mode, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    drop, host = _live_drop(quantity=3, limit=2, capture=capture)
    buyers = [UserFactory().pk for _ in range(7)]
    outcomes = [_try(drop, buyers[0], "a1", capture), _try(drop, buyers[0], "a2", capture)]
    outcomes.append(_try(drop, buyers[0], "a3", capture))  # past the limit of 2
    outcomes += [_try(drop, b, f"b{i}", capture) for i, b in enumerate(buyers[1:])]
    outcomes.append(_try(drop, buyers[2], "again", capture))  # turned away twice
    outcomes.append(_try(drop, buyers[1], "more", capture))  # a buyer wanting one more
    # A replayed request is one decision, not two.
    outcomes.append(_try(drop, buyers[0], "a1", capture))
    # Two viewers queue: one who was turned away, one who never tried.
    walk_in = UserFactory().pk
    for customer in (buyers[3], walk_in):
        services.drop_waitlist_join(drop_id=drop.pk, customer_id=customer)

    row = demand_flush(drop_id=drop.pk)

    assert outcomes == ["admitted", "admitted", "limit_reached", "admitted"] + ["sold_out"] * 7 + [
        "admitted"
    ]
    assert (row.attempts, row.admitted, row.admitted_units) == (11, 3, 3)
    assert (row.turned_away_sold_out, row.turned_away_limit) == (7, 1)
    assert (row.viewers_tried, row.buyers) == (7, 2)
    # buyers[1] bought and then was turned away: demand met, not unmet.
    assert row.viewers_turned_away == 5
    assert (row.waitlist_joined, row.waitlist_only, row.waitlist_waiting) == (2, 1, 2)
    assert (row.unmet_demand, row.total_demand) == (6, 8)
    assert (row.supply, row.sold, row.held) == (3, 0, 3)
    assert row.viewers_at_pin == 0 and row.pinned_at is not None
    assert row.sold_out_at is not None and row.seconds_to_sell_out >= 0
    assert not row.final

    # Flushing again changes nothing; ending the stream flushes for good, keeping supply.
    assert demand_flush(drop_id=drop.pk).attempts == 11
    with capture(execute=True):
        services.stream_end(stream_id=drop.stream_id, actor=host)
    row.refresh_from_db()
    assert row.final and row.supply == 3 and row.closed_at is not None
    assert row.attempts == 11 and row.waitlist_waiting == 0


@pytest.mark.redis
@pytest.mark.django_db
def test_a_refusal_still_runs_no_sql_with_demand_capture_on(
    gate_on, django_capture_on_commit_callbacks, django_assert_num_queries
):
    capture = django_capture_on_commit_callbacks
    drop, _ = _live_drop(quantity=1, capture=capture)
    assert _try(drop, UserFactory().pk, "first", capture) == "admitted"
    late = UserFactory().pk
    selectors.drop_routing(drop.pk)  # the process has seen the drop

    with django_assert_num_queries(0), pytest.raises(SoldOut):
        services.drop_reserve(drop_id=drop.pk, customer_id=late, quantity=1, idempotency_key="x")

    counts = inventory.demand.demand_read(allocation_id=drop.allocation_id)
    assert (counts.sold_out, counts.viewers_turned_away) == (1, 1)


@pytest.mark.redis
@pytest.mark.django_db
def test_figures_flushed_before_redis_lost_its_counters_stay_counted(
    gate_on, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    drop, _ = _live_drop(quantity=1, capture=capture)
    for i in range(3):
        _try(drop, UserFactory().pk, f"before-{i}", capture)
    assert demand_flush(drop_id=drop.pk).attempts == 3

    get_redis().delete(*gate.demand_keys(drop.allocation_id))  # Redis lost them
    for i in range(2):
        _try(drop, UserFactory().pk, f"after-{i}", capture)
    row = demand_flush(drop_id=drop.pk)

    assert (row.attempts, row.admitted, row.turned_away_sold_out) == (5, 1, 4)
    assert row.viewers_turned_away == 4


@pytest.mark.django_db
def test_the_periodic_flush_covers_selling_drops_and_finishes_closed_ones(
    django_capture_on_commit_callbacks,
):
    capture = django_capture_on_commit_callbacks
    drop, host = _live_drop(quantity=2, capture=capture)
    _try(drop, UserFactory().pk, "one", capture)

    assert demand_flush_selling() == 1
    assert DropDemand.objects.get(drop=drop).attempts == 1
    services.stream_end(stream_id=drop.stream_id, actor=host)  # no on-commit flush here
    assert demand_flush_selling() == 1
    assert DropDemand.objects.get(drop=drop).final
    assert demand_flush_selling() == 0


# --- the real race ---------------------------------------------------------------------

BUYERS = 30
UNITS = 8


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.celery_worker
@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_demand_is_exact_under_a_real_race_through_the_api_gate_and_worker(
    gate_on, celery_through_broker
):
    drop = live_drop(quantity=UNITS, per_viewer_limit=1, price=Decimal("1.00"), title="Race")
    tokens = [Token.objects.create(user=UserFactory()).key for _ in range(BUYERS)]

    with celery_worker(concurrency=2), asgi_server(CELERY_TASK_ALWAYS_EAGER="false") as server:

        def buy(token: str) -> int:
            return reserve_over_http(server, drop.pk, token, timeout=30).status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=BUYERS) as pool:
            statuses = list(pool.map(buy, tokens))
        wait_until(
            lambda: not Reservation.objects.filter(status="pending").exists(),
            message="the worker never settled the holds",
        )

    assert sorted(statuses) == [202] * UNITS + [409] * (BUYERS - UNITS)
    assert Reservation.objects.filter(status="held").count() == UNITS
    row = demand_flush(drop_id=drop.pk)
    assert (row.attempts, row.admitted, row.buyers) == (BUYERS, UNITS, UNITS)
    assert (row.turned_away_sold_out, row.viewers_turned_away) == (BUYERS - UNITS, BUYERS - UNITS)
    assert row.viewers_tried == BUYERS
    assert (row.supply, row.held, row.unmet_demand) == (UNITS, UNITS, BUYERS - UNITS)
    assert DropDemand.objects.get(drop=drop).total_demand == BUYERS


@pytest.mark.django_db(transaction=True)
def test_a_draws_entrants_are_its_demand_and_its_refusals_are_kept_apart(gate_mode):
    from demand.readers import history_of
    from draws import services as draws
    from draws.exceptions import EntriesClosed
    from draws.models import Entry
    from tests.draws.helpers import draw_drop

    drop = draw_drop(quantity=2, per_viewer_limit=2)
    asked = {UserFactory(): 2, UserFactory(): 1, UserFactory(): 1}
    for viewer, quantity in asked.items():
        draws.entry_submit(drop_id=drop.pk, customer_id=viewer.pk, quantity=quantity)
    draws.draw_close_early(drop_id=drop.pk, actor=drop.stream.host)
    with pytest.raises(EntriesClosed):
        draws.entry_submit(drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1)

    row = demand_flush(drop_id=drop.pk, final=True)

    winners = Entry.objects.filter(draw__drop=drop, status=Entry.Status.WON).count()
    assert 1 <= winners <= 2
    assert (row.entries, row.entry_units, row.entry_winners, row.entries_refused) == (
        3,
        4,
        winners,
        1,
    )
    # The losers queued in draw order; they are entrants, not viewers who only queued.
    assert (row.waitlist_joined, row.waitlist_only) == (3 - winners, 0)
    assert (row.unmet_demand, row.total_demand) == (3 - winners, 3)
    history = history_of(row)
    assert (history.demand, history.units_per_buyer) == (3, pytest.approx(4 / 3))
