"""The figures a scrape reads where they are kept, not counted on the hot path: per
live drop its units, the requests waiting to be settled, the line, and the gate's
decisions (which the gate's script counts in Redis anyway, for demand); the Celery
queues' lengths. One scrape costs a few queries whatever the traffic.

Labels stay bounded: a ``drop`` label only for drops on sale in a live stream now, a
``queue`` label per configured queue; never a user.
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.metrics import PREFIX
from inventory import gate
from inventory import selectors as inventory_selectors
from inventory.models import Allocation
from inventory.services.demand import demand_read
from livestream.models import Drop, Stream

logger = logging.getLogger(__name__)


# The gate's demand counters (named by its outcomes, as DemandCounts' fields are), by
# the outcome label each becomes.
_DECISIONS = {
    gate.ADMITTED: "admitted",
    gate.SOLD_OUT: "sold_out",
    gate.LIMIT: "limit_reached",
    gate.NOT_LIVE: "not_live",
}


def _per_drop(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=["drop"])


class LiveEventCollector(Collector):
    def collect(self):
        try:
            yield from self._drops()
        except (DatabaseError, redis.RedisError):
            # A scrape during an outage shows the process figures without these; the
            # outage itself is what /readyz and the alert rules tell.
            logger.exception("live drop figures not read")
        yield from self._queues()

    def _drops(self):
        live = list(
            Drop.objects.filter(
                stream__status=Stream.Status.LIVE, allocation__status=Allocation.Status.OPEN
            )
            .order_by("pk")
            .values_list(
                "pk",
                "allocation_id",
                "allocation__quantity",
                "allocation__held",
                "allocation__sold",
            )
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_drops_live", "Drops on sale in a live stream.", value=len(live)
        )
        left = _per_drop("drop_units_left", "Units of a live drop neither held nor sold.")
        held = _per_drop("drop_units_held", "Units of a live drop held, not yet paid.")
        sold = _per_drop("drop_units_sold", "Units of a live drop sold.")
        pending = _per_drop(
            "holds_pending", "Requests admitted at the door, waiting to be settled into holds."
        )
        lag = _per_drop(
            "holds_pending_oldest_age_seconds",
            "How long the oldest request waiting to be settled has waited.",
        )
        line = _per_drop("waitlist_waiting", "Viewers waiting in a live drop's line.")
        decisions = CounterMetricFamily(
            f"{PREFIX}_gate_decisions",
            "Reserve requests decided at the gate, by outcome (counted by its script).",
            labels=["drop", "outcome"],
        )
        allocation_ids = [row[1] for row in live]
        waiting = inventory_selectors.pending_by_allocation(allocation_ids=allocation_ids)
        in_line = inventory_selectors.waiting_in_line_by_allocation(allocation_ids=allocation_ids)
        now = timezone.now()
        for drop_id, allocation_id, quantity, units_held, units_sold in live:
            label = str(drop_id)
            left.add_metric([label], quantity - units_held - units_sold)
            held.add_metric([label], units_held)
            sold.add_metric([label], units_sold)
            count, oldest = waiting.get(allocation_id, (0, None))
            pending.add_metric([label], count)
            lag.add_metric([label], (now - oldest).total_seconds() if oldest else 0.0)
            line.add_metric([label], in_line.get(allocation_id, 0))
            counts = demand_read(allocation_id=allocation_id)
            for field, outcome in _DECISIONS.items():
                decisions.add_metric([label, outcome], getattr(counts, field))
        yield from (left, held, sold, pending, lag, line, decisions)

    def _queues(self):
        broker = settings.CELERY_BROKER_URL
        if not broker.startswith(("redis://", "rediss://")):
            return
        length = GaugeMetricFamily(
            f"{PREFIX}_celery_queue_length",
            "Tasks waiting in a Celery queue.",
            labels=["queue"],
        )
        try:
            client = redis.Redis.from_url(broker, socket_timeout=1)
            try:
                for queue in settings.METRICS_CELERY_QUEUES:
                    length.add_metric([queue], client.llen(queue))
            finally:
                client.close()
        except redis.RedisError:
            logger.exception("Celery queue lengths not read")
            return
        yield length
