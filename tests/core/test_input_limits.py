"""Unbounded input: nesting, text, numbers, body and websocket frame sizes, unknown API
paths. The size caps live in the server, so those are checked on a real uvicorn."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from rest_framework.test import APIClient
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from inventory.models import Reservation
from tests.factories import UserFactory, live_drop
from tests.processes import asgi_server

DEEP = 5_000
API_MAX_BODY_BYTES = 64 * 1024  # the default in config/settings/base.py


def _post_raw(api: APIClient, path: str, body: bytes, **headers):
    return api.generic("POST", path, body, content_type="application/json", **headers)


def _deep_array(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _deep_object(depth: int) -> bytes:
    return b'{"quantity": ' * depth + b"1" + b"}" * depth


@pytest.mark.django_db
@pytest.mark.parametrize("body", [_deep_array(DEEP), _deep_object(DEEP)], ids=["array", "object"])
def test_a_5000_deep_reserve_body_is_400_invalid_and_reserves_nothing(body):
    drop = live_drop(quantity=5)
    api = APIClient()
    api.force_authenticate(UserFactory())

    response = _post_raw(
        api, f"/api/drops/{drop.pk}/reservations/", body, HTTP_IDEMPOTENCY_KEY="deep-1"
    )

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "detail": "JSON parse error - nested deeper than 32 levels.",
    }
    assert Reservation.objects.count() == 0


@pytest.mark.django_db
def test_a_5000_deep_token_body_is_400_invalid():
    response = _post_raw(APIClient(), "/api/auth/token/", _deep_array(DEEP))

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


@pytest.mark.django_db
def test_nesting_just_past_the_limit_is_refused_and_at_the_limit_parsed():
    api = APIClient()

    too_deep = _post_raw(api, "/api/auth/token/", _deep_array(33))
    at_limit = _post_raw(api, "/api/auth/token/", _deep_array(32))

    assert (too_deep.status_code, too_deep.json()["code"]) == (400, "invalid")
    assert too_deep.json()["detail"] == "JSON parse error - nested deeper than 32 levels."
    # Parsed, then refused by the serializer as not an object.
    assert at_limit.status_code == 400
    assert at_limit.json()["errors"] == {
        "non_field_errors": ["Invalid data. Expected a dictionary, but got list."]
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            b'{"username": "\\ud800", "password": "x"}',
            "JSON parse error - a string holds an unpaired surrogate.",
        ),
        (b'{"\\udfff": 1}', "JSON parse error - a string holds an unpaired surrogate."),
        (b'{"quantity": NaN}', "JSON parse error - NaN is not a JSON number"),
        (b'{"quantity": -Infinity}', "JSON parse error - -Infinity is not a JSON number"),
    ],
    ids=["surrogate-value", "surrogate-key", "nan", "minus-infinity"],
)
def test_text_no_database_can_store_and_non_numbers_are_400_invalid(body, detail):
    drop = live_drop(quantity=5)
    api = APIClient()
    api.force_authenticate(UserFactory())

    response = _post_raw(
        api, f"/api/drops/{drop.pk}/reservations/", body, HTTP_IDEMPOTENCY_KEY="text-1"
    )

    assert response.status_code == 400
    assert response.json() == {"code": "invalid", "detail": detail}
    assert Reservation.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
@pytest.mark.parametrize("path", ["/api/nowhere/", "/api/products", "/api/drops/1/nothing/"])
def test_an_unknown_api_path_answers_json_with_debug_on(client, settings, method, path):
    settings.DEBUG = True  # the embedded default

    response = getattr(client, method)(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"code": "not_found", "detail": "Not found."}


@pytest.mark.django_db
def test_an_unknown_page_outside_the_api_is_still_a_page(client, settings):
    settings.DEBUG = False

    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


# --- On the real server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), asgi_server() as running:
        yield running


def _exchange(server, head: bytes, body: bytes = b"", *, timeout: float = 10) -> bytes:
    """Send a request head and part of a body over a plain socket, then read what the
    server answers: the way to show a body is refused before it has all arrived."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no answer in {timeout} s: {b''.join(chunks)!r}") from None
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _status_and_json(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_a_body_declared_too_big_is_refused_before_it_arrives(server):
    drop = live_drop(quantity=5)
    head = (
        f"POST /api/drops/{drop.pk}/reservations/ HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Idempotency-Key: big-1\r\nContent-Length: {100 * 1024 * 1024}\r\n\r\n"
    ).encode()

    # 1 KB of a declared 100 MiB: the answer comes without the rest.
    raw = _exchange(server, head, b'{"quantity": 1, "pad": "' + b"x" * 1000)

    assert _status_and_json(raw) == (
        413,
        {
            "code": "too_large",
            "detail": f"The request body exceeds {API_MAX_BODY_BYTES} bytes.",
            "max_bytes": API_MAX_BODY_BYTES,
        },
    )
    assert b"connection: close" in raw.lower()
    assert Reservation.objects.count() == 0


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_growing_past_the_cap_is_refused(server):
    head = (
        b"POST /api/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 8192
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    # Just past the cap, with no terminating chunk: the server must not wait for more.
    body = chunk * (API_MAX_BODY_BYTES // len(piece) + 1)

    raw = _exchange(server, head, body)

    status, error = _status_and_json(raw)
    assert (status, error["code"]) == (413, "too_large")


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_a_body_within_the_cap_reaches_the_api(server):
    body = json.dumps({"username": "u" * (API_MAX_BODY_BYTES - 100), "password": "p"})
    assert len(body) <= API_MAX_BODY_BYTES

    response = httpx.post(
        f"{server.base_url}/api/auth/token/",
        content=body,
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["errors"]["username"] == [
        "Ensure this field has no more than 150 characters."
    ]


@pytest.mark.server
def test_the_server_parses_a_deep_body_to_400_not_500(server):
    response = httpx.post(
        f"{server.base_url}/api/auth/token/",
        content=_deep_array(DEEP),
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


@pytest.mark.server
def test_a_websocket_message_over_the_frame_cap_is_refused_by_the_server(server):
    # The health consumer has no size check of its own: only the server's cap stops this.
    big = json.dumps({"type": "ping", "pad": "x" * 32 * 1024})
    with connect(f"{server.ws_url}/ws/healthz/", open_timeout=5, max_size=None) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"type": "ok"}
        ws.send(big)
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=5)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


@pytest.mark.server
def test_a_websocket_message_within_the_frame_cap_is_served(server):
    small = json.dumps({"type": "ping", "pad": "x" * 4000})
    with connect(f"{server.ws_url}/ws/healthz/", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"type": "ok"}
        ws.send(small)
        assert json.loads(ws.recv(timeout=5)) == {"type": "pong"}
