"""The inventory's domain errors (the shared base and the generic ones are in
``core.exceptions``)."""

from __future__ import annotations

from core.exceptions import DomainError


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
