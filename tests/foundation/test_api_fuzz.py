"""Hostile requests to every unsafe operation of the API, on the real server: deep and huge
bodies, wrong types, odd unicode, invalid UTF-8, NUL bytes, odd content types, odd
Idempotency-Key and Authorization values, anonymous and signed in. Every answer is below
500, every refusal is JSON with a machine ``code``, and no row anywhere changed."""

from __future__ import annotations

import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import pytest
from django.apps import apps
from rest_framework.authtoken.models import Token

from shop.services.checkout import checkout_create
from tests.factories import UserFactory, live_drop
from tests.processes import asgi_server
from tests.shop.factories import held_reservation

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
DEEP = 5_000
# Every model of ours and Django's users, groups and tokens: their rows, field by field.
WATCHED_APPS = ("shop", "inventory", "livestream", "auth", "authtoken")

# A body meant to be refused everywhere: every field any operation takes, of a wrong type.
WRONG_TYPES = {
    "quantity": "1",
    "username": 1,
    "password": ["x"],
    "title": {"x": 1},
    "variant": "x",
    "price": [],
    "per_viewer_limit": "a",
    "starts_at": 5,
    "ends_at": {},
    "duration_seconds": "x",
    "scheduled_for": [],
}

BODIES: list[tuple[str, bytes]] = [
    ("deep-array", b"[" * DEEP + b"]" * DEEP),
    ("deep-object", b'{"quantity": ' * DEEP + b"1" + b"}" * DEEP),
    ("deep-33", b"[" * 33 + b"]" * 33),
    ("empty", b""),
    ("whitespace", b" \n\t "),
    ("truncated", b'{"quantity": '),
    ("form-in-json", b"quantity=1&username=a"),
    ("null", b"null"),
    ("true", b"true"),
    ("big-number", b"123456789012345678901234567890"),
    ("string", b'"quantity"'),
    ("list", b"[1, 2, 3]"),
    ("wrong-types", json.dumps(WRONG_TYPES).encode()),
    ("huge-int", b'{"quantity": ' + b"9" * 5_000 + b"}"),
    ("floats", b'{"quantity": 1e999, "price": 1e999, "variant": 1.5, "per_viewer_limit": -0.0}'),
    ("nan", b'{"quantity": NaN, "price": Infinity}'),
    (
        "negative",
        json.dumps(
            {"quantity": -1, "price": "-1.00", "variant": -1, "per_viewer_limit": -5}
        ).encode(),
    ),
    ("overflow", json.dumps({"quantity": 2**64, "variant": 2**63, "price": "1e99999"}).encode()),
    ("surrogates", b'{"username": "\\ud800", "password": "\\udfff", "title": "\\ud83d"}'),
    (
        "nul-in-strings",
        json.dumps({"username": "a\x00b", "password": "\x00", "title": "\x00"}).encode(),
    ),
    ("nul-bytes", b'{"quantity": "x"}\x00\x00'),
    ("only-nul", b"\x00" * 64),
    ("invalid-utf8", b'{"username": "\xff\xfe", "password": "\xc3\x28", "title": "\x80"}'),
    ("bom", b'\xef\xbb\xbf{"quantity": "x"}'),
    (
        "odd-unicode",
        json.dumps(
            {
                "username": "\u202eadmin\u200b",
                "password": "\ufeff" * 10,
                "title": "\U0001f389" * 500,
                "quantity": "\u0661",  # ARABIC-INDIC DIGIT ONE
                "variant": "\uff11",  # FULLWIDTH DIGIT ONE
            },
            ensure_ascii=False,
        ).encode(),
    ),
    ("long-strings", json.dumps({"username": "u" * 60_000, "title": "t" * 1_000}).encode()),
    ("duplicate-keys", b'{"quantity": 1, "quantity": "x"}'),
    ("many-keys", json.dumps({f"k{i}": i for i in range(3_000)}).encode()),
    ("wide-array", b"[" + b"0," * 20_000 + b"0]"),
]
# For a method the operation does not have: the framework refuses it before the body.
FEW_BODIES = [b for b in BODIES if b[0] in ("deep-array", "invalid-utf8", "wrong-types")]

CONTENT_TYPES = [
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=xyz",
    "application/json; charset=utf-16",
    "application/json; charset=bogus",
    "application/json; charset=bz2_codec",
    "application/vnd.api+json",
    "*/*",
    "application/json, text/html",
    "",
]
AUTHORIZATIONS = [
    b"Token",
    b"Token a b",
    b"Bearer abc",
    b"Basic Zm9vOmJhcg==",
    b"Token " + b"x" * 10_000,
    b"Token \xff\xfe",
]
IDEMPOTENCY_KEYS = [
    b"",
    b"k" * 256,
    b"k" * 10_000,
    b"\xe9t\xe9",
    b"tab\tkey",
    b"waitlist-offer:1",
]
ACCEPTS = ["text/html", "application/xml", "*/*;q=0"]


@dataclass
class World:
    paths: dict[str, set[str]]  # path with its ids filled -> the unsafe methods it has
    token: str
    reserve_path: str
    # The stream's host, on the operations that take a body (the others, start, end,
    # pin, are writes by design), so that the host's validation is reached too.
    host_token: str = ""
    bodied: set[tuple[str, str]] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    sent: int = 0


def _snapshot() -> dict[str, list[dict]]:
    rows = {}
    for label in WATCHED_APPS:
        for model in apps.get_app_config(label).get_models():
            rows[model._meta.label] = list(model._default_manager.order_by("pk").values())
    return rows


def _fill(template: str, ids: dict[str, object]) -> str:
    for name, value in ids.items():
        template = template.replace("{" + name + "}", str(value))
    assert "{" not in template, f"no id for a parameter of {template}"
    return template


def _check(world: World, what: str, status: int, headers, content: bytes) -> None:
    if status >= 500:
        world.failures.append(f"{what}: {status} {content[:200]!r}")
        return
    if status < 400:
        return  # judged by the rows: nothing may have been written
    if not headers.get("content-type", "").startswith("application/json"):
        world.failures.append(f"{what}: {status} not JSON: {content[:200]!r}")
        return
    try:
        body = json.loads(content)
    except ValueError:
        world.failures.append(f"{what}: {status} unreadable JSON: {content[:200]!r}")
        return
    if not (isinstance(body, dict) and isinstance(body.get("code"), str) and body["code"]):
        world.failures.append(f"{what}: {status} no machine code: {content[:200]!r}")


def _send(world, http: httpx.Client, method, path, body, headers, what):
    try:
        response = http.request(method, path, content=body, headers=headers)
    except httpx.HTTPError as exc:
        world.failures.append(f"{what}: no answer: {exc!r}")
        return
    _check(world, what, response.status_code, response.headers, response.content)


def _declared_too_big(world: World, port: int, method: str, path: str, auth: bytes | None):
    """A body declared at 100 MiB with 1 KiB sent: the answer must come without the rest."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Idempotency-Key: fuzz-big\r\nContent-Length: {100 * 1024 * 1024}\r\n"
    ).encode()
    if auth:
        head += b"Authorization: " + auth + b"\r\n"
    what = f"{method} {path} declared 100 MiB"
    raw = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(head + b"\r\n" + b'{"quantity": "' + b"x" * 1024)
            while chunk := sock.recv(65536):
                raw += chunk
    except OSError as exc:
        world.failures.append(f"{what}: {exc!r} after {raw[:200]!r}")
        return
    head_part, _, content = raw.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (
            line.decode("latin-1").partition(":") for line in head_part.split(b"\r\n")[1:]
        )
    }
    if status != 413:
        world.failures.append(f"{what}: {status}, not 413")
    _check(world, what, status, headers, content)


def _cases(world: World):
    """(identity's Authorization, method, path, body, extra headers, label) to send."""
    viewer = f"Token {world.token}".encode()
    for auth in (None, viewer):
        for path, methods in world.paths.items():
            for method in UNSAFE:
                if auth and path == "/api/auth/logout/":
                    continue  # signing out revokes the token: a write by design
                bodies = BODIES if method in methods else FEW_BODIES
                for name, body in bodies:
                    yield auth, method, path, body, {"Content-Type": "application/json"}, name
    host = f"Token {world.host_token}".encode()
    for path, method in sorted(world.bodied):
        for name, body in BODIES:
            yield host, method, path, body, {"Content-Type": "application/json"}, f"host {name}"
    for path, methods in world.paths.items():
        for method in sorted(methods):
            if path == "/api/auth/logout/":
                continue
            wrong = json.dumps(WRONG_TYPES).encode()
            for content_type in CONTENT_TYPES:
                headers = {} if content_type is None else {"Content-Type": content_type}
                yield viewer, method, path, wrong, headers, f"content-type {content_type!r}"
            for bad in AUTHORIZATIONS:
                yield bad, method, path, wrong, {"Content-Type": "application/json"}, "auth"
            for accept in ACCEPTS:
                headers = {"Content-Type": "application/json", "Accept": accept}
                yield viewer, method, path, wrong, headers, f"accept {accept}"
    for key in IDEMPOTENCY_KEYS:
        for name, body in (("wrong-types", json.dumps(WRONG_TYPES).encode()), BODIES[0]):
            headers = {"Content-Type": "application/json", "Idempotency-Key": key}
            yield viewer, "POST", world.reserve_path, body, headers, f"key {key[:20]!r} {name}"


def _run(world: World, base_url: str) -> None:
    cases = list(_cases(world))
    world.sent = len(cases)
    lanes = 6

    def lane(index: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            for auth, method, path, body, headers, label in cases[index::lanes]:
                headers = dict(headers)
                if auth is not None:
                    headers["Authorization"] = auth
                # An Idempotency-Key on every request, so that the body is what is judged.
                headers.setdefault("Idempotency-Key", "fuzz-1")
                who = {
                    f"Token {world.token}".encode(): "viewer",
                    f"Token {world.host_token}".encode(): "host",
                }.get(auth, "anon")
                _send(world, http, method, path, body, headers, f"{who} {method} {path} {label}")

    with ThreadPoolExecutor(lanes) as pool:
        list(pool.map(lane, range(lanes)))


@pytest.fixture
def world(django_db_blocker):
    """A live stream with a pinned drop on sale, another viewer's hold and paid order;
    the fuzzing viewer owns nothing, hosts nothing, and is on no waitlist."""
    drop = live_drop(quantity=5, on_hand=20, per_viewer_limit=2, price=Decimal("9.99"))
    other = UserFactory()
    hold = held_reservation(customer=other)
    order_hold = held_reservation(customer=other)
    order = checkout_create(customer_id=other.pk, reservation_id=order_hold.pk)
    viewer = UserFactory()
    token = Token.objects.create(user=viewer).key
    host_token = Token.objects.create(user=drop.stream.host).key
    ids = {
        "slug": drop.stream.slug,
        "drop_id": drop.pk,
        "reservation_id": hold.pk,
        "order_id": order.pk,
        "product_id": drop.variant.product_id,
        "id": drop.pk,
    }
    return ids, token, host_token, drop


@pytest.mark.server
@pytest.mark.timeout(240)
@pytest.mark.django_db(transaction=True)
def test_hostile_requests_to_every_unsafe_operation_answer_json_refusals_and_write_nothing(
    world,
):
    ids, token, host_token, drop = world
    logging.getLogger("httpx").setLevel(logging.WARNING)  # thousands of request lines
    with asgi_server(PAYMENT_WEBHOOK_SECRET="fuzz-secret") as server:
        schema = httpx.get(
            f"{server.base_url}/api/schema/", headers={"Accept": "application/json"}
        ).json()
        paths: dict[str, set[str]] = {}
        bodied: set[tuple[str, str]] = set()
        for template, operations in schema["paths"].items():
            methods = {m.upper() for m in operations if m.upper() in UNSAFE}
            paths[_fill(template, ids)] = methods
            bodied |= {
                (_fill(template, ids), m.upper())
                for m, operation in operations.items()
                if m.upper() in UNSAFE and "requestBody" in operation
            }
        # Where no route is, too.
        paths["/api/no-such-thing/"] = set()
        paths[f"/api/drops/{drop.pk}/nothing/"] = set()
        paths["/api/drops/999999999/reservations/"] = {"POST"}
        reserve = f"/api/drops/{drop.pk}/reservations/"
        assert reserve in paths and "POST" in paths[reserve]
        fuzz = World(
            paths=paths, token=token, reserve_path=reserve, host_token=host_token, bodied=bodied
        )
        assert (f"/api/streams/{drop.stream.slug}/drops/", "POST") in bodied

        before = _snapshot()
        started = time.monotonic()
        _run(fuzz, server.base_url)
        with ThreadPoolExecutor(6) as pool:
            for path, methods in paths.items():
                for method in sorted(methods):
                    for auth in (None, f"Token {token}".encode()):
                        pool.submit(_declared_too_big, fuzz, server.port, method, path, auth)
        elapsed = time.monotonic() - started
        after = _snapshot()

    assert fuzz.failures == [], "\n".join(fuzz.failures[:60])
    assert len([p for p, m in paths.items() if m]) >= 15  # the whole API was reached
    assert fuzz.sent > 1_500
    changed = {
        label: (before[label], after[label]) for label in before if before[label] != after[label]
    }
    assert changed == {}
    print(f"{fuzz.sent} hostile requests in {elapsed:.1f} s")
