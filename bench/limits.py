"""The limits of the parts we run on, measured in the same run on the same machine:
the gate's Lua script against the same Redis (``redis-benchmark``, EVALSHA, 50 clients),
and the settle's conditional ``UPDATE`` on one hot allocation row (``pgbench``)."""

from __future__ import annotations

import re
import subprocess
import tempfile
from urllib.parse import urlparse


def gate_admissions_per_second(
    *, redis_url: str, requests: int, clients: int = 50, sold_out: bool = False
) -> dict:
    """The admission script (``inventory.gate``) on an allocation that never runs out,
    each call a fresh customer and idempotency key, so every call is an admission. With
    ``sold_out`` the same script on an allocation with nothing left: every call is the
    refusal a sold-out drop gets. The keys are deleted afterwards."""
    import redis

    from inventory import gate

    client = redis.Redis.from_url(redis_url)
    allocation = 999_999_999 - int(sold_out)  # no real allocation has it
    keys = gate._keys(allocation)
    demand = gate.demand_keys(allocation) if hasattr(gate, "demand_keys") else []
    base = keys[0]
    start = 0 if sold_out else 10**15
    client.hset(base, mapping={"status": "open", "remaining": start, "limit": 0})
    sha = client.script_load(gate._ADMIT)
    url = urlparse(redis_url)
    db = (url.path or "/0").lstrip("/") or "0"
    try:
        out = subprocess.run(
            [
                "redis-benchmark",
                "-h",
                url.hostname or "127.0.0.1",
                "-p",
                str(url.port or 6379),
                "--dbnum",
                db,
                "-n",
                str(requests),
                "-c",
                str(clients),
                "-r",
                "100000000",
                "--csv",
                "EVALSHA",
                sha,
                str(4 + len(demand)),
                *keys,
                f"{base}:k:__rand_int__:k",
                *demand,
                "__rand_int__",  # the customer
                "1",  # quantity
                "0",  # now: no hold is past its expiry
                "60",  # idempotency TTL
                "1",  # the demand counters' epoch token
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
    finally:
        left = client.hget(base, "remaining")
        stale = list(client.scan_iter(match=f"{base}*", count=1000))
        for start in range(0, len(stale), 1000):
            client.delete(*stale[start : start + 1000])
    # The last CSV line: "EVALSHA ...","<rps>","<avg ms>",...
    row = [cell.strip('"') for cell in out.strip().splitlines()[-1].split('","')]
    return {
        "admissions_per_s": float(row[1]),
        "calls_per_s": float(row[1]),
        "calls": requests,
        "clients": clients,
        "sold_out": sold_out,
        "admitted": start - int(left or 0),
    }


HOT_ROW_SCRIPT = """\
UPDATE inventory_allocation SET held = held + 1
 WHERE id = :aid AND held <= quantity - sold - 1;
"""


def pgbench_hot_row(*, database: str, allocation_id: int, seconds: float, clients: int = 8) -> dict:
    """The settle's conditional ``UPDATE`` (``inventory/services/settle.py``: ``held =
    held + n WHERE held <= quantity - sold - n``), one statement per transaction, on one
    allocation row, from ``clients`` connections at once: the database's ceiling for
    the hot row."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(HOT_ROW_SCRIPT)
    out = subprocess.run(
        [
            "pgbench",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-n",
            "-f",
            script.name,
            "-D",
            f"aid={allocation_id}",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(max(1, round(seconds))),
            database,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    latency = re.search(r"latency average = ([\d.]+) ms", out)
    return {
        "tx_per_s": tps,
        "clients": clients,
        "latency_avg_ms": float(latency.group(1)) if latency else None,
    }


def write_pending_holds(*, allocation_id: int, holds: list[tuple[int, str]]) -> list:
    """Pending holds of one unit each, as an admitted reserve request leaves them: one
    per ``(customer id, idempotency key)``, written in one statement."""
    from decimal import Decimal

    from inventory.models import Reservation

    return Reservation.objects.bulk_create(
        [
            Reservation(
                customer_id=customer,
                allocation_id=allocation_id,
                quantity=1,
                unit_price=Decimal("10.00"),
                currency="USD",
                idempotency_key=key,
            )
            for customer, key in holds
        ]
    )


def settle_backlog(*, allocation_id: int, customer_ids: list[int], seconds: float = 120) -> dict:
    """The pending-to-held path's own capacity: as many pending holds as there are
    customers written at once (as admitted requests leave them), then ONE reserve task
    on the real Celery worker, which settles them in batches (one conditional UPDATE of
    the hot row per batch). Holds per second, from the task's send to the last hold,
    comparable with the hot-row ceiling (the spike's holds/s is bounded by how fast
    requests arrive, not by this path)."""
    import time

    from django.db import connection

    from inventory.models import Reservation
    from inventory.tasks import reserve

    rows = write_pending_holds(
        allocation_id=allocation_id,
        holds=[(customer, f"backlog-{allocation_id}-{customer}") for customer in customer_ids],
    )
    started = time.perf_counter()
    reserve.delay(rows[-1].pk)
    pending = Reservation.objects.filter(allocation_id=allocation_id, status="pending")
    deadline = time.monotonic() + seconds
    while pending.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    held = Reservation.objects.filter(allocation_id=allocation_id, status="held").count()
    connection.close()
    return {
        "pending": len(rows),
        "held": held,
        "seconds": round(elapsed, 3),
        "holds_per_s": round(held / elapsed, 1) if elapsed > 0 else None,
    }
