"""The one module that sends events to viewers: it numbers, publishes and coalesces
them (what each event says is ``livestream.announce``'s).

Stream events (``stream.*``, ``drop.*``, ``stock.changed``, ``viewers.changed``) are
serialised ONCE, numbered with the stream's ``seq`` and published to the stream's Redis
channel, atomically (one Lua script INCRs the counter and PUBLISHes), so every process
and every viewer sees them in ``seq`` order. Each server process's hub
(``livestream.hub``) holds one pub/sub connection for every stream it watches and
writes the text to its local sockets: no per-viewer channel-layer message (see the
design's fan-out measurements). With no Redis (the embedded default) the numbering is
in-process and the text goes straight to this process's hub.

Personal events (``reservation.updated``) are published to the user's own channel, one
PUBLISH each, pipelined for a settled batch; the hubs of the processes holding the
user's sockets subscribe to it.

What an event says is built from the data of the change, inside its transaction; it is
sent after commit, by whichever process committed it. Two processes' sends can cross,
so what a newer change supersedes is versioned (the allocation's ``version``): a
drop's stock figures are kept as the latest value (``Latest``), and each send publishes
the value kept then; a user's reservation is published only if no newer version of it
was (``send_personal_versioned``). Nobody sees an older value after a newer one.

Counters are coalesced (``Coalescer``): the first change in a window is sent at once,
later ones in the window are folded into one trailing event carrying the latest value,
so the last value is always delivered.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, NamedTuple

from django.conf import settings
from django.db import close_old_connections, transaction

from core.redis import get_redis, redis_configured
from livestream.hub import get_hub
from livestream.topics import USER_LOGGED_OUT, seq_key, stream_channel, user_channel

logger = logging.getLogger(__name__)


# --- numbering and publishing ----------------------------------------------------------

# KEYS: seq counter, ARGV: channel, the event's JSON object without its leading "{".
_PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], '{"seq":' .. seq .. ',' .. ARGV[2])
return seq
"""

_local_lock = threading.Lock()
_local_seq: dict[int, int] = {}


def current_seq(stream_id: int) -> int:
    """The ``seq`` of the stream's latest event (0 before the first)."""
    if redis_configured():
        return int(get_redis().get(seq_key(stream_id)) or 0)
    with _local_lock:
        return _local_seq.get(stream_id, 0)


def current_seqs(stream_ids: Sequence[int]) -> dict[int, int]:
    """``current_seq`` of several streams in one read (one MGET)."""
    if not redis_configured():
        with _local_lock:
            return {sid: _local_seq.get(sid, 0) for sid in stream_ids}
    if not stream_ids:
        return {}
    values = get_redis().mget([seq_key(sid) for sid in stream_ids])
    return {sid: int(value or 0) for sid, value in zip(stream_ids, values, strict=True)}


def publish(stream_id: int, event_type: str, **fields: Any) -> int:
    """Number the event and send it to every viewer of the stream; returns its seq.

    ``ts`` is the server's time of the event (epoch seconds), so a client can tell how
    late it arrived (the benchmark measures delivery latency with it)."""
    body = json.dumps(
        {"type": event_type, **fields, "ts": round(time.time(), 6)},
        separators=(",", ":"),
        default=str,
    )
    if redis_configured():
        return int(
            get_redis().eval(_PUBLISH, 1, seq_key(stream_id), stream_channel(stream_id), body[1:])
        )
    with _local_lock:  # numbering and handing over in one step keeps the order
        seq = _local_seq.get(stream_id, 0) + 1
        _local_seq[stream_id] = seq
        get_hub().deliver(stream_id, f'{{"seq":{seq},{body[1:]}')
    return seq


# --- the latest value of a counter ---------------------------------------------------

_latest_values: list[Latest] = []


def forget_local_versions() -> None:
    """Forget the versions and latest values kept in this process (without Redis):
    for a database emptied under a running process, as between tests."""
    with _local_lock:
        _local_versions.clear()
    for latest in _latest_values:
        with latest._lock:
            latest._kept.clear()


# How long a latest value is kept after its last change. Versions only order sends that
# race each other, seconds apart; kept short, a database restored from a backup (its
# versions lower again) is heard again within the hour.
LATEST_LIFETIME_SECONDS = 3600

# KEYS: the latest value. ARGV: version, the event's fields (JSON members, no braces),
# lifetime (s). 1: kept, 0: older than the one kept, dropped (one transaction's changes
# share a version: the later one wins).
_OFFER_LATEST = """
local kept = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if tonumber(ARGV[1]) < kept then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'fields', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
# KEYS: the latest value, the stream's seq counter. ARGV: channel, event type, ts.
# The fields kept, numbered and published in one step (nothing when none is kept).
_PUBLISH_LATEST = """
local fields = redis.call('HGET', KEYS[1], 'fields')
if not fields then return false end
local seq = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1],
  '{"seq":' .. seq .. ',"type":"' .. ARGV[2] .. '",' .. fields .. ',"ts":' .. ARGV[3] .. '}')
return fields
"""


class Latest:
    """The latest value of one counter per key (a drop's stock figures), by version.

    ``offer`` keeps a value unless the one kept is of a newer version: changes are
    offered after their commits, by whichever process made them, in any order.
    ``publish`` sends the value kept at that moment, numbered like any stream event, in
    one step in Redis; so however sends and offers interleave, a viewer never gets an
    older value after a newer one. Kept in Redis when configured (shared by every
    process), else in this process."""

    def __init__(self, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._kept: dict[Hashable, tuple[int, str]] = {}
        _latest_values.append(self)

    def _key(self, key: Hashable) -> str:
        return f"stream:latest:{self.name}:{key}"

    def offer(self, key: Hashable, version: int, **fields: Any) -> bool:
        """Keep ``fields`` as the value of ``key`` unless the one kept has a newer
        version; False when it was dropped as stale."""
        members = json.dumps(fields, separators=(",", ":"), default=str)[1:-1]
        if redis_configured():
            return bool(
                get_redis().eval(
                    _OFFER_LATEST, 1, self._key(key), version, members, LATEST_LIFETIME_SECONDS
                )
            )
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and version < kept[0]:
                return False
            self._kept[key] = (version, members)
            return True

    def publish(self, key: Hashable, stream_id: int, event_type: str) -> dict[str, Any] | None:
        """Send the value kept for ``key`` to the stream's viewers as ``event_type``;
        returns the fields sent (None: no value kept, nothing sent)."""
        ts = round(time.time(), 6)
        if redis_configured():
            members = get_redis().eval(
                _PUBLISH_LATEST,
                2,
                self._key(key),
                seq_key(stream_id),
                stream_channel(stream_id),
                event_type,
                ts,
            )
            return None if members is None else json.loads(f"{{{members}}}")
        with _local_lock:  # as ``publish``: read, numbered and handed over in one step
            with self._lock:
                kept = self._kept.get(key)
            if kept is None:
                return None
            seq = _local_seq.get(stream_id, 0) + 1
            _local_seq[stream_id] = seq
            get_hub().deliver(
                stream_id, f'{{"seq":{seq},"type":"{event_type}",{kept[1]},"ts":{ts}}}'
            )
        return json.loads(f"{{{kept[1]}}}")


# --- personal events ---------------------------------------------------------------------


def send_personal(user_id: int, event_type: str, **fields: Any) -> None:
    """A user's own event (not numbered), to every socket of theirs in any process."""
    send_personal_many([(user_id, event_type, fields)])


def send_personal_many(events: Iterable[tuple[int, str, dict[str, Any]]]) -> None:
    """Several users' own events in one round trip to Redis (a settle batch tells
    dozens of buyers at once)."""
    _send_personal_texts(
        (user_id, json.dumps({"type": event_type, **fields}, separators=(",", ":"), default=str))
        for user_id, event_type, fields in events
    )


class VersionedPersonal(NamedTuple):
    """A user's own event about something that changes by versions (a reservation):
    ``about`` it within ``scope``, the set its versions are counted in (its
    allocation)."""

    scope: str
    about: str
    version: int
    user_id: int
    event_type: str
    fields: dict[str, Any]


# KEYS: the versions sent in one scope (hash). ARGV: lifetime (s), then per event: what
# it is about, its version, the channel, the text. Published unless a newer version of
# the same thing was; one transaction's events share a version, the later one wins.
_PUBLISH_VERSIONED = """
local published = 0
for i = 2, #ARGV, 4 do
  local sent = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) >= sent then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('PUBLISH', ARGV[i + 2], ARGV[i + 3])
    published = published + 1
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return published
"""
# How long a scope's versions are kept after its last event (as the latest values).
VERSIONS_LIFETIME_SECONDS = 3600
# In-process (no Redis), the versions of this many things are kept, the oldest forgotten.
_LOCAL_VERSIONS_KEPT = 100_000
_local_versions: dict[tuple[str, str], int] = {}


def send_personal_versioned(events: Iterable[VersionedPersonal]) -> int:
    """Users' own events, each sent unless a newer version of what it is about was
    sent already (a reservation confirmed by one process must not be followed by its
    hold, told late by another). One script call per scope, all in one round trip (a
    settled batch is one scope); returns how many were sent."""
    by_scope: dict[str, list[VersionedPersonal]] = {}
    for event in map(VersionedPersonal._make, events):
        by_scope.setdefault(event.scope, []).append(event)
    if not by_scope:
        return 0

    def text(event: VersionedPersonal) -> str:
        body = {"type": event.event_type, **event.fields}
        return json.dumps(body, separators=(",", ":"), default=str)

    if redis_configured():
        pipe = get_redis().pipeline(transaction=False)
        for scope, sends in by_scope.items():
            args = []
            for event in sends:
                args += [event.about, event.version, user_channel(event.user_id), text(event)]
            pipe.eval(
                _PUBLISH_VERSIONED, 1, f"stream:versions:{scope}", VERSIONS_LIFETIME_SECONDS, *args
            )
        return sum(pipe.execute())
    texts = []
    with _local_lock:
        for sends in by_scope.values():
            for event in sends:
                key = (event.scope, event.about)
                if event.version >= _local_versions.get(key, -1):
                    _local_versions.pop(key, None)  # moved to the newest end
                    _local_versions[key] = event.version
                    texts.append((event.user_id, text(event)))
        while len(_local_versions) > _LOCAL_VERSIONS_KEPT:
            del _local_versions[next(iter(_local_versions))]
    _send_personal_texts(texts)
    return len(texts)


def _send_personal_texts(texts: Iterable[tuple[int, str]]) -> None:
    texts = list(texts)
    if not texts:
        return
    if redis_configured():
        pipe = get_redis().pipeline(transaction=False)
        for user_id, text in texts:
            pipe.publish(user_channel(user_id), text)
        pipe.execute()
        return
    hub = get_hub()
    for user_id, text in texts:
        hub.deliver_personal(user_id, text)


def user_signed_out(user_id: int) -> None:
    """The user logged out (a session, or their API tokens revoked): every websocket
    of theirs, in any process, closes with 4001 (``StreamConsumer.logged_out``), so
    none keeps host rights or personal events it was granted at connect. A client that
    reconnects is who its credentials say now: the same user on another still valid
    session or token, else anonymous."""
    _send_personal_texts([(user_id, USER_LOGGED_OUT)])


def on_commit(action: Callable[[], None]) -> None:
    """Run a broadcast after the current transaction commits; a failure to broadcast
    never undoes or blocks what was committed (viewers resync by ``seq``)."""

    def safely() -> None:
        try:
            action()
        except Exception:
            logger.exception("broadcast failed")

    transaction.on_commit(safely)


# --- coalescing ------------------------------------------------------------------------

# A window's key is closed by its owner's timer (``_trail``); its own expiry is only for
# an owner that died. It must outlive the timer by a wide margin: a timer that fires a
# little late (a busy process) would otherwise find the window already expired and let
# another process open a new one and send at once, two sends inside one window (the
# benchmark saw 5.8 stock.changed per viewer per second at a 250 ms window).
WINDOW_KEY_LIFETIME_FACTOR = 4

# KEYS: window, dirty. ARGV: the window key's lifetime (ms). 1: lead (send now), 0: folded
# into the window. The dirty mark outlives the window by far, so that the sweep (below)
# still finds it when the process owning the window died before its trailing send.
_TOUCH = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 end
redis.call('SET', KEYS[2], '1', 'PX', 60000)
return 0
"""
# KEYS: window, dirty. ARGV: the window key's lifetime (ms). 1: send again (window
# re-armed), 0: window over.
_TRAIL = """
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
  return 1
end
redis.call('DEL', KEYS[1])
return 0
"""


class _Timers:
    """Calls due later, all on ONE thread per process: a trailing send reads the
    database, and a thread of its own per send opened a database connection per send
    (in a Celery worker, a new PostgreSQL backend each time)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Callable[..., None], tuple]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._pid = 0

    def call_later(self, seconds: float, action: Callable[..., None], *args) -> None:
        with self._wake:
            if self._pid != os.getpid():  # none yet, or forked: the thread did not follow
                self._due.clear()
                threading.Thread(target=self._run, name="broadcast-timers", daemon=True).start()
                self._pid = os.getpid()
            heapq.heappush(self._due, (time.monotonic() + seconds, next(self._order), action, args))
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, action, args = heapq.heappop(self._due)
            try:
                action(*args)
            except Exception:
                logger.exception("timed broadcast failed")


_timers = _Timers()


class Coalescer:
    """At most one send per key per window, the last value always sent.

    ``touch(key)``: the first touch of a quiet key sends at once and opens a window;
    touches inside the window only mark the key dirty; when the window closes, a dirty
    key is sent once more (reading the value then) and the window re-opens. Windows live
    in Redis when configured, so every process (web, workers) shares them.
    """

    def __init__(
        self,
        name: str,
        send: Callable[[Hashable], None],
        *,
        window_setting: str = "BROADCAST_COALESCE_MS",
    ):
        self.name = name
        self.send = send
        self.window_setting = window_setting
        self._lock = threading.Lock()
        self._windows: set[Hashable] = set()
        self._dirty: set[Hashable] = set()

    @property
    def window_ms(self) -> int:
        return getattr(settings, self.window_setting)

    def _keys(self, key: Hashable) -> list[str]:
        base = f"stream:coalesce:{self.name}:{key}"
        return [base, f"{base}:dirty"]

    def touch(self, key: Hashable) -> None:
        if self.window_ms <= 0:
            self._send(key)
            return
        if redis_configured():
            lifetime = self.window_ms * WINDOW_KEY_LIFETIME_FACTOR
            lead = get_redis().eval(_TOUCH, 2, *self._keys(key), lifetime) == 1
        else:
            with self._lock:
                lead = key not in self._windows
                if lead:
                    self._windows.add(key)
                else:
                    self._dirty.add(key)
        if lead:
            self._send(key)
            self._arm(key, self.window_ms)

    def _arm(self, key: Hashable, window_ms: int) -> None:
        # The window it was opened with, even if the setting changes meanwhile.
        _timers.call_later(window_ms / 1000, self._trail, key, window_ms)

    def _trail(self, key: Hashable, window_ms: int) -> None:
        try:
            if redis_configured():
                lifetime = window_ms * WINDOW_KEY_LIFETIME_FACTOR
                again = get_redis().eval(_TRAIL, 2, *self._keys(key), lifetime) == 1
            else:
                with self._lock:
                    again = key in self._dirty
                    self._dirty.discard(key)
                    if not again:
                        self._windows.discard(key)
            if again:
                self._send(key)
                self._arm(key, window_ms)
        finally:
            close_old_connections()  # the timers' thread keeps one only while usable

    def _send(self, key: Hashable) -> None:
        try:
            self.send(key)
        except Exception:
            logger.exception("coalesced %s send failed for %s", self.name, key)

    def sweep(self) -> int:
        """Send the keys left dirty by a process that died inside its window (its
        trailing send never happened); returns how many. Run by Celery beat."""
        if not redis_configured():
            return 0
        client = get_redis()
        prefix = f"stream:coalesce:{self.name}:"
        sent = 0
        for dirty in client.scan_iter(match=f"{prefix}*:dirty", count=500):
            window = dirty.removesuffix(":dirty")
            # A live window's owner sends it; DEL claims it, so one sweeper wins.
            if client.exists(window) or not client.delete(dirty):
                continue
            self.touch(int(window.removeprefix(prefix)))
            sent += 1
        return sent
