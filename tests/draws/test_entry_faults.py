"""Nothing answered is lost, whatever dies between an entry and its draw: viewers enter
through the real server (its entry door answers once the rows are committed) while
the web process is killed, or while Redis loses the draw's window. Every entry
answered 201 has its row and is in the draw, one entry per viewer, none after the
close; an entry Redis accepted that no process lived to write was never answered and
is left out."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from core.redis import get_redis
from draws import services, window
from draws.models import Draw
from tests.draws.helpers import assert_draw_follows_its_rows, draw_drop
from tests.processes import asgi_server, burst_with_a_fault

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.server,
]

VIEWERS = 120
UNITS = 10
TRIES = 2  # each viewer taps twice: the second is a repeat


def _viewers() -> dict[str, int]:
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"faulty-{i}") for i in range(VIEWERS)]
    )
    made = Token.objects.bulk_create([Token(user=u, key=uuid.uuid4().hex) for u in users])
    return {t.key: t.user_id for t in made}


def _enter_all(base_url: str, drop_id: int, tokens: list[str], *, during) -> list[tuple]:
    """Every viewer taps TRIES times, all at once; ``during`` runs once some entries are
    answered. Returns (token, status, body) for each answer received."""

    def enter(http: httpx.Client, token: str) -> httpx.Response:
        return http.post(
            f"/api/drops/{drop_id}/entries/",
            json={"quantity": 1},
            headers={"Authorization": f"Token {token}"},
        )

    answers = burst_with_a_fault(base_url, tokens, enter, tries=TRIES, during=during)
    return [(token, response.status_code, response.json()) for token, response in answers]


def _assert_every_answer_is_in_the_draw(drop, tokens: dict[str, int], answers) -> Draw:
    """Draws now (as ops closing entries early) and checks the draw against the answers."""
    statuses = {status for _, status, _ in answers}
    assert statuses <= {200, 201, 503}, statuses  # 503: the database away for a moment
    entered: dict[int, int] = {}  # customer -> their entry's id, from every answer
    for token, status, body in answers:
        if status in (200, 201):
            customer = tokens[token]
            assert entered.setdefault(customer, body["id"]) == body["id"], "two entries"
    assert entered, "nothing was entered"

    draw = services.draw_close_early(drop_id=drop.pk, actor=drop.stream.host)

    rows = assert_draw_follows_its_rows(draw, units=UNITS)
    # Every answered entry is a row of the draw, its viewer's only one.
    assert set(entered.values()) <= set(rows)
    assert all(rows[pk].customer_id == customer for customer, pk in entered.items())
    return draw


def test_a_web_process_killed_mid_entries_loses_no_answered_entry(gate_on, settings):
    # Entries Redis accepted in the killed process are never written: the draw waits
    # this long for them, then leaves them out.
    settings.DRAW_DURABLE_WAIT_SECONDS = 1
    tokens = _viewers()
    drop = draw_drop(quantity=UNITS, entry_seconds=600)

    with asgi_server() as server:

        def kill_the_server():
            time.sleep(0.05)
            server.process.kill()  # mid-batch, mid-request: no shutdown of any kind

        answers = _enter_all(server.base_url, drop.pk, list(tokens), during=kill_the_server)

    assert server.process.returncode is not None
    created = sum(1 for _, status, _ in answers if status == 201)
    assert 0 < created < VIEWERS, "the kill did not fall inside the entries"
    _assert_every_answer_is_in_the_draw(drop, tokens, answers)


def test_the_window_lost_mid_entries_keeps_one_entry_per_viewer_and_every_answer(gate_on):
    tokens = _viewers()
    drop = draw_drop(quantity=UNITS, entry_seconds=600)
    redis = get_redis()
    draw_id = Draw.objects.get(drop=drop).pk

    def lose_the_window():
        redis.delete(*window.window_keys(draw_id))  # Redis restarted without persistence

    with asgi_server() as server:
        answers = _enter_all(server.base_url, drop.pk, list(tokens), during=lose_the_window)

    # Everyone was answered, the repeats with the entry they had.
    assert sum(1 for _, status, _ in answers if status == 201) == VIEWERS
    assert len(answers) == VIEWERS * TRIES
    _assert_every_answer_is_in_the_draw(drop, tokens, answers)
