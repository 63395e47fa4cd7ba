import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.api.throttles import AuthIPThrottle
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery"


@pytest.fixture
def api():
    return APIClient()


def test_register_creates_the_user_and_answers_its_token(api):
    response = api.post(
        "/api/auth/register/", {"username": "ada", "password": PASSWORD}, format="json"
    )

    assert response.status_code == 201
    user = get_user_model().objects.get(username="ada")
    assert response.json() == {"token": Token.objects.get(user=user).key}
    assert user.check_password(PASSWORD)


def test_register_refuses_a_taken_name_whatever_its_case(api):
    UserFactory(username="ada")

    response = api.post(
        "/api/auth/register/", {"username": "ADA", "password": PASSWORD}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert response.json()["errors"] == {"username": ["This username is taken."]}
    assert get_user_model().objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "ada", "password": "123"}, "password"),
        ({"username": "ada", "password": "password"}, "password"),
        ({"username": "bad name!", "password": PASSWORD}, "username"),
        ({"username": "x" * 151, "password": PASSWORD}, "username"),
        ({"password": PASSWORD}, "username"),
        ({"username": "ada"}, "password"),
        ({"username": ["ada"], "password": PASSWORD}, "username"),
    ],
)
def test_register_rejects_bad_input_and_creates_nothing(api, body, field):
    response = api.post("/api/auth/register/", body, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert field in response.json()["errors"]
    assert not get_user_model().objects.exists()


def test_malformed_json_is_a_400_not_a_500(api):
    response = api.post("/api/auth/register/", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_token_login_answers_the_token(api):
    user = UserFactory(username="ada")

    response = api.post(
        "/api/auth/token/", {"username": "ada", "password": PASSWORD}, format="json"
    )

    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=user).key}


def test_token_login_with_a_wrong_password_is_refused(api):
    UserFactory(username="ada")

    response = api.post("/api/auth/token/", {"username": "ada", "password": "nope"}, format="json")

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
    assert not Token.objects.exists()


def test_the_token_authenticates_and_logout_revokes_it(api):
    user = UserFactory(username="ada")
    token = Token.objects.create(user=user)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api.get("/api/reservations/").status_code == 200

    assert api.post("/api/auth/logout/").status_code == 204

    assert not Token.objects.exists()
    response = api.get("/api/reservations/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_a_bogus_token_is_a_401(api):
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = api.get("/api/reservations/")

    assert response.status_code == 401
    assert response.json() == {"code": "authentication_failed", "detail": "Invalid token."}


def test_auth_endpoints_are_throttled_per_ip(api, monkeypatch):
    monkeypatch.setattr(AuthIPThrottle, "THROTTLE_RATES", {"auth_ip": "2/min"})
    UserFactory(username="ada")
    body = {"username": "ada", "password": "wrong"}

    codes = [api.post("/api/auth/token/", body, format="json").status_code for _ in range(3)]

    assert codes == [401, 401, 429]
    last = api.post("/api/auth/token/", body, format="json")
    assert last.json()["code"] == "throttled"
    assert last.json()["retry_after"] >= 1
    assert "Retry-After" in last.headers
