"""Will the stock last? The statistics of the readiness report, and the backtest of the
live sell-out projection the host console shows (``livestream.live_rate``).

Pure functions over plain numbers, with no Django import (testable without a
database): ``demand.readers`` reads the database and feeds them. The method, its
assumptions and its limits are written up in ``docs/demand.md``.

In short: a host's viewer-to-buyer rate is the pooled ratio of past demand (buyers,
viewers turned away and waitlist-only viewers: unmet demand counted, so a sold-out drop
is not censored at its supply) to viewers at pin, with a 90 % interval from a
leverage-corrected sandwich variance and Student's t on the log scale; expected demand
is expected viewers times that rate. Demand during a sale is modelled as a burst that
decays exponentially, which turns demand and supply into a time to sell out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from livestream.live_rate import (
    LIVE_BUCKET_SECONDS,
    LIVE_BUCKETS,
    LIVE_HALF_LIFE_SECONDS,
    live_rate,
    live_sell_out_seconds,
)

# --- constants (each one is an assumption written up in docs/demand.md) -----------------

CONFIDENCE = 0.90
# With no history: about one viewer in twenty at pin tries to buy a flash drop, and
# anything from one in a hundred to one in four would not surprise us.
DEFAULT_RATE = 0.05
DEFAULT_RATE_LOW = 0.01
DEFAULT_RATE_HIGH = 0.25
# With a single past drop the drop-to-drop variation cannot be measured; assume a
# coefficient of variation this large (products differ in appeal).
SINGLE_DROP_CV = 0.5
# With a single past drop the audience may be half or twice as large next time.
SINGLE_DROP_VIEWER_FACTOR = 2.0
# The host's most recent drops only: an audience and its habits change.
HISTORY_DROPS = 50
# Demand after a pin decays with this time constant when no past sell-out says better
# (flash sales run 1-20 minutes; most of the rush comes in the first minute or two).
DEFAULT_DECAY_SECONDS = 60.0
# A leverage of 1 (one drop holding all the viewers) would divide by zero.
MIN_RESIDUAL_FACTOR = 0.05

# --- values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropHistory:
    """One past drop, as plain numbers (built from a final ``DropDemand``)."""

    demand: int  # viewers who wanted it: buyers + turned away + waitlist only + entrants
    viewers: int  # viewers watching when it was pinned
    supply: int = 0
    units_per_buyer: float = 1.0
    seconds_to_sell_out: float | None = None


@dataclass(frozen=True)
class Estimate:
    """A number with its interval and where it came from.

    ``basis``: ``history`` (the host's past drops), ``one_drop`` (a single past drop:
    wide), ``default`` (no history: the documented prior), ``declared`` (set by the host),
    ``unknown`` (nothing to go on: value is None).
    """

    value: float | None
    low: float | None
    high: float | None
    basis: str
    drops: int = 0

    @property
    def known(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class DropAssessment:
    """The readiness verdict for one planned drop."""

    verdict: str  # short | at_risk | enough | unknown
    message: str
    cover: str
    expected_units: Estimate
    shortfall: int | None
    shortfall_low: int | None
    shortfall_high: int | None
    sell_out_seconds: float | None
    problems: list[str] = field(default_factory=list)


# --- small statistics --------------------------------------------------------------------


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (df >= 1).

    Exact for 1 and 2 degrees of freedom, the Cornish-Fisher expansion (Abramowitz and
    Stegun 26.7.5) above, which is within 0.01 of the table from 3 on; fractional
    degrees of freedom are interpolated. The standard library has no t distribution.
    """
    if df < 1:
        df = 1.0
    whole = math.floor(df)
    if df > whole:
        share = df - whole
        return (1 - share) * student_t_quantile(p, whole) + share * student_t_quantile(p, whole + 1)
    if whole == 1:
        return math.tan(math.pi * (p - 0.5))
    if whole == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = statistics.NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / whole + g2 / whole**2 + g3 / whole**3 + g4 / whole**4


def viewer_to_buyer_rate(
    history: Sequence[DropHistory], *, confidence: float = CONFIDENCE
) -> Estimate:
    """The host's rate of demand per viewer at pin, pooled over past drops, with an
    interval for the host's mean rate.

    Pooled ``sum(demand) / sum(viewers)`` (the ratio estimator: big audiences weigh
    more). Its variance is the sandwich ``sum(residual_i^2 / (1 - h_i)^2) / V^2`` with
    ``h_i = viewers_i / V`` (the HC3 leverage correction: a drop with most of the viewers
    hides its own residual), never below Poisson counting noise ``rate / V``. The
    interval is ``rate * exp(+-t * se / rate)`` with Student's t on Kish's effective
    number of drops minus one, so that a few unequal drops give a wide interval. With
    no demand at all the upper end is the exact Poisson bound for zero events.
    """
    drops = [h for h in history if h.viewers > 0 and h.demand >= 0]
    if not drops:
        return Estimate(DEFAULT_RATE, DEFAULT_RATE_LOW, DEFAULT_RATE_HIGH, "default", 0)
    total_demand = sum(h.demand for h in drops)
    total_viewers = sum(h.viewers for h in drops)
    rate = total_demand / total_viewers
    tail = (1 - confidence) / 2
    if total_demand == 0:
        # P(no event | mean m) = tail  =>  m = -ln(tail).
        return Estimate(0.0, 0.0, -math.log(tail) / total_viewers, _basis(drops), len(drops))
    poisson_variance = rate / total_viewers
    if len(drops) == 1:
        variance = poisson_variance + (SINGLE_DROP_CV * rate) ** 2
        quantile = statistics.NormalDist().inv_cdf(1 - tail)
    else:
        sandwich = 0.0
        for h in drops:
            residual = h.demand - rate * h.viewers
            factor = max(1 - h.viewers / total_viewers, MIN_RESIDUAL_FACTOR)
            sandwich += (residual / factor) ** 2
        variance = max(poisson_variance, sandwich / total_viewers**2)
        effective_drops = total_viewers**2 / sum(h.viewers**2 for h in drops)
        quantile = student_t_quantile(1 - tail, max(1.0, effective_drops - 1))
    spread = quantile * math.sqrt(variance) / rate
    return Estimate(
        rate, rate * math.exp(-spread), rate * math.exp(spread), _basis(drops), len(drops)
    )


def _basis(drops: Sequence[Any]) -> str:
    return "one_drop" if len(drops) == 1 else "history"


def expected_viewers(*, declared: int | None, history_viewers: Sequence[int]) -> Estimate:
    """Viewers expected at pin: the host's own figure when set (taken as exact), else the
    median of the host's past drops' viewers at pin, with their 10th-90th percentiles
    as the range (half to twice the one figure when there is only one)."""
    if declared is not None:
        return Estimate(float(declared), float(declared), float(declared), "declared", 0)
    seen = sorted(v for v in history_viewers if v > 0)
    if not seen:
        return Estimate(None, None, None, "unknown", 0)
    if len(seen) == 1:
        one = float(seen[0])
        return Estimate(
            one, one / SINGLE_DROP_VIEWER_FACTOR, one * SINGLE_DROP_VIEWER_FACTOR, "one_drop", 1
        )
    deciles = statistics.quantiles(seen, n=10, method="inclusive")
    return Estimate(float(statistics.median(seen)), deciles[0], deciles[-1], "history", len(seen))


def expected_demand(viewers: Estimate, rate: Estimate) -> Estimate:
    """Viewers x rate, with an interval: the relative (log) half-widths of the two add
    in quadrature, as for independent errors (with a zero rate the ends multiply). The
    result carries the rate's basis and number of drops: that is what it rests on."""
    if not (viewers.known and rate.known):
        return Estimate(None, None, None, "unknown", 0)
    value = viewers.value * rate.value
    if min(viewers.value, rate.value, viewers.low, rate.low) <= 0:
        return Estimate(
            value, viewers.low * rate.low, viewers.high * rate.high, rate.basis, rate.drops
        )
    down = math.hypot(math.log(viewers.value / viewers.low), math.log(rate.value / rate.low))
    up = math.hypot(math.log(viewers.high / viewers.value), math.log(rate.high / rate.value))
    return Estimate(value, value * math.exp(-down), value * math.exp(up), rate.basis, rate.drops)


def units_per_buyer(history: Sequence[DropHistory], *, limit: int | None = None) -> float:
    """Units one buyer takes, viewer-weighted over the past drops (1 with no history),
    never more than the planned drop's per-viewer limit."""
    weighted = [(h.units_per_buyer, h.demand) for h in history if h.demand > 0]
    per_buyer = sum(u * d for u, d in weighted) / sum(d for _, d in weighted) if weighted else 1.0
    per_buyer = max(1.0, per_buyer)
    return min(per_buyer, float(limit)) if limit else per_buyer


# --- time to sell out ----------------------------------------------------------------------


def sell_out_seconds(*, supply: float, demand: float, decay_seconds: float) -> float | None:
    """Time to sell ``supply`` units when ``demand`` units arrive as a burst decaying
    with time constant ``decay_seconds``: arrivals by time t are
    ``demand * (1 - exp(-t / decay))``, which reach the supply at
    ``-decay * ln(1 - supply / demand)``. None when demand never reaches the supply."""
    if supply <= 0:
        return 0.0
    if demand <= supply or decay_seconds <= 0:
        return None
    return -decay_seconds * math.log(1 - supply / demand)


def decay_from_sell_out(*, supply: float, demand: float, seconds: float) -> float | None:
    """The decay time constant a past sell-out implies (the inverse of
    ``sell_out_seconds``); None when it says nothing (no excess demand, no time)."""
    if supply <= 0 or demand <= supply or seconds <= 0:
        return None
    return seconds / -math.log(1 - supply / demand)


def demand_decay(history: Sequence[DropHistory]) -> Estimate:
    """The host's demand decay constant: the median over past sell-outs that left
    demand unmet, else the default."""
    implied = [
        tau
        for h in history
        if h.seconds_to_sell_out is not None
        and (
            tau := decay_from_sell_out(
                supply=h.supply,
                demand=h.demand * h.units_per_buyer,
                seconds=h.seconds_to_sell_out,
            )
        )
        is not None
    ]
    if not implied:
        return Estimate(
            DEFAULT_DECAY_SECONDS, DEFAULT_DECAY_SECONDS, DEFAULT_DECAY_SECONDS, "default", 0
        )
    return Estimate(
        statistics.median(implied), min(implied), max(implied), _basis(implied), len(implied)
    )


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


# --- the verdict -------------------------------------------------------------------------


def assess_drop(
    *,
    quantity: int,
    on_hand: int,
    free: int,
    demand_units: Estimate,
    decay_seconds: float,
    sale_seconds: float | None = None,
) -> DropAssessment:
    """Compare the expected demand (units, with interval) with the drop's quantity and
    the variant's stock, and say what would cover a shortfall.

    ``on_hand`` is the variant's stock on hand; ``free`` the part of it no allocation
    holds (the drop's own units are already carved, so they are not in ``free``).
    Verdicts: ``short`` (expected demand above the quantity: it sells out, about N
    short), ``at_risk`` (within the quantity, but the interval reaches past it),
    ``enough``, ``unknown`` (no audience figure to go on).
    """
    problems = []
    if quantity > on_hand:
        problems.append("quantity_exceeds_on_hand")
    if not demand_units.known:
        return DropAssessment(
            "unknown",
            "No estimate: set the stream's expected viewers (the host has no past drops "
            "with an audience to go on).",
            "",
            demand_units,
            None,
            None,
            None,
            None,
            problems,
        )
    expected, low, high = demand_units.value, demand_units.low, demand_units.high
    if expected > quantity:
        short = math.ceil(expected - quantity)
        short_low = max(0, math.ceil(low - quantity))
        short_high = math.ceil(high - quantity)
        seconds = sell_out_seconds(supply=quantity, demand=expected, decay_seconds=decay_seconds)
        message = (
            f"Likely to sell out in about {human_duration(seconds)}; short by about "
            f"{short} units ({short_low}-{short_high}): expected demand about "
            f"{round(expected)} units for {quantity} on sale."
        )
        if sale_seconds is not None and seconds is not None and seconds > sale_seconds:
            message += f" The sale closes first (after {human_duration(sale_seconds)})."
        if free >= short:
            cover = f"Add {short} units to the drop; {free} free in stock."
            problems.append("demand_exceeds_drop")
        else:
            restock = short - free
            cover = (
                f"Restock {restock} units and add {short} to the drop ({free} free in stock now)."
                if free
                else f"Restock {restock} units and add them to the drop (none free in stock)."
            )
            problems.append("demand_exceeds_stock")
        return DropAssessment(
            "short", message, cover, demand_units, short, short_low, short_high, seconds, problems
        )
    if high > quantity:
        extra = math.ceil(high - quantity)
        seconds = sell_out_seconds(supply=quantity, demand=high, decay_seconds=decay_seconds)
        message = (
            f"May sell out: expected demand about {round(expected)} units for {quantity} "
            f"on sale, but it could reach {math.ceil(high)} (then in about "
            f"{human_duration(seconds)})."
        )
        cover = f"To be safe, add up to {extra} units; {free} free in stock."
        return DropAssessment("at_risk", message, cover, demand_units, 0, 0, extra, None, problems)
    message = (
        f"Enough: expected demand about {round(expected)} units "
        f"({math.floor(low)}-{math.ceil(high)}) for {quantity} on sale."
    )
    return DropAssessment("enough", message, "", demand_units, 0, 0, 0, None, problems)


# --- the live projection's backtest (the projection itself: livestream.live_rate) --------


def bucket_counts(
    take_times: Iterable[float], *, now: float, bucket_seconds: float = LIVE_BUCKET_SECONDS
) -> list[int]:
    """Units per bucket (newest first) from take times in seconds (one unit each)."""
    counts = [0] * LIVE_BUCKETS
    for t in take_times:
        if t > now:
            continue
        k = int((now - t) // bucket_seconds)
        if k < LIVE_BUCKETS:
            counts[k] += 1
    return counts


@dataclass(frozen=True)
class SaleTimeline:
    """A recorded (or synthetic) spike: the supply, and when each unit was taken
    (seconds from the sale's opening, one unit each)."""

    supply: int
    take_times: Sequence[float]

    @property
    def sold_out_after(self) -> float | None:
        times = sorted(self.take_times)
        return times[self.supply - 1] if len(times) >= self.supply > 0 else None


@dataclass(frozen=True)
class BacktestReport:
    """How far the live projection was from the actual sell-out, over every sample the
    host would have seen (one every ``step`` seconds, until the sell-out)."""

    timelines: int
    samples: int
    mean_abs_error_seconds: float
    median_abs_error_seconds: float
    p90_abs_error_seconds: float
    median_relative_error: float  # |predicted - actual| / actual remaining time
    mean_signed_error_seconds: float  # > 0: the projection was late on average

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def backtest_live_eta(
    timelines: Iterable[SaleTimeline],
    *,
    step_seconds: float = 2.0,
    warmup_seconds: float = 10.0,
    half_life_seconds: float = LIVE_HALF_LIFE_SECONDS,
) -> BacktestReport:
    """Replay each sell-out as ``host.stats`` would have seen it and measure the error of
    the projected sell-out moment. Samples start after ``warmup_seconds`` (the first
    seconds are a guess by any method) and stop at the sell-out."""
    errors: list[float] = []
    relative: list[float] = []
    used = 0
    for timeline in timelines:
        actual = timeline.sold_out_after
        if actual is None:
            continue
        used += 1
        times = sorted(timeline.take_times)
        now = warmup_seconds
        while now < actual:
            taken = sum(1 for t in times if t <= now)
            rate = live_rate(
                bucket_counts(times, now=now),
                elapsed_seconds=now,
                half_life_seconds=half_life_seconds,
            )
            eta = live_sell_out_seconds(remaining=timeline.supply - taken, rate_per_second=rate)
            if eta is not None:
                errors.append(now + eta - actual)
                relative.append(abs(now + eta - actual) / (actual - now))
            now += step_seconds
    if not errors:
        return BacktestReport(used, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    absolute = sorted(abs(e) for e in errors)
    return BacktestReport(
        timelines=used,
        samples=len(errors),
        mean_abs_error_seconds=statistics.fmean(absolute),
        median_abs_error_seconds=statistics.median(absolute),
        p90_abs_error_seconds=absolute[min(len(absolute) - 1, int(0.9 * len(absolute)))],
        median_relative_error=statistics.median(relative),
        mean_signed_error_seconds=statistics.fmean(errors),
    )
