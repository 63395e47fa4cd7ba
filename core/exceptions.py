"""The errors every app raises. Each carries a stable machine ``code``, an HTTP status
hint and the data a client needs; the API's one exception handler
(``core.api.errors.exception_handler``) turns them into ``{"code", "detail", ...}``
bodies. Each app's own errors (``inventory.exceptions``, ``shop.exceptions``,
``livestream.exceptions``) subclass ``DomainError``."""

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


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    http_status = 422
    default_detail = "This Idempotency-Key was already used with a different request."


class RequestInProgress(DomainError):
    code = "request_in_progress"
    http_status = 409
    retryable = True
    default_detail = "A request with this Idempotency-Key is still being processed; retry."
