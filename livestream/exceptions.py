"""Domain errors of streams and drops. Like the inventory's, each carries a stable
machine ``code`` and an HTTP status hint; the API's one exception handler maps them."""

from __future__ import annotations

from core.exceptions import DomainError


class RulesFixed(DomainError):
    code = "rules_fixed"
    http_status = 409
    default_detail = "Entry rules are fixed once the drop was pinned or went on sale."


class NotStreamHost(DomainError):
    code = "permission_denied"
    http_status = 403
    default_detail = "Only the stream's host (or staff) can do this."


class StreamNotLive(DomainError):
    code = "stream_not_live"
    http_status = 409
    default_detail = "The stream is not live."


class StreamEnded(DomainError):
    code = "stream_ended"
    http_status = 409
    default_detail = "The stream has ended."


class InvalidStreamTransition(DomainError):
    code = "invalid_transition"
    http_status = 409
    default_detail = "The stream cannot move to that status from its current one."


class SlugTaken(DomainError):
    code = "slug_taken"
    http_status = 409
    default_detail = "This slug is taken."


class VariantNotForSale(DomainError):
    code = "variant_not_for_sale"
    http_status = 409
    default_detail = "This variant is not for sale."


class DropNotStarted(DomainError):
    code = "drop_not_started"
    http_status = 409
    default_detail = "This drop's sale has not started yet."
