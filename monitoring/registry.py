"""Which registry a scrape reads, with several processes behind one address.

uvicorn's workers and Celery's prefork children are separate processes, each with its
own counters. With ``PROMETHEUS_MULTIPROC_DIR`` set (it must be set before the process
starts: prometheus_client reads it at import), every process writes its figures to
files there and a scrape sums them (prometheus_client's multiprocess mode); without it
(the embedded single-process run) the process's own registry is read. The figures read
from the database and Redis at scrape time (``monitoring.collectors``) are added to
either by the web processes' ``/metrics`` only.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

from monitoring.collectors import LiveEventCollector

_live_event = LiveEventCollector()


class _Joined:
    """What one scrape reads: the processes' own figures, then the shared ones."""

    def __init__(self, *sources):
        self.sources = sources

    def collect(self):
        for source in self.sources:
            yield from source.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def scrape_registry(*, shared_state: bool = True):
    """What one scrape reads: every process's files, or this process's own registry;
    with ``shared_state``, the figures read from the database and Redis too. The web
    processes serve those and the Celery worker's port does not: Prometheus scrapes
    both, and a panel summing one truth served twice would show it doubled."""
    if multiprocess_dir():
        own = CollectorRegistry()
        multiprocess.MultiProcessCollector(own)
    else:
        own = REGISTRY
    return _Joined(own, _live_event) if shared_state else own


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
