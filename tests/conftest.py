"""Shared fixtures and the service markers.

Tests marked ``postgres`` or ``redis`` need those servers (DATABASE_URL / REDIS_URL).
Locally, without them, such tests are skipped with a reason. With REQUIRE_SERVICES=1
(CI) a missing service makes them FAIL instead: CI never passes by skipping.
"""

from __future__ import annotations

import os

import pytest
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import connections

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES", "") not in ("", "0", "false")

# Redis keys the project writes; wiped before each test so ids reused by a fresh test
# database never meet state from an earlier run.
REDIS_TEST_KEY_PATTERNS = (
    "gate:*",
    "api:*",
    "cache:*",
    "stream:*",
    "settle:*",
    "asgi*",
    "draw:*",
    "rules:*",
)


def _postgres_missing() -> str | None:
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return "needs PostgreSQL: set DATABASE_URL=postgres://..."
    return None


def _redis_missing() -> str | None:
    if not settings.REDIS_URL:
        return "needs Redis: set REDIS_URL=redis://..."
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis at {settings.REDIS_URL} does not answer: {exc}"
    return None


_MARKER_CHECKS = {
    "postgres": _postgres_missing,
    "redis": _redis_missing,
    "celery_worker": _redis_missing,
}


def pytest_runtest_setup(item):
    for marker, check in _MARKER_CHECKS.items():
        if item.get_closest_marker(marker) is None:
            continue
        reason = check()
        if reason is None:
            continue
        if REQUIRE_SERVICES:
            pytest.fail(
                f"REQUIRE_SERVICES is set but a service is missing: {reason}", pytrace=False
            )
        pytest.skip(reason)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's test database, and before it is dropped: the connection that
    asgiref's one thread for thread-sensitive ``sync_to_async`` calls (consumers, the
    door, run in this process) still holds closed, or the drop fails with "being
    accessed by other users" and leaves the database behind."""
    yield
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


@pytest.fixture(autouse=True)
def _clean_caches():
    """Empty the project's Redis keys (when Redis is configured) and the local cache
    before each test."""
    from django.core.cache import cache

    if not settings.REDIS_URL:
        cache.clear()  # local memory; with Redis the cache's keys are deleted below
    else:
        from core.redis import get_redis

        client = get_redis()
        try:
            for pattern in REDIS_TEST_KEY_PATTERNS:
                keys = list(client.scan_iter(match=pattern, count=1000))
                if keys:
                    client.delete(*keys)
        except Exception as exc:  # reported by the redis marker where it matters
            if REQUIRE_SERVICES:
                raise
            print(f"Redis cleanup skipped: {exc}")
    yield


@pytest.fixture
def gate_off(settings):
    """Run with the database alone guarding the stock, as on the embedded default."""
    settings.INVENTORY_GATE_ENABLED = False


@pytest.fixture
def gate_on(settings):
    """The Redis gate in front (needs the test to be marked ``redis``)."""
    settings.INVENTORY_GATE_ENABLED = True
    assert settings.REDIS_URL, "gate_on needs REDIS_URL"


@pytest.fixture(params=["gate_off", pytest.param("gate_on", marks=pytest.mark.redis)])
def gate_mode(request) -> str:
    """Run the test in both modes of the stock's guard, each set up here: ``gate_off``,
    then ``gate_on`` (that run is marked ``redis``). The value is the mode's name; check
    the gate with ``tests.inventory.invariants.assert_gate_agrees``."""
    request.getfixturevalue(request.param)
    return request.param


class _Clock:
    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def presence_clock(monkeypatch):
    """Presence's clock, stopped at a fixed moment; move it with ``.now += seconds``.
    Watch times of the process's own (Redis-less) presence start afresh."""
    from livestream import presence

    fake = _Clock(1_900_000_000.0)
    monkeypatch.setattr(presence, "time", fake)
    presence._local_watch.clear()
    return fake


@pytest.fixture
def celery_through_broker(settings):
    """Make ``.delay()`` in this process go to the real broker (a worker must run)."""
    from config.celery import app

    assert settings.CELERY_BROKER_URL.startswith("redis"), "needs REDIS_URL as the broker"
    app.conf.task_always_eager = False
    app.control.purge()
    yield app
    app.conf.task_always_eager = True


@pytest.fixture(autouse=True)
def _forget_drop_routing():
    """Drop routing and streams by slug are cached per process; ids and slugs are
    reused across tests."""
    from draws.services import draw_facts_forget
    from livestream.announce import _drop_of_allocation
    from livestream.broadcast import forget_local_versions
    from livestream.consumers import forget_cached_streams
    from livestream.selectors import drop_routing_cache_clear

    drop_routing_cache_clear()
    draw_facts_forget()
    forget_local_versions()
    forget_cached_streams()
    _drop_of_allocation.cache_clear()
    yield
