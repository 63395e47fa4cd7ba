"""Who watches a stream: viewer counts that survive a server process dying.

With Redis, a sorted set per stream: member = one websocket connection's id, score = its
last heartbeat (epoch seconds). Joining adds, leaving removes, and each process's hub
refreshes its local members every ``PRESENCE_HEARTBEAT_SECONDS``. A process that dies
without saying goodbye leaves members that stop being refreshed: the count only takes
members seen within ``PRESENCE_TTL_SECONDS``, so it heals by itself instead of drifting
upwards forever, as an INCR/DECR counter would. Older members are pruned by the
heartbeat, a write that runs anyway: counting (every snapshot, every stream listed)
only reads.

Without Redis (the embedded default, one process) the count is this process's own set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

from django.conf import settings

from core.redis import async_redis, get_redis, redis_configured

DEFAULT_HEARTBEAT_SECONDS = 10
DEFAULT_TTL_SECONDS = 30

_local_lock = threading.Lock()
_local: dict[int, set[str]] = {}


def heartbeat_seconds() -> float:
    return getattr(settings, "PRESENCE_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS)


def ttl_seconds() -> float:
    return getattr(settings, "PRESENCE_TTL_SECONDS", DEFAULT_TTL_SECONDS)


def presence_key(stream_id: int) -> str:
    return f"stream:{stream_id}:presence"


def _key_lifetime() -> int:
    # The whole set goes when no process has refreshed it for a while (every viewer's
    # process died), so abandoned streams leave no keys behind.
    return int(ttl_seconds() * 4)


async def presence_add(stream_id: int, conn_ids: Iterable[str], *, prune: bool = False) -> None:
    """Mark connections present now (join and heartbeat), without notifying; ``prune``
    also drops members older than the TTL (their process died)."""
    conn_ids = list(conn_ids)
    if not conn_ids:
        return
    if redis_configured():
        now = time.time()
        key = presence_key(stream_id)
        async with async_redis().pipeline(transaction=False) as pipe:
            pipe.zadd(key, dict.fromkeys(conn_ids, now))
            if prune:
                pipe.zremrangebyscore(key, "-inf", f"({now - ttl_seconds()}")
            pipe.expire(key, _key_lifetime())
            await pipe.execute()
    else:
        with _local_lock:
            _local.setdefault(stream_id, set()).update(conn_ids)


async def presence_forget(stream_id: int, conn_ids: Iterable[str]) -> None:
    """Remove connections, without notifying."""
    conn_ids = list(conn_ids)
    if not conn_ids:
        return
    if redis_configured():
        await async_redis().zrem(presence_key(stream_id), *conn_ids)
    else:
        with _local_lock:
            members = _local.get(stream_id)
            if members is not None:
                members.difference_update(conn_ids)
                if not members:
                    del _local[stream_id]


async def presence_heartbeat(stream_id: int, conn_ids: Iterable[str]) -> None:
    """Refresh this process's viewers of a stream and prune the dead, in one round trip."""
    await presence_add(stream_id, conn_ids, prune=True)


def presence_count(stream_id: int) -> int:
    """Viewers of the stream across every process (sync: snapshots and host stats)."""
    return presence_counts([stream_id])[stream_id]


def presence_counts(stream_ids: Sequence[int]) -> dict[int, int]:
    """Viewers of each stream, read only, in one Redis round trip.

    With Redis: the members refreshed within the TTL, whatever older ones linger."""
    if not redis_configured():
        with _local_lock:
            return {sid: len(_local.get(sid, ())) for sid in stream_ids}
    if not stream_ids:
        return {}
    oldest = time.time() - ttl_seconds()
    pipe = get_redis().pipeline(transaction=False)
    for stream_id in stream_ids:
        pipe.zcount(presence_key(stream_id), oldest, "+inf")
    return {sid: int(n) for sid, n in zip(stream_ids, pipe.execute(), strict=True)}
