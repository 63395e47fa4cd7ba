"""The buyer's HTTP interface: reserve on a drop, list, get and release holds."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from inventory.models import Reservation, StockMovement
from livestream import services
from tests.factories import UserFactory, stocked_variant
from tests.inventory.invariants import assert_inventory_invariants

pytestmark = pytest.mark.django_db(transaction=True)


def _client(user=None) -> APIClient:
    api = APIClient()
    if user is not None:
        api.force_authenticate(user)
    return api


def _live_drop(*, quantity=5, limit=None, pin=True, price="7.50"):
    host = UserFactory()
    host.groups.add(Group.objects.get_or_create(name="hosts")[0])
    stream = services.stream_create(host=host, title=f"Stream of {host.username}")
    services.stream_start(stream_id=stream.pk, actor=host)
    variant = stocked_variant(on_hand=quantity + 10)
    drop = services.drop_create(
        stream_id=stream.pk,
        variant_id=variant.pk,
        quantity=quantity,
        price=Decimal(price),
        per_viewer_limit=limit,
        actor=host,
    )
    if pin:
        drop = services.drop_pin(drop_id=drop.pk, actor=host)
    return drop


def _reserve(api, drop_id, body, key="key-1"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return api.post(f"/api/drops/{drop_id}/reservations/", body, format="json", **headers)


def test_a_viewer_reserves_and_gets_a_hold_at_the_drop_price():
    drop = _live_drop(price="7.50")
    buyer = UserFactory()

    response = _reserve(_client(buyer), drop.pk, {"quantity": 2})

    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["quantity"], body["drop"]) == ("held", 2, drop.pk)
    assert (body["unit_price"], body["currency"]) == ("7.50", "USD")
    assert body["expires_at"] is not None
    reservation = Reservation.objects.get()
    assert (reservation.customer_id, reservation.id) == (buyer.pk, body["id"])
    assert_inventory_invariants()


def test_the_same_key_and_body_replays_the_first_answer():
    drop = _live_drop()
    api = _client(UserFactory())

    first = _reserve(api, drop.pk, {"quantity": 1}, key="retry-me")
    second = _reserve(api, drop.pk, {"quantity": 1}, key="retry-me")

    assert second.status_code == first.status_code == 202
    assert second.json() == first.json()
    assert Reservation.objects.count() == 1


def test_the_same_key_with_another_body_is_a_422():
    drop = _live_drop()
    api = _client(UserFactory())
    _reserve(api, drop.pk, {"quantity": 1}, key="k")

    response = _reserve(api, drop.pk, {"quantity": 2}, key="k")

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert Reservation.objects.count() == 1


def test_keys_are_scoped_per_user():
    drop = _live_drop()

    a = _reserve(_client(UserFactory()), drop.pk, {"quantity": 1}, key="shared")
    b = _reserve(_client(UserFactory()), drop.pk, {"quantity": 1}, key="shared")

    assert a.json()["id"] != b.json()["id"]
    assert Reservation.objects.count() == 2


def test_sold_out_limit_and_not_live_are_409s_and_replay_as_such():
    drop = _live_drop(quantity=1, limit=1)
    first = _client(UserFactory())
    assert _reserve(first, drop.pk, {"quantity": 1}).status_code == 202

    sold_out = _reserve(_client(UserFactory()), drop.pk, {"quantity": 1})
    assert (sold_out.status_code, sold_out.json()["code"]) == (409, "sold_out")

    over = _reserve(first, _live_drop(quantity=5, limit=1).pk, {"quantity": 2}, key="big")
    assert (over.status_code, over.json()["code"]) == (409, "limit_reached")

    not_pinned = _live_drop(pin=False)
    refused = _reserve(_client(UserFactory()), not_pinned.pk, {"quantity": 1})
    assert (refused.status_code, refused.json()["code"]) == (409, "drop_not_live")
    assert Reservation.objects.count() == 1


def test_an_unknown_drop_is_a_404():
    response = _reserve(_client(UserFactory()), 999999, {"quantity": 1})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_anonymous_reserve_is_a_401_and_writes_nothing():
    drop = _live_drop()

    response = _reserve(_client(), drop.pk, {"quantity": 1})

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert not Reservation.objects.exists()


def test_the_idempotency_key_is_required():
    drop = _live_drop()

    response = _reserve(_client(UserFactory()), drop.pk, {"quantity": 1}, key=None)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "Idempotency-Key" in response.json()["errors"]
    assert not Reservation.objects.exists()


@pytest.mark.parametrize(
    "quantity",
    [-1, 0, 1.5, "1.0", "1", True, 1e309, 2**63, "x" * 1001, None, [1], {"n": 1}],
    ids=repr,
)
def test_quantity_fuzz_is_refused_with_nothing_written(quantity):
    drop = _live_drop()
    before = StockMovement.objects.count()

    if quantity == float("inf"):
        # Sent as the literal 1e309 (which JSON parsers read as infinity).
        response = _client(UserFactory()).post(
            f"/api/drops/{drop.pk}/reservations/",
            '{"quantity": 1e309}',
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY="fuzz",
        )
    else:
        response = _reserve(_client(UserFactory()), drop.pk, {"quantity": quantity})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "quantity" in response.json()["errors"]
    assert not Reservation.objects.exists()
    assert StockMovement.objects.count() == before


def test_a_body_that_is_not_an_object_is_a_400():
    drop = _live_drop()

    response = _reserve(_client(UserFactory()), drop.pk, [1, 2])

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_read_only_fields_cannot_be_set_by_the_client():
    drop = _live_drop(price="7.50")
    buyer = UserFactory()
    other = UserFactory()

    response = _reserve(
        _client(buyer),
        drop.pk,
        {
            "quantity": 1,
            "status": "confirmed",
            "unit_price": "0.01",
            "customer": other.pk,
            "expires_at": "2099-01-01T00:00:00Z",
        },
    )

    assert response.status_code == 202
    reservation = Reservation.objects.get()
    assert (reservation.status, reservation.unit_price) == ("held", Decimal("7.50"))
    assert reservation.customer_id == buyer.pk
    assert reservation.expires_at.year != 2099


def test_viewers_see_and_release_only_their_own_holds():
    drop = _live_drop()
    owner, intruder = UserFactory(), UserFactory()
    hold = _reserve(_client(owner), drop.pk, {"quantity": 1}).json()

    assert [r["id"] for r in _client(owner).get("/api/reservations/").json()["results"]] == [
        hold["id"]
    ]
    assert _client(intruder).get("/api/reservations/").json()["results"] == []
    for method in ("get", "delete"):
        response = getattr(_client(intruder), method)(f"/api/reservations/{hold['id']}/")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert Reservation.objects.get(pk=hold["id"]).status == "held"

    assert _client(owner).get(f"/api/reservations/{hold['id']}/").json()["status"] == "held"
    assert _client(owner).delete(f"/api/reservations/{hold['id']}/").status_code == 204
    assert Reservation.objects.get(pk=hold["id"]).status == "released"
    drop.allocation.refresh_from_db()
    assert drop.allocation.held == 0
    assert_inventory_invariants()


def test_the_reserve_endpoint_is_throttled_per_user(monkeypatch):
    from core.api.throttles import ReserveUserThrottle

    monkeypatch.setattr(ReserveUserThrottle, "THROTTLE_RATES", {"reserve_user": "2/min"})
    drop = _live_drop(quantity=10)
    api = _client(UserFactory())

    codes = [_reserve(api, drop.pk, {"quantity": 1}, key=f"t{i}").status_code for i in range(3)]

    assert codes == [202, 202, 429]
    assert Reservation.objects.count() == 2


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param("database", id="no database connection free in time"),
        pytest.param("redis", id="redis unreachable"),
    ],
)
def test_an_unavailable_dependency_is_a_503_to_retry_not_a_500(failure, monkeypatch):
    from django import db
    from redis import exceptions as redis_exceptions

    drop = _live_drop()
    error = (
        db.OperationalError("couldn't get a connection after 10.00 sec")
        if failure == "database"
        else redis_exceptions.ConnectionError("Connection refused")
    )

    def unavailable(**_kwargs):
        raise error

    monkeypatch.setattr(services, "drop_reserve", unavailable)

    response = _reserve(_client(UserFactory()), drop.pk, {"quantity": 1})

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json()["code"] == "unavailable"
    assert not Reservation.objects.exists()
