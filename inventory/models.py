"""Stock, allocations, holds and the ledger.

Units flow like this (``StockItem.reserved`` counts units promised to allocations)::

    on_hand ──carve──▶ Allocation.quantity ──hold──▶ held ──confirm──▶ sold (leaves on_hand)
       ▲                     │  ▲                      │
       └──return on close────┘  └──release / expire────┘

The counters are only ever changed by ``inventory.services`` with conditional ``UPDATE``
statements, each paired with a ``StockMovement``; CHECK constraints are the last line of
defence: a bug that would oversell fails its transaction instead.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class StockItem(models.Model):
    variant = models.OneToOneField("shop.Variant", on_delete=models.PROTECT, related_name="stock")
    on_hand = models.IntegerField(default=0, help_text="Units physically in stock.")
    reserved = models.IntegerField(default=0, help_text="Units carved into allocations.")
    low_stock_threshold = models.PositiveIntegerField(default=5)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(reserved__gte=0), name="stock_reserved_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(reserved__lte=F("on_hand")), name="stock_reserved_within_on_hand"
            ),
        ]

    def __str__(self) -> str:
        return f"stock of {self.variant.sku}"

    @property
    def available(self) -> int:
        """Units on hand not promised to any allocation."""
        return self.on_hand - self.reserved

    @property
    def is_low(self) -> bool:
        return self.available <= self.low_stock_threshold


class Allocation(models.Model):
    """A pool of units carved out of one stock item (a drop puts one on stage).

    Carving moves units into ``StockItem.reserved``; holds and sales then move only this
    row's counters, so the hot path touches one row. Closing returns what is unsold.
    """

    class Status(models.TextChoices):
        READY = "ready", "ready (carved, not selling)"
        OPEN = "open", "open (selling)"
        CLOSED = "closed", "closed"

    stock_item = models.ForeignKey(StockItem, on_delete=models.PROTECT, related_name="allocations")
    label = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.READY)
    quantity = models.IntegerField(help_text="Units carved for this pool.")
    held = models.IntegerField(default=0)
    sold = models.IntegerField(default=0)
    per_customer_limit = models.PositiveIntegerField(null=True, blank=True)
    # Bumped once, under this row's lock, by every transaction that changes the
    # allocation or its reservations: it orders what copies of them apply (the Redis
    # gate, see inventory.gate; the viewers' counters and reservations, which drop a
    # change older than one they have). See inventory.services._common.allocation_version.
    version = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(quantity__gte=0), name="allocation_quantity_not_negative"
            ),
            models.CheckConstraint(condition=Q(held__gte=0), name="allocation_held_not_negative"),
            models.CheckConstraint(condition=Q(sold__gte=0), name="allocation_sold_not_negative"),
            models.CheckConstraint(
                condition=Q(held__lte=F("quantity") - F("sold")), name="allocation_never_oversold"
            ),
            models.CheckConstraint(
                condition=Q(per_customer_limit__isnull=True) | Q(per_customer_limit__gte=1),
                name="allocation_limit_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.label or f"allocation {self.pk}"

    @property
    def remaining(self) -> int:
        """Units neither held nor sold."""
        return self.quantity - self.held - self.sold


class Reservation(models.Model):
    """A customer's hold on units of an allocation."""

    class Status(models.TextChoices):
        PENDING = "pending"
        HELD = "held"
        CONFIRMED = "confirmed"
        RELEASED = "released"
        EXPIRED = "expired"
        REJECTED = "rejected"
        # Sold, then the order was cancelled or refunded: the units came back.
        REFUNDED = "refunded"

    ACTIVE_STATUSES = (Status.PENDING, Status.HELD, Status.CONFIRMED)
    # Units settled on a customer: held, or bought.
    SETTLED_STATUSES = (Status.HELD, Status.CONFIRMED)

    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reservations"
    )
    allocation = models.ForeignKey(
        Allocation, on_delete=models.PROTECT, related_name="reservations"
    )
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    reject_reason = models.CharField(max_length=32, blank=True)
    # The client's Idempotency-Key. Holds the system makes itself (waitlist offers) have
    # none: a value the system makes never shares a namespace a client can write into.
    # NULL, not "", so that the unique (customer, key) constraint never compares them.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # NULL keys (system-made holds) never collide: NULLs are distinct.
            models.UniqueConstraint(
                fields=["customer", "idempotency_key"], name="reservation_idempotency_per_customer"
            ),
            models.CheckConstraint(
                condition=Q(quantity__gte=1), name="reservation_quantity_positive"
            ),
            models.CheckConstraint(
                condition=~Q(status="held") | Q(expires_at__isnull=False),
                name="reservation_held_has_expiry",
            ),
        ]
        indexes = [
            # The reserve task settles the pending holds of one allocation, oldest first.
            models.Index(
                fields=["allocation", "id"],
                condition=Q(status="pending"),
                name="reservation_pending_idx",
            ),
            # The expiry sweep looks for held reservations past their time.
            models.Index(
                fields=["expires_at"],
                condition=Q(status="held"),
                name="reservation_held_expiry_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"reservation {self.pk} ({self.status})"


class StockMovement(models.Model):
    """The ledger: one row for every change of stock or allocation counters.

    Per stock item, ``on_hand`` and ``reserved`` equal the sums of their deltas; per
    allocation, ``held`` and ``sold`` equal the sums of theirs.
    """

    class Reason(models.TextChoices):
        RESTOCK = "restock"
        ADJUSTMENT = "adjustment"
        SHRINKAGE = "shrinkage"
        DAMAGE = "damage"
        RETURN = "return"
        IMPORT = "import"
        ALLOCATION_CARVE = "allocation_carve"
        ALLOCATION_RETURN = "allocation_return"
        HOLD = "hold"
        HOLD_RELEASE = "hold_release"
        HOLD_EXPIRE = "hold_expire"
        SALE = "sale"
        HOLD_REINSTATE = "hold_reinstate"
        SALE_REFUND = "sale_refund"
        WAITLIST_OFFER = "waitlist_offer"

    stock_item = models.ForeignKey(StockItem, on_delete=models.PROTECT, related_name="movements")
    allocation = models.ForeignKey(
        Allocation, on_delete=models.PROTECT, null=True, blank=True, related_name="movements"
    )
    reservation = models.ForeignKey(
        Reservation, on_delete=models.PROTECT, null=True, blank=True, related_name="movements"
    )
    reason = models.CharField(max_length=20, choices=Reason.choices)
    on_hand_delta = models.IntegerField(default=0)
    reserved_delta = models.IntegerField(default=0)
    held_delta = models.IntegerField(default=0)
    sold_delta = models.IntegerField(default=0)
    reference = models.CharField(max_length=200, blank=True)
    note = models.TextField(blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return (
            f"{self.reason} on {self.stock_item_id}: {self.on_hand_delta:+}/{self.reserved_delta:+}"
        )


class WaitlistEntry(models.Model):
    """A viewer in line for a sold-out allocation.

    Units that come back (a hold released or expired, a sale refunded) go to the first
    entry in line before anyone else can take them: an *offer*, which is a held
    reservation with its own short window. Not taken in time, it passes to the next.
    """

    class Status(models.TextChoices):
        WAITING = "waiting"
        OFFERED = "offered"
        CLAIMED = "claimed", "claimed (bought)"
        LAPSED = "lapsed", "lapsed (offer not taken)"
        LEFT = "left"
        SKIPPED = "skipped", "skipped (at the per-viewer limit)"
        CLOSED = "closed", "closed (the sale ended first)"

    ACTIVE_STATUSES = (Status.WAITING, Status.OFFERED)

    allocation = models.ForeignKey(
        Allocation, on_delete=models.PROTECT, related_name="waitlist_entries"
    )
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="waitlist_entries"
    )
    quantity = models.PositiveIntegerField(default=1)
    # The price and currency an offer is made at (what the customer saw when queuing).
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.WAITING)
    reservation = models.OneToOneField(
        Reservation,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="waitlist_entry",
        help_text="The offer: a hold made for this entry.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    offered_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "waitlist entries"
        constraints = [
            models.UniqueConstraint(
                fields=["allocation", "customer"],
                condition=Q(status__in=["waiting", "offered"]),
                name="waitlist_one_active_entry",
            ),
            models.CheckConstraint(condition=Q(quantity__gte=1), name="waitlist_quantity_positive"),
            models.CheckConstraint(
                condition=~Q(status="offered") | Q(reservation__isnull=False),
                name="waitlist_offer_has_hold",
            ),
        ]
        indexes = [
            # The line: waiting entries of an allocation, first come first served.
            models.Index(
                fields=["allocation", "id"],
                condition=Q(status="waiting"),
                name="waitlist_waiting_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"waitlist entry {self.pk} ({self.status})"


class DemandViewer(models.Model):
    """Per customer and allocation, how their reserve requests were decided: the
    database path's demand counters (with the Redis gate on, the same figures are kept
    next to the gate and no row is written here)."""

    allocation = models.ForeignKey(Allocation, on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    attempts = models.IntegerField(default=0)
    admitted = models.IntegerField(default=0)
    admitted_units = models.IntegerField(default=0)
    sold_out = models.IntegerField(default=0)
    at_limit = models.IntegerField(default=0)
    not_live = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["allocation", "customer"], name="demand_viewer_unique"),
        ]

    def __str__(self) -> str:
        return f"demand of customer {self.customer_id} on allocation {self.allocation_id}"
