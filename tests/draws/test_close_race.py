"""Entries racing the close on real concurrent connections (threads, each with its own
PostgreSQL connection, through the API), with Redis deciding and with the database
alone: every entry answered 201 before the close is in the draw, none after; nothing is
oversold; the line is in draw order. And the faults between an entry accepted by Redis
and its row: the draw waits for a slow write, leaves out one never written (its late
write refused), and entries go to the database when Redis is away or lost the window."""

from __future__ import annotations

import threading
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from rest_framework.test import APIClient

from draws import services, window
from draws.exceptions import EntriesClosed
from draws.models import Draw, Entry
from tests.concurrency import run_together
from tests.draws.helpers import assert_draw_follows_its_rows, draw_drop
from tests.factories import UserFactory

THREADS, PER_THREAD, UNITS = 12, 6, 10


def _enter(user, drop_id: int, quantity: int = 1):
    api = APIClient()
    api.force_authenticate(user)
    return api.post(f"/api/drops/{drop_id}/entries/", {"quantity": quantity}, format="json")


@pytest.mark.django_db(transaction=True)
def test_entries_racing_the_close_are_in_the_draw_exactly_when_answered_201(gate_mode):
    drop = draw_drop(quantity=UNITS, per_viewer_limit=2)
    viewers = [[UserFactory() for _ in range(PER_THREAD)] for _ in range(THREADS)]
    answered = []
    half = threading.Event()
    lock = threading.Lock()

    def work(index: int):
        if index == THREADS:  # the closer: once about half the entries are answered
            half.wait(timeout=30)
            return services.draw_close_early(drop_id=drop.pk, actor=drop.stream.host)
        for i, viewer in enumerate(viewers[index]):
            response = _enter(viewer, drop.pk, quantity=1 + (i % 2))
            with lock:
                answered.append((viewer.pk, response.status_code, response.json()))
                if len(answered) >= THREADS * PER_THREAD // 2:
                    half.set()
        return None

    results = run_together(THREADS + 1, work)

    assert not [r for r in results if isinstance(r, BaseException)], results
    codes = {(status, body.get("code")) for _, status, body in answered}
    assert codes <= {(201, None), (409, "entries_closed")}, codes
    accepted = {body["id"]: viewer for viewer, status, body in answered if status == 201}
    closed_out = {viewer for viewer, status, _ in answered if status == 409}
    assert accepted and closed_out, "the close did not fall inside the entries"
    draw = Draw.objects.get(drop=drop)
    rows = assert_draw_follows_its_rows(draw, units=UNITS)
    # Every entry answered 201 is in the draw, and nothing else is.
    assert set(rows) == set(accepted)
    assert {row.customer_id for row in rows.values()}.isdisjoint(closed_out)


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_the_draw_waits_for_an_accepted_entry_still_being_written(gate_on, monkeypatch):
    drop = draw_drop(quantity=1)
    slow = UserFactory()
    write = services._write_entries

    def slow_write(batch):
        time.sleep(0.5)  # accepted by Redis, its row not committed yet
        return write(batch)

    monkeypatch.setattr(services._writer, "work", slow_write)
    draw_id = Draw.objects.get(drop=drop).pk

    def work(index: int):
        if index == 0:
            return _enter(slow, drop.pk).status_code
        while window.window_in_flight(draw_id=draw_id) == 0:
            time.sleep(0.01)
        return services.draw_close_early(drop_id=drop.pk, actor=drop.stream.host)

    status, draw = run_together(2, work)

    assert status == 201
    assert draw.entry_count == 1
    assert Entry.objects.get(draw=draw).status == "won"


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_an_entry_never_written_is_left_out_and_its_late_write_refused(gate_on, settings):
    settings.DRAW_DURABLE_WAIT_SECONDS = 0.2
    drop = draw_drop(quantity=2)
    draw_id = Draw.objects.get(drop=drop).pk
    kept, lost = UserFactory(), UserFactory()
    assert _enter(kept, drop.pk).status_code == 201
    # Redis accepts it, then its process dies before the row is written (never answered).
    decision = window.window_enter(draw_id=draw_id, customer_id=lost.pk, quantity=1)
    assert decision.kind == window.ACCEPTED

    draw = services.draw_close_early(drop_id=drop.pk, actor=drop.stream.host)

    assert draw.entry_count == 1
    assert list(Entry.objects.values_list("customer_id", flat=True)) == [kept.pk]
    late = services._writer.submit(services.Pending(draw_id, lost.pk, 1, decision.entered_at))
    assert isinstance(late, EntriesClosed)
    retry = _enter(lost, drop.pk)
    assert (retry.status_code, retry.json()["code"]) == (409, "entries_closed")
    assert Entry.objects.count() == 1


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_with_redis_away_the_database_takes_entries_once_per_viewer(gate_on, monkeypatch):
    drop = draw_drop(quantity=1)

    def away(**_kwargs):
        raise RedisConnectionError("Redis is down")

    monkeypatch.setattr(window, "window_enter", away)
    viewer = UserFactory()

    first, again = _enter(viewer, drop.pk), _enter(viewer, drop.pk)

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert Entry.objects.count() == 1


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_window_redis_lost_is_decided_by_the_database_and_written_again(gate_on):
    from core.redis import get_redis

    drop = draw_drop(quantity=1)
    draw_id = Draw.objects.get(drop=drop).pk
    entrant = UserFactory()
    assert _enter(entrant, drop.pk).status_code == 201
    get_redis().delete(*[f"draw:{draw_id}:{k}" for k in ("window", "entrants", "inflight")])

    assert _enter(entrant, drop.pk).status_code == 200  # the unique index: still one entry
    assert _enter(UserFactory(), drop.pk).status_code == 201
    assert get_redis().exists(f"draw:{draw_id}:window")
    assert Entry.objects.count() == 2
