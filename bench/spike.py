"""The spike: S units, B buyers each firing R reserve attempts at a drop the moment it is
pinned, on the full local stack. ``run_spike`` is the scenario, which ``bench/run.py``
runs beside the other scenarios and the limits; the spike alone:

    .venv/bin/python bench/run.py --only spike [--units 100] [--buyers 400] [--attempts 2]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from clients import percentile  # noqa: E402


def _pg_writes(cursor) -> int:
    """Rows inserted, updated or deleted in the project's own tables, by PostgreSQL's
    counters (users and tokens seeded for the run are left out)."""
    cursor.execute(
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
        " WHERE relname LIKE 'inventory\\_%' OR relname LIKE 'livestream\\_%'"
        " OR relname LIKE 'shop\\_%'"
    )
    return int(cursor.fetchone()[0])


def wait_settled(seconds: float = 120) -> None:
    """Until no reservation is pending (the Celery worker settled them all)."""
    from django.db import connection

    from inventory.models import Reservation

    deadline = time.monotonic() + seconds
    while Reservation.objects.filter(status="pending").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"holds still pending after {seconds} s")
        time.sleep(0.2)
    connection.close()


def run_spike(
    *,
    base_url: str,
    host_token: str,
    drop_id: int,
    units: int,
    tokens: list[str],
    attempts: int,
    concurrency: int,
    progress=print,
) -> dict:
    from django.db import connection

    from inventory.models import Allocation, Reservation
    from livestream.models import Drop

    allocation_id = Drop.objects.values_list("allocation_id", flat=True).get(pk=drop_id)
    time.sleep(1.5)  # PostgreSQL flushes its statistics up to a second late
    with connection.cursor() as cursor:
        writes_before = _pg_writes(cursor)
    connection.close()
    job = {
        "base_url": base_url,
        "concurrency": concurrency,
        "host_token": host_token,
        "drop": drop_id,
        "tokens": tokens,
        "attempts": attempts,
    }
    progress(f"spike: {len(tokens) * attempts} reserve attempts at {units} units")
    client = subprocess.run(
        [sys.executable, str(HERE / "clients.py"), "spike"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if client.returncode != 0:
        raise RuntimeError(client.stderr[-3000:])
    outcome = json.loads(client.stdout.strip().splitlines()[-1])
    progress("spike: waiting for the pending holds to settle")
    wait_settled()
    time.sleep(1.5)  # PostgreSQL's statistics are flushed within a second
    with connection.cursor() as cursor:
        writes = _pg_writes(cursor) - writes_before

    allocation = Allocation.objects.get(pk=allocation_id)
    rows = Reservation.objects.filter(allocation_id=allocation_id)
    held_rows = list(rows.filter(status="held").values_list("created_at", "updated_at"))
    to_held = [(updated - created).total_seconds() for created, updated in held_rows]
    first_request = min((created for created, _ in held_rows), default=None)
    last_held = max((updated for _, updated in held_rows), default=None)
    sold_out_after = (
        last_held.timestamp() - outcome["pinned_at"]
        if last_held and allocation.remaining == 0
        else None
    )
    # The pending-to-held path's rate: holds granted per second, from the first
    # admitted request to the last hold.
    held_span = (last_held - first_request).total_seconds() if held_rows else 0
    connection.close()
    codes = outcome["codes"]
    requests = len(tokens) * attempts
    decisions = len(codes) / outcome["spike_seconds"]
    return {
        "units": units,
        "buyers": len(tokens),
        "attempts_each": attempts,
        "concurrency": concurrency,
        "requests": requests,
        "answered": sum(1 for c in codes if isinstance(c, int)),
        "status_202": codes.count(202),
        "status_409": codes.count(409),
        "status_5xx": sum(1 for c in codes if isinstance(c, int) and c >= 500),
        "other": sum(
            1 for c in codes if not isinstance(c, int) or (c not in (202, 409) and c < 500)
        ),
        "decisions_per_s": round(decisions, 1),
        "decision_p50_ms": round(percentile(outcome["latencies"], 0.5) * 1000, 1),
        "decision_p95_ms": round(percentile(outcome["latencies"], 0.95) * 1000, 1),
        "decision_p99_ms": round(percentile(outcome["latencies"], 0.99) * 1000, 1),
        "to_held_p50_ms": round(percentile(to_held, 0.5) * 1000, 1),
        "to_held_p99_ms": round(percentile(to_held, 0.99) * 1000, 1),
        "held_per_s": round(len(held_rows) / held_span, 1) if held_span > 0 else None,
        "sold_out_after_s": round(sold_out_after, 3) if sold_out_after is not None else None,
        "db_row_writes": writes,
        "db_row_writes_per_unit": round(writes / max(allocation.held + allocation.sold, 1), 2),
        "held_plus_sold": allocation.held + allocation.sold,
        "oversold": max(0, allocation.held + allocation.sold - units),
    }
