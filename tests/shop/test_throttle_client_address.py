"""Per-IP throttles key on the client address only configured proxies may name: a new
X-Forwarded-For per request does not buy a new allowance."""

from __future__ import annotations

import httpx
import pytest
from django.test import RequestFactory
from rest_framework.test import APIClient

from core.api.throttles import AuthIPThrottle, client_address, client_address_of_scope
from tests.processes import asgi_server

pytestmark = pytest.mark.django_db


@pytest.fixture
def auth_rate_of_two(monkeypatch):
    monkeypatch.setattr(AuthIPThrottle, "THROTTLE_RATES", {"auth_ip": "2/min"})


def _sign_in(api: APIClient, **headers):
    return api.post(
        "/api/auth/token/", {"username": "nobody", "password": "x"}, format="json", **headers
    )


def test_a_new_x_forwarded_for_per_request_is_still_throttled(auth_rate_of_two):
    api = APIClient()

    answers = [_sign_in(api, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}") for n in range(3)]

    assert [a.status_code for a in answers] == [401, 401, 429]
    assert answers[2].json()["code"] == "throttled"


def test_behind_a_trusted_proxy_each_client_it_names_has_its_own_allowance(
    auth_rate_of_two, settings
):
    settings.TRUSTED_PROXY_COUNT = 1
    api = APIClient()
    proxy = {"REMOTE_ADDR": "10.0.0.2"}

    first = [
        _sign_in(api, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.7", **proxy) for n in range(3)
    ]
    second = _sign_in(api, HTTP_X_FORWARDED_FOR="203.0.113.8", **proxy)

    assert [a.status_code for a in first] == [401, 401, 429]
    assert second.status_code == 401


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "203.0.113.7", "198.51.100.9"),
        (0, None, "198.51.100.9"),
        (1, "203.0.113.7", "203.0.113.7"),
        (1, "1.1.1.1, 203.0.113.7", "203.0.113.7"),
        (2, "1.1.1.1, 203.0.113.7, 10.0.0.3", "203.0.113.7"),
        (2, "203.0.113.7", "203.0.113.7"),  # reached the inner proxy directly
        (1, None, "198.51.100.9"),
        (1, "not-an-address", "198.51.100.9"),
        (1, " , ", "198.51.100.9"),
        (1, "2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_address(settings, proxies, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = proxies
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    request = RequestFactory().get("/", REMOTE_ADDR="198.51.100.9", **headers)

    assert client_address(request) == expected


@pytest.mark.parametrize(
    ("proxies", "headers", "expected"),
    [
        (0, [b"203.0.113.7"], "198.51.100.9"),
        (1, [b"203.0.113.7"], "203.0.113.7"),
        # Repeated headers join as Django joins them: the proxy's is the last entry.
        (1, [b"1.1.1.1", b"203.0.113.7"], "203.0.113.7"),
        (2, [b"1.1.1.1, 203.0.113.7", b"10.0.0.3"], "203.0.113.7"),
        (1, [], "198.51.100.9"),
    ],
)
def test_client_address_of_an_asgi_connection(settings, proxies, headers, expected):
    settings.TRUSTED_PROXY_COUNT = proxies
    scope = {
        "client": ("198.51.100.9", 50000),
        "headers": [(b"host", b"shop.test"), *((b"x-forwarded-for", h) for h in headers)],
    }

    assert client_address_of_scope(scope) == expected


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_the_real_server_throttles_whatever_x_forwarded_for_says():
    with asgi_server(THROTTLE_AUTH_IP="2/min") as server:
        answers = [
            httpx.post(
                f"{server.base_url}/api/auth/token/",
                json={"username": "nobody", "password": "x"},
                headers={"X-Forwarded-For": f"203.0.113.{n}"},
            )
            for n in range(3)
        ]

    assert [a.status_code for a in answers] == [401, 401, 429]
    assert answers[2].json()["code"] == "throttled"
