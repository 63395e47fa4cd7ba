"""The Redis cache keeps one connection pool per process: Django makes a cache backend
per thread, and under ASGI each request runs on a thread of its own, so with the stock
backend every request opened a Redis connection of its own."""

from __future__ import annotations

import threading

import pytest
from django.core.cache import caches

pytestmark = pytest.mark.redis


def _backend_in_a_new_thread():
    found = {}

    def run():
        cache = caches["default"]
        cache.set("pool-probe", 1, 30)
        found["backend"] = cache
        found["pool"] = cache._cache._get_connection_pool(write=True)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return found


def test_every_thread_shares_the_one_pool_and_its_connections():
    first = _backend_in_a_new_thread()
    opened = len(first["pool"]._connections)
    second = _backend_in_a_new_thread()

    assert first["backend"] is not second["backend"]  # Django's per-thread backends
    assert first["pool"] is second["pool"]
    # The second thread's write reused a connection the first one gave back.
    assert len(second["pool"]._connections) == opened
