"""Liveness and readiness probes, over HTTP and over a websocket.

``/healthz`` says the process serves requests. ``/readyz`` says whether it can do its
job: the database answers, Redis answers (when configured) and at least one Celery
worker answers (unless tasks run eagerly in process). It names what is down, and only
that: the reasons go to the log, not to whoever asks.

The probe is public, so it must cost little however often it is called. The worker
ping waits up to a second: its answer is kept for ``CELERY_CHECK_CACHE_SECONDS`` per
process and refreshed by one caller at a time (the others get the last answer, or wait
for the first one). The ping and the Redis check run in threads of their own, and the
database is checked last and its connection given back at once, so no probe holds a
pooled connection while it waits.
"""

import logging
import threading
import time
from collections.abc import Callable

import redis
from asgiref.sync import sync_to_async
from celery import current_app
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

CELERY_PING_TIMEOUT_SECONDS = 1.0
CELERY_CHECK_CACHE_SECONDS = 5.0


class CheckDown(Exception):
    """A check found its dependency down and has logged why already."""


@require_GET
@never_cache
def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # Back to the pool now, not at the end of the response. Inside a transaction
        # (a test's) the connection is not ours to give back.
        if not connection.in_atomic_block:
            connection.close()
    return "ok"


def _check_redis() -> str:
    if not settings.REDIS_URL:
        return "not configured"
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


class SharedResult:
    """A value computed at most once per ``ttl`` seconds in this process, by one caller
    at a time. Meanwhile the others get the last value at once, or, before there is
    one, wait for it: a flood of callers costs one computation per ``ttl``."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._entry: tuple[object, float] | None = None  # (value, monotonic time)
        self._refreshing = threading.Lock()

    def _fresh(self, entry) -> bool:
        return entry is not None and time.monotonic() - entry[1] < self.ttl

    def get(self, compute: Callable[[], object]):
        entry = self._entry
        if self._fresh(entry):
            return entry[0]
        if not self._refreshing.acquire(blocking=entry is None):
            return entry[0]  # another caller is refreshing: the last answer stands
        try:
            entry = self._entry
            if self._fresh(entry):  # refreshed while this caller waited
                return entry[0]
            value = compute()
            self._entry = (value, time.monotonic())
            return value
        finally:
            self._refreshing.release()

    def clear(self) -> None:
        self._entry = None


_celery_status = SharedResult(ttl=CELERY_CHECK_CACHE_SECONDS)


def _ping_workers() -> str | None:
    try:
        replies = current_app.control.ping(timeout=CELERY_PING_TIMEOUT_SECONDS)
    except Exception as exc:
        logger.warning("readiness check celery failed: %s: %s", exc.__class__.__name__, exc)
        return None
    if not replies:
        logger.warning("readiness check celery failed: no Celery worker answered")
        return None
    return "ok"


def _check_celery() -> str:
    if current_app.conf.task_always_eager:
        return "eager"
    status = _celery_status.get(_ping_workers)
    if status is None:
        raise CheckDown()
    return status


READINESS_CHECKS = {"database": _check_database, "redis": _check_redis, "celery": _check_celery}
# What may wait on the network runs first, each in a thread of its own; the database
# last, on the request's own thread (where its connection lives).
RUN_ORDER = ("celery", "redis", "database")


def _run(name: str) -> str | None:
    """The check's status, or None when its dependency is down (the reason logged)."""
    try:
        return READINESS_CHECKS[name]()
    except CheckDown:
        return None
    except Exception as exc:  # any failure means "not ready", never a 500
        logger.warning("readiness check %s failed: %s: %s", name, exc.__class__.__name__, exc)
        return None


@require_GET
@never_cache
async def readyz(request):
    statuses: dict[str, str | None] = {}
    for name in RUN_ORDER:
        statuses[name] = await sync_to_async(_run, thread_sensitive=name == "database")(name)
    down = [name for name in READINESS_CHECKS if statuses[name] is None]
    if down:
        return JsonResponse(
            {"code": "not_ready", "detail": f"unavailable: {', '.join(down)}", "down": down},
            status=503,
        )
    return JsonResponse(
        {"status": "ok", "checks": {name: statuses[name] for name in READINESS_CHECKS}}
    )


class HealthConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/healthz/``: proves websocket upgrades reach this process (for probes and
    load balancers). Sends ``{"type": "ok"}`` on connect and answers ``ping``."""

    async def connect(self):
        await self.accept()
        await self.send_json({"type": "ok"})

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_json({"type": "error", "code": "unknown_type"})
