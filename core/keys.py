"""Idempotency keys: what a client may send and how long it is remembered, as the API
contract states it. The HTTP answer store (``core.api.idempotency``), the inventory's
gate and its reservations' column keep to these."""

# A key's answer is kept this long, and the gate remembers an admitted key as long.
KEEP_SECONDS = 24 * 3600
# Printable ASCII (a UUID is the usual choice); the OpenAPI schema states the same. The
# reservations' column is as wide (``inventory.models.Reservation.idempotency_key``).
MAX_KEY_LENGTH = 255
KEY_PATTERN = rf"^[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}$"
