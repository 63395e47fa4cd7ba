"""Who watches a stream: viewer counts that survive a server process dying.

With Redis, a sorted set per stream: member = one websocket connection's id, score = its
last heartbeat (epoch seconds). Joining adds, leaving removes, and each process's hub
refreshes its local members every ``PRESENCE_HEARTBEAT_SECONDS``. A process that dies
without saying goodbye leaves members that stop being refreshed: the count only takes
members seen within ``PRESENCE_TTL_SECONDS``, so it heals by itself instead of drifting
upwards forever, as an INCR/DECR counter would. Older members are pruned by the
heartbeat, a write that runs anyway: counting (every snapshot, every stream listed)
only reads.

How long a signed-in viewer has watched (a draw's "watch N minutes first" rule): per
stream, a hash of user -> when their watch began and one of user -> when they were last
seen, both written by the joins and heartbeats above. A viewer not seen for the TTL has
stopped watching; their next join starts a new watch. A reload or a second tab within
the TTL keeps the watch going, and a viewer cannot claim time by any request of theirs:
only their sockets' presence counts.

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
# Without Redis: per stream, user -> (watch began, last seen).
_local_watch: dict[int, dict[int, tuple[float, float]]] = {}

# KEYS: the watch-began hash, the last-seen hash. ARGV: now, TTL, key lifetime, users...
# A user last seen longer than the TTL ago (or never) begins a new watch now.
_WATCHED = """
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 4, #ARGV do
  local seen = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  if now - seen > ttl then redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]) end
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 0
"""


def heartbeat_seconds() -> float:
    return getattr(settings, "PRESENCE_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS)


def ttl_seconds() -> float:
    return getattr(settings, "PRESENCE_TTL_SECONDS", DEFAULT_TTL_SECONDS)


def presence_key(stream_id: int) -> str:
    return f"stream:{stream_id}:presence"


def watch_keys(stream_id: int) -> tuple[str, str]:
    return f"stream:{stream_id}:watch:began", f"stream:{stream_id}:watch:seen"


def _key_lifetime() -> int:
    # The whole set goes when no process has refreshed it for a while (every viewer's
    # process died), so abandoned streams leave no keys behind.
    return int(ttl_seconds() * 4)


async def presence_add(
    stream_id: int,
    conn_ids: Iterable[str],
    *,
    watchers: Iterable[int] = (),
    prune: bool = False,
) -> None:
    """Mark connections present now (join and heartbeat), without notifying, and the
    signed-in ``watchers`` among them as watching; ``prune`` also drops members older
    than the TTL (their process died)."""
    conn_ids = list(conn_ids)
    if not conn_ids:
        return
    watchers = sorted(set(watchers))
    now = time.time()
    if redis_configured():
        key = presence_key(stream_id)
        async with async_redis().pipeline(transaction=False) as pipe:
            pipe.zadd(key, dict.fromkeys(conn_ids, now))
            if prune:
                pipe.zremrangebyscore(key, "-inf", f"({now - ttl_seconds()}")
            pipe.expire(key, _key_lifetime())
            if watchers:
                pipe.eval(
                    _WATCHED,
                    2,
                    *watch_keys(stream_id),
                    now,
                    ttl_seconds(),
                    _key_lifetime(),
                    *watchers,
                )
            await pipe.execute()
    else:
        with _local_lock:
            _local.setdefault(stream_id, set()).update(conn_ids)
            watching = _local_watch.setdefault(stream_id, {})
            for user_id in watchers:
                began, seen = watching.get(user_id, (now, 0.0))
                watching[user_id] = (now if now - seen > ttl_seconds() else began, now)


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


async def presence_heartbeat(
    stream_id: int, conn_ids: Iterable[str], *, watchers: Iterable[int] = ()
) -> None:
    """Refresh this process's viewers of a stream (and its signed-in watchers) and prune
    the dead, in one round trip."""
    await presence_add(stream_id, conn_ids, watchers=watchers, prune=True)


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


def watching_since(stream_id: int, user_id: int, *, now: float | None = None) -> float | None:
    """When the user's current watch of the stream began (epoch seconds), or None when
    they are not watching it at ``now`` (never joined, or not seen for the TTL)."""
    now = time.time() if now is None else now
    if redis_configured():
        pipe = get_redis().pipeline(transaction=False)
        for key in watch_keys(stream_id):
            pipe.hget(key, str(user_id))
        began, seen = (float(v) if v is not None else None for v in pipe.execute())
    else:
        with _local_lock:
            began, seen = _local_watch.get(stream_id, {}).get(user_id, (None, None))
    if began is None or seen is None or now - seen > ttl_seconds():
        return None
    return began


def watched_seconds(stream_id: int, user_id: int) -> float:
    """How long the user has watched the stream without a break; 0 when not watching."""
    now = time.time()
    began = watching_since(stream_id, user_id, now=now)
    return max(now - began, 0.0) if began is not None else 0.0
