"""Sign-in lockout (django-axes): the API token, /accounts/login/ and /admin/login/ refuse
a username from a client address after repeated failures, even with the right password,
and the client address cannot be changed by sending a new X-Forwarded-For."""

from __future__ import annotations

import httpx
import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.processes import asgi_server

PASSWORD = "correct-horse-battery"  # UserFactory's
LIMIT = 3
LOCKED_OUT = {
    "code": "locked_out",
    "detail": "Too many failed sign-ins; try again later.",
    "retry_after": 900,
}

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _low_limit(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT


def _token(api: APIClient, username: str, password: str, **headers):
    return api.post(
        "/api/auth/token/", {"username": username, "password": password}, format="json", **headers
    )


def test_the_token_endpoint_locks_a_username_out_after_the_limit():
    user = UserFactory()
    api = APIClient()

    failures = [_token(api, user.username, "wrong") for _ in range(LIMIT - 1)]
    locking = _token(api, user.username, "wrong")
    right = _token(api, user.username, PASSWORD)

    assert [(f.status_code, f.json()["code"]) for f in failures] == [
        (401, "invalid_credentials")
    ] * (LIMIT - 1)
    assert (locking.status_code, locking.json()) == (429, LOCKED_OUT)
    assert (right.status_code, right.json()) == (429, LOCKED_OUT)
    assert right["Retry-After"] == "900"
    assert not Token.objects.filter(user=user).exists()


def test_fewer_failures_than_the_limit_do_not_lock():
    user = UserFactory()
    api = APIClient()

    for _ in range(LIMIT - 1):
        assert _token(api, user.username, "wrong").status_code == 401
    response = _token(api, user.username, PASSWORD)

    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=user).key}


def test_a_locked_out_username_still_signs_in_from_another_address():
    user = UserFactory()
    for _ in range(LIMIT):
        _token(APIClient(), user.username, "wrong", REMOTE_ADDR="198.51.100.1")

    there = _token(APIClient(), user.username, PASSWORD, REMOTE_ADDR="198.51.100.1")
    elsewhere = _token(APIClient(), user.username, PASSWORD, REMOTE_ADDR="198.51.100.2")

    assert there.status_code == 429
    assert elsewhere.status_code == 200


def test_a_new_x_forwarded_for_per_attempt_does_not_escape_the_lockout():
    user = UserFactory()
    api = APIClient()

    answers = [
        _token(api, user.username, "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
        for n in range(LIMIT)
    ]
    right = _token(api, user.username, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.200")

    assert [a.status_code for a in answers] == [401] * (LIMIT - 1) + [429]
    assert right.status_code == 429
    assert not Token.objects.filter(user=user).exists()


def test_behind_a_trusted_proxy_the_address_it_saw_is_locked(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    user = UserFactory()
    proxy = {"REMOTE_ADDR": "10.0.0.2"}

    # What the client writes left of the proxy's own entry changes nothing.
    for n in range(LIMIT):
        _token(
            APIClient(),
            user.username,
            "wrong",
            HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.7",
            **proxy,
        )
    same_client = _token(
        APIClient(), user.username, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.7", **proxy
    )
    other_client = _token(
        APIClient(), user.username, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.8", **proxy
    )

    assert same_client.status_code == 429
    assert other_client.status_code == 200


def test_the_login_page_locks_out_with_a_plain_page():
    user = UserFactory()
    client = Client()

    for _ in range(LIMIT - 1):
        page = client.post("/accounts/login/", {"username": user.username, "password": "no"})
        assert page.status_code == 200  # the form again, with its error
    locking = client.post("/accounts/login/", {"username": user.username, "password": "no"})
    right = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})

    assert locking.status_code == 429
    assert right.status_code == 429
    assert right["Content-Type"] == "text/plain; charset=utf-8"
    assert right.content == b"Too many failed sign-ins; try again later. Retry in 15 minutes.\n"
    assert "_auth_user_id" not in client.session


def test_the_admin_login_locks_out_too():
    staff = UserFactory(is_staff=True, is_superuser=True)
    client = Client()

    for _ in range(LIMIT):
        client.post("/admin/login/", {"username": staff.username, "password": "no"})
    right = client.post(
        "/admin/login/?next=/admin/", {"username": staff.username, "password": PASSWORD}
    )

    assert right.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still sent to the login page


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_the_real_server_locks_out_whatever_x_forwarded_for_says():
    # The server as it runs: the ASGI path of the lockout middleware, uvicorn not
    # taking the address from the header either.
    with (
        asgi_server(LOGIN_FAILURE_LIMIT=str(LIMIT)) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        signed_up = http.post(
            "/api/auth/register/", json={"username": "locked-viewer", "password": "pass-2026-ok"}
        )
        assert signed_up.status_code == 201

        answers = [
            http.post(
                "/api/auth/token/",
                json={"username": "locked-viewer", "password": "wrong"},
                headers={"X-Forwarded-For": f"203.0.113.{n}"},
            )
            for n in range(LIMIT)
        ]
        right = http.post(
            "/api/auth/token/",
            json={"username": "locked-viewer", "password": "pass-2026-ok"},
            headers={"X-Forwarded-For": "203.0.113.250"},
        )

    assert [a.status_code for a in answers] == [401] * (LIMIT - 1) + [429]
    assert answers[-1].json() == LOCKED_OUT
    assert (right.status_code, right.json()) == (429, LOCKED_OUT)


def test_a_sign_in_from_code_with_no_request_has_no_client_to_lock_out():
    from django.contrib.auth import authenticate

    user = UserFactory()

    assert authenticate(username=user.username, password="wrong") is None
    assert authenticate(username=user.username, password=PASSWORD) == user


def test_ops_lift_a_lockout_with_the_management_command():
    from django.core.management import call_command

    user = UserFactory()
    api = APIClient()
    for _ in range(LIMIT):
        _token(api, user.username, "wrong")
    assert _token(api, user.username, PASSWORD).status_code == 429

    call_command("axes_reset_ip_username", "127.0.0.1", user.username, verbosity=0)

    assert _token(api, user.username, PASSWORD).status_code == 200
