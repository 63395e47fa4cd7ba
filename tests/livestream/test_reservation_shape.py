"""The reservation's shape (the 202 body, the reservations API, ``reservation.updated``)
is written out by hand for speed: it must stay what DRF's generic walk over the
serializer's declared fields renders."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rest_framework import serializers

from inventory.models import Reservation
from livestream.serializers import ReservationSerializer
from tests.factories import UserFactory, live_drop, open_allocation

pytestmark = pytest.mark.django_db


def _generic(reservation, **context) -> dict:
    serializer = ReservationSerializer(context=context)
    return dict(serializers.ModelSerializer.to_representation(serializer, reservation))


def _reservation(allocation, **fields) -> Reservation:
    reservation = Reservation.objects.create(
        customer=UserFactory(),
        allocation=allocation,
        quantity=fields.pop("quantity", 1),
        unit_price=fields.pop("unit_price", Decimal("10")),
        currency="EUR",
        idempotency_key=fields.pop("key", "k"),
    )
    for name, value in fields.items():
        setattr(reservation, name, value)
    return reservation


@pytest.mark.parametrize(
    "fields",
    [
        {},  # pending: no expiry, no reason
        {"status": "held", "expires_at": datetime(2026, 12, 2, 6, 30, 1, 250000, tzinfo=UTC)},
        {"status": "rejected", "reject_reason": "sold_out", "quantity": 3},
        {"status": "confirmed", "unit_price": Decimal("1234.5")},
        {"unit_price": Decimal("0.999")},  # rounded as DRF rounds
    ],
)
def test_the_written_out_shape_is_drf_s_for_every_state(fields):
    drop = live_drop(quantity=5, price=Decimal("10.00"), title="Shape")
    reservation = _reservation(drop.allocation, **fields)
    reservation = Reservation.objects.select_related("allocation__drop").get(pk=reservation.pk)
    for name, value in fields.items():
        setattr(reservation, name, value)

    assert ReservationSerializer(reservation).data == _generic(reservation)
    assert ReservationSerializer(reservation, context={"drop_id": drop.pk}).data == _generic(
        reservation, drop_id=drop.pk
    )
    many = ReservationSerializer([reservation, reservation], many=True).data
    assert [dict(body) for body in many] == [_generic(reservation)] * 2


def test_a_reservation_off_stage_has_no_drop():
    reservation = _reservation(open_allocation(quantity=2))
    body = ReservationSerializer(reservation).data
    assert body["drop"] is None
    assert body == _generic(reservation)


def test_a_caller_that_knows_there_is_no_drop_costs_no_query(django_assert_num_queries):
    # Every field loaded, its allocation not.
    reservation = Reservation.objects.get(pk=_reservation(open_allocation(quantity=2)).pk)
    with django_assert_num_queries(0):
        assert ReservationSerializer(reservation, context={"drop_id": None}).data["drop"] is None
