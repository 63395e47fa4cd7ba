import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection
from django.test import Client

from core import health
from tests.processes import asgi_server, database_url, output_of


@pytest.fixture(autouse=True)
def _forget_the_worker_check():
    health._celery_status.clear()
    yield
    health._celery_status.clear()


@pytest.fixture
def workers_not_eager():
    from config.celery import app

    app.conf.task_always_eager = False
    yield app
    app.conf.task_always_eager = True


class FakePing:
    """The worker ping, counted, answering ``replies`` after ``delay`` seconds."""

    def __init__(self):
        self.calls: list[float] = []
        self.delay = 0.0
        self.replies = [{"celery@test": {"ok": "pong"}}]

    def __call__(self, timeout):
        self.calls.append(timeout)
        time.sleep(self.delay)
        return self.replies


@pytest.fixture
def counted_ping(workers_not_eager, monkeypatch):
    ping = FakePing()
    monkeypatch.setattr(workers_not_eager.control, "ping", ping)
    return ping


@pytest.mark.django_db
def test_healthz_says_alive(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_on_the_embedded_default_is_ready(client, settings):
    settings.REDIS_URL = ""

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "not configured", "celery": "eager"},
    }


@pytest.mark.django_db
def test_readyz_names_redis_when_it_does_not_answer_and_logs_why(client, settings, caplog):
    # Nothing listens on port 1.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    with caplog.at_level(logging.WARNING, logger="core.health"):
        response = client.get("/readyz")

    assert response.status_code == 503
    # What is down, and nothing of why: that is for the log.
    assert response.json() == {
        "code": "not_ready",
        "detail": "unavailable: redis",
        "down": ["redis"],
    }
    assert "readiness check redis failed: ConnectionError" in caplog.text


@pytest.mark.django_db
def test_readyz_names_the_database_and_celery_when_they_fail(client, settings, monkeypatch):
    settings.REDIS_URL = ""

    def broken():
        raise RuntimeError("password authentication failed for user app at 10.0.0.5")

    monkeypatch.setitem(health.READINESS_CHECKS, "database", broken)
    monkeypatch.setitem(health.READINESS_CHECKS, "celery", broken)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "code": "not_ready",
        "detail": "unavailable: database, celery",
        "down": ["database", "celery"],
    }
    assert b"10.0.0.5" not in response.content


@pytest.mark.django_db
def test_the_worker_ping_is_shared_by_the_probes_of_a_few_seconds(client, settings, counted_ping):
    settings.REDIS_URL = ""

    answers = [client.get("/readyz") for _ in range(5)]

    assert [a.status_code for a in answers] == [200] * 5
    assert answers[0].json()["checks"]["celery"] == "ok"
    assert counted_ping.calls == [health.CELERY_PING_TIMEOUT_SECONDS]

    health._celery_status.ttl = 0  # the answer is now too old: the next probe pings again
    try:
        client.get("/readyz")
    finally:
        health._celery_status.ttl = health.CELERY_CHECK_CACHE_SECONDS
    assert len(counted_ping.calls) == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_probes_wait_for_one_ping(settings, counted_ping):
    settings.REDIS_URL = ""
    counted_ping.delay = 0.3
    start = threading.Barrier(8)

    def probe(_):
        start.wait()
        return Client().get("/readyz")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(probe, range(8)))

    assert [a.status_code for a in answers] == [200] * 8
    assert len(counted_ping.calls) == 1


@pytest.mark.django_db
def test_no_worker_answering_is_remembered_and_logged_once(client, settings, counted_ping, caplog):
    settings.REDIS_URL = ""
    counted_ping.replies = []

    with caplog.at_level(logging.WARNING, logger="core.health"):
        answers = [client.get("/readyz") for _ in range(3)]

    assert [a.status_code for a in answers] == [503] * 3
    assert answers[0].json() == {
        "code": "not_ready",
        "detail": "unavailable: celery",
        "down": ["celery"],
    }
    assert len(counted_ping.calls) == 1
    assert caplog.text.count("readiness check celery failed: no Celery worker answered") == 1


@pytest.mark.redis
@pytest.mark.django_db
def test_readyz_reports_celery_down_when_no_worker_answers(client, workers_not_eager):
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "code": "not_ready",
        "detail": "unavailable: celery",
        "down": ["celery"],
    }


def test_readyz_rejects_other_methods(client):
    response = client.post("/readyz")

    assert response.status_code == 405


def _connections_named(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name])
        return cursor.fetchone()[0]


@pytest.mark.server
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_probes_on_the_real_server_hold_no_connection_while_the_worker_ping_waits():
    # No worker runs: every ping waits its full second, the worst case for the probe.
    name = f"readyz-{uuid.uuid4().hex[:8]}"
    with asgi_server(
        CELERY_TASK_ALWAYS_EAGER="false",
        DATABASE_URL=f"{database_url()}?application_name={name}",
        LOG_LEVEL="WARNING",
    ) as server:
        with ThreadPoolExecutor(8) as pool:
            probes = [
                pool.submit(httpx.get, f"{server.base_url}/readyz", timeout=30) for _ in range(8)
            ]
            held = []
            deadline = time.monotonic() + 0.7
            time.sleep(0.2)
            while time.monotonic() < deadline:  # inside the ping's second
                held.append(_connections_named(name))
                time.sleep(0.05)
            answers = [probe.result() for probe in probes]
        log = output_of(server.process)

    assert held and max(held) == 0
    assert [a.status_code for a in answers] == [503] * 8
    assert {a.content for a in answers} == {
        b'{"code": "not_ready", "detail": "unavailable: celery", "down": ["celery"]}'
    }
    # One ping for the eight probes.
    assert log.count("readiness check celery failed") == 1, log
