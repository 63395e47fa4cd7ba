"""The catalog (products and their sellable variants), orders and payments.

Stock lives in ``inventory``; an order is made from an inventory hold and sells its units
only through ``inventory.services``."""

from decimal import Decimal

from django.conf import settings
from django.db import models


class Product(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    image_url = models.URLField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class Variant(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="variants")
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True, help_text="e.g. 'M / Red'")
    price = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default=settings.DEFAULT_CURRENCY)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["product_id", "sku"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(price__gte=Decimal("0")), name="variant_price_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product.name} {self.name}".strip() + f" ({self.sku})"


class Order(models.Model):
    """One order per hold: checkout turns a held reservation into an order, payment
    confirmed sells the held units. Priced from the reservation (the drop price)."""

    class Status(models.TextChoices):
        PENDING_PAYMENT = "pending_payment"
        PAID = "paid"
        PAYMENT_FAILED = "payment_failed"
        CANCELLED = "cancelled"
        REFUNDED = "refunded"

    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders"
    )
    reservation = models.OneToOneField(
        "inventory.Reservation", on_delete=models.PROTECT, related_name="order"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING_PAYMENT)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(total__gte=Decimal("0")), name="order_total_not_negative"
            ),
            models.CheckConstraint(
                condition=~models.Q(status="paid") | models.Q(paid_at__isnull=False),
                name="order_paid_has_paid_at",
            ),
        ]

    def __str__(self) -> str:
        return f"order {self.pk} ({self.status})"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    variant = models.ForeignKey(Variant, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    line_total = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(quantity__gte=1), name="order_line_quantity_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(unit_price__gte=Decimal("0")),
                name="order_line_unit_price_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(line_total__gte=Decimal("0")),
                name="order_line_total_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.variant_id} @ {self.unit_price}"


class Payment(models.Model):
    """One charge attempt of an order at the payment provider.

    The row is written (``pending``) before the provider is called, and ``reference``
    is the idempotency key the provider is given: a charge is never made without a row
    that knows about it. A refund is claimed (``refund_reason`` and
    ``refund_requested_at`` set) before the provider is asked, so it is asked once and
    a refund interrupted half-way is found again and finished.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        REFUNDED = "refunded"

    class RefundReason(models.TextChoices):
        # The customer or ops cancelled a paid order: the units come back too.
        CANCELLED = "cancelled"
        # Paid after the hold expired and its units were sold to someone else.
        UNFULFILLABLE = "unfulfillable"
        # A second successful charge of an order that was already paid.
        DUPLICATE = "duplicate"
        # Paid after the order had been cancelled.
        ORDER_CLOSED = "order_closed"

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="payments")
    provider = models.CharField(max_length=50)
    reference = models.CharField(max_length=100, unique=True)
    provider_reference = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    failure_reason = models.CharField(max_length=200, blank=True)
    refund_reason = models.CharField(max_length=20, choices=RefundReason.choices, blank=True)
    refund_requested_at = models.DateTimeField(null=True, blank=True)
    refund_reference = models.CharField(max_length=200, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount__gte=Decimal("0")), name="payment_amount_not_negative"
            ),
            # At most one charge in flight per order: two concurrent checkouts can never
            # both charge.
            models.UniqueConstraint(
                fields=["order"],
                condition=models.Q(status="pending"),
                name="payment_one_pending_per_order",
            ),
            models.CheckConstraint(
                condition=~models.Q(status="refunded")
                | models.Q(refunded_at__isnull=False, refund_requested_at__isnull=False),
                name="payment_refunded_has_times",
            ),
        ]
        indexes = [
            # The reconcile task looks for refunds claimed but not finished.
            models.Index(
                fields=["refund_requested_at"],
                condition=models.Q(refund_requested_at__isnull=False)
                & ~models.Q(status="refunded"),
                name="payment_refund_open_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"payment {self.reference} ({self.status})"


class WebhookEvent(models.Model):
    """Every signed provider event received, once: (provider, event_id) is unique, so a
    replayed event is recognised and has no second effect."""

    provider = models.CharField(max_length=50)
    event_id = models.CharField(max_length=255)
    event_type = models.CharField(max_length=100)
    received_at = models.DateTimeField(auto_now_add=True)
    payload = models.JSONField(default=dict)
    # Set once the event was handled; an event recorded but never processed (a crash
    # in between) is processed again when the provider redelivers it.
    processed_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=20, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "event_id"], name="webhook_event_once_per_provider"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type} {self.event_id}"
