"""Websocket caps on the real ASGI server: a full process, or an address at its cap,
gets a new socket closed at once with a code and a retry hint; the sockets it holds
keep working. Shedding by the event loop's lag is shown in process, on a loop the test
blocks itself (a real server's loop cannot be made late on cue from outside)."""

import asyncio
import json
import time
from contextlib import ExitStack, contextmanager

import pytest
from channels.testing import WebsocketCommunicator
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from livestream.ws_limits import CLOSE_SERVER_FULL, CLOSE_TOO_MANY_FROM_ADDRESS
from tests.processes import asgi_server


@contextmanager
def _open(server, *, address: str | None = None):
    headers = {"X-Forwarded-For": address} if address else None
    with connect(
        f"{server.ws_url}/ws/healthz/",
        origin="http://127.0.0.1",
        additional_headers=headers,
        open_timeout=5,
    ) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"type": "ok"}
        yield ws


def _enter_once_freed(
    stack: ExitStack,
    server,
    *,
    address: str | None = None,
    refused_with: int = CLOSE_SERVER_FULL,
    seconds: float = 5.0,
):
    """A socket opened (and held by ``stack``) as soon as the server has counted a closed
    one out: a client's close reaches the server's count a moment after the client is
    done with it. Only the cap's own close (``refused_with``) is waited out."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return stack.enter_context(_open(server, address=address))
        except ConnectionClosed as refused:
            capped = refused.rcvd is not None and refused.rcvd.code == refused_with
            if not capped or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _refused(server, *, address: str | None = None, headers=None, origin="http://127.0.0.1"):
    """The close a refused socket gets: (code, reason as JSON). ``headers`` instead of
    ``address`` for other header lists (several X-Forwarded-For, say)."""
    if address:
        headers = {"X-Forwarded-For": address}
    with (
        connect(
            f"{server.ws_url}/ws/healthz/",
            origin=origin,
            additional_headers=headers,
            open_timeout=5,
        ) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=5)
    return closed.value.rcvd.code, json.loads(closed.value.rcvd.reason)


def _still_answers(ws) -> None:
    ws.send(json.dumps({"type": "ping"}))
    assert json.loads(ws.recv(timeout=5)) == {"type": "pong"}


@pytest.fixture
def db_ready(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        yield


def test_a_full_process_refuses_the_next_socket_with_4503_and_a_retry_hint(db_ready):
    with (
        asgi_server(
            WS_MAX_CONNECTIONS_PER_PROCESS="3",
            WS_MAX_CONNECTIONS_PER_ADDRESS="0",
            WS_RETRY_AFTER_SECONDS="4",
        ) as server,
        ExitStack() as held,
    ):
        sockets = [held.enter_context(_open(server)) for _ in range(3)]

        code, reason = _refused(server)
        assert code == CLOSE_SERVER_FULL
        assert reason["code"] == "server_full"
        assert 4 <= reason["retry_after"] <= 8
        # Refused before the origin check: a full process does no work for anyone.
        assert _refused(server, origin="https://evil.example")[0] == CLOSE_SERVER_FULL
        for ws in sockets:
            _still_answers(ws)

        sockets.pop().close()  # a place frees up, once the server has seen the close
        _enter_once_freed(held, server)
        assert _refused(server)[0] == CLOSE_SERVER_FULL


def test_an_address_at_its_cap_is_refused_with_4429_and_others_still_connect(db_ready):
    with (
        asgi_server(
            WS_MAX_CONNECTIONS_PER_PROCESS="0",
            WS_MAX_CONNECTIONS_PER_ADDRESS="2",
            TRUSTED_PROXY_COUNT="1",
        ) as server,
        ExitStack() as held,
    ):
        crowd = "203.0.113.5"
        first = held.enter_context(_open(server, address=crowd))
        held.enter_context(_open(server, address=crowd))

        code, reason = _refused(server, address=crowd)
        assert (code, reason["code"]) == (CLOSE_TOO_MANY_FROM_ADDRESS, "too_many_connections")
        assert reason["retry_after"] >= 1
        held.enter_context(_open(server, address="203.0.113.6"))  # another address
        _still_answers(first)

        first.close()
        # its place is free again
        _enter_once_freed(held, server, address=crowd, refused_with=CLOSE_TOO_MANY_FROM_ADDRESS)


def test_an_address_in_a_second_forwarded_header_is_the_one_counted(db_ready):
    """The trusted proxy's entry is the last of all X-Forwarded-For headers joined, as
    Django reads them: a client's own first header does not escape the cap."""
    with (
        asgi_server(
            WS_MAX_CONNECTIONS_PER_PROCESS="0",
            WS_MAX_CONNECTIONS_PER_ADDRESS="1",
            TRUSTED_PROXY_COUNT="1",
        ) as server,
        ExitStack() as held,
    ):
        held.enter_context(_open(server, address="203.0.113.9"))
        code, _ = _refused(
            server,
            headers=[
                ("X-Forwarded-For", "198.51.100.77"),  # the client's own words
                ("X-Forwarded-For", "203.0.113.9"),  # what the proxy appended
            ],
        )
        assert code == CLOSE_TOO_MANY_FROM_ADDRESS


# --- shedding by load: the event loop's own lateness, in process ----------------------


def _health_behind_limits():
    from channels.routing import URLRouter
    from django.urls import path

    from core.health import HealthConsumer
    from livestream.ws_limits import ConnectionLimits

    return ConnectionLimits(URLRouter([path("ws/healthz/", HealthConsumer.as_asgi())]))


async def _join(app) -> tuple[WebsocketCommunicator, dict]:
    """A socket through the caps: (communicator, its first output after the accept)."""
    communicator = WebsocketCommunicator(app, "/ws/healthz/")
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator, await communicator.receive_output(timeout=5)


async def test_a_process_whose_loop_runs_late_refuses_joins_until_it_has_caught_up(settings):
    settings.WS_SHED_LOOP_LAG_MS = 300
    settings.WS_RETRY_AFTER_SECONDS = 4
    app = _health_behind_limits()
    held, first = await _join(app)
    assert first["type"] == "websocket.send"

    time.sleep(1.0)  # the loop is blocked, as by a fan-out it cannot keep up with
    await asyncio.sleep(0)  # the late tick runs
    _, output = await _join(app)
    assert output["type"] == "websocket.close"
    assert output["code"] == CLOSE_SERVER_FULL
    reason = json.loads(output["reason"])
    assert reason["code"] == "server_busy" and 4 <= reason["retry_after"] <= 8

    # Prompt ticks bring the lag down: joins are taken again within a few of them.
    deadline = asyncio.get_running_loop().time() + 3
    while True:
        again, output = await _join(app)
        if output["type"] == "websocket.send":
            break
        assert asyncio.get_running_loop().time() < deadline, "still refusing"
        await asyncio.sleep(0.05)
    # The socket it held kept working throughout.
    await held.send_json_to({"type": "ping"})
    assert await held.receive_json_from(timeout=5) == {"type": "pong"}
    for communicator in (held, again):
        await communicator.disconnect()


async def test_lag_shedding_set_to_0_never_refuses(settings):
    settings.WS_SHED_LOOP_LAG_MS = 0
    app = _health_behind_limits()
    held, _ = await _join(app)
    time.sleep(1.0)
    await asyncio.sleep(0)
    joined, output = await _join(app)
    assert output["type"] == "websocket.send"
    for communicator in (held, joined):
        await communicator.disconnect()
