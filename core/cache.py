"""Django's Redis cache with one client, so one connection pool, per process.

Django keeps a cache backend per thread and per async context, and under ASGI every
request to a sync view runs on a thread of its own: with the stock backend each request
built a new pool and opened a new Redis connection (TCP connect, HELLO, health check),
for the token lookup, the throttles and the idempotency store. py-spy put that at about a
third of a refused reserve's time (bench/front_door.py). Here every backend instance of a
process shares the client made for its servers and options, and with it the pool.
"""

from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property

_clients: dict[tuple, RedisCacheClient] = {}
_clients_lock = threading.Lock()


class SharedPoolRedisCache(RedisCache):
    @cached_property
    def _cache(self) -> RedisCacheClient:
        key = (tuple(self._servers), tuple(sorted((k, repr(v)) for k, v in self._options.items())))
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = self._class(self._servers, **self._options)
            return client
