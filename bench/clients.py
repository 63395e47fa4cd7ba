"""The load: separate client processes, never inside the server.

    python bench/clients.py viewers   # websocket viewers, driven by lines on stdin
    python bench/clients.py stalled   # viewers that stop reading on "stall" (same protocol)
    python bench/clients.py buyers    # reserve requests at a steady rate (job on stdin)
    python bench/clients.py healthz   # the framework's ceiling (job on stdin)
    python bench/clients.py spike     # pin a drop, fire every attempt at once

Viewers speak a line protocol with the orchestrator (one JSON object per line each
way), so the same processes can stay connected across phases:

    -> {"cmd": "phase", "name": "fanout"}      counters restart for this phase
    -> {"cmd": "final", "drop": 7, "remaining": 42, "timeout": 20}
                                                 wait until every viewer saw that stock
    <- {"type": "progress", ...} / {"type": "connected", ...} / {"type": "report", ...}
    -> {"cmd": "quit"}

Latency is the server's event time (``ts``, stamped where the event is serialised) to
the moment this client read it; client and server share one clock on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import sys
import time
from collections import Counter, deque


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _use_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio still works, only slower
        pass


# --- viewers -----------------------------------------------------------------------------

# Latencies are counted in buckets of 0.1 ms (merged across processes by the orchestrator).
BUCKET_S = 0.0001


class Phase:
    def __init__(self, name: str, viewers: int):
        self.name = name
        self.started = time.time()
        self.latency = Counter()  # every stream event carrying ``ts``
        self.stock_latency = Counter()  # ``stock.changed`` only
        self.messages = 0
        self.stock_per_viewer = [0] * viewers
        # Per viewer, the most ``stock.changed`` sent within any one second (the
        # coalescing target), by the events' own ``ts``: the rate the server sends at,
        # not the transport's jitter (a late event followed by a prompt one would
        # otherwise count as two inside one second).
        self.stock_peak_per_viewer = [0] * viewers
        self.stock_recent: list[deque] = [deque() for _ in range(viewers)]
        self.first = None
        self.last = None
        self.sample: list[tuple[float, str]] = []  # what viewer 0 got, for the replay


class Viewer:
    __slots__ = ("index", "remaining", "snapshot", "ws")

    def __init__(self, index: int):
        self.index = index
        self.ws = None
        self.snapshot = False
        self.remaining: dict[int, int] = {}


def _reason_code(reason: str | None) -> str:
    """A refusal's machine code (its close reason is JSON), or "" for any other close."""
    try:
        code = json.loads(reason or "null").get("code")
    except (ValueError, AttributeError):
        return ""
    return code if isinstance(code, str) else ""


async def _viewers(job: dict) -> None:
    from websockets.asyncio.client import connect

    count, url = job["count"], job["url"]
    viewers = [Viewer(i) for i in range(count)]
    state = {
        "phase": Phase("connect", count),
        "failed": 0,
        "closed": 0,
        "closes": Counter(),
        "reasons": Counter(),
    }
    record_sample = job.get("record_sample", False)

    def on_message(viewer: Viewer, text: str) -> None:
        now = time.time()
        phase = state["phase"]
        event = json.loads(text)
        kind = event.get("type")
        if kind == "stream.state":
            viewer.snapshot = True
            for drop in event["stream"].get("drops", []):
                if "remaining" in drop:
                    viewer.remaining[drop["id"]] = drop["remaining"]
            return
        phase.messages += 1
        if phase.first is None:
            phase.first = now
        phase.last = now
        ts = event.get("ts")
        if ts is not None:
            bucket = int((now - ts) / BUCKET_S)
            phase.latency[bucket] += 1
            if kind == "stock.changed":
                phase.stock_latency[bucket] += 1
        if kind == "stock.changed":
            phase.stock_per_viewer[viewer.index] += 1
            recent, sent = phase.stock_recent[viewer.index], ts if ts is not None else now
            recent.append(sent)
            while recent[0] <= sent - 1.0:
                recent.popleft()
            if len(recent) > phase.stock_peak_per_viewer[viewer.index]:
                phase.stock_peak_per_viewer[viewer.index] = len(recent)
            viewer.remaining[event["drop"]] = event["remaining"]
        if record_sample and viewer.index == 0 and kind in ("stock.changed", "viewers.changed"):
            phase.sample.append((now - phase.started, text))

    async def hold(viewer: Viewer, gate: asyncio.Semaphore, connected: asyncio.Event) -> None:
        try:
            async with gate:
                # No compression unless asked (browsers offer permessage-deflate; the
                # ceiling server never accepts it) and no keepalive pings: the run is
                # bounded and every frame is a delivery.
                viewer.ws = await connect(
                    url,
                    compression=job.get("compression"),
                    ping_interval=None,
                    open_timeout=120,
                    max_queue=None,
                )
        except Exception:
            state["failed"] += 1
            connected.set()
            return
        try:
            async for text in viewer.ws:
                on_message(viewer, text)
        except Exception:
            pass
        finally:
            code = viewer.ws.close_code
            state["closed"] += 1
            state["closes"][str(code)] += 1
            state["reasons"][_reason_code(viewer.ws.close_reason)] += 1

    gate = asyncio.Semaphore(job.get("connect_concurrency", 64))
    connected = asyncio.Event()
    tasks = [asyncio.create_task(hold(v, gate, connected)) for v in viewers]

    async def progress_until_connected() -> None:
        deadline = time.monotonic() + job.get("connect_timeout", 240)
        while time.monotonic() < deadline:
            ready = sum(v.snapshot for v in viewers)
            _emit({"type": "progress", "connected": ready, "failed": state["failed"]})
            if ready + state["failed"] + state["closed"] >= count:
                break
            await asyncio.sleep(0.5)
        _emit(
            {
                "type": "connected",
                "connected": sum(v.snapshot for v in viewers),
                "failed": state["failed"],
                "closed": state["closed"],
                "closes": dict(state["closes"]),  # refused sockets, by close code
                "reasons": dict(state["reasons"]),  # ... and by the reason's code
            }
        )

    await progress_until_connected()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        if command["cmd"] == "phase":
            state["phase"] = Phase(command["name"], count)
        elif command["cmd"] == "final":
            drop, remaining = command["drop"], command["remaining"]
            deadline = time.monotonic() + command["timeout"]
            while time.monotonic() < deadline:
                if all(v.remaining.get(drop) == remaining for v in viewers if v.snapshot):
                    break
                await asyncio.sleep(0.05)
            phase = state["phase"]
            open_now = sum(1 for v in viewers if v.ws is not None and v.ws.close_code is None)
            _emit(
                {
                    "type": "report",
                    "phase": phase.name,
                    "seconds": time.time() - phase.started,
                    "viewers": count,
                    "open": open_now,
                    "saw_final": sum(1 for v in viewers if v.remaining.get(drop) == remaining),
                    "messages": phase.messages,
                    "first": phase.first,
                    "last": phase.last,
                    "latency": phase.latency,
                    "stock_latency": phase.stock_latency,
                    "stock_per_viewer": phase.stock_per_viewer,
                    "stock_peak_per_viewer": phase.stock_peak_per_viewer,
                    "closes": state["closes"],
                    "sample": phase.sample,
                }
            )
        elif command["cmd"] == "quit":
            break
    for viewer in viewers:
        if viewer.ws is not None:
            viewer.ws.transport.abort()  # thousands of closing handshakes would only add time
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- stalled viewers ---------------------------------------------------------------------


async def _read_for(ws, seconds: float) -> None:
    """Read (and drop) what a socket got, until it closes or ``seconds`` pass."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            async for _ in ws:
                pass


async def _stalled(job: dict) -> None:
    """Viewers that connect, get their snapshot, then stop reading (a frozen phone, a
    tab in the background): a small receive buffer, and reading paused on ``stall``,
    so what the server sends piles up on its side. On ``report`` they read again and
    tell how many the server closed, with which codes, and how many are still open."""
    import socket
    from urllib.parse import urlparse

    from websockets.asyncio.client import connect

    url, count, rcvbuf = job["url"], job["count"], job.get("rcvbuf", 4096)
    where = urlparse(url)
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (where.hostname, where.port))
        ws = await connect(url, sock=sock, ping_interval=None, max_queue=None, open_timeout=60)
        await ws.recv()  # the stream.state
        sockets.append(ws)
    _emit({"type": "connected", "connected": len(sockets)})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "stall":
            for ws in sockets:
                ws.transport.pause_reading()
            _emit({"type": "stalled", "count": len(sockets)})
        elif command["cmd"] == "report":
            for ws in sockets:
                ws.transport.resume_reading()

            await asyncio.gather(*(_read_for(ws, command.get("timeout", 5)) for ws in sockets))
            closes = Counter(str(ws.close_code) for ws in sockets if ws.close_code is not None)
            still_open = sum(1 for ws in sockets if ws.close_code is None)
            _emit({"type": "report", "closes": dict(closes), "open": still_open})
        elif command["cmd"] == "quit":
            break
    for ws in sockets:
        ws.transport.abort()


# --- buyers at a steady rate -------------------------------------------------------------


async def _buyers(job: dict) -> dict:
    """``rate`` reserve requests per second for ``seconds``, each buyer in turn (distinct
    idempotency keys), never more than ``concurrency`` in flight."""
    import httpx

    rate, seconds, tokens = job["rate"], job["seconds"], job["tokens"]
    total = int(rate * seconds)
    limits = _limits(job)
    codes: Counter = Counter()
    latencies: list[float] = []
    gate = asyncio.Semaphore(job["concurrency"])
    path = f"/api/drops/{job['drop']}/reservations/"
    run = job.get("tag", "r")
    async with httpx.AsyncClient(base_url=job["base_url"], timeout=60, limits=limits) as http:

        async def one(n: int) -> None:
            token = tokens[n % len(tokens)]
            try:
                start = time.perf_counter()
                response = await http.post(
                    path,
                    json={"quantity": 1},
                    headers={
                        "Authorization": f"Token {token}",
                        "Idempotency-Key": f"{run}-{n}",
                    },
                )
                latencies.append(time.perf_counter() - start)
                codes[response.status_code] += 1
            except httpx.HTTPError as exc:
                codes[type(exc).__name__] += 1
            finally:
                gate.release()

        started = time.perf_counter()
        tasks = []
        for n in range(total):
            # The schedule: request n leaves at n / rate, unless the stack lags (then the
            # semaphore holds it back and the rate reached is reported as it was).
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            tasks.append(asyncio.create_task(one(n)))
            if n % 200 == 0:
                _emit({"type": "progress", "sent": n, "of": total})
        sent_seconds = time.perf_counter() - started
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {
        "requests": total,
        "answered": sum(v for k, v in codes.items() if isinstance(k, int)),
        "codes": {str(k): v for k, v in codes.items()},
        "sent_seconds": sent_seconds,
        "seconds": elapsed,
        "rate_reached": total / elapsed,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
    }


def _limits(job: dict):
    import httpx

    # An idle connection is dropped by the client before uvicorn's keep-alive timeout
    # (5 s) closes it: with equal timeouts a request can go out on a connection the
    # server is closing that instant and get no answer (seen: one ReadError per phase).
    return httpx.Limits(max_connections=job["concurrency"], keepalive_expiry=2.0)


# --- the framework's ceiling -------------------------------------------------------------


async def _healthz(job: dict) -> dict:
    import httpx

    limits = _limits(job)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=job["base_url"], timeout=60, limits=limits) as http:
        deadline = time.monotonic() + job["seconds"]

        async def ping_loop():
            while time.monotonic() < deadline:
                start = time.perf_counter()
                await http.get("/healthz")
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(ping_loop() for _ in range(job["concurrency"])))
        elapsed = time.perf_counter() - started
    return {
        "rps": len(latencies) / elapsed,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
    }


# --- the spike ---------------------------------------------------------------------------


async def _spike(job: dict) -> dict:
    import httpx

    limits = _limits(job)
    async with httpx.AsyncClient(base_url=job["base_url"], timeout=60, limits=limits) as http:
        host = {"Authorization": f"Token {job['host_token']}"}
        pin = await http.post(f"/api/drops/{job['drop']}/pin/", headers=host)
        pinned_at = time.time()
        assert pin.status_code == 200, pin.text

        gate = asyncio.Semaphore(job["concurrency"])
        results: list[tuple[int | str, float]] = []

        async def attempt(token: str, n: int):
            async with gate:
                start = time.perf_counter()
                try:
                    response = await http.post(
                        f"/api/drops/{job['drop']}/reservations/",
                        json={"quantity": 1},
                        headers={
                            "Authorization": f"Token {token}",
                            "Idempotency-Key": f"spike-{token}-{n}",
                        },
                    )
                    code: int | str = response.status_code
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                results.append((code, time.perf_counter() - start))

        started = time.perf_counter()
        await asyncio.gather(
            *(attempt(t, n) for t in job["tokens"] for n in range(job["attempts"]))
        )
        spike_seconds = time.perf_counter() - started
    return {
        "pinned_at": pinned_at,
        "spike_seconds": spike_seconds,
        "codes": [code for code, _ in results],
        "latencies": [latency for _, latency in results],
    }


def main() -> None:
    role = sys.argv[1]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    _use_uvloop()
    random.seed()
    if role in ("viewers", "stalled"):
        job = json.loads(sys.stdin.readline())
        asyncio.run(_viewers(job) if role == "viewers" else _stalled(job))
        return
    job = json.load(sys.stdin)
    runner = {"buyers": _buyers, "healthz": _healthz, "spike": _spike}[role]
    _emit({"type": "result", **asyncio.run(runner(job))})


if __name__ == "__main__":
    main()
