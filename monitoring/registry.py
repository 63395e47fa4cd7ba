"""Which registry a scrape reads, with several processes behind one address.

uvicorn's workers and Celery's prefork children are separate processes, each with its
own counters. With ``PROMETHEUS_MULTIPROC_DIR`` set (it must be set before the process
starts: prometheus_client reads it at import), every process writes its figures to
files there and a scrape sums them (prometheus_client's multiprocess mode); without it
(the embedded single-process run) the process's own registry is read. The figures read
from the database and Redis at scrape time (``monitoring.collectors``) are added to
either, once.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

from monitoring.collectors import LiveEventCollector

_live_event = LiveEventCollector()
_registered_on_default = False


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def scrape_registry() -> CollectorRegistry:
    """The registry one scrape reads: every process's files, or this process's own."""
    global _registered_on_default
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(_live_event)
        return registry
    if not _registered_on_default:
        REGISTRY.register(_live_event)
        _registered_on_default = True
    return REGISTRY


def forget_dead_processes() -> None:
    """Drop the live gauges (open sockets) of processes that are gone, as a restarted
    worker leaves them; counters of dead processes stay, so totals never go back. The
    directory is one machine's (a container's): its pids are this machine's."""
    directory = multiprocess_dir()
    if not directory:
        return
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
