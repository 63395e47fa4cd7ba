"""Liveness and readiness probes, over HTTP and over a websocket.

``/healthz`` says the process serves requests. ``/readyz`` says whether it can do its
job: the database answers, Redis answers (when configured) and at least one Celery
worker answers (unless tasks run eagerly in process). It names what is down.
"""

import logging

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

CELERY_PING_TIMEOUT_SECONDS = 1.0


@require_GET
@never_cache
def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_redis() -> str:
    if not settings.REDIS_URL:
        return "not configured"
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _check_celery() -> str:
    from config.celery import app

    if app.conf.task_always_eager:
        return "eager"
    replies = app.control.ping(timeout=CELERY_PING_TIMEOUT_SECONDS)
    if not replies:
        raise RuntimeError("no Celery worker answered")
    return f"ok ({len(replies)} workers)"


READINESS_CHECKS = {"database": _check_database, "redis": _check_redis, "celery": _check_celery}


@require_GET
@never_cache
def readyz(request):
    checks: dict[str, str] = {}
    down: list[str] = []
    for name, check in READINESS_CHECKS.items():
        try:
            checks[name] = check()
        except Exception as exc:  # any failure means "not ready", never a 500
            logger.warning("readiness check %s failed: %s", name, exc)
            checks[name] = f"down: {exc.__class__.__name__}: {exc}"
            down.append(name)
    if down:
        return JsonResponse(
            {
                "code": "not_ready",
                "detail": f"unavailable: {', '.join(down)}",
                "down": down,
                "checks": checks,
            },
            status=503,
        )
    return JsonResponse({"status": "ok", "checks": checks})


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
