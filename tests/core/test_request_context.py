"""The request id: taken from a sane ``X-Request-ID`` or made fresh, returned on the
response, on every log line of the request, and carried into the Celery tasks it
queues, on the real server and worker with JSON logs."""

from __future__ import annotations

import json
import logging
import re
import uuid
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from core.request_context import RequestId, RequestIdFilter, current_request_id
from inventory.models import Reservation
from tests.factories import UserFactory, live_drop
from tests.processes import asgi_server, celery_worker, reserve_over_http, wait_until


async def _call(headers, *, type_="http"):
    seen = {}

    async def app(scope, receive, send):
        seen["inside"] = current_request_id.get()
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
        RequestIdFilter().filter(record)
        seen["on_a_record"] = record.request_id
        await send({"type": "http.response.start", "status": 204, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b""})

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": type_, "method": "GET", "path": "/x", "headers": headers}
    await RequestId(app)(scope, None, send)
    return seen, sent


async def test_a_sane_client_request_id_is_kept_and_returned(settings):
    settings.LOG_REQUESTS = False
    seen, sent = await _call([(b"x-request-id", b"edge-7f3a.01")])

    assert seen == {"inside": "edge-7f3a.01", "on_a_record": "edge-7f3a.01"}
    assert sent[0]["headers"] == [(b"x-a", b"1"), (b"x-request-id", b"edge-7f3a.01")]
    assert current_request_id.get() is None  # reset once the request is done


@pytest.mark.parametrize(
    "given", [b"", b"x" * 65, b"has space", b"new\nline", "\u00e9".encode("latin-1")]
)
async def test_an_unusable_request_id_is_replaced_by_a_fresh_one(settings, given):
    settings.LOG_REQUESTS = False
    seen, sent = await _call([(b"x-request-id", given)])

    fresh = seen["inside"]
    assert fresh != given.decode("latin-1")
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", fresh)
    assert sent[0]["headers"][-1] == (b"x-request-id", fresh.encode())
    again, _ = await _call([(b"x-request-id", given)])
    assert again["inside"] != fresh  # each request its own


async def test_a_record_outside_any_request_says_so():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    RequestIdFilter().filter(record)

    assert record.request_id == "-"


def _json_lines(path: str) -> list[dict]:
    lines = []
    for line in Path(path).read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue  # the servers' own (uvicorn's, Celery's banner) stay plain
    return lines


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.celery_worker
@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_a_reserve_request_s_id_reaches_the_worker_s_json_log_lines(celery_through_broker):
    drop = live_drop(quantity=3, title="Logs")
    token = Token.objects.create(user=UserFactory()).key
    request_id = f"test-{uuid.uuid4().hex[:12]}"
    json_logs = {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}

    with (
        celery_worker(concurrency=1, loglevel="INFO", **json_logs) as worker,
        asgi_server(CELERY_TASK_ALWAYS_EAGER="false", LOG_REQUESTS="true", **json_logs) as server,
    ):
        answer = reserve_over_http(server, drop.pk, token, **{"X-Request-ID": request_id})
        assert answer.status_code == 202, answer.text
        assert answer.headers["X-Request-ID"] == request_id
        wait_until(lambda: Reservation.objects.filter(status="held").exists())
        settled = wait_until(
            lambda: [
                line
                for line in _json_lines(worker.log_path)
                if line.get("logger") == "inventory.tasks"
            ],
            message="the worker never logged the settle",
        )
        web = _json_lines(server.process.log_path)

    assert settled[0]["request_id"] == request_id
    assert settled[0]["level"] == "INFO"
    assert "1 held" in settled[0]["message"]
    [access] = [line for line in web if line.get("logger") == "access" and line["method"] == "POST"]
    assert access["request_id"] == request_id
    assert access["status"] == 202
    assert access["path"] == f"/api/drops/{drop.pk}/reservations/"
    assert access["duration_ms"] >= 0
