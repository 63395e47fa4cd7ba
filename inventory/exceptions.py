"""Domain errors. Each carries a stable machine ``code`` and the data a client needs;
the API's one exception handler turns them into ``{"code", "detail", ...}`` bodies."""

from __future__ import annotations


class DomainError(Exception):
    code = "error"
    # The HTTP status an API answers with; the domain only hints, the handler decides.
    http_status = 400
    default_detail = "The request could not be completed."
    # True when the same request may well succeed if simply sent again (not a decision).
    retryable = False

    def __init__(self, detail: str | None = None, **data):
        self.detail = detail or self.default_detail
        self.data = data
        super().__init__(self.detail)

    def body(self) -> dict:
        """The JSON error body an API answers with."""
        return {"code": self.code, "detail": self.detail, **self.data}


class InvalidInput(DomainError):
    code = "invalid"
    default_detail = "Invalid input."

    def body(self) -> dict:
        # The same shape as a serializer's validation error: messages per field.
        field = self.data.get("field", "non_field_errors")
        return {"code": self.code, "detail": self.detail, "errors": {field: [self.detail]}}


class NotFound(DomainError):
    code = "not_found"
    http_status = 404
    default_detail = "Not found."


class InsufficientStock(DomainError):
    code = "insufficient_stock"
    http_status = 409
    default_detail = "Not enough units in stock."


class DropNotLive(DomainError):
    code = "drop_not_live"
    http_status = 409
    default_detail = "This drop is not on sale."


class SoldOut(DomainError):
    code = "sold_out"
    http_status = 409
    default_detail = "Sold out."


class LimitReached(DomainError):
    code = "limit_reached"
    http_status = 409
    default_detail = "You reached the per-customer limit for this drop."


class TooManyHolds(DomainError):
    code = "too_many_holds"
    http_status = 409
    default_detail = "Too many active holds; check out or release some first."


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    http_status = 422
    default_detail = "This Idempotency-Key was already used with a different request."


class RequestInProgress(DomainError):
    code = "request_in_progress"
    http_status = 409
    retryable = True
    default_detail = "A request with this Idempotency-Key is still being processed; retry."


class HoldExpired(DomainError):
    code = "hold_expired"
    http_status = 409
    default_detail = "The hold expired; its units went back on sale."


class ReservationNotHeld(DomainError):
    code = "reservation_not_held"
    http_status = 409
    default_detail = "The reservation is not held."


class AllocationClosed(DomainError):
    code = "allocation_closed"
    http_status = 409
    default_detail = "The allocation is closed."


class NotSoldOut(DomainError):
    code = "not_sold_out"
    http_status = 409
    default_detail = "Units are still on sale: reserve one instead of queuing."


class NotOnWaitlist(DomainError):
    code = "not_on_waitlist"
    http_status = 404
    default_detail = "You are not in line for this drop."
