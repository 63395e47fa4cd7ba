"""The reserve request on the real server, through the front door and through Django:
the same statuses, bodies and headers, one count of throttles and answers shared by
both paths, and a logout that ends a token at once."""

from __future__ import annotations

import uuid

import httpx
import pytest
from rest_framework.authtoken.models import Token

from livestream import services
from tests.factories import UserFactory, live_drop
from tests.processes import asgi_server

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.server,
]

RATE = 5  # reserve requests per buyer per minute, in these servers

# Headers that differ between any two responses.
VOLATILE = {"date", "server", "x-request-id"}  # the last: each request's own


def _buyer() -> str:
    return Token.objects.create(user=UserFactory()).key


def _reserve(http: httpx.Client, drop_id: int, token: str, *, key=None, body=None):
    return http.post(
        f"/api/drops/{drop_id}/reservations/",
        json=body or {"quantity": 1},
        headers={
            "Authorization": f"Token {token}",
            "Idempotency-Key": key or uuid.uuid4().hex,
        },
    )


def _seen(response) -> tuple:
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE}
    body = response.json()
    if response.status_code == 429:  # the wait depends on the moment
        assert body.pop("retry_after") > 0 and body.pop("detail")
        assert int(headers.pop("retry-after")) > 0
    return response.status_code, body, headers


def _scenarios(http: httpx.Client, drops) -> dict[str, tuple]:
    """One answer of each kind the door gives (fresh buyers, each within the rate)."""
    sold_out, limited, not_live = drops
    seen = {}
    token = _buyer()
    _reserve(http, sold_out.pk, token, body={"quantity": 1, "warm": "up"})  # via Django
    seen["sold_out"] = _seen(_reserve(http, sold_out.pk, token, key="first"))
    seen["replay"] = _seen(_reserve(http, sold_out.pk, token, key="first"))
    seen["key_reused"] = _seen(
        _reserve(http, sold_out.pk, token, key="first", body={"quantity": 2})
    )
    seen["not_live"] = _seen(_reserve(http, not_live.pk, token))
    token = _buyer()
    assert _reserve(http, limited.pk, token).status_code == 202
    seen["limit_reached"] = _seen(_reserve(http, limited.pk, token))
    token = _buyer()
    statuses = [_reserve(http, sold_out.pk, token).status_code for _ in range(RATE + 1)]
    assert statuses == [409] * RATE + [429], statuses
    seen["throttled"] = _seen(_reserve(http, sold_out.pk, token))
    return seen


def _drops():
    sold_out = live_drop(quantity=1)
    services.drop_reserve(
        drop_id=sold_out.pk, customer_id=UserFactory().pk, quantity=1, idempotency_key="all"
    )
    limited = live_drop(quantity=50, per_viewer_limit=1)
    not_live = live_drop(quantity=5, pin=False)
    return sold_out, limited, not_live


def test_the_door_and_django_answer_alike():
    drops = _drops()
    answers = {}
    for door in ("true", "false"):
        with (
            asgi_server(FRONT_DOOR_ENABLED=door, THROTTLE_RESERVE_USER=f"{RATE}/min") as server,
            httpx.Client(base_url=server.base_url, timeout=10) as http,
        ):
            answers[door] = _scenarios(http, drops)

    for kind, seen in answers["true"].items():
        assert seen == answers["false"][kind], kind
    codes = {kind: seen[1]["code"] for kind, seen in answers["true"].items() if "code" in seen[1]}
    assert codes == {
        "sold_out": "sold_out",
        "replay": "sold_out",
        "key_reused": "idempotency_key_reused",
        "not_live": "drop_not_live",
        "limit_reached": "limit_reached",
        "throttled": "throttled",
    }
    assert answers["true"]["replay"][2]["idempotent-replay"] == "true"


def test_both_paths_count_into_one_throttle_and_one_answer_store():
    sold_out, _limited, _not_live = _drops()
    token = _buyer()
    with (
        asgi_server(THROTTLE_RESERVE_USER="4/min") as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        # Through Django (a body the door does not read), then the door, in turn.
        via_django = _reserve(http, sold_out.pk, token, key="d", body={"quantity": 1, "x": 1})
        via_door = _reserve(http, sold_out.pk, token, key="e")
        replay_at_door = _reserve(http, sold_out.pk, token, key="d", body={"quantity": 1, "x": 1})
        statuses = [
            _reserve(http, sold_out.pk, token, body=body).status_code
            for body in ({"quantity": 1}, {"quantity": 1, "x": 2}, {"quantity": 1})
        ]

    assert (via_django.status_code, via_door.status_code) == (409, 409)
    assert replay_at_door.headers["idempotent-replay"] == "true"
    # Four requests allowed in all, counted by whichever path answered them.
    assert statuses == [409, 429, 429]


def test_an_admission_goes_through_django_and_its_replay_is_answered_alike():
    drop = live_drop(quantity=5)
    token = _buyer()
    with (
        asgi_server() as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        first = _reserve(http, drop.pk, token, key="buy")
        again = _reserve(http, drop.pk, token, key="buy")

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replay"] == "true"


def test_a_logout_ends_the_token_at_the_door_at_once():
    sold_out, _limited, _not_live = _drops()
    token = _buyer()
    with (
        asgi_server() as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        assert _reserve(http, sold_out.pk, token).status_code == 409
        assert _reserve(http, sold_out.pk, token).status_code == 409  # the door's answer
        logout = http.post("/api/auth/logout/", headers={"Authorization": f"Token {token}"})
        after = _reserve(http, sold_out.pk, token)

    assert logout.status_code in (200, 204)
    assert after.status_code == 401
    assert after.json()["code"] == "authentication_failed"
