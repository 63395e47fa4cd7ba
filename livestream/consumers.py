"""The viewer's websocket: ``ws/streams/<slug>/``.

Thin: it joins the process's hub (stream events, and the user's personal events when
signed in) and presence, sends the snapshot, answers the few client messages and
leaves on disconnect. Nothing reaches it through the channel layer (see
``livestream.hub``): it takes none, so it holds no layer channel either.

Outgoing texts, per viewer, cost little more than the frame write: a text is written at
once when nothing waits ahead of it (uvicorn writes the frame without suspending while
the socket is writable). Only when a write has to wait (a slow reader: the transport is
paused) does the viewer get a backlog and one task draining it, gone again once it has
caught up; so hub events, replies and personal events never interleave mid-send, and
a viewer that falls ``SEND_BACKLOG_SIZE`` texts behind is closed (4008) instead of
buffering without bound. Thousands of viewers that keep up hold no queue and no task.

Snapshot and events, without loss or reordering: events are buffered from before the
hub join until the snapshot is sent. The snapshot's ``seq`` is read BEFORE its state, so
the state already holds every event up to that ``seq`` (events are published after
their commit); buffered events with a higher ``seq`` follow it, older ones are dropped,
and so is an event that reaches this process late (through Redis) with a ``seq`` the
last snapshot already covers. Events carry absolute values, so one applied twice in a
race would be harmless anyway; a gap means the client asks for ``resync``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import uuid

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from core.exceptions import NotFound
from livestream import announce, metrics
from livestream.broadcast import current_seq
from livestream.exceptions import NotStreamHost
from livestream.hub import get_hub
from livestream.models import Stream
from livestream.presence import presence_add, presence_count, presence_forget
from livestream.selectors import host_stats, stream_get, stream_snapshot
from livestream.services import stream_check_control
from livestream.topics import seq_of
from livestream.wire import direct_socket, release_handshake, write_all_now, write_now
from livestream.ws_auth import viewer_of

logger = logging.getLogger(__name__)

# Outgoing texts one viewer may lag behind before it is closed as too slow.
SEND_BACKLOG_SIZE = 64
# Client messages: size, and a token bucket (burst of RATE_BURST, refilled over
# RATE_PERIOD_SECONDS).
MAX_MESSAGE_BYTES = 4096
RATE_BURST = 10
RATE_PERIOD_SECONDS = 5.0
# Rebuilding a snapshot whose event buffer overflowed; past this the viewer is closed.
SNAPSHOT_ATTEMPTS = 3

CLOSE_TOO_BIG = 1009
# The user logged out: what this socket was granted at connect no longer holds.
CLOSE_LOGGED_OUT = 4001
CLOSE_NOT_FOUND = 4404
CLOSE_SLOW = 4008
CLOSE_RATE_LIMITED = 4029

PONG = '{"type":"pong"}'


def _error(code: str) -> str:
    return json.dumps({"type": "error", "code": code})


# Coalesced in ``announce``, which reads the count and publishes: sync code (Redis
# calls), so off the event loop, and not on the single thread-sensitive executor that
# the consumers' ORM calls share.
_viewers_changed = sync_to_async(announce.viewers_changed, thread_sensitive=False)


async def viewer_joined(stream_id: int, conn_id: str, user_id: int | None = None) -> None:
    """A viewer connected: counted from now on (a signed-in one as watching), and
    ``viewers.changed`` goes out."""
    await presence_add(stream_id, [conn_id], watchers=[user_id] if user_id is not None else [])
    await _viewers_changed(stream_id)


async def viewer_left(stream_id: int, conn_id: str) -> None:
    """A viewer left: no longer counted, and ``viewers.changed`` goes out."""
    await presence_forget(stream_id, [conn_id])
    await _viewers_changed(stream_id)


# A connect storm (thousands of viewers joining one stream within seconds) must not
# cost a query and a snapshot each: the stream behind a slug is remembered briefly, and
# one snapshot build serves every viewer that joins while it is fresh (see
# ``StreamConsumer._send_state`` for why that loses nothing).
STREAM_LOOKUP_SECONDS = 5.0
SNAPSHOT_SHARE_SECONDS = 1.0
_streams_by_slug: dict[str, tuple[Stream, float]] = {}
_snapshot_builds: dict[int, asyncio.Future] = {}


def _find_stream(slug: str) -> Stream | None:
    try:
        return stream_get(slug=slug)
    except NotFound:
        return None


async def _find_stream_cached(slug: str) -> Stream | None:
    remembered = _streams_by_slug.get(slug)
    if remembered is not None and time.monotonic() - remembered[1] < STREAM_LOOKUP_SECONDS:
        return remembered[0]
    stream = await database_sync_to_async(_find_stream)(slug)
    if stream is not None:
        if len(_streams_by_slug) > 10_000:  # bounded: slugs are the client's to invent
            _streams_by_slug.clear()
        _streams_by_slug[slug] = (stream, time.monotonic())
    return stream


def forget_cached_streams() -> None:
    """Forget the streams remembered by slug and any snapshot build in flight."""
    _streams_by_slug.clear()
    _snapshot_builds.clear()


async def _build_state_shared(stream_id: int, slug: str) -> tuple[int, str] | None:
    """``_build_state``, with concurrent callers for one stream waiting on one build."""
    build = _snapshot_builds.get(stream_id)
    if build is None:
        build = asyncio.ensure_future(database_sync_to_async(_build_state)(stream_id, slug))
        _snapshot_builds[stream_id] = build
        build.add_done_callback(lambda _: _snapshot_builds.pop(stream_id, None))
    state = await asyncio.shield(build)
    if state is not None:
        get_hub().share_snapshot(stream_id, *state)
    return state


def _build_state(stream_id: int, slug: str) -> tuple[int, str] | None:
    """``(seq, stream.state text)``; None if the stream is gone. The seq is read first:
    the state then includes at least every event up to it."""
    seq = current_seq(stream_id)
    stream = _find_stream(slug)
    if stream is None:
        return None
    snapshot = stream_snapshot(stream=stream)
    snapshot["viewers"] = presence_count(stream_id)
    snapshot["seq"] = seq
    text = json.dumps(
        {"type": "stream.state", "seq": seq, "stream": snapshot},
        separators=(",", ":"),
        default=str,
    )
    return seq, text


def _host_stats_text(stream_id: int) -> str | None:
    stream = Stream.objects.filter(pk=stream_id).first()
    if stream is None:
        return None
    stats = host_stats(stream=stream, viewers=presence_count(stream_id))
    return json.dumps(stats, separators=(",", ":"), default=str)


class TokenBucket:
    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, *, burst: int, period: float):
        self.capacity = float(burst)
        self.rate = burst / period
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class StreamConsumer(AsyncWebsocketConsumer):
    """One viewer of one stream (anonymous, session, ``?ticket=`` or ``?token=``)."""

    # A process holds thousands of these: all its state in slots (no instance dict),
    # since a dict of this many keys costs more than the rest of the object
    # (bench/README.md).
    __slots__ = (
        "_backlog",
        "_bucket",
        "_close_task",
        "_closing",
        "_drain",
        "_floor_seq",
        "_host_stats",
        "_joined",
        "_pending",
        "_pending_floor",
        "_pending_overflow",
        "_wire",
        "base_send",
        "channel_layer",
        "conn_id",
        "is_host",
        "scope",
        "slug",
        "stream_id",
        "user_id",
    )
    groups = ()  # none: Channels would otherwise give each socket its own empty list

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream_id: int | None = None
        self.conn_id = ""
        self.is_host = False
        self._closing = False
        self._joined = False
        # Texts waiting behind a write that could not finish at once, and the task
        # finishing that write and draining them: both None while the viewer keeps up.
        self._backlog: collections.deque[str] | None = None
        self._drain: asyncio.Task | None = None
        self._host_stats: asyncio.Task | None = None
        self._close_task: asyncio.Task | None = None
        self._pending: list[str] | None = None
        self._pending_overflow = False
        self._pending_floor: int | None = None
        self._floor_seq = 0
        self.user_id: int | None = None  # signed in: personal events, watch time
        self._bucket: TokenBucket | None = None  # made at the first client message
        # The server's socket, when frames may be written to it directly (livestream.wire).
        self._wire = None

    # -- lifecycle ------------------------------------------------------------------------

    async def __call__(self, scope, receive, send):
        """Channels' loop, minus what a viewer does not need: no channel layer, and one
        message read at a time without a task around each (Channels' ``await_many_dispatch``
        keeps one per socket to also wait on the layer)."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # Also when the consumer dies without a disconnect message (cancelled at
            # shutdown, crashed): never leave a ghost in the hub or in presence.
            await self._cleanup()

    async def dispatch(self, message):
        """Channels' dispatch without its hop to the sync thread per message to close
        old database connections: every database call here goes through
        ``database_sync_to_async``, which closes them around each call already, and
        in a connect storm those hops (one per connect, one per disconnect) queue in
        the one thread every socket's database work shares, ahead of the snapshots."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self):
        self.conn_id = uuid.uuid4().hex
        # Who the viewer is, resolved here once rather than by a middleware's copy of
        # the scope per socket; the scope is this socket's own (the router's copy), as
        # Channels' own ``login`` sets it.
        user = self.scope["user"] = await viewer_of(self.scope)

        self.slug = self.scope["url_route"]["kwargs"]["slug"]
        stream = await _find_stream_cached(self.slug)
        await self.accept()
        self._wire = direct_socket(self.base_send)
        if self._wire is not None:
            release_handshake(self._wire)
        if stream is None:
            self._closing = True
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.stream_id = stream.pk
        self.is_host = _can_control(stream, user)

        if stream.status == Stream.Status.ENDED:
            # Nothing happens on it any more: its snapshot, and no subscription, presence
            # or personal events (sockets to ended streams must hold no channels).
            await self._send_state()
            return
        self._pending = []  # buffer hub events until the snapshot is out
        self._joined = True
        # Read right before joining, with no await in between: every event fanned out
        # before this viewer was added has a seq of at most this; later ones are buffered.
        self._pending_floor = get_hub().seen_seq(self.stream_id)
        if user is not None and user.is_authenticated:
            self.user_id = user.pk
        await get_hub().join(self.stream_id, self)
        await viewer_joined(self.stream_id, self.conn_id, self.user_id)
        if self.user_id is not None:
            await get_hub().join_user(self.user_id, self)
        await self._send_state()
        if self.is_host:
            self._host_stats = asyncio.create_task(self._host_stats_loop())

    async def _host_stats_loop(self):
        """The host's console: live stats every few seconds, to this socket only."""
        while not self._closing:
            try:
                text = await database_sync_to_async(_host_stats_text)(self.stream_id)
            except Exception:  # a database hiccup skips one update, never the socket
                logger.exception("stream %s: host stats failed", self.stream_id)
                text = None
            if text is not None:
                self._enqueue(text)
            await asyncio.sleep(settings.HOST_STATS_SECONDS)

    async def disconnect(self, code):
        await self._cleanup()

    async def _cleanup(self):
        self._closing = True
        drain, self._drain = self._drain, None
        if drain is not None:
            drain.cancel()
        stats, self._host_stats = self._host_stats, None
        if stats is not None:
            stats.cancel()
        if not self._joined:
            return
        self._joined = False
        try:
            await get_hub().leave(self.stream_id, self)
            if self.user_id is not None:
                await get_hub().leave_user(self.user_id, self)
        finally:
            try:
                await viewer_left(self.stream_id, self.conn_id)
            except Exception:  # Redis away: the member ages out of the count by itself
                logger.exception("stream %s: presence leave failed", self.stream_id)

    # -- outgoing -------------------------------------------------------------------------

    def offer(self, text: str, seq: int | None = None) -> bool:
        """From the hub: queue a stream event (False: this viewer is too slow, closing).
        ``seq``: the event's, parsed once by the hub for all its viewers."""
        if self._closing:
            return False
        if self._pending is not None:
            if len(self._pending) < SEND_BACKLOG_SIZE:
                self._pending.append(text)
            else:
                self._pending_overflow = True  # the snapshot is rebuilt
                metrics.SUPERSEDED.inc()
            return True
        if self._floor_seq:
            # Already in the last snapshot (it arrived late, through Redis).
            if seq is None:
                seq = seq_of(text)
            if seq is not None and seq <= self._floor_seq:
                metrics.SUPERSEDED.inc()
                return True
        return self._enqueue(text)

    def offer_many(
        self, texts: tuple[str, ...], seqs: list[int | None], least_seq: int | None
    ) -> bool:
        """From the hub: several stream events in order (read in one go by a hub that fell
        behind), each ``offer``ed as above; a viewer that keeps up, and whose snapshot
        holds none of them (``least_seq``: their lowest seq, None if one has none), gets
        them all in one write."""
        if (
            self._wire is not None
            and self._drain is None
            and self._pending is None
            and not self._closing
            and least_seq is not None
            and least_seq > self._floor_seq
            and write_all_now(self._wire, texts)
        ):
            return True
        return all(self.offer(text, seq) for text, seq in zip(texts, seqs, strict=True))

    def _enqueue(self, text: str) -> bool:
        if self._closing:
            return False
        if self._drain is None:
            return self._send_now(text)
        if len(self._backlog) >= SEND_BACKLOG_SIZE:
            metrics.SLOW_CLOSED.inc()
            self._close_soon(CLOSE_SLOW)
            return False
        self._backlog.append(text)
        return True

    def _close_soon(self, code: int) -> None:
        if self._closing:
            return
        self._closing = True
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        # Held: the loop keeps only a weak reference to a task.
        self._close_task = asyncio.get_running_loop().create_task(self._close(code))

    async def _close(self, code: int) -> None:
        with contextlib.suppress(Exception):
            await self.close(code=code)

    def _send_now(self, text: str) -> bool:
        """Run the send coroutine by hand, straight into uvicorn's ``send`` (a viewer
        needs none of the consumer's wrappers): when the socket is writable, uvicorn
        writes the frame without ever suspending, so it completes here, with no task
        switch per viewer of a fan-out. If it does suspend (the transport is paused: a
        slow reader), a drain task finishes it and what follows waits behind it.
        Under uvicorn, the frame is written to the socket directly when that send would
        write it at once (``livestream.wire``: built once per event, not per viewer)."""
        if self._wire is not None and write_now(self._wire, text):
            return True
        sending = self.base_send({"type": "websocket.send", "text": text})
        try:
            waiting_on = sending.send(None)
        except StopIteration:
            return True
        except Exception as exc:  # the socket is gone; disconnect cleans up
            logger.debug("stream %s: send failed: %s", self.stream_id, exc)
            self._closing = True
            return False
        self._backlog = collections.deque()
        self._drain = asyncio.get_running_loop().create_task(
            self._drain_backlog(sending, waiting_on)
        )
        return True

    async def _drain_backlog(self, sending, waiting_on) -> None:
        """Finish the write that suspended, then the texts queued behind it, in order;
        once caught up, the viewer is back on the direct path."""
        try:
            await _resume(sending, waiting_on)
            while self._backlog:
                text = self._backlog.popleft()
                await self.base_send({"type": "websocket.send", "text": text})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket is gone; disconnect cleans up
            logger.debug("stream %s: send failed: %s", self.stream_id, exc)
            self._closing = True
        finally:
            if self._drain is asyncio.current_task():
                self._drain = None
                self._backlog = None

    async def _send_state(self):
        """Send a fresh ``stream.state``, then the events buffered meanwhile that are
        newer than it."""
        if self._pending is None:
            self._pending = []
            self._pending_floor = get_hub().seen_seq(self.stream_id)
        try:
            for _ in range(SNAPSHOT_ATTEMPTS):
                self._pending_overflow = False
                state = await self._state_since(self._pending_floor)
                if state is None:
                    self._close_soon(CLOSE_NOT_FOUND)
                    return
                if not self._pending_overflow:
                    break
                # Events were dropped: all of them are older than a snapshot built now.
                self._pending = []
            else:
                self._close_soon(CLOSE_SLOW)
                return
            seq, text = state
            pending = self._pending
            self._floor_seq = seq
        finally:
            self._pending = None
        self._enqueue(text)
        for event in pending:
            event_seq = seq_of(event)
            if event_seq is None or event_seq > seq:
                self._enqueue(event)

    async def _state_since(self, floor: int | None) -> tuple[int, str] | None:
        """A ``stream.state`` holding every event up to ``floor``: events fanned out
        before buffering began have a seq of at most ``floor``, later ones are in the
        buffer, so a snapshot (shared, or from a build already running) whose seq is at
        least ``floor`` misses nothing. Without a floor (no confirmed subscription yet,
        or events were lost) only a build started now will do."""
        hub = get_hub()
        if floor is not None:
            shared = hub.shared_snapshot(
                self.stream_id, floor=floor, max_age=SNAPSHOT_SHARE_SECONDS
            )
            if shared is not None:
                return shared
            state = await _build_state_shared(self.stream_id, self.slug)
            if state is None or state[0] >= floor:
                return state
        state = await database_sync_to_async(_build_state)(self.stream_id, self.slug)
        if state is not None:
            hub.share_snapshot(self.stream_id, *state)
        return state

    def personal(self, text: str) -> None:
        """From the hub: ``reservation.updated`` and other personal events."""
        self._enqueue(text)

    def logged_out(self) -> None:
        """From the hub: its user logged out (``broadcast.user_signed_out``). Closed
        rather than kept as anonymous, so the client knows and reconnects as whoever its
        credentials now say; until the close completes it is no host and gets nothing
        more."""
        self.is_host = False
        self._close_soon(CLOSE_LOGGED_OUT)

    # -- incoming -------------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if self._closing:
            return
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > MAX_MESSAGE_BYTES:
            self._close_soon(CLOSE_TOO_BIG)
            return
        if self._bucket is None:
            self._bucket = TokenBucket(burst=RATE_BURST, period=RATE_PERIOD_SECONDS)
        if not self._bucket.take():
            self._close_soon(CLOSE_RATE_LIMITED)
            return
        try:
            if text_data is None:
                raise ValueError("binary frame")
            content = json.loads(text_data)
        except ValueError:
            self._enqueue(_error("invalid_json"))
            return
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ping":
            self._enqueue(PONG)
        elif kind == "resync":
            metrics.RESYNCS.inc()
            try:
                await self._send_state()
            except Exception:
                logger.exception("stream %s: resync failed", self.stream_id)
                self._enqueue(_error("unavailable"))
        else:
            self._enqueue(_error("unknown_type"))


async def _resume(coroutine, waiting_on) -> None:
    """Finish a coroutine that was started by hand and suspended on ``waiting_on`` (a
    future), stepping it as an asyncio task would."""
    while True:
        if waiting_on is None:
            await asyncio.sleep(0)  # a bare yield: just let the loop run once
        else:
            # What a task does with a future a coroutine yields: clear its "blocking"
            # mark, wait for it; the coroutine gets the outcome itself when resumed.
            waiting_on._asyncio_future_blocking = False
            with contextlib.suppress(Exception):
                await waiting_on
        try:
            waiting_on = coroutine.send(None)
        except StopIteration:
            return


def _can_control(stream: Stream, user) -> bool:
    if user is None:
        return False
    try:
        stream_check_control(stream=stream, user=user)
    except NotStreamHost:
        return False
    return True
