"""Websocket caps on the real ASGI server: a full process, or an address at its cap,
gets a new socket closed at once with a code and a retry hint; the sockets it holds
keep working."""

import json
from contextlib import ExitStack, contextmanager

import pytest
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


def _refused(server, *, address: str | None = None, origin="http://127.0.0.1"):
    """The close a refused socket gets: (code, reason as JSON)."""
    headers = {"X-Forwarded-For": address} if address else None
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

        sockets.pop().close()  # a place frees up
        held.enter_context(_open(server))
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
        held.enter_context(_open(server, address=crowd))  # its place is free again


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
        with (
            connect(
                f"{server.ws_url}/ws/healthz/",
                origin="http://127.0.0.1",
                additional_headers=[
                    ("X-Forwarded-For", "198.51.100.77"),  # the client's own words
                    ("X-Forwarded-For", "203.0.113.9"),  # what the proxy appended
                ],
                open_timeout=5,
            ) as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == CLOSE_TOO_MANY_FROM_ADDRESS
