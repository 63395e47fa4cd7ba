"""The database pool of a web process, sampled: whether requests wait for a connection.

psycopg's pool keeps its own figures (``get_stats``; ``pop_stats`` also resets the
counting ones); a daemon thread per web process copies them into the process's metrics
every ``METRICS_POOL_SAMPLE_SECONDS``, since a scrape reads files, not live pools (see
``monitoring.registry``). Started by the web entry point (``monitoring.asgi``); Celery
workers use plain connections and have no pool.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connections
from prometheus_client import Counter, Gauge

from core.metrics import PREFIX

logger = logging.getLogger(__name__)

CONNECTIONS = Gauge(
    f"{PREFIX}_db_pool_connections",
    "Connections in a web process's database pool, by state (open, idle).",
    ["state"],
    multiprocess_mode="liveall",
)
WAITING = Gauge(
    f"{PREFIX}_db_pool_requests_waiting",
    "Requests waiting for a free connection of a web process's pool, when sampled.",
    multiprocess_mode="liveall",
)
WAITED = Counter(f"{PREFIX}_db_pool_waits", "Requests for a connection that had to wait for one.")
WAIT_SECONDS = Counter(f"{PREFIX}_db_pool_wait_seconds", "Time spent waiting for a connection.")
TIMEOUTS = Counter(
    f"{PREFIX}_db_pool_timeouts", "Requests for a connection that gave up waiting (errors)."
)

_started = threading.Lock()
_sampler: threading.Thread | None = None


def _pool():
    database = connections["default"]
    if database.vendor != "postgresql" or not database.settings_dict["OPTIONS"].get("pool"):
        return None
    return database.pool


def sample() -> bool:
    """Copy the pool's figures once; False when this process has no pool."""
    pool = _pool()
    if pool is None:
        return False
    counted = pool.pop_stats()
    CONNECTIONS.labels("open").set(counted.get("pool_size", 0))
    CONNECTIONS.labels("idle").set(counted.get("pool_available", 0))
    WAITING.set(counted.get("requests_waiting", 0))
    WAITED.inc(counted.get("requests_queued", 0))
    WAIT_SECONDS.inc(counted.get("requests_wait_ms", 0) / 1000)
    TIMEOUTS.inc(counted.get("requests_errors", 0))
    return True


def _run(every: float) -> None:
    stop = threading.Event()
    while not stop.wait(every):
        try:
            if not sample():
                return  # no pool in this process: nothing to watch
        except Exception:  # a figure missed, never the process
            logger.exception("database pool figures not sampled")


def start_sampling() -> None:
    """Once per process: sample the pool every few seconds in a daemon thread."""
    global _sampler
    every = settings.METRICS_POOL_SAMPLE_SECONDS
    with _started:
        if _sampler is not None or not every:
            return
        _sampler = threading.Thread(target=_run, args=(every,), name="pool-metrics", daemon=True)
        _sampler.start()
