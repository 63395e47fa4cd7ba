"""The front door (``livestream/front_door.py``): the reserve request's refusals and
replays answered ahead of Django from one Redis script, everything else handed to
Django untouched. Called here as an ASGI app with a stand-in for Django that records
what reached it, on the real Redis and database; ``test_front_door_server.py`` runs
both paths on the real server."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from django.db import OperationalError
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

from core.api import idempotency
from core.api.authentication import CachedTokenAuthentication, token_cache_key, token_forget
from core.api.throttles import ReserveIPThrottle, ReserveUserThrottle, throttle_redis_key
from core.redis import SharedConnection, get_redis
from inventory import gate
from inventory.models import Reservation
from inventory.services.gate_sync import gate_rebuild
from livestream import front_door, services
from livestream.selectors import drop_routing
from tests.factories import UserFactory, live_drop
from tests.inventory.invariants import assert_inventory_invariants

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


@pytest.fixture(autouse=True)
def _door(gate_on, settings):
    settings.FRONT_DOOR_ENABLED = True
    front_door.forget_tokens()
    yield
    front_door.forget_tokens()


def _buyer(*, cached=True, **fields) -> tuple:
    user = UserFactory(**fields)
    token = Token.objects.create(user=user)
    if cached:  # as after the buyer's first request through Django
        CachedTokenAuthentication().authenticate_credentials(token.key)
    return user, token.key


def _routed(drop):
    drop_routing(drop.pk)  # this process has seen the drop
    return drop


def _sold_out_drop():
    drop = _routed(live_drop(quantity=1))
    other = UserFactory()
    services.drop_reserve(drop_id=drop.pk, customer_id=other.pk, quantity=1, idempotency_key="x")
    return drop


class Sent:
    def __init__(self):
        self.status = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.django_got: list[bytes] = []

    @property
    def answered_by_door(self) -> bool:
        return not self.django_got

    def json(self):
        return json.loads(self.body)


def post(
    drop_id,
    body=b'{"quantity": 1}',
    *,
    token=None,
    key="key-1",
    headers=(),
    path=None,
    client=("127.0.0.1", 5000),
    scheme="http",
    content_type="application/json",
) -> Sent:
    sent = Sent()
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = [(b"host", b"testserver"), (b"content-type", content_type.encode())]
    if token is not None:
        all_headers.append((b"authorization", f"Token {token}".encode()))
    if key is not None:
        all_headers.append((b"idempotency-key", key.encode()))
    all_headers += [(name.encode(), value.encode()) for name, value in headers]
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": scheme,
        "path": path or f"/api/drops/{drop_id}/reservations/",
        "query_string": b"",
        "headers": all_headers,
        "client": client,
    }

    async def django(scope, receive, send_):
        message = await receive()
        sent.django_got.append(message["body"])
        await send_({"type": "http.response.start", "status": 299, "headers": []})
        await send_({"type": "http.response.body", "body": b"from django"})

    async def receive():
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            sent.status = message["status"]
            sent.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            sent.body += message.get("body", b"")

    async def run():
        await front_door.FrontDoor(django)(scope, receive, send)
        await front_door.close_clients()

    async_to_sync(run)()
    return sent


async def _call(door, drop_id, *, token, key, body=b'{"quantity": 1}') -> Sent:
    """One request to ``door`` on the running loop (for requests sent together)."""
    sent = Sent()
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": f"/api/drops/{drop_id}/reservations/",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Token {token}".encode()),
            (b"idempotency-key", key.encode()),
        ],
        "client": ("127.0.0.1", 5000),
    }

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            sent.status = message["status"]
        else:
            sent.body += message.get("body", b"")

    await door(scope, receive, send)
    return sent


# --- answered at the door ----------------------------------------------------------------


def test_a_sold_out_drop_is_refused_at_the_door_counted_and_remembered():
    drop = _sold_out_drop()
    buyer, token = _buyer()
    before = get_redis().hgetall(gate.demand_keys(drop.allocation_id)[0])

    first = post(drop.pk, token=token, key="tap-1")

    assert first.answered_by_door
    assert first.status == 409
    assert first.json() == {"code": "sold_out", "detail": "Sold out."}
    assert first.headers["content-type"] == "application/json"
    assert first.headers["content-length"] == str(len(first.body))
    after = get_redis().hgetall(gate.demand_keys(drop.allocation_id)[0])
    assert int(after["sold_out"]) == int(before.get("sold_out", 0)) + 1
    assert get_redis().sismember(gate.demand_keys(drop.allocation_id)[3], buyer.pk)
    # Both throttles counted it, as DRF would have.
    for scope, ident in (
        (ReserveUserThrottle.scope, buyer.pk),
        (ReserveIPThrottle.scope, "127.0.0.1"),
    ):
        assert get_redis().zcard(throttle_redis_key(scope, ident)) == 1

    again = post(drop.pk, token=token, key="tap-1")
    assert again.answered_by_door
    assert (again.status, again.body) == (409, first.body)
    assert again.headers["idempotent-replay"] == "true"


def test_the_limit_and_a_drop_not_on_sale_are_refused_with_their_codes():
    drop = _routed(live_drop(quantity=5, per_viewer_limit=1))
    buyer, token = _buyer()
    services.drop_reserve(drop_id=drop.pk, customer_id=buyer.pk, quantity=1, idempotency_key="a")
    # Off sale after its sale: the door has its routing (fixed once it went on sale).
    closed = live_drop(quantity=5)
    services.drop_close_by_hand(drop_id=closed.pk, actor=closed.stream.host)
    _routed(closed)
    gate_rebuild(allocation_id=closed.allocation_id)

    limit = post(drop.pk, token=token, key="b")
    not_live = post(closed.pk, token=token, key="c")

    assert (limit.status, limit.json()["code"]) == (409, "limit_reached")
    assert (not_live.status, not_live.json()["code"]) == (409, "drop_not_live")
    assert limit.answered_by_door and not_live.answered_by_door


def test_a_replay_of_an_answer_django_gave_is_the_same_text():
    drop = _routed(live_drop(quantity=5))
    buyer, token = _buyer()
    body = {"id": 7, "status": "pending", "quantity": 1, "unit_price": "9.99"}
    key = idempotency.answer_key(buyer.pk, "k-202")
    fingerprint = idempotency.request_fingerprint(
        "POST", f"/api/drops/{drop.pk}/reservations/", {"quantity": 1}
    )
    idempotency.answer_store(key, fingerprint=fingerprint, status=202, body=body)  # as Django does

    replay = post(drop.pk, token=token, key="k-202")

    assert replay.answered_by_door
    assert replay.status == 202
    assert replay.json() == body
    assert replay.headers["idempotent-replay"] == "true"


def test_the_same_key_with_another_quantity_is_a_422_at_the_door():
    drop = _sold_out_drop()
    _buyer_user, token = _buyer()
    post(drop.pk, token=token, key="k")

    reused = post(drop.pk, b'{"quantity": 2}', token=token, key="k")

    assert reused.answered_by_door
    assert reused.status == 422
    assert reused.json()["code"] == "idempotency_key_reused"


def test_the_throttle_refuses_at_its_limit_and_says_when_to_come_back(monkeypatch):
    monkeypatch.setattr(ReserveUserThrottle, "THROTTLE_RATES", {"reserve_user": "2/min"})
    drop = _sold_out_drop()
    _buyer_user, token = _buyer()

    answers = [post(drop.pk, token=token, key=f"t{i}") for i in range(3)]

    assert [a.status for a in answers] == [409, 409, 429]
    assert all(a.answered_by_door for a in answers)
    throttled = answers[2].json()
    assert throttled["code"] == "throttled"
    assert 0 < throttled["retry_after"] <= 60
    assert answers[2].headers["retry-after"] == str(throttled["retry_after"])
    assert "Expected available in" in throttled["detail"]


# --- handed to Django --------------------------------------------------------------------


def test_an_admission_at_the_door_is_answered_once_its_pending_row_is_written():
    drop = _routed(live_drop(quantity=5))
    buyer, token = _buyer()

    sent = post(drop.pk, b'{"quantity": 2}', token=token, key="admit-me")

    assert sent.answered_by_door
    assert sent.status == 202
    row = Reservation.objects.get(customer=buyer)
    body = sent.json()
    assert (body["id"], body["quantity"], body["drop"]) == (row.pk, 2, drop.pk)
    assert (body["unit_price"], body["currency"]) == ("9.99", "USD")
    assert row.idempotency_key == "admit-me"
    assert row.status == Reservation.Status.HELD  # tasks run eagerly here: settled
    state = gate.gate_read(allocation_id=drop.allocation_id)
    assert state.remaining == 3 and state.customers[buyer.pk] == 2
    assert get_redis().zcard(throttle_redis_key(ReserveUserThrottle.scope, buyer.pk)) == 1
    assert_inventory_invariants()

    again = post(drop.pk, b'{"quantity": 2}', token=token, key="admit-me")
    assert again.answered_by_door
    assert (again.status, again.body) == (202, sent.body)
    assert Reservation.objects.count() == 1


def test_admissions_arriving_together_are_written_together():
    drop = _routed(live_drop(quantity=40))
    buyers = [_buyer() for _ in range(12)]
    writes = []
    real = front_door.reservations_create_pending

    def counting(requests):
        writes.append(len(requests))
        return real(requests)

    async def many():
        door = front_door.FrontDoor(None)
        sends = [
            _call(door, drop.pk, token=token, key=f"k{i}")
            for i, (_user, token) in enumerate(buyers)
        ]
        results = await asyncio.gather(*sends)
        await front_door.close_clients()
        return results

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(front_door, "reservations_create_pending", counting)
        results = async_to_sync(many)()

    assert [sent.status for sent in results] == [202] * 12
    assert sum(writes) == 12 and len(writes) < 12  # fewer commits than admissions
    assert Reservation.objects.count() == 12
    assert gate.gate_read(allocation_id=drop.allocation_id).remaining == 28
    assert_inventory_invariants()


def test_too_many_holds_at_the_door_is_refused_and_its_units_given_back(settings):
    settings.RESERVATION_MAX_ACTIVE_PER_CUSTOMER = 1
    drop = _routed(live_drop(quantity=5))
    _user, token = _buyer()
    assert post(drop.pk, token=token, key="one").status == 202

    second = post(drop.pk, token=token, key="two")

    assert second.answered_by_door
    assert second.status == 409
    assert second.json()["code"] == "too_many_holds"
    assert gate.gate_read(allocation_id=drop.allocation_id).remaining == 4
    assert Reservation.objects.count() == 1
    replay = post(drop.pk, token=token, key="two")
    assert (replay.status, replay.headers["idempotent-replay"]) == (409, "true")


def test_a_key_redis_forgot_but_the_database_has_goes_to_django_to_replay():
    drop = _routed(live_drop(quantity=5))
    buyer, token = _buyer()
    assert post(drop.pk, token=token, key="known").status == 202
    # Redis lost the key's answer and the gate's memory of it; the row remains.
    get_redis().delete(
        idempotency.answer_key(buyer.pk, "known"),
        gate.admission_keys(
            allocation_id=drop.allocation_id, customer_id=buyer.pk, idempotency_key="known"
        )[3],
    )

    sent = post(drop.pk, token=token, key="known")

    assert sent.django_got == [b'{"quantity": 1}']
    assert gate.gate_read(allocation_id=drop.allocation_id).remaining == 4  # given back
    assert Reservation.objects.count() == 1


def test_a_failed_write_gives_the_units_back_and_hands_the_request_to_django():
    drop = _routed(live_drop(quantity=5))
    _user, token = _buyer()

    def failing(requests):
        raise OperationalError("the database went away")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(front_door, "reservations_create_pending", failing)
        sent = post(drop.pk, token=token, key="k")

    assert sent.django_got == [b'{"quantity": 1}']
    state = gate.gate_read(allocation_id=drop.allocation_id)
    assert state.remaining == 5 and not state.customers
    assert not Reservation.objects.exists()


@pytest.mark.parametrize(
    "case",
    [
        "no token",
        "session cookie",
        "unknown token",
        "token revoked",
        "user inactive",
        "no key",
        "key with a space",
        "quantity a string",
        "quantity true",
        "quantity a float",
        "quantity zero",
        "an unknown field",
        "not json",
        "NaN",
        "deeply nested",
        "long body",
        "form body",
        "drop not routed",
        "host not allowed",
        "two keys",
    ],
)
def test_what_the_door_cannot_vouch_for_goes_to_django(case):
    drop = _sold_out_drop()
    inactive = case == "user inactive"
    _user, token = _buyer(cached=not inactive)
    if inactive:
        type(_user).objects.filter(pk=_user.pk).update(is_active=False)
        with pytest.raises(AuthenticationFailed):
            CachedTokenAuthentication().authenticate_credentials(token)  # cached as inactive
        assert get_redis().hget(token_cache_key(token), "is_active") == "0"
    if case == "token revoked":  # what logout does
        Token.objects.filter(key=token).delete()
        token_forget(token)
    body: bytes = b'{"quantity": 1}'
    key, headers, use_token, content_type = "k", [], token, "application/json"
    match case:
        case "no token":
            use_token = None
        case "unknown token":
            use_token = "f" * 40
        case "session cookie":
            headers = [("cookie", "sessionid=abc")]
        case "no key":
            key = None
        case "key with a space":
            key = "a b"
        case "quantity a string":
            body = b'{"quantity": "1"}'
        case "quantity true":
            body = b'{"quantity": true}'
        case "quantity a float":
            body = b'{"quantity": 1.0}'
        case "quantity zero":
            body = b'{"quantity": 0}'
        case "an unknown field":
            body = b'{"quantity": 1, "note": "x"}'
        case "not json":
            body = b'{"quantity": '
        case "NaN":
            body = b'{"quantity": NaN}'
        case "deeply nested":
            body = b"[" * 100_000 + b"]" * 100_000
        case "long body":
            body = b'{"quantity": 1' + b" " * 300 + b"}"
        case "form body":
            content_type = "application/x-www-form-urlencoded"
        case "drop not routed":
            from livestream.selectors import drop_routing_forget

            drop_routing_forget(drop.pk)
        case "host not allowed":
            headers = [("host", "evil.example")]
        case "two keys":
            headers = [("idempotency-key", "k2")]
    sent = post(drop.pk, body, token=use_token, key=key, headers=headers, content_type=content_type)

    assert sent.django_got == [body]
    assert sent.status == 299


def test_a_token_the_cache_lacks_is_loaded_by_the_door_and_cached():
    drop = _sold_out_drop()
    buyer, token = _buyer(cached=False)
    _inactive, inactive_token = _buyer(cached=False, is_active=False)

    sent = post(drop.pk, token=token)
    refused = post(drop.pk, token=inactive_token)

    assert sent.answered_by_door and sent.status == 409
    assert get_redis().hget(token_cache_key(token), "pk") == str(buyer.pk)
    assert refused.django_got  # Django answers the 401
    assert get_redis().hget(token_cache_key(inactive_token), "is_active") == "0"


def test_with_redis_away_the_request_goes_to_django(monkeypatch):
    drop = _sold_out_drop()
    _user, token = _buyer()
    away = SharedConnection("redis://127.0.0.1:1/0")  # nothing listens there
    monkeypatch.setattr(front_door, "shared_connection", lambda: away)

    sent = post(drop.pk, token=token)

    assert sent.django_got == [b'{"quantity": 1}']


def test_the_door_is_shut_without_the_gate_or_when_switched_off(settings):
    drop = _sold_out_drop()
    _user, token = _buyer()

    settings.FRONT_DOOR_ENABLED = False
    off = post(drop.pk, token=token)
    settings.FRONT_DOOR_ENABLED = True
    settings.INVENTORY_GATE_ENABLED = False
    no_gate = post(drop.pk, token=token)

    assert off.django_got and no_gate.django_got


def test_with_https_redirects_on_a_plain_request_goes_to_django_and_a_secure_one_gets_hsts(
    settings,
):
    drop = _sold_out_drop()
    _user, token = _buyer()
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    plain = post(drop.pk, token=token, key="p")
    secure = post(drop.pk, token=token, key="s", headers=[("x-forwarded-proto", "https")])

    assert plain.django_got
    assert secure.answered_by_door and secure.status == 409
    assert secure.headers["strict-transport-security"].startswith("max-age=3600")


def test_other_paths_and_methods_never_reach_the_door_logic():
    drop = _sold_out_drop()
    _user, token = _buyer()

    for path in (f"/api/drops/{drop.pk}/reservations", f"/api/drops/{drop.pk}/waitlist/"):
        assert post(drop.pk, token=token, path=path).django_got
