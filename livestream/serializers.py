"""Input validation and the documented shapes of the live-stream API."""

from __future__ import annotations

from rest_framework import serializers

from core.api.fields import MoneyField, StrictCharField, StrictIntegerField, StrictRegexField
from inventory.models import Reservation
from inventory.services import MAX_QUANTITY
from livestream.models import (
    MAX_ENTRY_SECONDS,
    MIN_ENTRY_SECONDS,
    PLAYBACK_URL_PATTERN,
    SLUG_PATTERN,
    TITLE_PATTERN,
    Drop,
    Stream,
)
from livestream.selectors import stream_snapshot


class StreamCreateSerializer(serializers.Serializer):
    # Not trimmed here: the service trims, after the length is checked on what was sent.
    title = StrictRegexField(TITLE_PATTERN, max_length=200, trim_whitespace=False)
    slug = StrictRegexField(SLUG_PATTERN, max_length=100, required=False)
    description = StrictCharField(
        required=False, allow_blank=True, max_length=5000, trim_whitespace=False
    )
    scheduled_start = serializers.DateTimeField(required=False, allow_null=True)
    playback_url = StrictRegexField(
        PLAYBACK_URL_PATTERN, required=False, allow_blank=True, max_length=500
    )
    expected_viewers = StrictIntegerField(
        min_value=1,
        max_value=MAX_QUANTITY,
        required=False,
        allow_null=True,
        help_text="Your estimate of the audience, for the readiness report.",
    )


class DropCreateSerializer(serializers.Serializer):
    variant = StrictIntegerField(min_value=1, max_value=2**31 - 1)
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY)
    price = MoneyField()
    per_viewer_limit = StrictIntegerField(
        min_value=1, max_value=MAX_QUANTITY, required=False, allow_null=True
    )
    starts_at = serializers.DateTimeField(required=False, allow_null=True)
    ends_at = serializers.DateTimeField(required=False, allow_null=True)
    duration_seconds = StrictIntegerField(
        min_value=1, max_value=24 * 3600, required=False, allow_null=True
    )
    mode = serializers.ChoiceField(
        choices=Drop.Mode.choices,
        required=False,
        default=Drop.Mode.FIRST_COME,
        help_text="`draw`: pinning opens entries for `entry_seconds`, then one draw picks "
        "the buyers; no reserves.",
    )
    entry_seconds = StrictIntegerField(
        min_value=MIN_ENTRY_SECONDS,
        max_value=MAX_ENTRY_SECONDS,
        required=False,
        allow_null=True,
        help_text="How long a draw takes entries from its pin; required for a draw, "
        "refused otherwise.",
    )


class ReserveSerializer(serializers.Serializer):
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY)
    challenge_token = StrictCharField(
        required=False,
        max_length=4096,
        help_text="The entry check's token from the challenge provider, where the drop's "
        "entry rules ask for it.",
    )


class DropSerializer(serializers.Serializer):
    """A drop on stage (documents ``livestream.selectors.drop_snapshot``)."""

    id = serializers.IntegerField()
    variant = serializers.IntegerField()
    sku = serializers.CharField()
    product = serializers.CharField()
    image_url = serializers.CharField()
    price = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    quantity = serializers.IntegerField()
    remaining = serializers.IntegerField()
    sold = serializers.IntegerField()
    per_viewer_limit = serializers.IntegerField(allow_null=True)
    pinned = serializers.BooleanField()
    starts_at = serializers.DateTimeField(allow_null=True)
    ends_at = serializers.DateTimeField(allow_null=True)
    status = serializers.CharField()
    mode = serializers.ChoiceField(choices=Drop.Mode.choices)
    # A draw drop's only (absent on a first-come drop).
    entry_seconds = serializers.IntegerField(required=False)
    entries_close_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="A draw's close of entries, once pinned."
    )
    seed_commitment = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="A draw's lowercase hex SHA-256 of its secret seed, once pinned.",
    )


class StreamSerializer(serializers.Serializer):
    """A stream with its drops (documents ``livestream.selectors.stream_snapshot``)."""

    id = serializers.IntegerField()
    slug = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    status = serializers.ChoiceField(choices=Stream.Status.choices)
    host = serializers.CharField()
    scheduled_start = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    playback_url = serializers.CharField()
    pinned_drop = DropSerializer(allow_null=True)
    drops = DropSerializer(many=True)
    viewers = serializers.IntegerField()
    seq = serializers.IntegerField()


class StreamSnapshotSerializer(StreamSerializer):
    """Renders a ``Stream`` through ``stream_snapshot``, the one source of its shape."""

    def to_representation(self, instance):
        return stream_snapshot(stream=instance)


# The formats of ReservationSerializer's fields, as DRF renders them (one instance each).
_RESERVATION_TIME = serializers.DateTimeField()
_RESERVATION_PRICE = serializers.DecimalField(
    max_digits=Reservation._meta.get_field("unit_price").max_digits,
    decimal_places=Reservation._meta.get_field("unit_price").decimal_places,
)


class ReservationSerializer(serializers.ModelSerializer):
    """A hold, as the REST API and the personal ``reservation.updated`` event show it."""

    drop = serializers.SerializerMethodField()

    class Meta:
        model = Reservation
        fields = [
            "id",
            "status",
            "quantity",
            "expires_at",
            "drop",
            "unit_price",
            "currency",
            "reject_reason",
            "created_at",
        ]
        read_only_fields = fields
        # The model's columns among them (what a query for the shape must load).
        stored_fields = [name for name in fields if name != "drop"]

    def get_drop(self, reservation) -> int | None:
        if "drop_id" in self.context:  # the caller knows it (None: not on stage)
            return self.context["drop_id"]
        drop = getattr(reservation.allocation, "drop", None)
        return drop.pk if drop is not None else None

    def to_representation(self, instance) -> dict:
        """The fields above in their DRF formats, without DRF's generic walk over
        bound fields: every 202 and every settled hold's event is one of these, and the
        walk was most of their cost. (A test holds it equal to the generic walk.)"""
        return reservation_body(
            instance, reservation_id=instance.pk, drop_id=self.get_drop(instance)
        )


def reservation_body(reservation, *, reservation_id: int, drop_id: int | None) -> dict:
    """A reservation as the API shows it, from anything with its fields: a row, or the
    inventory's ``ReservationChanged`` (the personal event, built from the change)."""
    expires_at = reservation.expires_at
    return {
        "id": reservation_id,
        "status": reservation.status,
        "quantity": reservation.quantity,
        "expires_at": _RESERVATION_TIME.to_representation(expires_at) if expires_at else None,
        "drop": drop_id,
        "unit_price": _RESERVATION_PRICE.to_representation(reservation.unit_price),
        "currency": reservation.currency,
        "reject_reason": reservation.reject_reason,
        "created_at": _RESERVATION_TIME.to_representation(reservation.created_at),
    }


class WaitlistJoinSerializer(serializers.Serializer):
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY, required=False, default=1)


class WaitlistEntrySerializer(serializers.Serializer):
    """A viewer's place in a drop's line (also the ``waitlist.updated`` event's body)."""

    id = serializers.IntegerField()
    drop = serializers.SerializerMethodField()
    status = serializers.CharField()
    position = serializers.IntegerField(
        allow_null=True, help_text="1 for the next in line; null once no longer waiting."
    )
    quantity = serializers.IntegerField()
    reservation = serializers.IntegerField(
        source="reservation_id", allow_null=True, help_text="The offer: a hold to check out."
    )
    created_at = serializers.DateTimeField()
    offered_at = serializers.DateTimeField(allow_null=True)

    def get_drop(self, entry) -> int:
        return self.context["drop_id"]
