"""Draws: a drop sold by lottery instead of first come, first served.

A ``Draw`` is a draw drop's entries and its one draw: the secret seed chosen when
entries opened (its SHA-256, the commitment, is public from then on; the seed itself
only once drawn), when entries close, and, once drawn, the winners in draw order. An
``Entry`` is one viewer's single entry; its id is the number the draw rule hashes (see
``draws.rule``). Rows are written by ``draws.services`` only.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Draw(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "taking entries"
        DRAWN = "drawn"

    drop = models.OneToOneField("livestream.Drop", on_delete=models.PROTECT, related_name="draw")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    # Secret until the draw: never in an API body, event or admin page before it.
    seed = models.CharField(max_length=128)
    seed_commitment = models.CharField(
        max_length=64, help_text="Lowercase hex SHA-256 of the seed."
    )
    entries_opened_at = models.DateTimeField()
    entries_close_at = models.DateTimeField()
    drawn_at = models.DateTimeField(null=True, blank=True)
    # Filled by the draw: how many entries it drew from, the units it handed out from,
    # and the winning entry ids in draw order.
    entry_count = models.PositiveIntegerField(null=True, blank=True)
    units = models.PositiveIntegerField(null=True, blank=True)
    winners = models.JSONField(default=list, blank=True)
    # Entries refused, by reason (``draws.eligibility``'s, and ``entries_closed``):
    # counted next to the window while entries are open, kept here by the draw.
    refusals = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status="open") | Q(drawn_at__isnull=False), name="draw_drawn_has_time"
            ),
            models.CheckConstraint(
                condition=Q(entries_close_at__gte=models.F("entries_opened_at")),
                name="draw_closes_after_opening",
            ),
        ]
        indexes = [
            # The sweep looks for draws whose entries closed and that were not drawn.
            models.Index(
                fields=["entries_close_at"], condition=Q(status="open"), name="draw_due_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"draw of drop #{self.drop_id}"


class Entry(models.Model):
    class Status(models.TextChoices):
        ENTERED = "entered"
        WON = "won"
        LOST = "lost"

    draw = models.ForeignKey(Draw, on_delete=models.PROTECT, related_name="entries")
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="draw_entries"
    )
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ENTERED)
    # When the entry was accepted (by Redis's clock on the fast path, the writing
    # server's otherwise): always before the draw's close.
    entered_at = models.DateTimeField()
    # Where the entry came from (the per-address cap counts them); "" when unknown.
    client_address = models.CharField(max_length=64, blank=True, default="")
    # The entry's place in the draw order (1 = drawn first), set by the draw.
    rank = models.PositiveIntegerField(null=True, blank=True)
    # A winner's offer: a held reservation, checked out like any hold.
    reservation = models.OneToOneField(
        "inventory.Reservation",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="draw_entry",
    )
    # A loser's place in the drop's line, in draw order.
    waitlist_entry = models.OneToOneField(
        "inventory.WaitlistEntry",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="draw_entry",
    )

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "entries"
        constraints = [
            # One entry per viewer per draw, whichever path wrote it.
            models.UniqueConstraint(fields=["draw", "customer"], name="draw_one_entry_per_viewer"),
            models.CheckConstraint(condition=Q(quantity__gte=1), name="entry_quantity_positive"),
            models.CheckConstraint(
                condition=~Q(status="won") | Q(reservation__isnull=False),
                name="entry_won_has_offer",
            ),
        ]
        indexes = [
            # The per-address cap counts a draw's entries from one address.
            models.Index(fields=["draw", "client_address"], name="entry_address_idx"),
        ]

    def __str__(self) -> str:
        return f"entry {self.pk} ({self.status})"


class EntryRules(models.Model):
    """Who may enter a drop's draw, set by the host before entries open (fixed from
    then on: rules changing while viewers enter would not be fair). Each rule is off
    when empty."""

    drop = models.OneToOneField(
        "livestream.Drop", on_delete=models.PROTECT, related_name="entry_rules"
    )
    min_account_age_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Accounts younger than this cannot enter."
    )
    min_watch_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Viewers must have watched the stream this long, without a break, to enter.",
    )
    max_entries_per_address = models.PositiveIntegerField(
        null=True, blank=True, help_text="Entries at most from one client address."
    )
    challenge_required = models.BooleanField(
        default=False, help_text="Each entry must pass the challenge provider's check."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "entry rules"
        constraints = [
            models.CheckConstraint(
                condition=Q(max_entries_per_address__isnull=True)
                | Q(max_entries_per_address__gte=1),
                name="entry_rules_address_cap_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"entry rules of drop #{self.drop_id}"
