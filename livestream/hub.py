"""The per-process fan-out hub: one event, serialised once, written to every local
viewer of its stream, and each signed-in viewer's personal events to their sockets.

Why not a channel-layer ``group_send``: every viewer's copy would be its own layer
message (a queue, a task, a decode, a thread hop per message); measured, that collapses
long before ten thousand viewers (see the design, "Fan-out"), and even one buyer's
personal event cost several Redis round trips to send and as many to receive. Here
each process holds, per stream and per signed-in user, the set of its local
connections and, when Redis is configured, ONE pub/sub connection subscribed to the
channel of each of them (``topics.stream_channel``, ``topics.user_channel``); a
channel is dropped when its last local connection leaves, the connection when nothing
is watched. Without Redis (the embedded default) the broadcast module hands events
straight to ``deliver`` and ``deliver_personal``.

A connection is anything with ``conn_id: str``, ``is_host: bool``, ``offer(text) ->
bool``, ``offer_many(texts, ...) -> bool``, ``personal(text)`` and ``logged_out()``:
``offer`` puts the text on the connection's own bounded queue (drained by its own sender
task) and returns False when that queue is full, in which case the connection closes
itself (4008) and the hub forgets it at once, so a slow viewer never stalls the others.

A process that falls behind its subscription (a fan-out to ten thousand sockets takes
longer than the gap to the next event) finds several events of a stream waiting when it
reads again. It takes them together, up to ``BURST_MOST``, and hands each viewer the run
at once (``offer_many``: one socket write for all of them), so the further behind it is,
the fewer writes each event costs, and a saturated process catches up instead of
falling further behind. Every event is still delivered, in order, as its own frame.

Redis pub/sub loses what is published while the subscription is down. After a
listener error the hub reconnects with backoff, resubscribes every channel and sends
every local viewer of each stream ``{"type": "resync.required"}``; clients then ask for
a fresh snapshot (``{"type": "resync"}`` on the socket, or REST), spread over their own
jitter. The hub does not push snapshots itself: building one per viewer at the same
instant is exactly the database stampede a reconnect must not cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from redis.asyncio.client import PubSub

from core.redis import async_redis, redis_configured
from livestream import metrics
from livestream.presence import heartbeat_seconds, presence_forget, presence_heartbeat
from livestream.topics import USER_LOGGED_OUT, seq_of, stream_channel, user_channel

logger = logging.getLogger(__name__)

RESYNC_REQUIRED = '{"type":"resync.required"}'
# How long the first viewer of a stream waits for the subscription to be confirmed
# (events published before it would be missed); past it the viewer goes on and gets
# ``resync.required`` once the subscription is up.
SUBSCRIBE_TIMEOUT_SECONDS = 5.0
# A subscription idle this long is pinged, so a dead TCP connection is noticed.
LISTENER_IDLE_PING_SECONDS = 30.0
RECONNECT_BACKOFF_MIN_SECONDS = 0.1
RECONNECT_BACKOFF_MAX_SECONDS = 5.0
# Events of one channel taken from the subscription together when they are already
# waiting: well below a viewer's backlog (``SEND_BACKLOG_SIZE``), so that one run never
# closes a viewer that was keeping up.
BURST_MOST = 16


class Connection(Protocol):
    conn_id: str
    is_host: bool
    user_id: int | None  # signed in: who watches (presence's watch time)

    def offer(self, text: str, seq: int | None = None) -> bool: ...

    def offer_many(
        self, texts: tuple[str, ...], seqs: list[int | None], least_seq: int | None
    ) -> bool: ...

    def personal(self, text: str) -> None: ...

    def logged_out(self) -> None: ...


# --- the hub ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Channel:
    """One channel of the process's subscription: where its messages go, and whether
    Redis has confirmed it (a PUBLISH after the confirmation reaches us)."""

    on_message: Callable[[str], None]
    # Several messages that were waiting together, in order (else ``on_message`` each).
    on_messages: Callable[[list[str]], None] | None = None
    # Called on every confirmation; True when the subscription had been confirmed and
    # was then lost (what was published meanwhile never reached us).
    on_confirmed: Callable[[bool], None] | None = None
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    lost: bool = False


@dataclass(eq=False)
class _Stream:
    """One watched stream in this process."""

    connections: set[Connection] = field(default_factory=set)
    channel: _Channel | None = None  # None without Redis
    # A viewer built its snapshot before the subscription was confirmed.
    stale: bool = False
    # The highest ``seq`` fanned out here: a snapshot at least this new misses nothing
    # that reached this process (see ``Hub.seen_seq``).
    last_seq: int = 0
    # The latest ``stream.state`` built in this process: ``(seq, text, built at)``.
    snapshot: tuple[int, str, float] | None = None


@dataclass(eq=False)
class _User:
    """One signed-in user with sockets in this process: their personal events."""

    connections: set[Connection] = field(default_factory=set)
    channel: _Channel | None = None


class Hub:
    """Local viewers per stream and per signed-in user, and the process's ONE pub/sub
    connection carrying every channel they need (redis-py's ``PubSub`` takes any number
    of channels; a connection per channel would drain the pool with a few hundred
    streams or users). All state is touched on the hub's event loop only; ``deliver``
    and ``deliver_personal`` are the entry points from other threads."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[int, _Stream] = {}
        self._users: dict[int, _User] = {}
        self._channels: dict[str, _Channel] = {}
        self._pubsub: PubSub | None = None  # set while connected, every channel sent
        self._listener: asyncio.Task | None = None
        self._heartbeat: asyncio.Task | None = None
        self._chores: set[asyncio.Task] = set()

    # -- binding to the loop ------------------------------------------------------------

    def _bind(self) -> asyncio.AbstractEventLoop:
        """Bind to the running loop. A process serves from one loop; a new loop (a test
        after another) starts from a clean state, as the old loop's tasks died with it."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._streams and self._loop is not None and not self._loop.is_closed():
                logger.warning("hub moved to another event loop with viewers still joined")
            self._loop = loop
            self._streams = {}
            self._users = {}
            self._channels = {}
            self._pubsub = None
            self._listener = None
            self._heartbeat = None
            self._chores = set()
        return loop

    # -- viewers ------------------------------------------------------------------------

    async def join(self, stream_id: int, connection: Connection) -> None:
        """Add a local viewer; the first one of a stream subscribes to its channel (and
        waits, bounded, until Redis confirms the subscription)."""
        loop = self._bind()
        entry = self._streams.get(stream_id)
        if entry is None:
            entry = self._streams[stream_id] = _Stream()
            if redis_configured():
                entry.channel = _Channel(
                    on_message=partial(self._fanout, stream_id, entry=entry),
                    on_messages=partial(self._fanout_run, stream_id, entry),
                    on_confirmed=partial(self._stream_confirmed, stream_id, entry),
                )
                await self._subscribe(stream_channel(stream_id), entry.channel)
        entry.connections.add(connection)
        if redis_configured():
            self._ensure_heartbeat(loop)
        if entry.channel is not None and not await _confirmed(entry.channel):
            entry.stale = True
            logger.warning("stream %s: subscription not confirmed in time", stream_id)

    async def leave(self, stream_id: int, connection: Connection) -> None:
        """Remove a local viewer (idempotent); the last one unsubscribes."""
        if self._loop is not asyncio.get_running_loop():
            return  # joined on a loop that is gone: nothing of it is left here
        entry = self._streams.get(stream_id)
        if entry is None or connection not in entry.connections:
            return
        entry.connections.discard(connection)
        if not entry.connections:
            await self._forget_stream(stream_id, entry)

    async def join_user(self, user_id: int, connection: Connection) -> None:
        """Deliver the user's personal events to this connection too; the user's first
        connection in this process subscribes to their channel (bounded wait)."""
        self._bind()
        entry = self._users.get(user_id)
        if entry is None:
            entry = self._users[user_id] = _User()
            if redis_configured():
                entry.channel = _Channel(on_message=partial(self._tell_user, user_id, entry=entry))
                await self._subscribe(user_channel(user_id), entry.channel)
        entry.connections.add(connection)
        if entry.channel is not None and not await _confirmed(entry.channel):
            logger.warning("user %s: subscription not confirmed in time", user_id)

    async def leave_user(self, user_id: int, connection: Connection) -> None:
        """Stop the user's personal events to this connection (idempotent)."""
        if self._loop is not asyncio.get_running_loop():
            return
        entry = self._users.get(user_id)
        if entry is None or connection not in entry.connections:
            return
        entry.connections.discard(connection)
        if not entry.connections:
            del self._users[user_id]
            if entry.channel is not None:
                await self._unsubscribe(user_channel(user_id), entry.channel)

    def local_count(self, stream_id: int) -> int:
        entry = self._streams.get(stream_id)
        return len(entry.connections) if entry is not None else 0

    def local_hosts(self, stream_id: int) -> list[Connection]:
        """The local connections of the stream's host (or staff), for ``host.stats``."""
        entry = self._streams.get(stream_id)
        if entry is None:
            return []
        return [c for c in entry.connections if getattr(c, "is_host", False)]

    def local_conn_ids(self, stream_id: int) -> list[str]:
        entry = self._streams.get(stream_id)
        return [c.conn_id for c in entry.connections] if entry is not None else []

    def user_connections(self, user_id: int) -> set[Connection]:
        """The local connections that get the user's personal events."""
        entry = self._users.get(user_id)
        return set(entry.connections) if entry is not None else set()

    def is_subscribed(self, stream_id: int) -> bool:
        """Whether this process holds a confirmed subscription to the stream."""
        entry = self._streams.get(stream_id)
        return entry is not None and entry.channel is not None and entry.channel.confirmed.is_set()

    def listener_count(self) -> int:
        """Pub/sub connections (listener tasks) alive in this process: 0 or 1."""
        return int(self._listener is not None and not self._listener.done())

    async def _forget_stream(self, stream_id: int, entry: _Stream) -> None:
        if self._streams.get(stream_id) is entry:
            del self._streams[stream_id]
        if entry.channel is not None:
            await self._unsubscribe(stream_channel(stream_id), entry.channel)

    # -- events -------------------------------------------------------------------------

    def deliver(self, stream_id: int, text: str) -> None:
        """Write an event to every local viewer of the stream. Callable from any thread;
        always scheduled onto the hub's loop, in call order, so events keep their
        ``seq`` order. Dropped when no viewer ever connected in this process."""
        self._call_soon(self._fanout, stream_id, text)

    def deliver_personal(self, user_id: int, text: str) -> None:
        """``deliver`` for a user's personal event (or ``USER_LOGGED_OUT``)."""
        self._call_soon(self._tell_user, user_id, text)

    def _call_soon(self, callback, *args) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # Closed between the check and the call: nobody is left to receive it.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)

    def seen_seq(self, stream_id: int) -> int | None:
        """The highest ``seq`` of the stream fanned out to local viewers so far, or None
        when this process has no confirmed, gap-free subscription to it (then nobody
        can tell what it missed)."""
        entry = self._streams.get(stream_id)
        if entry is None or entry.stale:
            return None
        if entry.channel is not None and not entry.channel.confirmed.is_set():
            return None
        return entry.last_seq

    def shared_snapshot(
        self, stream_id: int, *, floor: int, max_age: float
    ) -> tuple[int, str] | None:
        """A snapshot another local viewer built, if it holds every event up to
        ``floor`` (the newest seq fanned out before the caller started buffering) and is
        younger than ``max_age`` seconds."""
        entry = self._streams.get(stream_id)
        if entry is None or entry.snapshot is None or self.seen_seq(stream_id) is None:
            return None
        seq, text, built = entry.snapshot
        if seq < floor or time.monotonic() - built > max_age:
            return None
        return seq, text

    def share_snapshot(self, stream_id: int, seq: int, text: str) -> None:
        entry = self._streams.get(stream_id)
        if entry is not None and (entry.snapshot is None or seq >= entry.snapshot[0]):
            entry.snapshot = (seq, text, time.monotonic())

    def _fanout(self, stream_id: int, text: str, entry: _Stream | None = None) -> None:
        entry = entry if entry is not None else self._streams.get(stream_id)
        if entry is None:
            return
        seq = seq_of(text)
        if seq is not None and seq > entry.last_seq:
            entry.last_seq = seq
        slow = []
        for connection in list(entry.connections):
            try:
                if not connection.offer(text, seq):
                    slow.append(connection)
            except Exception:  # one broken connection must not starve the others
                logger.exception("stream %s: offer failed", stream_id)
                slow.append(connection)
        metrics.DELIVERIES.inc(len(entry.connections) - len(slow))
        self._drop_slow(stream_id, entry, slow)

    def _fanout_run(self, stream_id: int, entry: _Stream, run: list[str]) -> None:
        """``_fanout`` for several events of the stream at once, in order."""
        texts = tuple(run)
        seqs = [seq_of(text) for text in texts]
        numbered = [seq for seq in seqs if seq is not None]
        if numbered and max(numbered) > entry.last_seq:
            entry.last_seq = max(numbered)
        least = min(numbered) if len(numbered) == len(seqs) else None
        slow = []
        for connection in list(entry.connections):
            try:
                if not connection.offer_many(texts, seqs, least):
                    slow.append(connection)
            except Exception:  # one broken connection must not starve the others
                logger.exception("stream %s: offer failed", stream_id)
                slow.append(connection)
        metrics.DELIVERIES.inc((len(entry.connections) - len(slow)) * len(texts))
        self._drop_slow(stream_id, entry, slow)

    def _drop_slow(self, stream_id: int, entry: _Stream, slow: list[Connection]) -> None:
        for connection in slow:
            # It is closing itself; stop writing to it (its disconnect leaves again).
            entry.connections.discard(connection)
        if slow and not entry.connections and self._loop is not None:
            task = self._loop.create_task(self._forget_stream(stream_id, entry))
            self._chores.add(task)  # held: the loop keeps only a weak reference
            task.add_done_callback(self._chores.discard)

    def _stream_confirmed(self, stream_id: int, entry: _Stream, after_loss: bool) -> None:
        if after_loss or entry.stale:
            # Events published meanwhile never reached us: no snapshot from before may
            # be shared any more, and the viewers ask for a fresh one.
            entry.snapshot = None
            entry.stale = False
            self._fanout(stream_id, RESYNC_REQUIRED, entry)

    def _tell_user(self, user_id: int, text: str, entry: _User | None = None) -> None:
        entry = entry if entry is not None else self._users.get(user_id)
        if entry is None:
            return
        for connection in list(entry.connections):
            try:
                if text == USER_LOGGED_OUT:
                    connection.logged_out()
                else:
                    connection.personal(text)
            except Exception:  # one broken connection must not starve the others
                logger.exception("user %s: personal event failed", user_id)

    # -- the one subscription -------------------------------------------------------------

    async def _subscribe(self, name: str, channel: _Channel) -> None:
        self._channels[name] = channel
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="hub-listener"
            )
        elif self._pubsub is not None:
            try:
                await self._pubsub.subscribe(name)
            except Exception as exc:  # the listener's reconnect subscribes it again
                logger.warning("subscribing to %s failed (%s)", name, exc)
        # else: the listener is connecting and sends every channel it holds by then.

    async def _unsubscribe(self, name: str, channel: _Channel) -> None:
        if self._channels.get(name) is not channel:
            return
        del self._channels[name]
        if not self._channels:
            # Nothing watched any more: drop the connection (a new join opens another).
            listener, self._listener, self._pubsub = self._listener, None, None
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener
        elif self._pubsub is not None:
            with contextlib.suppress(Exception):  # lost: the reconnect leaves it out
                await self._pubsub.unsubscribe(name)

    async def _listen(self) -> None:
        """The process's one subscription: every channel in ``_channels``; after an
        error, reconnect with backoff and resubscribe them all (each stream's viewers
        are then asked to resync: what was published meanwhile is lost)."""
        backoff = RECONNECT_BACKOFF_MIN_SECONDS
        while True:
            pubsub = async_redis().pubsub()
            try:
                # Channels added while a SUBSCRIBE is in flight are sent next; only then
                # may ``_subscribe`` send on this connection itself.
                sent: set[str] = set()
                while missing := [name for name in self._channels if name not in sent]:
                    await pubsub.subscribe(*missing)
                    sent.update(missing)
                self._pubsub = pubsub
                backoff = RECONNECT_BACKOFF_MIN_SECONDS
                while True:
                    message = await pubsub.get_message(timeout=LISTENER_IDLE_PING_SECONDS)
                    if message is None:
                        await pubsub.ping()  # a dead connection raises here
                        continue
                    if message["type"] != "message":
                        self._confirm(message)
                        continue
                    # What else is waiting already, read without waiting for more.
                    burst = [message]
                    while len(burst) < BURST_MOST:
                        more = await pubsub.get_message(timeout=0)
                        if more is None:
                            break
                        burst.append(more)
                    self._dispatch(burst)
                    # Let the senders drain before the next messages: a burst read in
                    # one go must not overflow healthy viewers.
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.SUBSCRIPTION_LOST.inc()
                logger.warning(
                    "hub subscription lost (%s), resubscribing %d channels in %.1fs",
                    exc,
                    len(self._channels),
                    backoff,
                )
                for channel in self._channels.values():
                    if channel.confirmed.is_set():
                        channel.confirmed.clear()
                        channel.lost = True
            finally:
                if self._pubsub is pubsub:
                    self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_SECONDS)

    def _confirm(self, message: dict) -> None:
        channel = self._channels.get(message["channel"])
        if channel is None or message["type"] != "subscribe":
            return  # unsubscribed meanwhile, an unsubscribe's answer, or a pong
        after_loss, channel.lost = channel.lost, False
        channel.confirmed.set()
        if channel.on_confirmed is not None:
            channel.on_confirmed(after_loss)

    def _dispatch(self, burst: list[dict]) -> None:
        """Hand a burst of messages to their channels in order: each run of one channel's
        messages together to a channel that takes runs."""
        index = 0
        while index < len(burst):
            message = burst[index]
            if message["type"] != "message":
                self._confirm(message)
                index += 1
                continue
            name = message["channel"]
            end = index + 1
            while (
                end < len(burst)
                and burst[end]["type"] == "message"
                and burst[end]["channel"] == name
            ):
                end += 1
            channel = self._channels.get(name)
            if channel is not None:  # else unsubscribed meanwhile
                run = [m["data"] for m in burst[index:end]]
                if len(run) > 1 and channel.on_messages is not None:
                    channel.on_messages(run)
                else:
                    for text in run:
                        channel.on_message(text)
            index = end

    # -- presence heartbeat -------------------------------------------------------------

    def _ensure_heartbeat(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = loop.create_task(self._beat(), name="hub-presence-heartbeat")

    async def _beat(self) -> None:
        """Refresh the presence of every local viewer, one ZADD per stream, so that a
        process that dies stops being counted once its members age past the TTL."""
        while self._streams:
            await asyncio.sleep(heartbeat_seconds())
            for stream_id, entry in list(self._streams.items()):
                await self.heartbeat_stream(stream_id, entry.connections)

    async def heartbeat_stream(self, stream_id: int, connections: Iterable[Connection]) -> None:
        connections = list(connections)
        conn_ids = [c.conn_id for c in connections]
        if not conn_ids:
            return
        watchers = [c.user_id for c in connections if c.user_id is not None]
        try:
            await presence_heartbeat(stream_id, conn_ids, watchers=watchers)
            # A viewer that left while the ZADD was in flight may have been re-added
            # after its ZREM: remove it again (its leave is ordered after this check).
            entry = self._streams.get(stream_id)
            alive = {c.conn_id for c in entry.connections} if entry is not None else set()
            gone = [conn_id for conn_id in conn_ids if conn_id not in alive]
            if gone:
                await presence_forget(stream_id, gone)
        except Exception:
            logger.exception("stream %s: presence heartbeat failed", stream_id)

    # -- shutdown -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Drop every subscription and the heartbeat (process shutdown, tests)."""
        if self._loop is not asyncio.get_running_loop():
            return
        self._streams.clear()
        self._users.clear()
        self._channels.clear()
        listener, self._listener, self._pubsub = self._listener, None, None
        for task in (listener, self._heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._heartbeat = None


async def _confirmed(channel: _Channel) -> bool:
    """Wait, bounded, until Redis confirms the channel's subscription."""
    if not channel.confirmed.is_set():
        try:
            await asyncio.wait_for(channel.confirmed.wait(), SUBSCRIBE_TIMEOUT_SECONDS)
        except TimeoutError:
            return False
    return True


_hub = Hub()


def get_hub() -> Hub:
    """The process's hub (bound to the event loop its viewers run on)."""
    return _hub
