"""The live sell-out projection the host console shows (``host.stats``): units taken
per second, exponentially weighted towards the present, and the time until the units
left go at that rate.

Pure functions over plain numbers (no Django). ``livestream.selectors.host_stats``
feeds them the units taken per bucket; the demand backtest replays recorded spikes
through the same functions, so the console and the demand report agree. Method and
backtest: ``docs/demand.md``, section 4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

# Units taken are counted in buckets over a recent window and averaged with
# exponentially decaying weights, so the rate follows a spike within tens of seconds
# but one lucky second does not swing it.
LIVE_HALF_LIFE_SECONDS = 30.0
LIVE_BUCKET_SECONDS = 10
LIVE_BUCKETS = 30  # five minutes


def live_rate(
    bucket_units: Sequence[float],
    *,
    elapsed_seconds: float,
    bucket_seconds: float = LIVE_BUCKET_SECONDS,
    half_life_seconds: float = LIVE_HALF_LIFE_SECONDS,
) -> float:
    """Units taken per second, exponentially weighted towards the present.

    ``bucket_units[k]`` holds the units taken ``k`` buckets ago (0 = the newest, ending
    now). Each bucket's rate is weighted by ``2^(-age / half_life)`` at its middle, and
    only the part of the window since the sale opened counts: right after the pin the
    rate is the plain rate so far, not diluted by the minutes before.
    """
    decay = math.log(2) / half_life_seconds
    taken = 0.0
    exposure = 0.0
    for k, units in enumerate(bucket_units):
        covered = min(bucket_seconds, elapsed_seconds - k * bucket_seconds)
        if covered <= 0:
            break
        weight = math.exp(-decay * (k * bucket_seconds + covered / 2))
        taken += weight * units
        exposure += weight * covered
    return taken / exposure if exposure > 0 else 0.0


def live_sell_out_seconds(*, remaining: int, rate_per_second: float) -> float | None:
    """Seconds until the remaining units go at the live rate (None when nothing moves
    or nothing is left)."""
    if remaining <= 0 or rate_per_second <= 0:
        return None
    return remaining / rate_per_second


def live_projection(
    *, buckets: Sequence[int] | None, opened_at: datetime | None, now: datetime, remaining: int
) -> tuple[float, float | None]:
    """``(units per second, seconds to sell out)`` for an open drop, as ``host.stats``
    shows them."""
    if not buckets or opened_at is None:
        return 0.0, None
    rate = live_rate(buckets, elapsed_seconds=max(0.0, (now - opened_at).total_seconds()))
    return rate, live_sell_out_seconds(remaining=remaining, rate_per_second=rate)
