"""The spike benchmark: S units, B buyers each firing R reserve attempts at a drop the
moment it is pinned, on the full local stack, measured beside the framework's ceiling.

    .venv/bin/python bench/spike.py [--units 100] [--buyers 400] [--attempts 2]
                                    [--web-workers 2] [--celery 2] [--concurrency 64]

Starts uvicorn and a Celery worker against PostgreSQL and Redis on this machine (a fresh
database ``bench_live`` and Redis db 4 by default; ``--database-url``/``--redis-url`` to
change), seeds users and a live stream, runs the load from a separate client process,
prints one table and writes it as markdown and JSON under ``bench/results/``. Loopback
only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the client process -----------------------------------------------------------------


async def _client(job: dict) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=job["concurrency"])
    async with httpx.AsyncClient(base_url=job["base_url"], timeout=60, limits=limits) as http:
        # The framework's ceiling: the cheapest endpoint, same concurrency, same stack.
        ceiling_latencies: list[float] = []
        deadline = time.monotonic() + job["ceiling_seconds"]

        async def ping_loop():
            while time.monotonic() < deadline:
                start = time.perf_counter()
                await http.get("/healthz")
                ceiling_latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(ping_loop() for _ in range(job["concurrency"])))
        ceiling_rps = len(ceiling_latencies) / (time.perf_counter() - started)

        host = {"Authorization": f"Token {job['host_token']}"}
        pin = await http.post(f"/api/drops/{job['drop']}/pin/", headers=host)
        pinned_at = time.time()
        assert pin.status_code == 200, pin.text

        gate = asyncio.Semaphore(job["concurrency"])
        results: list[tuple[int, float]] = []

        async def attempt(token: str, n: int):
            async with gate:
                start = time.perf_counter()
                response = await http.post(
                    f"/api/drops/{job['drop']}/reservations/",
                    json={"quantity": 1},
                    headers={"Authorization": f"Token {token}", "Idempotency-Key": f"{token}-{n}"},
                )
                results.append((response.status_code, time.perf_counter() - start))

        started = time.perf_counter()
        await asyncio.gather(
            *(attempt(t, n) for t in job["tokens"] for n in range(job["attempts"]))
        )
        spike_seconds = time.perf_counter() - started
    return {
        "ceiling_rps": ceiling_rps,
        "ceiling_p50": percentile(ceiling_latencies, 0.5),
        "ceiling_p99": percentile(ceiling_latencies, 0.99),
        "pinned_at": pinned_at,
        "spike_seconds": spike_seconds,
        "codes": [code for code, _ in results],
        "latencies": [latency for _, latency in results],
    }


# --- the orchestrating process ----------------------------------------------------------


def _wait_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def _pg_writes(cursor) -> int:
    """Rows inserted, updated or deleted in the project's own tables, by PostgreSQL's
    counters (users and tokens seeded for the run are left out)."""
    cursor.execute(
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
        " WHERE relname LIKE 'inventory\\_%' OR relname LIKE 'livestream\\_%'"
        " OR relname LIKE 'shop\\_%'"
    )
    return int(cursor.fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--buyers", type=int, default=400)
    parser.add_argument("--attempts", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--celery", type=int, default=2)
    parser.add_argument("--ceiling-seconds", type=float, default=3.0)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bench_live")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/4")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.client:
        print(json.dumps(asyncio.run(_client(json.load(sys.stdin)))))
        return

    database = args.database_url.rsplit("/", 1)[1]
    subprocess.run(
        ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", database], check=True
    )
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", database], check=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "DB_POOL_MAX_SIZE": "8",
        # All load comes from one address: lift the per-IP and per-user rates.
        "THROTTLE_RESERVE_USER": "1000000/min",
        "THROTTLE_RESERVE_IP": "100000000/min",
    }
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import redis
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from inventory.models import Allocation, Reservation
    from livestream import services as live
    from shop.models import Product, Variant

    redis.Redis.from_url(args.redis_url).flushdb()
    call_command("migrate", verbosity=0)
    print(f"seeding {args.buyers} buyers and a drop of {args.units} units...", flush=True)
    User = get_user_model()
    host = User.objects.create_user("bench-host")
    host.groups.add(Group.objects.get_or_create(name="hosts")[0])
    buyers = User.objects.bulk_create([User(username=f"b{i}") for i in range(args.buyers)])
    tokens = Token.objects.bulk_create([Token(user=u, key=f"{u.pk:040d}") for u in buyers])
    product = Product.objects.create(name="Bench", slug="bench")
    variant = Variant.objects.create(product=product, sku="BENCH-1", price="10.00")
    from inventory import services as inventory

    item = inventory.stock_item_ensure(variant_id=variant.pk)
    inventory.stock_restock(stock_item_id=item.pk, quantity=args.units)
    stream = live.stream_create(host=host, title="Bench", slug="bench")
    live.stream_start(stream_id=stream.pk, actor=host)
    drop = live.drop_create(
        stream_id=stream.pk,
        variant_id=variant.pk,
        quantity=args.units,
        price=Decimal("10.00"),
        per_viewer_limit=None,
        actor=host,
    )
    connection.close()

    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--port",
            str(args.port),
            "--workers",
            str(args.web_workers),
            "--log-level",
            "warning",
            "--lifespan",
            "off",
        ],
        cwd=ROOT,
        env=env,
        stdout=open(logs / "web.log", "w"),  # noqa: SIM115 (the child owns it)
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--concurrency",
            str(args.celery),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=open(logs / "worker.log", "w"),  # noqa: SIM115 (the child owns it)
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{args.port}/healthz")
        time.sleep(2)  # the worker connects
        time.sleep(1.5)  # PostgreSQL flushes its statistics up to a second late
        with connection.cursor() as cursor:
            writes_before = _pg_writes(cursor)
        connection.close()
        job = {
            "base_url": f"http://127.0.0.1:{args.port}",
            "concurrency": args.concurrency,
            "ceiling_seconds": args.ceiling_seconds,
            "host_token": Token.objects.create(user=host).key,
            "drop": drop.pk,
            "tokens": [t.key for t in tokens],
            "attempts": args.attempts,
        }
        connection.close()
        print("running the ceiling and the spike...", flush=True)
        client = subprocess.run(
            [sys.executable, __file__, "--client"],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        if client.returncode != 0:
            raise RuntimeError(client.stderr[-3000:])
        outcome = json.loads(client.stdout)
        deadline = time.monotonic() + 120
        while Reservation.objects.filter(status="pending").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("holds still pending after 120 s")
            time.sleep(0.2)
        time.sleep(1.5)  # PostgreSQL's statistics are flushed within a second
        with connection.cursor() as cursor:
            writes = _pg_writes(cursor) - writes_before
    finally:
        web.terminate()
        os.killpg(worker.pid, 15)
        web.wait(15)
        worker.wait(30)

    allocation = Allocation.objects.get(pk=drop.allocation_id)
    held_rows = Reservation.objects.filter(status="held")
    to_held = [(r.updated_at - r.created_at).total_seconds() for r in held_rows]
    last_held = max((r.updated_at for r in held_rows), default=None)
    sold_out_after = (
        last_held.timestamp() - outcome["pinned_at"]
        if last_held and allocation.remaining == 0
        else None
    )
    codes = outcome["codes"]
    requests = args.buyers * args.attempts
    decisions = len(codes) / outcome["spike_seconds"]
    row = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "units": args.units,
        "buyers": args.buyers,
        "attempts_each": args.attempts,
        "concurrency": args.concurrency,
        "web_workers": args.web_workers,
        "celery_processes": args.celery,
        "requests": requests,
        "answered": len(codes),
        "status_202": codes.count(202),
        "status_409": codes.count(409),
        "status_5xx": sum(1 for c in codes if c >= 500),
        "other": sum(1 for c in codes if c not in (202, 409) and c < 500),
        "decisions_per_s": round(decisions, 1),
        "decision_p50_ms": round(percentile(outcome["latencies"], 0.5) * 1000, 1),
        "decision_p95_ms": round(percentile(outcome["latencies"], 0.95) * 1000, 1),
        "decision_p99_ms": round(percentile(outcome["latencies"], 0.99) * 1000, 1),
        "to_held_p50_ms": round(percentile(to_held, 0.5) * 1000, 1),
        "to_held_p99_ms": round(percentile(to_held, 0.99) * 1000, 1),
        "sold_out_after_s": round(sold_out_after, 3) if sold_out_after is not None else None,
        "db_row_writes": writes,
        "db_row_writes_per_unit": round(writes / max(allocation.held + allocation.sold, 1), 2),
        "held_plus_sold": allocation.held + allocation.sold,
        "oversold": max(0, allocation.held + allocation.sold - args.units),
        "ceiling_healthz_rps": round(outcome["ceiling_rps"], 1),
        "ratio_decisions_to_ceiling": round(decisions / outcome["ceiling_rps"], 2),
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"spike-{stamp}.json").write_text(json.dumps(row, indent=2) + "\n")
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in row.items())
    (RESULTS / f"spike-{stamp}.md").write_text(f"# Spike, {row['when']}\n\n{table}\n")
    print(table)
    if row["oversold"] or row["answered"] != requests or row["status_5xx"]:
        sys.exit("CORRECTNESS FAILED: oversold, unanswered or 5xx requests")


if __name__ == "__main__":
    main()
