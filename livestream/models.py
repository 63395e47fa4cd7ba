"""Streams and drops.

A drop is a variant on stage: a flash price and an ``inventory.Allocation`` holding
the units carved for it. The allocation is the one source of truth for units (quantity,
held, sold, the per-customer limit and whether it sells); a drop only says which stream
shows it, at what price, and whether it is pinned. Rows are written by
``livestream.services`` only.
"""

import re
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q

# What a stream's fields may hold, checked by the services and stated by the API schema.
# A title needs one visible character. ASCII whitespace only, so that the API schema's
# pattern means the same here and in any client's regex dialect.
ASCII_SPACE = " \t\n\r\f\v"
TITLE_PATTERN = r"[^ \t\n\r\f\v]"
SLUG_PATTERN = r"^[-a-z0-9_]+$"
SLUG_RE = re.compile(SLUG_PATTERN)
# The video provider's URL is only stored and handed to players (always escaped): an
# http(s) scheme, a host name, an optional port, then printable ASCII (percent-encode
# the rest). ASCII ranges read the same in every regex dialect, unlike \s.
PLAYBACK_URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][!-~]*)?$"
PLAYBACK_URL_RE = re.compile(PLAYBACK_URL_PATTERN)
# How long a draw takes entries (the public contract).
MIN_ENTRY_SECONDS, MAX_ENTRY_SECONDS = 10, 3600


class Stream(models.Model):
    class Status(models.TextChoices):
        SCHEDULED = "scheduled"
        LIVE = "live"
        ENDED = "ended"

    host = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="hosted_streams"
    )
    title = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SCHEDULED)
    scheduled_start = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    playback_url = models.URLField(
        max_length=500, blank=True, help_text="The external video provider's playback URL."
    )
    expected_viewers = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The host's estimate of viewers, for the readiness report (empty: "
        "estimated from the host's past streams).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title


class Drop(models.Model):
    """A variant on stage in a stream. Price, currency, variant, allocation and mode are
    fixed once created (a reservation stores the price it was made at), which is what
    lets the purchase path cache them per process."""

    class Mode(models.TextChoices):
        FIRST_COME = "first_come", "first come, first served"
        DRAW = "draw", "by draw"

    # Drops carry sales (their allocation's holds and orders): never cascade them away.
    stream = models.ForeignKey(Stream, on_delete=models.PROTECT, related_name="drops")
    variant = models.ForeignKey("shop.Variant", on_delete=models.PROTECT, related_name="drops")
    allocation = models.OneToOneField(
        "inventory.Allocation", on_delete=models.PROTECT, related_name="drop"
    )
    price = models.DecimalField(max_digits=12, decimal_places=2, help_text="The flash price.")
    # Copied from the variant at creation: the price means nothing without it, and ops
    # editing the variant later must not change what a live drop charges.
    currency = models.CharField(max_length=3)
    # Mirrors the allocation's per_customer_limit (which is what is enforced).
    per_viewer_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Units one viewer may buy; empty for no limit."
    )
    is_pinned = models.BooleanField(default=False)
    pinned_at = models.DateTimeField(
        null=True, blank=True, help_text="When the drop was last pinned."
    )
    # A timed drop opens by itself at ``starts_at`` (viewers see a countdown until then)
    # and closes by itself at ``ends_at``; ``duration`` sets ``ends_at`` when it opens.
    starts_at = models.DateTimeField(null=True, blank=True, help_text="Optional countdown start.")
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Optional end of the sale.")
    duration = models.DurationField(
        null=True, blank=True, help_text="Optional length of the sale, from when it opens."
    )
    # A drop sold by draw takes entries for ``entry_seconds`` from its pin, then one draw
    # picks its buyers (the ``draws`` app). Plain columns here, not a row of that app:
    # the purchase path must tell a draw from a first-come drop (to refuse reserves on
    # it) from its per-process routing cache, and livestream may not import draws.
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.FIRST_COME)
    entry_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="How long a draw takes entries from its pin."
    )
    # A first-come drop whose buyers must pass entry rules (set through the draws app,
    # which checks them): such a drop is decided by Django, never by the front door.
    # Fixed, like the rules, once the drop was pinned or went on sale.
    buyer_rules = models.BooleanField(
        default=False, help_text="Buyers must pass the drop's entry rules."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["stream_id", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["stream"], condition=Q(is_pinned=True), name="drop_one_pinned_per_stream"
            ),
            models.CheckConstraint(
                condition=Q(price__gte=Decimal("0")), name="drop_price_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(per_viewer_limit__isnull=True) | Q(per_viewer_limit__gte=1),
                name="drop_limit_positive",
            ),
            models.CheckConstraint(
                condition=Q(is_pinned=False) | Q(pinned_at__isnull=False),
                name="drop_pinned_has_time",
            ),
            models.CheckConstraint(
                condition=Q(starts_at__isnull=True)
                | Q(ends_at__isnull=True)
                | Q(ends_at__gt=F("starts_at")),
                name="drop_ends_after_start",
            ),
            models.CheckConstraint(
                condition=(Q(mode="first_come") & Q(entry_seconds__isnull=True))
                | (
                    Q(mode="draw")
                    & Q(entry_seconds__gte=MIN_ENTRY_SECONDS)
                    & Q(entry_seconds__lte=MAX_ENTRY_SECONDS)
                ),
                name="drop_draw_has_entry_window",
            ),
        ]
        indexes = [
            # The drop scheduler looks for timed drops due to open or close.
            models.Index(
                fields=["starts_at"], condition=Q(starts_at__isnull=False), name="drop_starts_idx"
            ),
            models.Index(
                fields=["ends_at"], condition=Q(ends_at__isnull=False), name="drop_ends_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"drop #{self.pk}"
