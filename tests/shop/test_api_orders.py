"""Checkout, orders and the webhook over HTTP."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.test import APIClient

from inventory.models import Reservation
from livestream import services as live
from shop.models import Order, Payment, WebhookEvent
from shop.payments import SIGNATURE_HEADER, build_test_webhook
from tests.factories import UserFactory, stocked_variant
from tests.inventory.invariants import assert_inventory_invariants

pytestmark = pytest.mark.django_db(transaction=True)
SECRET = "webhook-test-secret"


@pytest.fixture(autouse=True)
def _payments(settings):
    settings.PAYMENT_WEBHOOK_SECRET = SECRET
    settings.PAYMENT_TEST_MODE = "succeed"


def _client(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def _held(buyer, *, quantity=2, price="12.00"):
    host = UserFactory()
    host.groups.add(Group.objects.get_or_create(name="hosts")[0])
    stream = live.stream_create(host=host, title=f"s-{host.username}")
    live.stream_start(stream_id=stream.pk, actor=host)
    variant = stocked_variant(on_hand=10)
    drop = live.drop_create(
        stream_id=stream.pk,
        variant_id=variant.pk,
        quantity=5,
        price=Decimal(price),
        per_viewer_limit=None,
        actor=host,
    )
    live.drop_pin(drop_id=drop.pk, actor=host)
    response = _client(buyer).post(
        f"/api/drops/{drop.pk}/reservations/",
        {"quantity": quantity},
        format="json",
        HTTP_IDEMPOTENCY_KEY=f"k-{buyer.pk}",
    )
    assert response.json()["status"] == "held"
    return Reservation.objects.get(pk=response.json()["id"])


def test_checkout_answers_a_paid_order_priced_from_the_hold():
    buyer = UserFactory()
    hold = _held(buyer, quantity=2, price="12.00")

    response = _client(buyer).post(f"/api/reservations/{hold.pk}/checkout/")

    assert response.status_code == 201
    order = response.json()
    assert (order["status"], order["total"], order["currency"]) == ("paid", "24.00", "USD")
    assert [
        (line["quantity"], line["unit_price"], line["line_total"]) for line in order["lines"]
    ] == [(2, "12.00", "24.00")]
    again = _client(buyer).post(f"/api/reservations/{hold.pk}/checkout/")
    assert again.json()["id"] == order["id"]
    assert Payment.objects.count() == 1
    assert _client(buyer).get(f"/api/orders/{order['id']}/").json()["status"] == "paid"
    assert [o["id"] for o in _client(buyer).get("/api/orders/").json()["results"]] == [order["id"]]
    assert_inventory_invariants()


def test_checkout_after_the_hold_expired_is_a_409_and_makes_no_order():
    buyer = UserFactory()
    hold = _held(buyer)
    Reservation.objects.filter(pk=hold.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = _client(buyer).post(f"/api/reservations/{hold.pk}/checkout/")

    assert response.status_code == 409
    assert response.json()["code"] == "hold_expired"
    assert not Order.objects.exists()
    assert Reservation.objects.get(pk=hold.pk).status == "expired"
    assert_inventory_invariants()


def test_a_declined_payment_is_a_402_and_keeps_the_hold(settings):
    settings.PAYMENT_TEST_MODE = "fail"
    buyer = UserFactory()
    hold = _held(buyer)

    response = _client(buyer).post(f"/api/reservations/{hold.pk}/checkout/")

    assert response.status_code == 402
    assert response.json()["code"] == "payment_failed"
    assert Order.objects.get().status == "payment_failed"
    assert Reservation.objects.get(pk=hold.pk).status == "held"


def test_orders_and_checkout_of_another_user_are_404s():
    owner, intruder = UserFactory(), UserFactory()
    hold = _held(owner)
    order = _client(owner).post(f"/api/reservations/{hold.pk}/checkout/").json()

    for method, path in [
        ("post", f"/api/reservations/{hold.pk}/checkout/"),
        ("get", f"/api/orders/{order['id']}/"),
        ("post", f"/api/orders/{order['id']}/cancel/"),
    ]:
        response = getattr(_client(intruder), method)(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"
    assert _client(intruder).get("/api/orders/").json()["results"] == []
    assert Order.objects.get().status == "paid"


def test_cancelling_a_paid_order_refunds_it_and_returns_the_units():
    buyer = UserFactory()
    hold = _held(buyer, quantity=2)
    order = _client(buyer).post(f"/api/reservations/{hold.pk}/checkout/").json()

    response = _client(buyer).post(f"/api/orders/{order['id']}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "refunded"
    assert Reservation.objects.get(pk=hold.pk).status == "refunded"
    hold.allocation.refresh_from_db()
    assert (hold.allocation.sold, hold.allocation.remaining) == (0, 5)
    assert_inventory_invariants()


def test_a_pending_payment_is_confirmed_by_a_signed_webhook_once(settings):
    settings.PAYMENT_TEST_MODE = "pending"
    buyer = UserFactory()
    hold = _held(buyer)
    order = _client(buyer).post(f"/api/reservations/{hold.pk}/checkout/").json()
    assert order["status"] == "pending_payment"
    payment = Payment.objects.get()
    body, headers = build_test_webhook(
        event_id="evt_1",
        type="payment.succeeded",
        payment_reference=payment.reference,
        amount=payment.amount,
        currency=payment.currency,
    )
    anonymous = APIClient()

    def deliver():
        return anonymous.post(
            "/api/payments/webhook/",
            body,
            content_type="application/json",
            headers={SIGNATURE_HEADER: headers[SIGNATURE_HEADER]},
        )

    first, duplicate = deliver(), deliver()

    assert (first.status_code, first.json()) == (200, {"result": "processed"})
    assert (duplicate.status_code, duplicate.json()) == (200, {"result": "duplicate"})
    assert WebhookEvent.objects.count() == 1
    assert Order.objects.get().status == "paid"
    hold.allocation.refresh_from_db()
    assert hold.allocation.sold == 2
    assert_inventory_invariants()


def test_a_webhook_for_another_amount_is_answered_409_and_pays_nothing(settings):
    settings.PAYMENT_TEST_MODE = "pending"
    buyer = UserFactory()
    hold = _held(buyer)
    _client(buyer).post(f"/api/reservations/{hold.pk}/checkout/")
    payment = Payment.objects.get()
    assert (payment.amount, payment.currency) == (Decimal("24.00"), "USD")
    body, headers = build_test_webhook(
        event_id="evt_cheap",
        type="payment.succeeded",
        payment_reference=payment.reference,
        amount="2.40",
        currency="USD",
    )

    response = APIClient().post(
        "/api/payments/webhook/",
        body,
        content_type="application/json",
        headers={SIGNATURE_HEADER: headers[SIGNATURE_HEADER]},
    )

    assert response.status_code == 409
    assert response.json() == {
        "code": "payment_mismatch",
        "detail": "expects 24.00 USD; the event says 2.40 USD",
    }
    assert Order.objects.get().status == "pending_payment"
    assert Payment.objects.get().status == "pending"
    assert Reservation.objects.get(pk=hold.pk).status == "held"
    hold.allocation.refresh_from_db()
    assert (hold.allocation.held, hold.allocation.sold) == (2, 0)
    assert WebhookEvent.objects.get().result == "mismatch"


def test_a_webhook_with_a_bad_signature_is_refused_and_recorded_nowhere():
    body, _ = build_test_webhook(event_id="evt_x", type="payment.succeeded", payment_reference="p")

    response = APIClient().post(
        "/api/payments/webhook/",
        body,
        content_type="application/json",
        headers={SIGNATURE_HEADER: "t=1,v1=deadbeef"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_signature"
    assert not WebhookEvent.objects.exists()
