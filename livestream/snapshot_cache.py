"""A stream's public snapshot (``GET /api/streams/{slug}/``), rendered once and answered
to the crowd that a viral moment sends to it.

The body is the same for every anonymous reader, and Django spends ~10 ms of a core
building it (the drops' query, presence, the seq, the request cycle). So Django's view
keeps the very bytes it answered, stamped with the time and the stream's ``seq`` they
hold, and the front door answers anonymous readers from them with one Redis script:

* younger than half of ``STREAM_SNAPSHOT_MAX_AGE_MS`` and the stream's ``seq`` unmoved:
  nothing happened since, answer it;
* moved on, or older: ONE reader (per rebuild, across every process) is handed to
  Django, which builds a fresh one and stores it; the others get the stored one
  meanwhile, while it is younger than ``STREAM_SNAPSHOT_MAX_AGE_MS``;
* none, or older than that (a stream nobody read for a while, pinned to a viral
  audience): ONE reader rebuilds it through Django and the others wait for that build,
  at most ``STREAM_SNAPSHOT_MAX_AGE_MS``, then go to Django themselves.

So a reader's snapshot is at most that old, exact while the stream is quiet, and a
burst of readers after an event costs one build, not one per reader. Its ``seq`` tells a
socket client which events to apply on top, as for a socket's shared snapshot.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from redis.exceptions import RedisError

from core.redis import get_redis, redis_configured
from livestream.topics import seq_key


def snapshot_key(slug: str) -> str:
    return f"api:stream:{slug}:snapshot"


def rebuild_key(slug: str) -> str:
    return f"api:stream:{slug}:rebuilding"


# KEYS: snapshot, rebuild mark. ARGV: now (ms), the most age (ms).
# {1, body}: answer it; {0}: hand this reader to Django (it rebuilds); {2}: wait, a rebuild
# is under way and nothing young enough is stored.
READ_LUA = """
local stored = redis.call('HMGET', KEYS[1], 'seq_key', 'seq', 'at', 'body')
local most = tonumber(ARGV[2])
if stored[4] then
  local age = tonumber(ARGV[1]) - tonumber(stored[3])
  if age < most then
    local current = redis.call('GET', stored[1]) or '0'
    if current == stored[2] and age < most / 2 then return {1, stored[4]} end
    if redis.call('SET', KEYS[2], '1', 'NX', 'PX', most) then return {0} end
    return {1, stored[4]}
  end
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', most) then return {0} end
return {2}
"""
READ_SHA = hashlib.sha1(READ_LUA.encode()).hexdigest()


def snapshot_store(*, slug: str, stream_id: int, seq: int, body: bytes) -> None:
    """What Django's view answered an anonymous reader (called after rendering it).
    A Redis failure costs only the next reader a build."""
    most = settings.STREAM_SNAPSHOT_MAX_AGE_MS
    if not redis_configured() or most <= 0:
        return
    try:
        pipe = get_redis().pipeline(transaction=True)
        pipe.hset(
            snapshot_key(slug),
            mapping={
                "seq_key": seq_key(stream_id),
                "seq": seq,
                "at": int(time.time() * 1000),
                "body": body,
            },
        )
        pipe.pexpire(snapshot_key(slug), most)
        pipe.delete(rebuild_key(slug))
        pipe.execute()
    except RedisError:
        pass
