"""The web process's own figures: the reserve requests', taken at the outer ASGI layer
(whoever answers, the front door from memory and Redis or Django, the status and the
time to it are the client's), and its database pool's, sampled from when it starts."""

from __future__ import annotations

import re
import time

from prometheus_client import Counter, Histogram

from core.metrics import PREFIX
from monitoring import pool

RESERVE_PATH = re.compile(r"^/api/drops/\d+/reservations/$")

RESERVE_REQUESTS = Counter(
    f"{PREFIX}_reserve_requests", "Reserve requests answered, by HTTP status.", ["status"]
)
RESERVE_SECONDS = Histogram(
    f"{PREFIX}_reserve_request_duration_seconds",
    "Time from a reserve request's arrival to its answer's status line.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# Each status's child, found once: ``labels()`` costs more than the increment itself.
_by_status: dict[int, object] = {}


def _counter_of(status: int):
    child = _by_status.get(status)
    if child is None:
        child = _by_status[status] = RESERVE_REQUESTS.labels(str(status))
    return child


class ReserveRequestMetrics:
    """ASGI middleware: counts and times ``POST /api/drops/{id}/reservations/``; every
    other request passes untouched."""

    def __init__(self, app):
        self.app = app
        # Made once per web process: its database pool is watched from now on.
        pool.start_sampling()

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not RESERVE_PATH.match(scope["path"])
        ):
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def observed_send(message):
            if message["type"] == "http.response.start":
                RESERVE_SECONDS.observe(time.perf_counter() - started)
                _counter_of(message["status"]).inc()
            await send(message)

        return await self.app(scope, receive, observed_send)
