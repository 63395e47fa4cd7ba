"""The live side's own events, for the apps built on it: each at its moment (after
commit for what a transaction decides, never on rollback; at once for a sell-out
announced or a count sent), and a failing listener never breaks the live side."""

from __future__ import annotations

import pytest
from django.db import transaction

from livestream import announce, events
from tests.factories import live_drop

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def heard(monkeypatch):
    """Only this test's listener (and demand's are out of the way)."""
    seen: list = []
    monkeypatch.setattr(events, "_listeners", [seen.append])
    return seen


def test_an_event_of_a_transaction_goes_out_once_it_commits_and_never_on_rollback(heard):
    with transaction.atomic():
        events.emit_on_commit(events.DropClosed(drop_id=1))
        assert heard == []
    assert heard == [events.DropClosed(drop_id=1)]

    with pytest.raises(RuntimeError), transaction.atomic():
        events.emit_on_commit(events.DropClosed(drop_id=2))
        raise RuntimeError("rolled back")
    assert heard == [events.DropClosed(drop_id=1)]


def test_a_failing_listener_is_logged_and_the_others_still_hear(monkeypatch, caplog):
    seen: list = []

    def broken(event):
        raise ValueError("listener bug")

    monkeypatch.setattr(events, "_listeners", [broken, seen.append])
    events.subscribe(seen.append)  # the same listener twice is called once

    events.emit(events.DropSoldOut(drop_id=7))

    assert seen == [events.DropSoldOut(drop_id=7)]
    assert "listener bug" in caplog.text


def test_a_sell_out_is_told_once_until_units_come_back_and_run_out_again(heard):
    drop = live_drop(quantity=1)
    # Units on sale: this also clears a mark a past run left under the same drop id.
    announce._maybe_sold_out(drop.stream_id, drop.pk, remaining=1)
    heard.clear()  # the pin's own event

    announce._maybe_sold_out(drop.stream_id, drop.pk, remaining=0)
    announce._maybe_sold_out(drop.stream_id, drop.pk, remaining=0)
    assert heard == [events.DropSoldOut(drop_id=drop.pk)]

    announce._maybe_sold_out(drop.stream_id, drop.pk, remaining=1)
    announce._maybe_sold_out(drop.stream_id, drop.pk, remaining=0)
    assert heard == [events.DropSoldOut(drop_id=drop.pk)] * 2


def test_a_pin_is_heard_with_its_audience_and_a_count_as_it_is_sent(heard):
    drop = live_drop(quantity=3)

    pinned = [e for e in heard if isinstance(e, events.DropPinned)]
    assert [(e.drop_id, e.stream_id, e.viewers) for e in pinned] == [(drop.pk, drop.stream_id, 0)]

    announce._send_viewers(drop.stream_id)
    assert heard[-1] == events.ViewersCounted(stream_id=drop.stream_id, viewers=0)
