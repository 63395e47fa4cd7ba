"""The entry rules a host sets per drop, checked before an entry is decided: a minimum
account age, a minimum watch time of the drop's stream (from presence: only the
viewer's own sockets on the stream count), a challenge behind a provider
(``draws.challenge``) and, decided with the entry itself (in Redis's script, or by the
database's batch), a cap of entries per client address. A refusal is ``NotEligible``
with a ``reason`` naming the rule."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Protocol

from django.contrib.auth import get_user_model
from django.utils import timezone
from redis.exceptions import RedisError

from core.redis import get_redis
from draws.challenge import get_challenge_provider
from draws.exceptions import NotEligible
from inventory import gate
from livestream import presence

logger = logging.getLogger(__name__)

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


def address_cap_refusal(*, buying: bool = False) -> NotEligible:
    """The per-address cap's refusal, an entrant's or (``buying``) a first-come buyer's:
    decided with the entry or the buy itself, not by ``entry_check``."""
    crowd = "accounts buy" if buying else "entries come"
    return NotEligible(f"Too many {crowd} from your address.", reason=ADDRESS_CAP)


def eligibility_forget() -> None:
    """Empty this process's caches (tests whose database reuses ids)."""
    with _joined_lock:
        _joined.clear()
    with _buyers_lock:
        _buyers.clear()


# --- the per-address cap of a first-come drop: accounts buying from one address -----------

# KEYS: the set of accounts that bought (or tried) from the address. ARGV: account,
# accounts allowed, key lifetime (s). 1: admitted (already counted, or counted now).
_BUYER_FROM_ADDRESS = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
_BUYERS_TTL_SECONDS = 24 * 3600
_buyers_lock = threading.Lock()
_buyers: dict[tuple[int, str], set[int]] = {}


def buyer_address_admit(*, drop_id: int, customer_id: int, client_address: str, cap: int) -> bool:
    """Whether the account may buy the drop from this address: it did before, or fewer
    than ``cap`` accounts did (then it is counted). One script call in Redis; this
    process's own count without it. Should Redis fail, the buyer is let through (and
    logged): the cap keeps drive-by accounts out, it guards no unit."""
    if gate.gate_enabled():
        key = f"rules:{drop_id}:address:{client_address}"
        try:
            script = get_redis().register_script(_BUYER_FROM_ADDRESS)
            return bool(script(keys=[key], args=[customer_id, cap, _BUYERS_TTL_SECONDS]))
        except RedisError as exc:
            logger.warning("drop %s: address cap not checked, Redis away: %s", drop_id, exc)
            return True
    with _buyers_lock:
        accounts = _buyers.setdefault((drop_id, client_address), set())
        if customer_id in accounts:
            return True
        if len(accounts) >= cap:
            return False
        accounts.add(customer_id)
        return True


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
                "Your account is too new for this drop.",
                reason=ACCOUNT_TOO_NEW,
                min_account_age_seconds=rules.min_account_age_seconds,
            )
    if rules.min_watch_seconds is not None:
        watched = presence.watched_seconds(rules.stream_id, customer_id)
        if watched < rules.min_watch_seconds:
            raise NotEligible(
                f"Watch the stream for {rules.min_watch_seconds} seconds first.",
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
