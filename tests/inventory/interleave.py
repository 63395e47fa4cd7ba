"""Forced interleavings: a second path run inside the first at the exact point of danger.

``inside(host, point, guest)`` runs ``host()`` in this thread; the first time this thread
passes ``point`` (a dotted function path), ``guest()`` starts in a thread of its own,
with its own database connection, and the host goes on only once the guest has finished
or is waiting for a lock the host holds (seen in ``pg_locks``). Both outcomes are
returned: the value or the exception each one ended with. A deadlock shows as
PostgreSQL's ``deadlock detected`` in one of them; a lost update as the invariants
failing afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from unittest import mock

from django.db import connection

# How long the host waits for the guest to finish or block before going on anyway.
GUEST_GRACE_SECONDS = 5.0


@dataclass
class Outcome:
    host: Any
    guest: Any
    guest_ran_inside: bool


def _blocked(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", [pid])
        return cursor.fetchone()[0] > 0


def _resolve(dotted: str):
    """The object holding the last name of ``dotted`` (a module, or a class in one)."""
    import importlib

    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:-1]:
            owner = getattr(owner, attribute)
        return owner, parts[-1]
    raise ImportError(dotted)


def inside(
    host: Callable[[], Any],
    *,
    point: str,
    guest: Callable[[], Any],
    after: bool = True,
) -> Outcome:
    """Run ``guest`` inside ``host`` when the host first calls ``point`` (right after that
    call returns, or just before it with ``after=False``)."""
    host_thread = threading.get_ident()
    result: dict[str, Any] = {}
    started = threading.Event()
    pid_known = threading.Event()
    done = threading.Event()
    fired = False

    def run_guest() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                result["pid"] = cursor.fetchone()[0]
            pid_known.set()
            result["guest"] = guest()
        except BaseException as exc:  # reported to the test, never swallowed
            result["guest"] = exc
        finally:
            pid_known.set()
            done.set()
            connection.close()

    def release_guest() -> None:
        thread = threading.Thread(target=run_guest)
        result["thread"] = thread
        thread.start()
        started.set()
        pid_known.wait(GUEST_GRACE_SECONDS)
        deadline = time.monotonic() + GUEST_GRACE_SECONDS
        while not done.is_set() and time.monotonic() < deadline:
            if "pid" in result and _blocked(result["pid"]):
                return
            time.sleep(0.01)

    module, name = _resolve(point)
    original = getattr(module, name)

    def hooked(*args, **kwargs):
        nonlocal fired
        first = not fired and threading.get_ident() == host_thread
        if first:
            fired = True
            if not after:
                release_guest()
        value = original(*args, **kwargs)
        if first and after:
            release_guest()
        return value

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(module, name, hooked))
        try:
            result["host"] = host()
        except BaseException as exc:
            result["host"] = exc
        if not fired:
            release_guest()  # the host never passed the point: run the guest after it
    result["thread"].join(60)
    assert not result["thread"].is_alive(), "the guest did not finish"
    return Outcome(host=result["host"], guest=result["guest"], guest_ran_inside=fired)
