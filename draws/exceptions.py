"""Domain errors of draws; the API's one exception handler maps them."""

from __future__ import annotations

from core.exceptions import DomainError


class EntriesClosed(DomainError):
    code = "entries_closed"
    http_status = 409
    default_detail = "Entries to this draw are closed."


class NotEligible(DomainError):
    """Refused by one of the drop's eligibility rules; ``reason`` names it."""

    code = "not_eligible"
    http_status = 409
    default_detail = "You cannot enter this draw."


class NotEntered(DomainError):
    code = "not_found"
    http_status = 404
    default_detail = "You have not entered this draw."
