"""The draw at the close: the task due then does nothing before it and draws after it,
once; the periodic sweep draws whatever closed and was not drawn; runners racing on real
connections draw once."""

from __future__ import annotations

import pytest
from django.utils import timezone

from draws import services, tasks, window
from draws.models import Draw, Entry
from inventory.models import Reservation
from tests.concurrency import run_together
from tests.draws.helpers import draw_drop
from tests.factories import UserFactory


def _close_in_the_past(draw: Draw) -> None:
    """As if the entry window had run out: the row's close and Redis's (at the opening,
    the earliest a close may be)."""
    past = Draw.objects.get(pk=draw.pk).entries_opened_at
    Draw.objects.filter(pk=draw.pk).update(entries_close_at=past)
    window.window_prime(draw_id=draw.pk, close_at=past)


@pytest.mark.django_db(transaction=True)
def test_the_task_due_at_the_close_draws_once(gate_on):
    drop = draw_drop(quantity=1)
    draw = Draw.objects.get(drop=drop)
    services.entry_submit(drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1)

    assert tasks.run_draw(draw.pk) is False  # entries still open
    assert Draw.objects.get(pk=draw.pk).status == "open"
    _close_in_the_past(draw)
    assert tasks.run_draw(draw.pk) is True
    assert tasks.run_draw(draw.pk) is True  # drawn already: nothing changes
    assert Draw.objects.get(pk=draw.pk).status == "drawn"
    assert Reservation.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_sweep_draws_what_closed_and_leaves_what_is_open(gate_on):
    closed, still_open = draw_drop(quantity=1), draw_drop(quantity=1)
    for drop in (closed, still_open):
        services.entry_submit(drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1)
    _close_in_the_past(Draw.objects.get(drop=closed))

    assert tasks.run_due() == {"drawn": 1, "counts": 0}
    assert tasks.run_due()["drawn"] == 0

    assert Draw.objects.get(drop=closed).status == "drawn"
    assert Draw.objects.get(drop=still_open).status == "open"
    assert Entry.objects.get(draw__drop=still_open).status == "entered"


@pytest.mark.django_db(transaction=True)
def test_runners_racing_on_real_connections_draw_once(gate_mode):
    drop = draw_drop(quantity=2)
    for _ in range(5):
        services.entry_submit(drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1)
    draw = Draw.objects.get(drop=drop)
    Draw.objects.filter(pk=draw.pk).update(entries_close_at=timezone.now())

    results = run_together(4, lambda _i: services.draw_run(draw_id=draw.pk))

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert len({tuple(r.winners) for r in results}) == 1
    assert Reservation.objects.count() == 2
    assert Entry.objects.filter(status="won").count() == 2
