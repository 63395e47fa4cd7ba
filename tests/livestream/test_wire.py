"""Frames written straight to uvicorn's socket (``livestream.wire``): byte for byte what
the websockets library would write, used on a real uvicorn server when its own send
would write at once, and not used when compression was negotiated."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
import uvicorn
from channels.routing import URLRouter
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from livestream import broadcast, wire
from livestream.hub import get_hub
from livestream.routing import websocket_urlpatterns
from livestream.ws_auth import websocket_stack
from tests.livestream.test_consumers import _fresh_hub, make_stream  # noqa: F401 (fixture)
from tests.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70000])
def test_a_text_frame_is_the_bytes_the_websockets_library_writes(size):
    text = "é" * (size // 2) + "x" * (size % 2)
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert wire.text_frame(text) == expected


def test_the_same_text_object_is_framed_once():
    text = json.dumps({"seq": 1, "type": "stock.changed", "remaining": 3})
    assert wire.text_frame(text) is wire.text_frame(text)
    other = "".join([text])  # equal, but another object: framed again, the same bytes
    assert wire.text_frame(other) == wire.text_frame(text)


@contextlib.asynccontextmanager
async def _uvicorn(*, deflate: bool):
    """uvicorn in this test's own loop, serving the viewer websocket stack."""
    port = free_port()
    config = uvicorn.Config(
        websocket_stack(URLRouter(websocket_urlpatterns)),
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        ws_per_message_deflate=deflate,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def _watch_and_get_events(base: str, stream, *, compression) -> tuple[object, list[int]]:
    async with connect(f"{base}/ws/streams/{stream.slug}/", compression=compression) as ws:
        state = json.loads(await ws.recv())
        assert state["type"] == "stream.state"
        [viewer] = get_hub()._streams[stream.pk].connections
        seq = state["seq"]
        for n in range(1, 4):
            get_hub().deliver(stream.pk, json.dumps({"seq": seq + n, "type": "test.event"}))
        got = [json.loads(await asyncio.wait_for(ws.recv(), 5))["seq"] for _ in range(3)]
        return viewer._wire, [n - seq for n in got]


async def test_on_uvicorn_a_viewers_events_are_written_straight_to_its_socket():
    stream, _, _ = await make_stream()
    async with _uvicorn(deflate=False) as base:
        socket, events = await _watch_and_get_events(base, stream, compression=None)
    assert isinstance(socket, wire.WebSocketsSansIOProtocol)
    assert events == [1, 2, 3]


async def test_with_compression_negotiated_frames_go_through_uvicorns_send():
    stream, _, _ = await make_stream()
    async with _uvicorn(deflate=True) as base:
        socket, events = await _watch_and_get_events(base, stream, compression="deflate")
    assert socket is None
    assert events == [1, 2, 3]


async def test_a_paused_or_closed_socket_is_left_to_uvicorns_send():
    stream, _, _ = await make_stream()
    async with (
        _uvicorn(deflate=False) as base,
        connect(f"{base}/ws/streams/{stream.slug}/") as ws,
    ):
        await ws.recv()
        [viewer] = get_hub()._streams[stream.pk].connections
        protocol = viewer._wire
        assert wire.write_now(protocol, '{"type":"test.event"}')
        protocol.writable.clear()  # as uvicorn does when the transport is paused
        assert not wire.write_now(protocol, '{"type":"test.event"}')
        protocol.writable.set()
        protocol.close_sent = True
        assert not wire.write_now(protocol, '{"type":"test.event"}')
        protocol.close_sent = False


@contextlib.asynccontextmanager
async def _one_viewer(stream):
    """One real client watching ``stream`` on a real uvicorn: the client, its snapshot
    and the server's consumer of it."""
    async with (
        _uvicorn(deflate=False) as base,
        connect(f"{base}/ws/streams/{stream.slug}/") as ws,
    ):
        state = json.loads(await ws.recv())
        [viewer] = get_hub()._streams[stream.pk].connections
        yield ws, state, viewer


@pytest.mark.redis
async def test_on_uvicorn_events_waiting_together_are_one_write_and_still_separate_messages():
    """A hub that fell behind writes the events waiting for a viewer in one go; the
    client still reads each as its own message, all of them, in order."""
    stream, _, _ = await make_stream()
    async with _one_viewer(stream) as (ws, state, viewer):
        transport = viewer._wire.transport
        writes = []
        real_write = transport.write
        transport.write = lambda data: (writes.append(data), real_write(data))[1]
        # Published while this loop does not run, as when a fan-out keeps it busy.
        seqs = [broadcast.publish(stream.pk, "test.event", n=n) for n in range(30)]
        got = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in seqs]
    assert [event["seq"] for event in got] == seqs
    assert seqs[0] > state["seq"]
    assert [event["n"] for event in got] == list(range(30))
    # Every event went through the direct writes, in fewer writes than events.
    assert b"".join(writes).count(b'"type":"test.event"') == 30
    assert len(writes) < len(seqs)


async def test_on_uvicorn_a_viewer_keeps_no_handshake_headers_and_still_works():
    """The parsed handshake is dropped once done; events, pings and the close still go."""
    stream, _, _ = await make_stream()
    async with _one_viewer(stream) as (ws, state, viewer):
        protocol = viewer._wire
        assert protocol.request is None and protocol.response is None
        assert viewer.scope["headers"]  # the app's own view of the request is kept
        get_hub().deliver(stream.pk, json.dumps({"seq": state["seq"] + 1, "type": "test.event"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "test.event"
        await asyncio.wait_for(await ws.ping(), 5)
        await ws.close()
        assert ws.close_code == 1000
