"""The inventory's figures, per process (summed across processes at scrape): how many
pending requests each settle batch decided and how long its transaction took, and the
gates the reconcile had to repair. The units and holds themselves are read where they
are kept, at scrape time (``monitoring``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from core.metrics import PREFIX

GATE_REPAIRS = Counter(
    f"{PREFIX}_gate_repairs",
    "Gates rewritten from the database by the reconcile: missing, or disagreeing with"
    " the rows at a quiet moment.",
    ["reason"],
)
SETTLE_BATCH_SIZE = Histogram(
    f"{PREFIX}_settle_batch_size",
    "Pending requests decided per settle batch.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
)
SETTLE_LAG_SECONDS = Histogram(
    f"{PREFIX}_settle_lag_seconds",
    "How long the oldest request of a settle batch waited, from admission to decision.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SETTLE_BATCH_SECONDS = Histogram(
    f"{PREFIX}_settle_batch_duration_seconds",
    "Time a settle batch's transaction took, locks and commit included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
