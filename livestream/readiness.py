"""Will the stock last? The demand estimator behind the readiness report, the backtest
of the live sell-out projection in ``host.stats`` (``livestream.live_rate``), the
post-stream demand report and the ops warnings.

The statistics are pure functions over plain numbers (testable without a database);
the functions at the end read the database and feed them. The method, its assumptions
and its limits are written up in ``docs/demand.md``.

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
from datetime import datetime, timedelta
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

    demand: int  # viewers who wanted it: buyers + turned away + waitlist only
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


# --- reading the database ----------------------------------------------------------------


def history_of(row) -> DropHistory:
    """A final ``DropDemand`` as plain numbers."""
    per_buyer = row.admitted_units / row.buyers if row.buyers and row.admitted_units else 1.0
    return DropHistory(
        demand=row.total_demand,
        viewers=row.viewers_at_pin or 0,
        supply=row.supply,
        units_per_buyer=max(1.0, per_buyer),
        seconds_to_sell_out=row.seconds_to_sell_out,
    )


def host_history(*, host_id: int, exclude_stream_id: int | None = None) -> list[DropHistory]:
    """The host's most recent finished drops with an audience at pin."""
    from livestream.models import DropDemand

    rows = DropDemand.objects.filter(
        drop__stream__host_id=host_id, final=True, viewers_at_pin__gt=0
    )
    if exclude_stream_id is not None:
        rows = rows.exclude(drop__stream_id=exclude_stream_id)
    return [history_of(r) for r in rows.order_by("-closed_at", "-drop_id")[:HISTORY_DROPS]]


@dataclass(frozen=True)
class DropReadiness:
    drop: int
    sku: str
    product: str
    status: str
    quantity: int
    per_viewer_limit: int | None
    stock_on_hand: int
    stock_free: int
    units_per_buyer: float
    assessment: DropAssessment

    def as_dict(self) -> dict[str, Any]:
        a = self.assessment
        return {
            "drop": self.drop,
            "sku": self.sku,
            "product": self.product,
            "status": self.status,
            "quantity": self.quantity,
            "per_viewer_limit": self.per_viewer_limit,
            "stock_on_hand": self.stock_on_hand,
            "stock_free": self.stock_free,
            "units_per_buyer": round(self.units_per_buyer, 3),
            "expected_demand": _estimate_dict(a.expected_units, digits=1),
            "verdict": a.verdict,
            "message": a.message,
            "cover": a.cover,
            "shortfall": a.shortfall,
            "shortfall_low": a.shortfall_low,
            "shortfall_high": a.shortfall_high,
            "sell_out_seconds": round(a.sell_out_seconds) if a.sell_out_seconds else None,
            "problems": list(a.problems),
        }


@dataclass(frozen=True)
class StreamReadiness:
    stream: int
    slug: str
    title: str
    status: str
    scheduled_start: datetime | None
    viewers: Estimate
    rate: Estimate
    decay: Estimate
    drops: list[DropReadiness]

    @property
    def problems(self) -> list[tuple[DropReadiness, str]]:
        return [(d, p) for d in self.drops for p in d.assessment.problems]

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "slug": self.slug,
            "title": self.title,
            "status": self.status,
            "scheduled_start": self.scheduled_start,
            "confidence": CONFIDENCE,
            "expected_viewers": _estimate_dict(self.viewers, digits=0),
            "rate": _estimate_dict(self.rate, digits=4),
            "decay_seconds": _estimate_dict(self.decay, digits=1),
            "drops": [d.as_dict() for d in self.drops],
        }


def _estimate_dict(estimate: Estimate, *, digits: int) -> dict[str, Any]:
    def rounded(x):
        return None if x is None else round(x, digits)

    return {
        "value": rounded(estimate.value),
        "low": rounded(estimate.low),
        "high": rounded(estimate.high),
        "basis": estimate.basis,
        "drops": estimate.drops,
    }


def _sale_seconds(drop) -> float | None:
    if drop.duration is not None:
        return drop.duration.total_seconds()
    if drop.starts_at is not None and drop.ends_at is not None:
        return (drop.ends_at - drop.starts_at).total_seconds()
    return None


def stream_readiness(*, stream) -> StreamReadiness:
    """The readiness report of every drop of the stream still to sell (not closed)."""
    from inventory.models import Allocation
    from livestream.models import Drop

    history = host_history(host_id=stream.host_id, exclude_stream_id=stream.pk)
    viewers = expected_viewers(
        declared=stream.expected_viewers, history_viewers=[h.viewers for h in history]
    )
    rate = viewer_to_buyer_rate(history)
    decay = demand_decay(history)
    drops = (
        Drop.objects.filter(stream_id=stream.pk)
        .exclude(allocation__status=Allocation.Status.CLOSED)
        .select_related("variant__product", "allocation__stock_item")
        .order_by("id")
    )
    rows = []
    for drop in drops:
        allocation = drop.allocation
        stock = allocation.stock_item
        per_buyer = units_per_buyer(history, limit=drop.per_viewer_limit)
        demand_viewers = expected_demand(viewers, rate)
        demand_units = (
            Estimate(
                demand_viewers.value * per_buyer,
                demand_viewers.low * per_buyer,
                demand_viewers.high * per_buyer,
                demand_viewers.basis,
                demand_viewers.drops,
            )
            if demand_viewers.known
            else demand_viewers
        )
        assessment = assess_drop(
            quantity=allocation.quantity,
            on_hand=stock.on_hand,
            free=stock.available,
            demand_units=demand_units,
            decay_seconds=decay.value,
            sale_seconds=_sale_seconds(drop),
        )
        rows.append(
            DropReadiness(
                drop=drop.pk,
                sku=drop.variant.sku,
                product=drop.variant.product.name,
                status=allocation.status,
                quantity=allocation.quantity,
                per_viewer_limit=drop.per_viewer_limit,
                stock_on_hand=stock.on_hand,
                stock_free=stock.available,
                units_per_buyer=per_buyer,
                assessment=assessment,
            )
        )
    return StreamReadiness(
        stream=stream.pk,
        slug=stream.slug,
        title=stream.title,
        status=stream.status,
        scheduled_start=stream.scheduled_start,
        viewers=viewers,
        rate=rate,
        decay=decay,
        drops=rows,
    )


def scheduled_streams(*, now: datetime, within_hours: float | None = None):
    """Scheduled streams, soonest first; with ``within_hours`` only those starting in
    that window (a stream without a start time has no place in a window)."""
    from livestream.models import Stream

    streams = Stream.objects.filter(status=Stream.Status.SCHEDULED)
    if within_hours is not None:
        streams = streams.filter(
            scheduled_start__gte=now, scheduled_start__lte=now + timedelta(hours=within_hours)
        )
    return streams.order_by("scheduled_start", "id")


def streams_with_problems(*, now: datetime, within_hours: float | None = None):
    """``(stream, readiness)`` for each scheduled stream with a readiness problem."""
    found = []
    for stream in scheduled_streams(now=now, within_hours=within_hours):
        report = stream_readiness(stream=stream)
        if report.problems:
            found.append((stream, report))
    return found


def recorded_timelines(*, drop_ids: Sequence[int]) -> list[SaleTimeline]:
    """The recorded spikes of sold-out drops, for ``backtest_live_eta``: when each unit
    was taken (holds that became sales, by their creation time), from the opening."""
    from inventory import selectors as inventory_selectors
    from livestream.models import DropDemand

    timelines = []
    rows = DropDemand.objects.filter(drop_id__in=drop_ids, sold_out_at__isnull=False)
    for row in rows.select_related("drop"):
        opened = row.opened_at or row.pinned_at
        if opened is None:
            continue
        times = []
        for created, quantity in inventory_selectors.units_bought_at(
            allocation_id=row.drop.allocation_id
        ):
            times += [(created - opened).total_seconds()] * quantity
        timelines.append(SaleTimeline(supply=row.supply, take_times=sorted(times)))
    return timelines


# --- the post-stream demand report ---------------------------------------------------------

DEMAND_REPORT_COLUMNS = (
    "drop",
    "sku",
    "product",
    "measured",
    "final",
    "supply",
    "sold",
    "held",
    "unmet_demand",
    "total_demand",
    "buyers",
    "viewers_turned_away",
    "waitlist_joined",
    "waitlist_only",
    "waitlist_waiting",
    "attempts",
    "viewers_tried",
    "turned_away_sold_out",
    "turned_away_limit",
    "viewers_at_pin",
    "peak_viewers",
    "demand_per_viewer",
    "seconds_to_sell_out",
    "pinned_at",
    "opened_at",
    "sold_out_at",
    "closed_at",
)


def demand_row(*, drop, demand) -> dict[str, Any]:
    """One drop's demand as the report shows it. ``demand`` is its ``DropDemand`` or
    None (not measured yet: the allocation's own counters stand in)."""
    if demand is None:
        allocation = drop.allocation
        row = {column: None for column in DEMAND_REPORT_COLUMNS}
        row.update(
            drop=drop.pk,
            sku=drop.variant.sku,
            product=drop.variant.product.name,
            measured=False,
            final=False,
            supply=allocation.quantity,
            sold=allocation.sold,
            held=allocation.held,
        )
        return row
    seconds = demand.seconds_to_sell_out
    return {
        "drop": drop.pk,
        "sku": drop.variant.sku,
        "product": drop.variant.product.name,
        "measured": True,
        "final": demand.final,
        "supply": demand.supply,
        "sold": demand.sold,
        "held": demand.held,
        "unmet_demand": demand.unmet_demand,
        "total_demand": demand.total_demand,
        "buyers": demand.buyers,
        "viewers_turned_away": demand.viewers_turned_away,
        "waitlist_joined": demand.waitlist_joined,
        "waitlist_only": demand.waitlist_only,
        "waitlist_waiting": demand.waitlist_waiting,
        "attempts": demand.attempts,
        "viewers_tried": demand.viewers_tried,
        "turned_away_sold_out": demand.turned_away_sold_out,
        "turned_away_limit": demand.turned_away_limit,
        "viewers_at_pin": demand.viewers_at_pin,
        "peak_viewers": demand.peak_viewers,
        "demand_per_viewer": round(demand.total_demand / demand.viewers_at_pin, 4)
        if demand.viewers_at_pin
        else None,
        "seconds_to_sell_out": round(seconds, 1) if seconds is not None else None,
        "pinned_at": demand.pinned_at,
        "opened_at": demand.opened_at,
        "sold_out_at": demand.sold_out_at,
        "closed_at": demand.closed_at,
    }


def stream_demand_report(*, stream) -> list[dict[str, Any]]:
    """Per drop of the stream (in drop order), what demand it met."""
    from livestream.models import Drop, DropDemand

    drops = list(
        Drop.objects.filter(stream_id=stream.pk)
        .select_related("variant__product", "allocation")
        .order_by("id")
    )
    measured = {d.drop_id: d for d in DropDemand.objects.filter(drop__in=drops)}
    return [demand_row(drop=drop, demand=measured.get(drop.pk)) for drop in drops]
