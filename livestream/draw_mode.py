"""Where a drop sold by draw enters livestream's own flow, without livestream importing
the app that runs draws.

Draws sit above livestream (they read its drops and send through its broadcast), so
livestream may not import them. The split:

- what livestream's own paths must know to treat a draw drop differently is plain
  columns of ``Drop`` (``mode``, ``entry_seconds``): fixed at creation, so the routing
  cache and the front door read them without asking anyone, and a reserve on a draw
  drop is refused without a query;
- what only draws know (opening entries with a committed seed at the pin, the
  commitment and close time a draw drop's body carries, and whether a buyer of a
  first-come drop with ``buyer_rules`` passes its entry rules) is asked of the one
  ``DrawHooks`` that the draws app registers from its ``AppConfig.ready``, the way
  livestream registers itself as the owner of drops' allocations with inventory.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from livestream.models import Drop


class DrawHooks(Protocol):
    def entries_open(self, *, drop: Drop, now: datetime) -> None:
        """Inside the pin's transaction (the stream locked): open the drop's entries,
        once; pinning it again changes nothing."""

    def drop_fields(self, *, drop_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Per draw drop, the fields its body adds (one query for all of them)."""

    def buyer_check(
        self, *, drop_id: int, customer_id: int, client_address: str, challenge_token: str | None
    ) -> None:
        """Before a first-come drop with ``buyer_rules`` decides a reserve: raise the
        draws app's ``NotEligible`` (a ``DomainError`` with a ``reason``) when the buyer
        fails one of the drop's entry rules."""

    def entries_close_now(self, *, drop_ids: list[int], actor) -> None:
        """Inside the stream's closing transaction (the stream locked), before the
        drops' allocations close: draw every one of these drops still taking entries,
        so that its entrants get their result while its units are still there."""


_hooks: list[DrawHooks] = []


def draw_hooks_register(hooks: DrawHooks) -> None:
    _hooks[:] = [hooks]


def draw_hooks() -> DrawHooks:
    if not _hooks:
        raise ImproperlyConfigured("A drop sold by draw needs the draws app installed.")
    return _hooks[0]
