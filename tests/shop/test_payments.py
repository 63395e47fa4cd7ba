"""The payment provider interface, the test provider and webhook signatures."""

import hashlib
import hmac
import json
import time
from decimal import Decimal

import pytest

from shop import payments
from shop.exceptions import InvalidWebhookPayload, InvalidWebhookSignature
from shop.payments import (
    ChargeResult,
    RefundResult,
    TestPaymentProvider,
    WebhookEventData,
    build_test_webhook,
    get_payment_provider,
    sign_test_webhook,
    verify_signature,
)

SECRET = "whsec_unit"
BODY = b'{"id": "evt_1", "type": "payment.succeeded", "data": {"payment_reference": "pay_1"}}'


@pytest.fixture(autouse=True)
def _payments(settings):
    settings.PAYMENT_TEST_MODE = "succeed"
    settings.PAYMENT_WEBHOOK_SECRET = SECRET


class _Order:
    pk = 1


class _Payment:
    reference = "pay_1"


def test_the_default_provider_is_the_test_provider(settings):
    del settings.PAYMENT_PROVIDER  # not configured at all

    provider = get_payment_provider()

    assert isinstance(provider, TestPaymentProvider)
    assert provider.name == "test"


class OtherProvider(TestPaymentProvider):
    name = "other"


def test_the_provider_is_loaded_from_its_dotted_path(settings):
    settings.PAYMENT_PROVIDER = "tests.shop.test_payments.OtherProvider"

    assert get_payment_provider().name == "other"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("succeed", ChargeResult("succeeded", "pay_1")),
        ("pending", ChargeResult("pending", "pay_1")),
        ("fail", ChargeResult("failed", "pay_1", failure_reason="card_declined")),
    ],
)
def test_the_test_provider_charges_as_its_mode_says(settings, mode, expected):
    settings.PAYMENT_TEST_MODE = mode

    result = TestPaymentProvider().charge(order=_Order(), payment_reference="pay_1")

    assert result == expected


def test_the_test_provider_defaults_to_success(settings):
    del settings.PAYMENT_TEST_MODE

    result = TestPaymentProvider().charge(order=_Order(), payment_reference="pay_1")

    assert result.status == "succeeded"


def test_an_unknown_test_mode_is_a_configuration_error(settings):
    settings.PAYMENT_TEST_MODE = "maybe"

    with pytest.raises(ValueError, match="PAYMENT_TEST_MODE"):
        TestPaymentProvider().charge(order=_Order(), payment_reference="pay_1")


def test_the_test_provider_refunds():
    assert TestPaymentProvider().refund(payment=_Payment()) == RefundResult(
        "succeeded", reference="re_pay_1"
    )


def test_the_signature_is_an_hmac_of_timestamp_and_body():
    header = sign_test_webhook(BODY, secret=SECRET, timestamp=1_700_000_000)

    digest = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={digest}"


def test_a_signed_event_is_parsed():
    headers = {"Payment-Signature": sign_test_webhook(BODY, secret=SECRET)}

    event = TestPaymentProvider().parse_webhook(body=BODY, headers=headers)

    assert event == WebhookEventData(
        event_id="evt_1",
        type="payment.succeeded",
        payment_reference="pay_1",
        raw=json.loads(BODY),
    )


@pytest.mark.parametrize(
    "headers",
    [
        lambda sig: {"payment-signature": sig},
        lambda sig: {"PAYMENT-SIGNATURE": sig},
        lambda sig: {"HTTP_PAYMENT_SIGNATURE": sig, "CONTENT_TYPE": "application/json"},
    ],
)
def test_the_signature_header_is_found_whatever_its_spelling(headers):
    signed = headers(sign_test_webhook(BODY, secret=SECRET))

    event = TestPaymentProvider().parse_webhook(body=BODY, headers=signed)

    assert event.event_id == "evt_1"


def test_build_test_webhook_signs_with_the_configured_secret():
    body, headers = build_test_webhook(
        event_id="evt_9", type="payment.failed", payment_reference="pay_9", failure_reason="nope"
    )

    event = TestPaymentProvider().parse_webhook(body=body, headers=headers)

    assert (event.event_id, event.type, event.payment_reference) == (
        "evt_9",
        "payment.failed",
        "pay_9",
    )
    assert event.failure_reason == "nope"


def _refused(body: bytes, headers: dict) -> str:
    with pytest.raises(InvalidWebhookSignature) as raised:
        TestPaymentProvider().parse_webhook(body=body, headers=headers)
    assert (raised.value.code, raised.value.http_status) == ("invalid_signature", 400)
    return raised.value.detail


def test_a_wrong_secret_is_refused():
    header = sign_test_webhook(BODY, secret="someone-else")

    assert _refused(BODY, {"Payment-Signature": header}) == "The signature does not match."


def test_a_body_changed_after_signing_is_refused():
    header = sign_test_webhook(BODY, secret=SECRET)
    tampered = BODY.replace(b"pay_1", b"pay_2")

    assert _refused(tampered, {"Payment-Signature": header}) == "The signature does not match."


def test_a_missing_signature_is_refused():
    assert "missing" in _refused(BODY, {})


@pytest.mark.parametrize("header", ["", "t=abc,v1=00", "v1=00", "t=1700000000", "garbage"])
def test_a_malformed_signature_is_refused(header):
    _refused(BODY, {"Payment-Signature": header})


def test_a_timestamp_older_than_five_minutes_is_refused():
    stale = int(time.time()) - 301
    header = sign_test_webhook(BODY, secret=SECRET, timestamp=stale)

    assert "window" in _refused(BODY, {"Payment-Signature": header})


def test_a_timestamp_within_five_minutes_is_accepted():
    recent = int(time.time()) - 290
    header = sign_test_webhook(BODY, secret=SECRET, timestamp=recent)

    assert verify_signature(BODY, header, secret=SECRET) == recent


def test_a_timestamp_from_the_future_is_refused():
    # Well past the window: time passing while the test runs brings it closer.
    future = int(time.time()) + 360
    header = sign_test_webhook(BODY, secret=SECRET, timestamp=future)

    assert "window" in _refused(BODY, {"Payment-Signature": header})


def test_no_secret_configured_refuses_everything(settings):
    settings.PAYMENT_WEBHOOK_SECRET = ""
    header = sign_test_webhook(BODY, secret="")

    assert "No webhook secret" in _refused(BODY, {"Payment-Signature": header})


def test_any_one_of_several_signatures_may_match_during_secret_rotation():
    t = int(time.time())
    old = sign_test_webhook(BODY, secret="old-secret", timestamp=t).split(",v1=")[1]
    new = sign_test_webhook(BODY, secret=SECRET, timestamp=t).split(",v1=")[1]

    assert verify_signature(BODY, f"t={t},v1={old},v1={new}", secret=SECRET) == t


def test_digests_are_compared_in_constant_time(monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(payments.hmac, "compare_digest", spy)
    header = sign_test_webhook(BODY, secret=SECRET)

    verify_signature(BODY, header, secret=SECRET)

    assert len(compared) == 1


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"type": "payment.succeeded"}', b'{"id": 5, "type": "x"}'],
)
def test_a_signed_body_that_is_not_an_event_is_refused(body):
    headers = {"Payment-Signature": sign_test_webhook(body, secret=SECRET)}

    with pytest.raises(InvalidWebhookPayload) as raised:
        TestPaymentProvider().parse_webhook(body=body, headers=headers)

    assert (raised.value.code, raised.value.http_status) == ("invalid_payload", 400)


def test_an_event_states_the_amount_and_currency_charged():
    body, headers = build_test_webhook(
        event_id="evt_7",
        type="payment.succeeded",
        payment_reference="pay_7",
        amount=Decimal("19.99"),
        currency="USD",
        secret=SECRET,
    )

    event = TestPaymentProvider().parse_webhook(body=body, headers=headers)

    assert (event.amount, event.currency) == (Decimal("19.99"), "USD")


@pytest.mark.parametrize("amount", [19.99, 1999, "NaN", "Infinity", "19,99", "", "1" * 40])
def test_an_amount_that_is_not_a_decimal_string_is_an_invalid_payload(amount):
    body = json.dumps(
        {"id": "evt_8", "type": "payment.succeeded", "data": {"amount": amount}}
    ).encode()
    headers = {"Payment-Signature": sign_test_webhook(body, secret=SECRET)}

    with pytest.raises(InvalidWebhookPayload) as refused:
        TestPaymentProvider().parse_webhook(body=body, headers=headers)

    assert refused.value.detail == "The event's amount must be a decimal string."
