"""Entries racing the close on the real stack: two uvicorn processes (their entry doors
on), a Celery worker drawing at the close's eta, Redis and PostgreSQL. Viewers keep
entering through the close: every entry answered 201 is in the draw, none answered
after it, nothing is oversold, and the line's order is the draw's."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from draws.models import Draw
from livestream import services as live
from tests.draws.helpers import assert_draw_follows_its_rows, draw_drop
from tests.processes import asgi_server, celery_worker, wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.celery_worker,
    pytest.mark.server,
]

VIEWERS = 240
UNITS = 6
ENTRY_SECONDS = 10  # the contract's shortest window


async def _enter_through_the_close(server, drop_id: int, tokens: list[str], close_at: float):
    """Viewers enter one after another, spread from now until 2 s past the close, a few
    dozen at a time at most."""
    spread = close_at + 2 - time.time()
    gate = asyncio.Semaphore(32)
    answers = []

    async def one(http, index, token):
        await asyncio.sleep(spread * index / len(tokens))
        async with gate:
            response = await http.post(
                f"/api/drops/{drop_id}/entries/",
                json={"quantity": 1 + index % 2},
                headers={"Authorization": f"Token {token}"},
            )
        answers.append((token, response.status_code, response.json()))

    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        await asyncio.gather(*(one(http, i, token) for i, token in enumerate(tokens)))
    return answers


@pytest.mark.django_db(transaction=True)
def test_entries_racing_the_close_through_the_door_are_drawn_by_the_worker(
    celery_through_broker, gate_on
):
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"entrant-{i}") for i in range(VIEWERS)]
    )
    made = Token.objects.bulk_create([Token(user=u, key=uuid.uuid4().hex) for u in users])
    tokens = {t.key: t.user_id for t in made}
    drop = draw_drop(quantity=UNITS, per_viewer_limit=2, entry_seconds=ENTRY_SECONDS, pin=False)

    with (
        celery_worker(concurrency=2),
        asgi_server(workers=2, CELERY_TASK_ALWAYS_EAGER="false") as server,
    ):
        live.drop_pin(drop_id=drop.pk, actor=drop.stream.host)  # the close goes to the broker
        close_at = Draw.objects.get(drop=drop).entries_close_at.timestamp()
        answers = asyncio.run(_enter_through_the_close(server, drop.pk, list(tokens), close_at))
        draw = wait_until(
            lambda: Draw.objects.filter(drop=drop, status="drawn").first(),
            timeout=30,
            message="the worker never drew",
        )

    codes = {(status, body.get("code")) for _, status, body in answers}
    assert codes <= {(201, None), (409, "entries_closed")}, codes
    accepted = {body["id"]: tokens[token] for token, status, body in answers if status == 201}
    refused = {tokens[token] for token, status, _ in answers if status == 409}
    assert accepted and refused, "the close did not fall inside the entries"
    rows = assert_draw_follows_its_rows(draw, units=UNITS)
    assert set(rows) == set(accepted)
    assert {rows[pk].customer_id for pk in rows} == set(accepted.values())
