"""The front door: how many reserve decisions the request path answers, measured with a
C load generator (wrk) so that the client does not eat the two cores it measures.

Beside each figure, in the same run on the same number of uvicorn workers:

* **floor**: a raw ASGI app (``bench/floor_app.py``) answering a JSON 409, the most a
  Python HTTP request can do here;
* **/healthz**: the cheapest request through Django;
* **refusals**: ``POST /api/drops/{id}/reservations/`` on a sold-out drop, each request
  with its own buyer token (round robin) and a fresh ``Idempotency-Key``: the gate
  refuses, no SQL runs;

and the status codes wrk saw, so that a figure of errors is never read as a rate.

    .venv/bin/python bench/front_door.py                   # 2 workers, 64 connections, 8 s
    .venv/bin/python bench/front_door.py --connections 256 --seconds 6

Needs ``wrk`` (Debian: ``apt-get install wrk``), PostgreSQL and Redis. Uses its own
database (``bench_door``) and Redis db 5 (flushed). Results go to
``bench/results/door-<UTC stamp>.json`` and are printed as one table.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import (
    LOGS,
    RESULTS,
    Stack,
    free_port,
    install_cleanup,
    raise_fd_limit,
    stop,
    wait_http,
)

# wrk's Lua: one request per call, a buyer's token in turn and a key never sent before.
RESERVE_SCRIPT = """
-- Globals, not locals: setup() reaches them through thread:set.
tokens = {%(tokens)s}
counter = 0
thread_id = 0
threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local token = tokens[(counter + thread_id * 7919) %% #tokens + 1]
  local headers = {
    ["Authorization"] = "Token " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "door-" .. thread_id .. "-" .. counter .. "-" .. os.time(),
  }
  return wrk.format("POST", "%(path)s", headers, '{"quantity": 1}')
end

"""

# Appended to every script: each thread counts the statuses it saw (globals, which
# done() reads through thread:get), and done() prints the sum as one JSON line.
COUNT_STATUSES = """
statuses = {}
threads = threads or {}

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[tostring(status)] = (total[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do table.insert(parts, '"' .. status .. '": ' .. n) end
  io.write("STATUSES {" .. table.concat(parts, ", ") .. "}\\n")
end
"""

GET_SCRIPT = """
threads = {}
function setup(thread) table.insert(threads, thread) end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def run_wrk(url: str, script: str, *, threads: int, connections: int, seconds: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script + COUNT_STATUSES)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            handle.name,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    statuses = json.loads(re.search(r"^STATUSES (.*)$", out, re.M).group(1))
    percentiles = {
        f"p{p}_ms": _ms(value)
        for p, value in re.findall(r"^\s+(50|90|99)(?:\.0+)?%\s+([\d.]+[a-z]+)\s*$", out, re.M)
    }
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "statuses": {int(k): v for k, v in statuses.items()},
        "socket_errors": errors.group(1) if errors else "",
        **percentiles,
        "wrk_output": out,
    }


def _sold_out_drop(stack: Stack, seed) -> int:
    """The spike drop, pinned, with its only unit held: every later request is refused."""
    from rest_framework.authtoken.models import Token

    from livestream import services as live

    host = Token.objects.select_related("user").get(key=seed.host_token).user
    live.drop_pin(drop_id=seed.spike_drop, actor=host)
    first = Token.objects.get(key=seed.buyer_tokens[0]).user
    live.drop_reserve(
        drop_id=seed.spike_drop, customer_id=first.pk, quantity=1, idempotency_key="x"
    )
    return seed.spike_drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bench_door")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--buyers", type=int, default=500)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("needs wrk, a C load generator: apt-get install wrk", file=sys.stderr)
        return 2
    raise_fd_limit()
    install_cleanup()

    stack = Stack(
        database_url=args.database_url,
        redis_url=args.redis_url,
        port=free_port(),
        web_workers=args.web_workers,
        celery=1,
    )
    stack.prepare()
    stack.fresh_database()
    seed = stack.seed(buyers=args.buyers, spike_units=1, fanout_units=1)
    stack.start()
    drop_id = _sold_out_drop(stack, seed)
    from config.celery import app as celery

    deadline = time.monotonic() + 30
    while not _first_hold_settled() and time.monotonic() < deadline:
        time.sleep(0.2)

    floor_port = free_port()
    floor = stack.uvicorn(floor_port, args.web_workers, "floor.log", app="bench.floor_app:app")
    wait_http(f"http://127.0.0.1:{floor_port}/healthz", 30, floor)
    load = {"threads": args.threads, "connections": args.connections, "seconds": args.seconds}
    tokens = ", ".join(f'"{t}"' for t in seed.buyer_tokens[1:])
    reserve_path = f"/api/drops/{drop_id}/reservations/"
    figures = {
        "floor": run_wrk(
            f"http://127.0.0.1:{floor_port}/",
            RESERVE_SCRIPT % {"tokens": tokens, "path": "/"},
            **load,
        ),
        "healthz": run_wrk(f"{stack.base_url}/healthz", GET_SCRIPT, **load),
        "refusals": run_wrk(
            f"{stack.base_url}{reserve_path}",
            RESERVE_SCRIPT % {"tokens": tokens, "path": reserve_path},
            **load,
        ),
    }
    stop(floor)
    celery.close()
    stack.stop()

    floor_rate = figures["floor"]["requests_per_second"]
    print(
        f"\nfront door, {args.web_workers} uvicorn workers, wrk -t{args.threads} "
        f"-c{args.connections} -d{args.seconds}s (logs: {LOGS})"
    )
    print(f"{'what answers':<34}{'req/s':>10}{'x floor':>9}{'p50 ms':>9}{'p99 ms':>9}  statuses")
    for name, figure in figures.items():
        rate = figure["requests_per_second"]
        print(
            f"{name:<34}{rate:>10.0f}{rate / floor_rate:>9.3f}"
            f"{figure.get('p50_ms', float('nan')):>9.1f}"
            f"{figure.get('p99_ms', float('nan')):>9.1f}  "
            f"{figure['statuses']} {figure['socket_errors']}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / f"door-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), "figures": figures}, indent=2))
    print(f"written: {path}")
    # Refusals must be refusals: anything but 409 is a failure of the run, not a rate.
    return 0 if set(figures["refusals"]["statuses"]) == {409} else 1


def _first_hold_settled() -> bool:
    from inventory.models import Reservation

    return Reservation.objects.filter(status=Reservation.Status.HELD).exists()


if __name__ == "__main__":
    sys.exit(main())
