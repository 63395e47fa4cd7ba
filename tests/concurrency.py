"""Real concurrency: threads with their own database connections, released together."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


def run_together(count: int, work: Callable[[int], Any], *, timeout: float = 120) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads that start at the same instant (a barrier).

    Each thread uses its own database connection (Django opens one per thread) and
    closes it at the end. Returns each thread's result or the exception it raised.
    """
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def runner(index: int) -> None:
        try:
            # Open the connection before the barrier so the race is on the statements.
            connection.ensure_connection()
            barrier.wait(timeout=timeout)
            results[index] = work(index)
        except BaseException as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a racing thread did not finish"
    return results
