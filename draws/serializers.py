"""Input validation and the documented shapes of the draws API."""

from __future__ import annotations

from rest_framework import serializers

from core.api.fields import StrictBooleanField, StrictCharField, StrictIntegerField
from draws import eligibility
from draws.models import Draw, Entry
from inventory.services import MAX_QUANTITY
from livestream.models import Drop
from livestream.serializers import ReservationSerializer


class EntrySubmitSerializer(serializers.Serializer):
    quantity = StrictIntegerField(
        min_value=1,
        max_value=MAX_QUANTITY,
        help_text="Units wanted if drawn: at most the drop's per-viewer limit.",
    )
    challenge_token = StrictCharField(
        required=False,
        max_length=4096,
        help_text="The entry check's token from the challenge provider, where the drop "
        "asks for it.",
    )


class EntryRulesSerializer(serializers.Serializer):
    """Who may enter a draw drop (the host's; each rule off when empty)."""

    min_account_age_seconds = StrictIntegerField(
        min_value=1,
        max_value=eligibility.MAX_ACCOUNT_AGE_SECONDS,
        required=False,
        allow_null=True,
        default=None,
    )
    min_watch_seconds = StrictIntegerField(
        min_value=1,
        max_value=eligibility.MAX_WATCH_SECONDS,
        required=False,
        allow_null=True,
        default=None,
        help_text="How long a viewer must have watched the stream (their own websocket "
        "on it, without a break) before entering.",
    )
    max_entries_per_address = StrictIntegerField(
        min_value=1,
        max_value=eligibility.MAX_ENTRIES_PER_ADDRESS,
        required=False,
        allow_null=True,
        default=None,
    )
    challenge_required = StrictBooleanField(required=False, default=False)


class EntryWaitlistSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    position = serializers.IntegerField(
        allow_null=True, help_text="1 for the next in line; null once no longer waiting."
    )
    reservation = serializers.IntegerField(
        allow_null=True, help_text="An offer made from the line: a hold to check out."
    )


class EntrySerializer(serializers.Serializer):
    """A viewer's entry (documents ``draws.selectors.entry_body``; also ``draw.result``)."""

    id = serializers.IntegerField(help_text="The number the draw rule hashes.")
    drop = serializers.IntegerField()
    quantity = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Entry.Status.choices)
    entered_at = serializers.DateTimeField()
    rank = serializers.IntegerField(
        allow_null=True, help_text="Place in the draw order once drawn (1: drawn first)."
    )
    reservation = ReservationSerializer(
        allow_null=True, help_text="A winner's held offer, checked out like any hold."
    )
    waitlist = EntryWaitlistSerializer(
        allow_null=True, help_text="A loser's place in the drop's line, in draw order."
    )


class EntryListItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    quantity = serializers.IntegerField()


class DrawSerializer(serializers.Serializer):
    """A drop's draw (documents ``draws.selectors.draw_public``)."""

    drop = serializers.IntegerField()
    mode = serializers.ChoiceField(choices=Drop.Mode.choices)
    status = serializers.ChoiceField(
        choices=Draw.Status.choices, allow_null=True, help_text="null before entries open."
    )
    entries = serializers.IntegerField(help_text="Entries so far (all of them once drawn).")
    entries_close_at = serializers.DateTimeField(allow_null=True)
    seed_commitment = serializers.CharField(
        allow_null=True, help_text="Lowercase hex SHA-256 of the seed, from the opening."
    )
    seed = serializers.CharField(allow_null=True, help_text="Revealed at the draw.")
    winners = serializers.ListField(
        child=serializers.IntegerField(), help_text="Winning entry ids in draw order."
    )
    units = serializers.IntegerField(
        allow_null=True, help_text="The units the draw handed out, once drawn."
    )
    entry_list = EntryListItemSerializer(
        many=True, allow_null=True, help_text="Every entry once drawn, to recompute the draw."
    )
