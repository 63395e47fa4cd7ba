"""The process's Redis client (one bounded connection pool per process)."""

from functools import cache

import redis
from django.conf import settings


def redis_configured() -> bool:
    return bool(settings.REDIS_URL)


@cache
def get_redis() -> redis.Redis:
    """Synchronous client on a blocking pool: under a connect storm callers wait for a
    free connection instead of failing with "Too many connections"."""
    pool = redis.BlockingConnectionPool.from_url(
        settings.REDIS_URL,
        max_connections=settings.REDIS_MAX_CONNECTIONS,
        timeout=5,
        socket_timeout=5,
        socket_connect_timeout=5,
        health_check_interval=30,
        decode_responses=True,  # the pool's connections decode, not the client
    )
    return redis.Redis(connection_pool=pool)


def reset_redis() -> None:
    """Forget the cached client (after a fork, or in tests that change REDIS_URL)."""
    if get_redis.cache_info().currsize:
        get_redis().close()
    get_redis.cache_clear()
