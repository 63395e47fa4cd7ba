"""Shop services: every write to orders and payments (checkout, payment outcomes,
webhooks, cancellation). Stock moves only through ``inventory.services``."""

from shop.services.checkout import checkout_create
from shop.services.orders import (
    order_cancel,
    order_payment_failed,
    order_payment_succeeded,
    payments_reconcile,
)
from shop.services.webhooks import payment_webhook_handle

__all__ = [
    "checkout_create",
    "order_cancel",
    "order_payment_failed",
    "order_payment_succeeded",
    "payment_webhook_handle",
    "payments_reconcile",
]
