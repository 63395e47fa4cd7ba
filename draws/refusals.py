"""Entries (and first-come buyers) refused, per drop and reason, for ops: which rule
turns viewers away, and how often. Counted in Redis (every process adds to one count),
in this process without Redis; a draw copies its figures onto its row, where they stay
once the keys expire. A count, never a decision: losing it loses no entry."""

from __future__ import annotations

import logging
import threading
from collections import Counter

from redis.exceptions import RedisError

from core.redis import SharedConnection, get_redis
from draws import eligibility, metrics
from draws.exceptions import EntriesClosed, NotEligible
from inventory import gate

logger = logging.getLogger(__name__)

ENTRIES_CLOSED = EntriesClosed.code
# Every reason an entry is refused for: the rules', and a closed window.
REASONS = (*eligibility.REASONS, ENTRIES_CLOSED)

# Refusal counts live as long as the draw's other keys.
TTL_SECONDS = 24 * 3600

_local_lock = threading.Lock()
_local: dict[int, Counter[str]] = {}


def refusal_key(drop_id: int) -> str:
    return f"rules:{drop_id}:refused"


def reason_of(refusal: EntriesClosed | NotEligible) -> str:
    """The reason a refusal is counted under: its rule's, or a closed window's."""
    return refusal.data.get("reason") or refusal.code


def refusal_count(*, drop_id: int, reason: str) -> None:
    """One more entry to the drop's draw, or buyer of it, refused for ``reason`` (one of
    ``REASONS``)."""
    metrics.ENTRY_DECISIONS.labels(reason).inc()
    if gate.gate_enabled():
        try:
            key = refusal_key(drop_id)
            pipe = get_redis().pipeline(transaction=False)
            pipe.hincrby(key, reason, 1)
            pipe.expire(key, TTL_SECONDS)
            pipe.execute()
            return
        except RedisError as exc:
            logger.warning("drop %s: refusal not counted in Redis: %s", drop_id, exc)
    with _local_lock:
        _local.setdefault(drop_id, Counter())[reason] += 1


async def refusal_count_at_door(redis: SharedConnection, *, drop_id: int, reason: str) -> None:
    """``refusal_count``'s Redis count, from the entry door's event loop (the door counts
    the metric with its answer): for a refusal its script did not count itself, one its
    batch's write returned."""
    key = refusal_key(drop_id)
    await redis.execute("HINCRBY", key, reason, 1)
    await redis.execute("EXPIRE", key, TTL_SECONDS)


def refusals_of(*, drop_id: int) -> dict[str, int]:
    """The drop's refusals so far, by reason (only the reasons that happened)."""
    counts: Counter[str] = Counter()
    with _local_lock:
        counts.update(_local.get(drop_id, {}))
    if gate.gate_enabled():
        try:
            stored = get_redis().hgetall(refusal_key(drop_id))
        except RedisError as exc:
            logger.warning("drop %s: refusals not read from Redis: %s", drop_id, exc)
            stored = {}
        for reason, count in stored.items():
            reason = reason.decode() if isinstance(reason, bytes) else reason
            counts[reason] += int(count)
    return {reason: counts[reason] for reason in REASONS if counts[reason]}


def refusals_forget() -> None:
    """Empty this process's counts (tests whose database reuses ids)."""
    with _local_lock:
        _local.clear()
