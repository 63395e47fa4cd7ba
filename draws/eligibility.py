"""The entry rules a host sets per drop, checked before an entry is decided: a minimum
account age, a minimum watch time of the drop's stream (from presence: only the
viewer's own sockets on the stream count), a challenge behind a provider
(``draws.challenge``) and, decided with the entry itself (in Redis's script, or by the
database's batch), a cap of entries per client address. A refusal is ``NotEligible``
with a ``reason`` naming the rule."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from typing import Protocol

from django.contrib.auth import get_user_model
from django.utils import timezone

from draws.challenge import get_challenge_provider
from draws.exceptions import NotEligible
from livestream import presence

# The refusal reasons (the API's ``reason``).
ACCOUNT_TOO_NEW = "account_too_new"
WATCH_TOO_SHORT = "watch_too_short"
CHALLENGE_REQUIRED = "challenge_required"
CHALLENGE_FAILED = "challenge_failed"
ADDRESS_CAP = "address_cap"
REASONS = (ACCOUNT_TOO_NEW, WATCH_TOO_SHORT, CHALLENGE_REQUIRED, CHALLENGE_FAILED, ADDRESS_CAP)

# The rules' bounds: a year of account age, a day of watching, a million entries per
# address are far past any sensible rule.
MAX_ACCOUNT_AGE_SECONDS = 366 * 24 * 3600
MAX_WATCH_SECONDS = 24 * 3600
MAX_ENTRIES_PER_ADDRESS = 1_000_000


class Rules(Protocol):
    stream_id: int
    min_account_age_seconds: int | None
    min_watch_seconds: int | None
    max_entries_per_address: int | None
    challenge_required: bool


# When each account was made, per process: it never changes, so an entry under an age
# rule reads it once per viewer, not once per entry.
JOINED_CACHE_SIZE = 100_000
_joined: OrderedDict[int, datetime | None] = OrderedDict()
_joined_lock = threading.Lock()


def _date_joined(customer_id: int) -> datetime | None:
    with _joined_lock:
        if customer_id in _joined:
            _joined.move_to_end(customer_id)
            return _joined[customer_id]
    joined = (
        get_user_model()
        .objects.filter(pk=customer_id)
        .values_list("date_joined", flat=True)
        .first()
    )
    with _joined_lock:
        _joined[customer_id] = joined
        while len(_joined) > JOINED_CACHE_SIZE:
            _joined.popitem(last=False)
    return joined


def eligibility_forget() -> None:
    """Empty this process's cache (tests whose database reuses ids)."""
    with _joined_lock:
        _joined.clear()


def entry_check(
    *, rules: Rules, customer_id: int, client_address: str, challenge_token: str | None
) -> None:
    """Raise ``NotEligible`` for the first rule the entry fails (cheapest first: a cached
    row, one Redis read, then the provider); the challenge provider's own failure
    (``ChallengeUnavailable``) passes through."""
    if rules.min_account_age_seconds is not None:
        joined = _date_joined(customer_id)
        age = (timezone.now() - joined).total_seconds() if joined else 0
        if age < rules.min_account_age_seconds:
            raise NotEligible(
                "Your account is too new to enter this draw.",
                reason=ACCOUNT_TOO_NEW,
                min_account_age_seconds=rules.min_account_age_seconds,
            )
    if rules.min_watch_seconds is not None:
        watched = presence.watched_seconds(rules.stream_id, customer_id)
        if watched < rules.min_watch_seconds:
            raise NotEligible(
                f"Watch the stream for {rules.min_watch_seconds} seconds before entering.",
                reason=WATCH_TOO_SHORT,
                min_watch_seconds=rules.min_watch_seconds,
                watched_seconds=int(watched),
            )
    if rules.challenge_required:
        if not challenge_token:
            raise NotEligible(
                "This draw asks for the entry check: send challenge_token.",
                reason=CHALLENGE_REQUIRED,
            )
        verdict = get_challenge_provider().verify(
            token=challenge_token, customer_id=customer_id, client_address=client_address
        )
        if not verdict.passed:
            raise NotEligible(
                verdict.detail or "The entry check was not passed.", reason=CHALLENGE_FAILED
            )
