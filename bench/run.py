"""The benchmark: the spike and the fan-out on the full local stack, each figure beside
the limit of the part it runs on, in one run.

    .venv/bin/python bench/run.py                  # full size: 5,000 viewers
    .venv/bin/python bench/run.py --viewers 10000  # the stretch
    .venv/bin/python bench/run.py --smoke          # a few hundred viewers, well under 60 s

Starts PostgreSQL's fresh database ``bench_live``, Redis db 4, uvicorn (``--web-workers``;
``--ws-workers N`` adds N processes serving only the websockets) and a Celery worker
(``--celery``), or with ``--reuse`` uses the stack already serving
``--port`` (seeding into its database). Then, from separate client processes:

1. limits: ``GET /healthz`` (the framework's ceiling), the gate's Lua script in a loop
   (``redis-benchmark``), the settle's conditional UPDATE on one hot row (``pgbench``);
2. the spike (``bench/spike.py``);
3. the fan-out: V viewers on one stream while buyers reserve at P per second (figure
   (b)); the events one viewer got, published again at the same offsets through the
   broadcast with no buyers (figure (a), ``--no-replay`` leaves it out); then the
   coalescing check at ``--coalesce-rate`` per second, through the API and then with the
   holds written directly (the rate HTTP cannot reach on a small box);
4. the fan-out ceiling: the same viewers on ``bench/ceiling_ws_server.py`` replaying
   what one viewer received, at the same times.

Prints one table (figure, limit, ratio, target) and writes it as markdown and JSON under
``bench/results/``. Exits 1 when correctness fails (oversold, an unanswered request, a
5xx, a viewer not connected or missing the final stock). Loopback only; every loop is
bounded; every child process is stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import limits  # noqa: E402
import stack as stack_module  # noqa: E402
from clients import BUCKET_S  # noqa: E402
from spike import run_spike, wait_settled  # noqa: E402

RESULTS = stack_module.RESULTS


# --- progress ----------------------------------------------------------------------------


class Progress:
    """One line, rewritten in place on a terminal (a line per update elsewhere, at most
    one a second, so a CI log stays short)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0

    def __call__(self, message: str, *, force: bool = True) -> None:
        now = time.monotonic()
        line = f"[{now - self.started:6.1f}s] {message}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
        elif force or now - self.last_line >= 1:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
            self.last_line = now

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


# --- client processes --------------------------------------------------------------------


class LineProcess:
    """A client process speaking JSON lines; its stdout read by a thread into a queue."""

    def __init__(self, role: str, job: dict, *, env: dict[str, str]):
        self.process = stack_module.spawn(
            [sys.executable, str(HERE / "clients.py"), role],
            env=env,
            log=f"client-{role}.log",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(stack_module.LOGS / f"client-{role}-{os.getpid()}.err", "a"),  # noqa: SIM115
            text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(job)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, obj: dict) -> None:
        self.process.stdin.write(json.dumps(obj) + "\n")
        self.process.stdin.flush()

    def next(self, kind: str, timeout: float, on_progress=None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no {kind!r} from the client in {timeout:.0f} s") from None
            if line is None:
                raise RuntimeError(f"the client exited before {kind!r} (see bench/results/logs)")
            if line["type"] == kind:
                return line
            if on_progress is not None:
                on_progress(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.process.stdin.close()
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                pass
        stack_module.stop(self.process, timeout=5)


def run_once(role: str, job: dict, *, env, timeout: float, progress, label: str) -> dict:
    client = LineProcess(role, job, env=env)
    client.process.stdin.close()

    def show(line):
        if "sent" in line:
            progress(f"{label}: {line['sent']}/{line['of']} requests sent", force=False)

    try:
        return client.next("result", timeout, show)
    finally:
        stack_module.stop(client.process, timeout=5)


# Websocket handshakes each viewer client process keeps in flight (Python or C) while
# joining: the connect storm's arrival rate.
HANDSHAKES_IN_FLIGHT = 48


def _connected_totals(lines: list[dict]) -> dict:
    """Client processes' "connected" lines summed: sockets connected, failed and closed,
    and the closes by code and by their reason's machine code."""
    totals, closes, reasons = Counter(), Counter(), Counter()
    for line in lines:
        totals.update({k: line[k] for k in ("connected", "failed", "closed")})
        closes.update(line.get("closes", {}))
        reasons.update(line.get("reasons", {}))
    return {**totals, "closes": dict(closes), "reasons": dict(reasons)}


class Viewers:
    """V viewers spread over K client processes."""

    def __init__(
        self,
        *,
        url: str,
        viewers: int,
        processes: int,
        env,
        progress,
        label: str,
        compression: str | None = None,
    ):
        self.label = label
        self.progress = progress
        self.url = url
        shares = [viewers // processes + (i < viewers % processes) for i in range(processes)]
        self.clients = [
            LineProcess(
                "viewers",
                {
                    "url": url,
                    "count": share,
                    "connect_concurrency": HANDSHAKES_IN_FLIGHT,
                    "record_sample": i == 0,
                    "compression": compression,
                },
                env=env,
            )
            for i, share in enumerate(shares)
            if share
        ]
        self.viewers = viewers

    def wait_connected(self, timeout: float) -> dict:
        """Until every client process reported its viewers connected (or gave up),
        showing the sum of all of them meanwhile."""
        counts = [0] * len(self.clients)
        done: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        while len(done) < len(self.clients):
            if time.monotonic() > deadline:
                raise RuntimeError(f"viewers not connected in {timeout:.0f} s")
            for i, client in enumerate(self.clients):
                while i not in done:
                    try:
                        line = client.lines.get_nowait()
                    except queue.Empty:
                        break
                    if line is None:
                        raise RuntimeError("a viewer client exited (see bench/results/logs)")
                    counts[i] = line.get("connected", counts[i])
                    if line["type"] == "connected":
                        done[i] = line
            self.progress(
                f"{self.label}: {sum(counts)}/{self.viewers} viewers connected", force=False
            )
            time.sleep(0.2)
        totals = _connected_totals(list(done.values()))
        self.progress(f"{self.label}: {totals['connected']}/{self.viewers} viewers connected")
        return totals

    def pids(self) -> list[int]:
        return [client.process.pid for client in self.clients]

    def phase(self, name: str) -> None:
        for client in self.clients:
            client.send({"cmd": "phase", "name": name})

    def final(self, *, drop: int, remaining: int, timeout: float) -> dict:
        for client in self.clients:
            client.send({"cmd": "final", "drop": drop, "remaining": remaining, "timeout": timeout})
        reports = [client.next("report", timeout + 30) for client in self.clients]
        return merge_reports(reports)

    def stop(self) -> None:
        for client in self.clients:
            client.stop()


def _pct(histogram: Counter, q: float) -> float | None:
    total = sum(histogram.values())
    if not total:
        return None
    rank, seen = q * total, 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket * BUCKET_S
    return max(histogram) * BUCKET_S


def merge_reports(reports: list[dict]) -> dict:
    latency, stock_latency, closes = Counter(), Counter(), Counter()
    per_viewer: list[int] = []
    peak_per_viewer: list[int] = []
    for report in reports:
        latency.update({int(k): v for k, v in report["latency"].items()})
        stock_latency.update({int(k): v for k, v in report["stock_latency"].items()})
        closes.update(report["closes"])
        per_viewer += report["stock_per_viewer"]
        peak_per_viewer += report["stock_peak_per_viewer"]
    firsts = [r["first"] for r in reports if r["first"]]
    lasts = [r["last"] for r in reports if r["last"]]
    messages = sum(r["messages"] for r in reports)
    span = max(lasts) - min(firsts) if firsts and lasts else 0
    return {
        "viewers": sum(r["viewers"] for r in reports),
        "open": sum(r["open"] for r in reports),
        "saw_final": sum(r["saw_final"] for r in reports),
        "messages": messages,
        "span_s": span,
        "deliveries_per_s": messages / span if span > 0 else 0.0,
        "p50_ms": _ms(_pct(latency, 0.5)),
        "p99_ms": _ms(_pct(latency, 0.99)),
        "max_ms": _ms(max(latency) * BUCKET_S if latency else None),
        "stock_p50_ms": _ms(_pct(stock_latency, 0.5)),
        "stock_p99_ms": _ms(_pct(stock_latency, 0.99)),
        "stock_messages_per_viewer": (sum(per_viewer) / len(per_viewer)) if per_viewer else 0,
        "stock_messages_max_viewer": max(per_viewer, default=0),
        # The most stock.changed any viewer got within one second.
        "stock_peak_per_s": max(peak_per_viewer, default=0),
        "closes": dict(closes),
        "sample": next((r["sample"] for r in reports if r["sample"]), []),
    }


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


# --- scenarios ---------------------------------------------------------------------------


def _post(url: str, token: str) -> None:
    request = urllib.request.Request(
        url, method="POST", data=b"", headers={"Authorization": f"Token {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200, response.status


def _allocation_of(drop_id: int):
    from django.db import connection

    from inventory.models import Allocation

    allocation = Allocation.objects.get(drop__pk=drop_id)
    connection.close()
    return allocation


def holds_at_rate(*, drop_id: int, customer_ids: list[int], rate: float, seconds: float) -> dict:
    """Admitted purchases at ``rate`` per second without HTTP: every 0.1 s a slice of
    pending holds is written as the reserve API leaves them and one reserve task is
    queued, so the real worker settles them and the real broadcast coalesces the stock
    events. It reaches rates the HTTP path cannot on this box (the coalescing check is
    about the events, not the requests). The gate is not told: its count is repaired by
    the reconcile task, and this phase runs last."""
    from django.db import connection

    from inventory.tasks import reserve

    allocation = _allocation_of(drop_id)
    tick, written = 0.1, 0
    started = time.perf_counter()
    for step in range(int(seconds / tick)):
        due = int(rate * tick * (step + 1)) - written
        rows = limits.write_pending_holds(
            allocation_id=allocation.pk,
            holds=[
                (customer_ids[n % len(customer_ids)], f"direct-{time.time_ns()}-{n}")
                for n in range(written, written + due)
            ],
        )
        written += len(rows)
        if rows:
            reserve.delay(rows[-1].pk)
        delay = started + tick * (step + 1) - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.perf_counter() - started
    connection.close()
    return {
        "requests": written,
        "answered": written,
        "codes": {},
        "seconds": round(elapsed, 3),
        "rate_reached": round(written / elapsed, 1),
    }


REPLAY_END_REMAINING = -1  # a value no real event carries: the end of a replay
# A stalled viewer's receive buffer: small, so that what it leaves unread piles up on
# the server's side of its socket within the run (as for a phone on a weak network).
STALLED_RCVBUF = 4096


def replay_through_broadcast(
    *, stream_id: int, drop_id: int, sample: list, sold: int, end=REPLAY_END_REMAINING
) -> dict:
    """The events one viewer got in the fan-out phase, published again at the same
    offsets through the product's own broadcast path (``broadcast.publish``: numbered,
    stamped and sent to every process's hub through Redis), with no purchase load; then
    an end marker. What the plain server replays too: figure (a) of the fan-out."""
    from livestream import broadcast

    started = time.monotonic()
    for offset, text in sample:
        delay = started + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        event = json.loads(text)
        kind = event.pop("type")
        for stamp in ("seq", "ts"):
            event.pop(stamp, None)
        broadcast.publish(stream_id, kind, **event)
    broadcast.publish(stream_id, "stock.changed", drop=drop_id, remaining=end, sold=sold)
    return {"events": len(sample) + 1, "seconds": round(time.monotonic() - started, 2)}


def run_fanout(stack, seed, args, progress) -> tuple[dict, Viewers]:
    _post(f"{stack.base_url}/api/drops/{seed.fanout_drop}/pin/", seed.host_token)
    server_pids = stack.server_pids()
    rss_before = stack_module.rss_kb(server_pids)
    viewers = Viewers(
        url=f"{stack.ws_url}/ws/streams/{seed.stream_slug}/",
        viewers=args.viewers,
        processes=args.client_processes,
        env=stack.env,
        progress=progress,
        label="fan-out",
        compression=None if args.viewer_compression == "none" else args.viewer_compression,
    )
    result: dict = {"viewers_wanted": args.viewers, "server_processes": len(server_pids)}
    stalled: LineProcess | None = None
    try:
        connect_started = time.monotonic()
        result["connect"] = viewers.wait_connected(args.connect_timeout)
        result["connect_s"] = round(time.monotonic() - connect_started, 1)
        time.sleep(args.quiet_seconds)  # the join storm's presence and counter events end
        rss_after = stack_module.rss_kb(server_pids)
        connected = max(result["connect"]["connected"], 1)
        result["rss_kb_before"], result["rss_kb_after"] = rss_before, rss_after
        result["rss_kb_per_viewer"] = round((rss_after - rss_before) / connected, 1)

        if args.replay and args.stalled:
            # Viewers that will stop reading in the second replay, connected (and
            # reading) from here on, outside the counts above.
            stalled = LineProcess(
                "stalled",
                {"url": viewers.url, "count": args.stalled, "rcvbuf": STALLED_RCVBUF},
                env=stack.env,
            )
            stalled.next("connected", args.connect_timeout)
        replay_seconds = args.seconds if args.replay else 0
        for name, rate, seconds in (
            ("fanout", args.rate, args.seconds),
            ("replay", 0, replay_seconds),
            ("replay_stalled", 0, replay_seconds if stalled else 0),
            # Once more without them (they read again): how far two replays differ anyway.
            ("replay_again", 0, replay_seconds if stalled else 0),
            ("coalesce", args.coalesce_rate, args.coalesce_seconds),
            ("coalesce_direct", args.coalesce_rate, args.coalesce_seconds),
        ):
            if seconds <= 0:
                continue
            viewers.phase(name)
            if name.startswith("replay"):
                if name == "replay_stalled":
                    stalled.send({"cmd": "stall"})
                    stalled.next("stalled", 30)
                sample = result["fanout"]["sample"]
                progress(f"{name}: {len(sample)} events through the broadcast, no buyers")
                cpu_before = _cpu_by_pid(server_pids)
                client_cpu_before = _cpu_by_pid(viewers.pids())
                started = time.monotonic()
                replayed = replay_through_broadcast(
                    stream_id=seed.stream_id,
                    drop_id=seed.fanout_drop,
                    sample=sample,
                    sold=result["fanout"]["final_sold"],
                )
                report = viewers.final(
                    drop=seed.fanout_drop,
                    remaining=REPLAY_END_REMAINING,
                    timeout=args.final_timeout,
                )
                report.pop("sample", None)
                report["replayed"] = replayed
                report["server_cpu_us_per_delivery"] = _cpu_per_delivery(
                    _cpu_since(cpu_before), report["messages"]
                )
                # The load generator's share of the two cores (a limit only counts if it
                # is not the bottleneck).
                report["client_cores"] = round(
                    _cpu_since(client_cpu_before) / (time.monotonic() - started), 2
                )
                if name == "replay_stalled":
                    stalled.send({"cmd": "report", "timeout": 5})
                    report["stalled"] = {"viewers": args.stalled, **stalled.next("report", 60)}
                result[name] = report
                continue
            if name == "coalesce_direct":
                progress(f"{name}: {rate:.0f} holds/s written for {seconds}s, no HTTP")
                buyers = holds_at_rate(
                    drop_id=seed.fanout_drop,
                    customer_ids=seed.backlog_customers,
                    rate=rate,
                    seconds=seconds,
                )
            else:
                buyers = run_once(
                    "buyers",
                    {
                        "base_url": stack.base_url,
                        "drop": seed.fanout_drop,
                        "tokens": seed.buyer_tokens,
                        "rate": rate,
                        "seconds": seconds,
                        "concurrency": args.concurrency,
                        "tag": f"{name}-{time.time_ns()}",
                    },
                    env=stack.env,
                    timeout=seconds + 300,
                    progress=progress,
                    label=f"{name} ({rate}/s x {seconds}s, {args.viewers} viewers)",
                )
            progress(f"{name}: settling, then waiting for every viewer's final stock")
            wait_settled()
            allocation = _allocation_of(seed.fanout_drop)
            report = viewers.final(
                drop=seed.fanout_drop, remaining=allocation.remaining, timeout=args.final_timeout
            )
            report["buyers"] = buyers
            report["final_remaining"] = allocation.remaining
            report["final_sold"] = allocation.sold
            report["held_plus_sold"] = allocation.held + allocation.sold
            report["oversold"] = max(0, allocation.held + allocation.sold - allocation.quantity)
            report["stock_per_viewer_per_s"] = round(
                report["stock_messages_per_viewer"] / buyers["seconds"], 2
            )
            report["stock_max_viewer_per_s"] = round(
                report["stock_messages_max_viewer"] / buyers["seconds"], 2
            )
            result[name] = report
    except BaseException:
        viewers.stop()
        raise
    finally:
        if stalled is not None:
            stalled.stop()
    return result, viewers


def _cpu_per_delivery(seconds: float, deliveries: int) -> float | None:
    return round(seconds / deliveries * 1e6, 1) if deliveries else None


def _cpu_by_pid(pids) -> dict[int, float]:
    """User + system CPU each process used so far (``/proc``; gone ones left out)."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def _cpu_seconds(pids) -> float:
    """User + system CPU the processes used so far (gone ones count 0)."""
    return sum(_cpu_by_pid(pids).values())


def _cpu_since(before: dict[int, float]) -> float:
    """CPU used since ``before`` by the processes alive then and now (one that ended
    meanwhile would otherwise subtract what it had used)."""
    now = _cpu_by_pid(before)
    return sum(now[pid] - before[pid] for pid in now)


def _box_ticks() -> list[int]:
    """The whole machine's CPU ticks so far, by kind (``/proc/stat``'s first line: user,
    nice, system, idle, iowait, irq, softirq, steal)."""
    return [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def _box_shares(before: list[int], after: list[int]) -> dict[str, float]:
    """Of the machine's CPU time between two readings, the share idle and the share in
    softirq. Loopback TCP does the receiving side's work there, on whichever core, and
    ``/proc/<pid>/stat`` charges it to no process: a box can be full while the processes'
    own cores add up to little more than one."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent) or 1
    return {"idle": round(spent[3] / total, 2), "softirq": round(spent[6] / total, 2)}


STORM_EVENTS_PER_S = 4  # what the held viewers get meanwhile: a drop's coalesced stock


def _steady_sample(
    drop_id: int, seconds: float, *, per_s: int, with_viewer_counts: bool
) -> list[tuple[float, str]]:
    """A replay sample of ``per_s`` events a second for ``seconds``: stock changes, and
    with ``with_viewer_counts`` every ``per_s``-th one a viewer count instead."""
    sample = []
    for i in range(int(seconds * per_s)):
        if with_viewer_counts and i % per_s == per_s - 1:
            event = {"type": "viewers.changed", "viewers": 10**5 + i}
        else:
            event = {"type": "stock.changed", "drop": drop_id, "remaining": 10**6 + i, "sold": i}
        sample.append((i / per_s, json.dumps(event, separators=(",", ":"))))
    return sample


STORM_BEFORE_S, STORM_DURING_S = 5, 15  # the held viewers' events: before, and through it


def _storm_clients(stack, seed, args, progress, *, viewers: int, processes: int, label: str):
    """``viewers`` of the storm's stream in ``processes`` client processes: Python's, or
    with ``--storm-clients c`` C's, which leave the box to the servers."""
    path = f"/ws/streams/{seed.stream_slug}/"
    if args.storm_clients == "c":
        return CViewers(
            port=stack.ws_port if stack.ws_workers else stack.port,
            path=path,
            viewers=viewers,
            processes=processes,
            # Each phase's bound: its events, then as long as Python viewers wait for the end.
            seconds=STORM_DURING_S + args.final_timeout,
            in_flight=HANDSHAKES_IN_FLIGHT,
        )
    return Viewers(
        url=stack.ws_url + path,
        viewers=viewers,
        processes=processes,
        env=stack.env,
        progress=progress,
        label=label,
    )


def _wait_connected(viewers: Viewers | CViewers, args) -> dict:
    if isinstance(viewers, CViewers):
        return viewers.wait_connected()  # each process bounds its own wait
    return viewers.wait_connected(args.connect_timeout)


def _held_phase(held: Viewers | CViewers, name: str) -> None:
    """What the held viewers get from now on is the phase ``name``."""
    if isinstance(held, CViewers):
        held.restart_counts()
    else:
        held.phase(name)


def _held_replay(seed, viewers: Viewers | CViewers, seconds: float, args, *, end: int) -> dict:
    """``seconds`` of steady stock events through the broadcast to the held viewers,
    measured as a phase that ends when every one of them has seen the end marker ``end``
    (one per phase, as the Python viewers keep the last stock they saw; C_END_MARK
    matches each)."""
    sample = _steady_sample(
        seed.fanout_drop, seconds, per_s=args.storm_events_per_s, with_viewer_counts=False
    )
    replay_through_broadcast(
        stream_id=seed.stream_id, drop_id=seed.fanout_drop, sample=sample, sold=0, end=end
    )
    if isinstance(viewers, CViewers):
        return viewers.report()
    report = viewers.final(drop=seed.fanout_drop, remaining=end, timeout=args.final_timeout)
    report.pop("sample", None)
    return report


def run_storm(stack, seed, args, progress) -> dict:
    """A connect storm past what the processes may hold: every viewer asks at once; the
    processes accept up to their cap (``WS_MAX_CONNECTIONS_PER_PROCESS``) and close the
    rest at once (4503, with a retry hint) instead of slowing those they hold.

    ``--storm-held`` viewers connect first and get a steady event stream through the
    broadcast, once before the storm and once during it: their latency in the two."""
    held = None
    result: dict = {}
    if args.storm_held:
        held = _storm_clients(
            stack, seed, args, progress, viewers=args.storm_held, processes=1, label="held"
        )
    try:
        if held is not None:
            result["held_connect"] = _wait_connected(held, args)
            time.sleep(2)  # their own join events settle
            progress(f"held: {args.storm_held} viewers, events before the storm")
            _held_phase(held, "before")
            result["held_before"] = _held_replay(seed, held, STORM_BEFORE_S, args, end=-2)
            _held_phase(held, "during")
        progress(f"storm: {args.storm_viewers} viewers ({args.storm_clients}) at once")
        viewers = _storm_clients(
            stack,
            seed,
            args,
            progress,
            viewers=args.storm_viewers,
            processes=args.client_processes,
            label="storm",
        )
        servers = stack.server_pids()
        clients = viewers.pids()
        held_clients = held.pids() if held is not None else []
        during: dict = {}
        publisher = None
        if held is not None:
            # Events for the held viewers all through the storm (it has lasted 6-20 s).
            publisher = threading.Thread(
                target=lambda: during.update(
                    _held_replay(seed, held, STORM_DURING_S, args, end=-3)
                ),
                daemon=True,
            )
        try:
            cpu_before = [_cpu_seconds(pids) for pids in (servers, clients, held_clients)]
            box_before = _box_ticks()
            started = time.monotonic()
            if publisher is not None:
                publisher.start()
            connect = _wait_connected(viewers, args)
            seconds = time.monotonic() - started
            cpu_after = [_cpu_seconds(pids) for pids in (servers, clients, held_clients)]
            box = _box_shares(box_before, _box_ticks())
            if publisher is not None:
                publisher.join(args.final_timeout + 60)
                result["held_during"] = during
        finally:
            viewers.stop()
    finally:
        if held is not None:
            held.stop()
    refused = connect["closes"].get("4503", 0)
    servers_cores, clients_cores, held_cores = (
        round((after - before) / seconds, 2)
        for before, after in zip(cpu_before, cpu_after, strict=True)
    )
    return {
        **result,
        "clients": args.storm_clients,
        "viewers_held": args.storm_held,
        "events_per_s": args.storm_events_per_s,
        "viewers_asked": args.storm_viewers,
        "cap_per_process": args.storm_cap,
        # The processes that take websockets (server_pids counts uvicorn's master too).
        "server_processes": args.ws_workers or args.web_workers,
        "seconds": round(seconds, 2),
        "accepted": connect["connected"],
        "refused": refused,
        "failed": connect["failed"],
        "closes": connect["closes"],
        # 4503 is both a full process and a busy one: told apart by the reason's code.
        "reasons": connect["reasons"],
        "accepted_per_s": round(connect["connected"] / seconds, 1),
        "refused_per_s": round(refused / seconds, 1),
        # Cores busy meanwhile: the clients share the two cores with the servers (the
        # storm's clients, and apart the held viewers' own).
        "server_cores": servers_cores,
        "client_cores": clients_cores,
        "held_client_cores": held_cores,
        "box_idle": box["idle"],
        "box_softirq": box["softirq"],
    }


@contextlib.contextmanager
def _plain_server(stack, args, *, sample, drop_id: int, sold: int, state_drops: list, log: str):
    """``bench/ceiling_ws_server.py`` with ``sample`` as its schedule (then the end marker),
    as many processes as the real stack serves websockets with; yields ``(process, port,
    the pids holding the sockets)`` and stops it on the way out."""
    final = {
        "seq": 10**9,
        "type": "stock.changed",
        "drop": drop_id,
        "remaining": REPLAY_END_REMAINING,
        "sold": sold,
        "ts": 0,
    }
    schedule = {
        "state": {"type": "stream.state", "seq": 0, "stream": {"drops": state_drops}},
        "events": sample,
        "final": json.dumps(final),
    }
    path = stack_module.LOGS / f"{log}-schedule.json"
    path.write_text(json.dumps(schedule))
    port = stack_module.free_port()
    processes = args.ws_workers or args.web_workers
    server = stack_module.spawn(
        [
            sys.executable,
            str(HERE / "ceiling_ws_server.py"),
            "--port",
            str(port),
            "--schedule",
            str(path),
            "--processes",
            str(processes),
        ],
        env=stack.env,
        log=f"{log}.log",
    )
    try:
        stack_module.wait_log_words(server, f"{log}.log", "ready ", processes)
        pids = [server.pid, *stack_module.descendants(server.pid)]
        # The supervising parent holds no socket (with one process it is the server).
        yield server, port, (pids[1:] if len(pids) > 1 else pids)
    finally:
        stack_module.stop(server)


def run_ceiling(stack, seed, args, fanout: dict, progress) -> dict:
    """The same clients, the same events at the same times, a plain websockets server."""
    phase = fanout["fanout"]
    sample = phase.pop("sample")
    with _plain_server(
        stack,
        args,
        sample=sample,
        drop_id=seed.fanout_drop,
        sold=phase["final_sold"],
        state_drops=[{"id": seed.fanout_drop, "remaining": 0}],
        log="ceiling",
    ) as (server, port, serving):
        rss_before = stack_module.rss_kb(serving)
        viewers = Viewers(
            url=f"ws://127.0.0.1:{port}/",
            viewers=args.viewers,
            processes=args.client_processes,
            env=stack.env,
            progress=progress,
            label="ceiling",
        )
        try:
            connect = viewers.wait_connected(args.connect_timeout)
            time.sleep(args.quiet_seconds)
            rss_after = stack_module.rss_kb(serving)
            viewers.phase("ceiling")
            cpu_before = _cpu_by_pid(serving)
            client_cpu_before = _cpu_by_pid(viewers.pids())
            started = time.monotonic()
            os.kill(server.pid, signal.SIGUSR1)
            length = sample[-1][0] if sample else 0
            progress(f"ceiling: replaying {len(sample)} events over {length:.1f} s")
            time.sleep(length + 0.5)
            report = viewers.final(
                drop=seed.fanout_drop, remaining=REPLAY_END_REMAINING, timeout=args.final_timeout
            )
            cpu_used = _cpu_since(cpu_before)  # while the processes still run
            client_cores = round(_cpu_since(client_cpu_before) / (time.monotonic() - started), 2)
        finally:
            viewers.stop()
    report.pop("sample", None)
    report["server_cpu_us_per_delivery"] = _cpu_per_delivery(cpu_used, report["messages"])
    report["client_cores"] = client_cores
    report["connect"] = connect
    report["events_replayed"] = len(sample) + 1
    report["rss_kb_per_viewer"] = round((rss_after - rss_before) / max(connect["connected"], 1), 1)
    return report


# --- figure (a) with C viewers: sizes where Python clients would be the bottleneck -------

# Any negative remaining: the end of a replay, REPLAY_END_REMAINING, or of a phase that
# ends on another value no real event carries (-2, -3, ...).
C_END_MARK = '"remaining":-'
C_REPLAY_EVENTS_PER_S = 5  # a live drop's coalesced stock (4/s) and the viewer count (1/s)


def _c_viewers_binary() -> Path:
    """``bench/ws_viewers.c``, compiled once into the logs folder (a C compiler is needed:
    Debian's ``gcc``; nothing is downloaded)."""
    source, binary = HERE / "ws_viewers.c", stack_module.LOGS / "ws_viewers"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("the C viewers need a C compiler: apt-get install -y gcc")
    stack_module.LOGS.mkdir(parents=True, exist_ok=True)
    subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


class CViewers:
    """V viewers in K processes of ``bench/ws_viewers.c``, each one line when every socket
    is connected, failed or closed, and one report per phase (from a restart of the
    counts) when every viewer saw an end marker. ``in_flight``: handshakes at once per
    process (the program's own 64 unless given)."""

    def __init__(
        self,
        *,
        port: int,
        path: str,
        viewers: int,
        processes: int,
        seconds: float,
        in_flight: int | None = None,
    ):
        binary = _c_viewers_binary()
        shares = [viewers // processes + (i < viewers % processes) for i in range(processes)]
        optional = [str(in_flight)] if in_flight is not None else []
        self.processes = [
            stack_module.spawn(
                [
                    str(binary),
                    "127.0.0.1",
                    str(port),
                    path,
                    str(share),
                    str(seconds),
                    C_END_MARK,
                    *optional,
                ],
                env=dict(os.environ),
                log="client-c.log",
                stdout=subprocess.PIPE,
                stderr=open(stack_module.LOGS / "client-c.err", "a"),  # noqa: SIM115
                text=True,
            )
            for share in shares
            if share
        ]
        self.viewers = viewers

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def restart_counts(self) -> None:
        """What arrives from now on is the measured phase (SIGUSR1)."""
        for process in self.processes:
            os.kill(process.pid, signal.SIGUSR1)
        time.sleep(0.1)  # each process notices within its 50 ms wait

    def _lines(self, kind: str) -> list[dict]:
        lines = [json.loads(process.stdout.readline() or "{}") for process in self.processes]
        if any(line.get("type") != kind for line in lines):
            raise RuntimeError(f"a C viewer process gave no {kind!r} (see bench/results/logs)")
        return lines

    def wait_connected(self) -> dict:
        """Until every process's sockets are connected, failed or closed (each process
        gives up after 300 s)."""
        return _connected_totals(self._lines("connected"))

    def report(self) -> dict:
        reports = self._lines("report")
        latency, closes = Counter(), Counter()
        for report in reports:
            latency.update({int(k): v for k, v in report["latency"].items()})
            closes.update(report["closes"])
        firsts = [r["first"] for r in reports if r["first"]]
        lasts = [r["last"] for r in reports if r["last"]]
        span = max(lasts) - min(firsts) if firsts and lasts else 0
        messages = sum(r["messages"] for r in reports)
        return {
            "viewers": sum(r["viewers"] for r in reports),
            "open": sum(r["open"] for r in reports),
            "saw_final": sum(r["saw_final"] for r in reports),
            "messages": messages,
            "deliveries_per_s": messages / span if span > 0 else 0.0,
            "p50_ms": _ms(_pct(latency, 0.5)),
            "p99_ms": _ms(_pct(latency, 0.99)),
            "max_ms": _ms(max(latency) * BUCKET_S if latency else None),
            "closes": dict(closes),
        }

    def stop(self) -> None:
        for process in self.processes:
            stack_module.stop(process)


def _measure_c(viewers: CViewers, server_pids: list[int], publish) -> dict:
    """Connect, then ``publish()`` the events and read the report, with both sides' CPU."""
    connect = viewers.wait_connected()
    time.sleep(1)  # the join storm's own events end
    servers, clients = _cpu_by_pid(server_pids), _cpu_by_pid(viewers.pids())
    started = time.monotonic()
    viewers.restart_counts()
    publish()
    report = viewers.report()
    seconds = time.monotonic() - started
    report["connect"] = connect
    report["server_cpu_us_per_delivery"] = _cpu_per_delivery(
        _cpu_since(servers), report["messages"]
    )
    report["client_cores"] = round(_cpu_since(clients) / seconds, 2)
    return report


def run_fanout_c(stack, seed, args, progress) -> dict:
    """Figure (a) with C viewers: a steady event stream through the product's broadcast
    to V viewers, then the same events from the plain server to the same clients."""
    _post(f"{stack.base_url}/api/drops/{seed.fanout_drop}/pin/", seed.host_token)
    sample = _steady_sample(
        seed.fanout_drop, args.seconds, per_s=C_REPLAY_EVENTS_PER_S, with_viewer_counts=True
    )
    wait = args.seconds + args.final_timeout + 60
    path = f"/ws/streams/{seed.stream_slug}/"
    progress(f"fan-out (C viewers): {args.viewers} viewers, {len(sample)} events")
    ours = CViewers(
        port=stack.ws_port if stack.ws_workers else stack.port,
        path=path,
        viewers=args.viewers,
        processes=args.client_processes,
        seconds=wait,
    )
    try:
        result = {
            "ours": _measure_c(
                ours,
                stack.server_pids(),
                lambda: replay_through_broadcast(
                    stream_id=seed.stream_id, drop_id=seed.fanout_drop, sample=sample, sold=0
                ),
            )
        }
    finally:
        ours.stop()
    with _plain_server(
        stack,
        args,
        sample=sample,
        drop_id=seed.fanout_drop,
        sold=0,
        state_drops=[],
        log="ceiling-c",
    ) as (server, port, serving):
        progress(f"plain server (C viewers): {args.viewers} viewers")
        plain = CViewers(
            port=port,
            path="/",
            viewers=args.viewers,
            processes=args.client_processes,
            seconds=wait,
        )
        try:
            result["plain"] = _measure_c(
                plain, serving, lambda: os.kill(server.pid, signal.SIGUSR1)
            )
        finally:
            plain.stop()
    return result


# --- the table ---------------------------------------------------------------------------


def _ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def build_table(results: dict, args) -> list[dict]:
    rows: list[dict] = []

    def row(figure, value, limit_name="", limit=None, ratio=None, target="", met=None):
        rows.append(
            {
                "figure": figure,
                "value": value,
                "limit": limit_name,
                "limit_value": limit,
                "ratio": ratio,
                "target": target,
                "met": met,
            }
        )

    healthz = results.get("healthz")
    spike = results.get("spike")
    gate = results.get("gate")
    pg = results.get("pgbench")
    fan = results.get("fanout")
    ceiling = results.get("ceiling")
    settle = results.get("settle")
    if settle:
        r = _ratio(settle["holds_per_s"], pg and pg["tx_per_s"])
        row(
            f"pending -> held, holds/s ({settle['pending']} queued at once)",
            settle["holds_per_s"],
            "pgbench hot-row UPDATE tx/s",
            pg and round(pg["tx_per_s"]),
            r,
            ">= 0.5x",
            r is not None and r >= 0.5,
        )
    if spike:
        r = _ratio(spike["decisions_per_s"], healthz and healthz["rps"])
        row(
            "spike: reserve decisions/s",
            spike["decisions_per_s"],
            "GET /healthz req/s",
            healthz and round(healthz["rps"], 1),
            r,
            ">= 0.5x",
            r is not None and r >= 0.5,
        )
        if gate:
            row(
                "spike: reserve decisions/s",
                spike["decisions_per_s"],
                "gate Lua admissions/s",
                round(gate["admissions_per_s"]),
                _ratio(spike["decisions_per_s"], gate["admissions_per_s"]),
            )
        row(
            "spike: pending -> held, holds/s (bounded by arrivals)",
            spike["held_per_s"],
            "pgbench hot-row UPDATE tx/s",
            pg and round(pg["tx_per_s"]),
            _ratio(spike["held_per_s"], pg and pg["tx_per_s"]),
        )
        row(
            "spike: decision p50 / p99 ms",
            f"{spike['decision_p50_ms']} / {spike['decision_p99_ms']}",
            "GET /healthz p50 / p99 ms",
            healthz and f"{healthz['p50'] * 1000:.1f} / {healthz['p99'] * 1000:.1f}",
        )
        row("spike: to held p50 / p99 ms", f"{spike['to_held_p50_ms']} / {spike['to_held_p99_ms']}")
        row("spike: sold out after s", spike["sold_out_after_s"])
        r = spike["db_row_writes_per_unit"]
        row("spike: DB row writes per unit sold", r, target="small constant", met=r <= 5)
    if fan:
        main = fan.get("fanout", {})
        connected = fan["connect"]["connected"]
        target_viewers = min(args.viewers, 5000)
        row(
            "fan-out: viewers connected",
            connected,
            "wanted",
            args.viewers,
            _ratio(connected, args.viewers),
            f">= {target_viewers}",
            connected >= target_viewers,
        )
        if main:
            r = _ratio(main["deliveries_per_s"], ceiling and ceiling["deliveries_per_s"])
            row(
                "fan-out: deliveries/s",
                round(main["deliveries_per_s"]),
                "plain websockets server",
                ceiling and round(ceiling["deliveries_per_s"]),
                r,
                ">= 0.5x",
                r is not None and r >= 0.5,
            )
            r = _ratio(main["p99_ms"], ceiling and ceiling["p99_ms"])
            row(
                "fan-out: delivery p99 ms",
                main["p99_ms"],
                "plain websockets server",
                ceiling and ceiling["p99_ms"],
                r,
                "<= 2x and < 1000 ms",
                main["p99_ms"] is not None and main["p99_ms"] < 1000 and (r is None or r <= 2),
            )
            row(
                "fan-out: delivery p50 ms",
                main["p50_ms"],
                "plain websockets server",
                ceiling and ceiling["p50_ms"],
                _ratio(main["p50_ms"], ceiling and ceiling["p50_ms"]),
            )
            row(
                f"fan-out: stock.changed/viewer/s at {main['buyers']['rate_reached']:.0f} buys/s",
                main["stock_per_viewer_per_s"],
            )
        replay = fan.get("replay")
        if replay:
            # Figure (a): the same events through the product's broadcast, no buyers.
            for q, target in (("p99", 1.3), ("p50", 1.3)):
                r = _ratio(replay[f"{q}_ms"], ceiling and ceiling[f"{q}_ms"])
                row(
                    f"fan-out (a), broadcast only: delivery {q} ms",
                    replay[f"{q}_ms"],
                    "plain websockets server",
                    ceiling and ceiling[f"{q}_ms"],
                    r,
                    f"<= {target}x",
                    r is not None and r <= target,
                )
            r = _ratio(
                replay["server_cpu_us_per_delivery"],
                ceiling and ceiling["server_cpu_us_per_delivery"],
            )
            row(
                "fan-out (a), broadcast only: the viewer clients' cores busy meanwhile",
                replay["client_cores"],
                "plain websockets server",
                ceiling and ceiling["client_cores"],
            )
            row(
                "fan-out (a), broadcast only: server CPU µs per delivery",
                replay["server_cpu_us_per_delivery"],
                "plain websockets server",
                ceiling and ceiling["server_cpu_us_per_delivery"],
                r,
            )
        with_stalled, again = fan.get("replay_stalled"), fan.get("replay_again")
        if replay and with_stalled and again:
            info = with_stalled["stalled"]
            # Against the replays just before and just after, without them.
            without = (replay["p99_ms"] + again["p99_ms"]) / 2
            r = _ratio(with_stalled["p99_ms"], without)
            row(
                f"fan-out (a) beside {info['viewers']} stalled viewers: everyone else's"
                f" delivery p99 ms (stalled ones closed by the server: {info['closes'] or 0},"
                f" still open: {info['open']})",
                with_stalled["p99_ms"],
                "the replays before and after, without them (mean)",
                f"{without:.1f} ({replay['p99_ms']}, {again['p99_ms']})",
                r,
                "<= 1.1x",
                r is not None and r <= 1.1,
            )
        r = fan["rss_kb_per_viewer"]
        row(
            "fan-out: server RSS KB per viewer",
            r,
            "plain websockets server",
            ceiling and ceiling["rss_kb_per_viewer"],
            _ratio(r, ceiling and ceiling["rss_kb_per_viewer"]),
            "<= 24 KB",
            r <= 24,
        )
        for name, how in (("coalesce", "buys/s"), ("coalesce_direct", "holds/s, no HTTP")):
            co = fan.get(name)
            if co:
                reached = co["buyers"]["rate_reached"]
                # Over the sending time (the settle's tail arrives after it, so
                # this overstates the rate), and in the busiest second of any viewer.
                row(
                    f"coalescing: stock.changed/viewer/s at {reached:.0f} {how}"
                    f" (asked {args.coalesce_rate}): mean over the load; busiest second",
                    f"{co['stock_per_viewer_per_s']}; {co['stock_peak_per_s']}",
                    target="<= 4 in any second",
                    met=co["stock_peak_per_s"] <= 4,
                )
    fan_c = results.get("fanout_c")
    if fan_c:
        ours, plain = fan_c["ours"], fan_c["plain"]
        for q in ("p99", "p50"):
            r = _ratio(ours[f"{q}_ms"], plain[f"{q}_ms"])
            row(
                f"fan-out (a), {ours['viewers']:,} C viewers: delivery {q} ms",
                ours[f"{q}_ms"],
                "plain websockets server",
                plain[f"{q}_ms"],
                r,
                "<= 1.3x" + (" and < 1000 ms" if q == "p99" else ""),
                r is not None
                and r <= 1.3
                and (q != "p99" or (ours[f"{q}_ms"] is not None and ours[f"{q}_ms"] < 1000)),
            )
        for key, what in (
            ("deliveries_per_s", "deliveries/s"),
            ("server_cpu_us_per_delivery", "server CPU µs per delivery"),
            ("client_cores", "the C viewer clients' cores busy"),
        ):
            row(
                f"fan-out (a), {ours['viewers']:,} C viewers: {what}",
                round(ours[key], 1),
                "plain websockets server",
                round(plain[key], 1),
                _ratio(ours[key], plain[key]),
            )
    storm = results.get("storm")
    if storm:
        held = storm["cap_per_process"] * storm["server_processes"]
        row(
            f"connect storm: {storm['viewers_asked']:,} {storm['clients']} viewers at once, cap"
            f" {storm['cap_per_process']:,} x {storm['server_processes']} processes:"
            " accepted/s; refused (4503)/s",
            f"{storm['accepted_per_s']:,}; {storm['refused_per_s']:,}"
            f" ({storm['accepted']:,} and {storm['refused']:,} in {storm['seconds']} s,"
            f" refused as {storm.get('reasons') or {}};"
            f" cores busy: servers {storm['server_cores']}, clients {storm['client_cores']},"
            f" the held viewers' client {storm['held_client_cores']};"
            f" the box idle {storm.get('box_idle', 0):.0%}, in softirq"
            f" {storm.get('box_softirq', 0):.0%})",
            # The kernel spreads connections over the processes unevenly, so one may
            # refuse while another still has room: at most the caps, never past them.
            target=f"accepted <= {held:,}, every other refused at once",
            met=storm["accepted"] + storm["viewers_held"] <= held
            and storm["accepted"] + storm["refused"] == storm["viewers_asked"],
        )
        before, during = storm.get("held_before"), storm.get("held_during")
        if before and during:
            for q in ("p50", "p99"):
                row(
                    f"connect storm: the {storm['viewers_held']:,} viewers connected before"
                    f" it, {storm['events_per_s']} events/s: delivery {q} ms during the storm",
                    during[f"{q}_ms"],
                    "before the storm",
                    before[f"{q}_ms"],
                    _ratio(during[f"{q}_ms"], before[f"{q}_ms"]),
                )
    return rows


def correctness(results: dict, args) -> tuple[bool, str]:
    problems = []
    spike = results.get("spike")
    if spike:
        if spike["oversold"]:
            problems.append(f"spike oversold {spike['oversold']}")
        if spike["answered"] != spike["requests"]:
            problems.append(f"spike answered {spike['answered']}/{spike['requests']}")
        if spike["status_5xx"]:
            problems.append(f"spike 5xx {spike['status_5xx']}")
    fan = results.get("fanout")
    if fan:
        if fan["connect"]["connected"] != args.viewers:
            problems.append(f"viewers connected {fan['connect']['connected']}/{args.viewers}")
        for name in ("fanout", "coalesce", "coalesce_direct"):
            phase = fan.get(name)
            if not phase:
                continue
            buyers = phase["buyers"]
            if buyers["answered"] != buyers["requests"]:
                problems.append(f"{name} answered {buyers['answered']}/{buyers['requests']}")
            fivexx = sum(v for k, v in buyers["codes"].items() if k.isdigit() and int(k) >= 500)
            if fivexx:
                problems.append(f"{name} 5xx {fivexx}")
            if phase["oversold"]:
                problems.append(f"{name} oversold {phase['oversold']}")
            if phase["saw_final"] != args.viewers:
                problems.append(f"{name}: {phase['saw_final']}/{args.viewers} saw the final stock")
        for name in ("replay", "replay_stalled", "replay_again"):
            replay = fan.get(name)
            if replay and replay["saw_final"] != args.viewers:
                problems.append(f"{name}: {replay['saw_final']}/{args.viewers} saw its last event")
    fan_c = results.get("fanout_c")
    if fan_c:
        for side, report in fan_c.items():
            if report["connect"]["connected"] != args.viewers:
                problems.append(f"fanout-c {side}: {report['connect']} of {args.viewers}")
            if report["saw_final"] != args.viewers or report["open"] != args.viewers:
                problems.append(f"fanout-c {side}: {report['saw_final']} saw the last event")
    storm = results.get("storm")
    if storm:
        if storm["failed"] or storm["accepted"] + storm["refused"] != storm["viewers_asked"]:
            problems.append(f"storm: not every viewer accepted or refused: {storm}")
        if storm["accepted"] + storm["viewers_held"] > (
            storm["cap_per_process"] * storm["server_processes"]
        ):
            problems.append(f"storm: more accepted than the caps allow: {storm['accepted']}")
        for name in ("held_before", "held_during"):
            phase = storm.get(name)
            if phase is not None and (
                phase["saw_final"] != storm["viewers_held"] or phase["open"] != phase["viewers"]
            ):
                problems.append(f"storm: held viewers lost events or sockets ({name}): {phase}")
    line = (
        "correctness: oversold 0, every request answered, no 5xx, every viewer connected"
        " and saw the final stock"
        if not storm
        else "correctness: every viewer of the storm accepted or refused with 4503, none past"
        " the caps"
    )
    return (not problems), (line if not problems else "CORRECTNESS FAILED: " + "; ".join(problems))


def markdown(rows: list[dict]) -> str:
    def cell(value):
        if value is None or value == "":
            return ""
        if value is True:
            return "yes"
        if value is False:
            return "**no**"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = [
        "| figure | value | limit | limit value | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['ratio']}x" if r["ratio"] is not None else ""
        lines.append(
            f"| {r['figure']} | {cell(r['value'])} | {r['limit']} | {cell(r['limit_value'])}"
            f" | {ratio} | {r['target']} | {cell(r['met'])} |"
        )
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------


SMOKE = {
    "viewers": 200,
    "buyers": 40,
    "units": 20,
    "attempts": 2,
    "rate": 20,
    "seconds": 3,
    "coalesce_rate": 100,
    "coalesce_seconds": 2,
    "healthz_seconds": 1,
    "gate_requests": 20000,
    "pgbench_seconds": 1,
    "concurrency": 16,
    "quiet_seconds": 0.5,
    "stalled": 2,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="the small size CI runs")
    parser.add_argument(
        "--only",
        choices=("all", "spike", "fanout", "fanout-c", "limits", "storm"),
        default="all",
        help="fanout-c: figure (a) with viewers in C (bench/ws_viewers.c), for big sizes",
    )
    parser.add_argument(
        "--storm-viewers", type=int, default=10_000, help="viewers of the connect storm"
    )
    parser.add_argument(
        "--storm-held",
        type=int,
        default=2000,
        help="viewers connected before the storm, whose latency it must not raise",
    )
    parser.add_argument(
        "--storm-events-per-s",
        type=int,
        default=STORM_EVENTS_PER_S,
        help="events a second the held viewers get before and during the storm",
    )
    parser.add_argument(
        "--storm-clients",
        choices=("python", "c"),
        default="python",
        help="the storm's viewers, held ones too: bench/clients.py, or bench/ws_viewers.c"
        " (little of the box's CPU, so the held viewers' latency is the servers')",
    )
    parser.add_argument(
        "--storm-cap",
        type=int,
        default=3_000,
        help="the storm's WS_MAX_CONNECTIONS_PER_PROCESS (only with --only storm)",
    )
    parser.add_argument("--viewers", type=int, default=5000)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--buyers", type=int, default=1000, help="users seeded for buying")
    parser.add_argument("--units", type=int, default=500, help="units of the spike's drop")
    parser.add_argument("--attempts", type=int, default=2, help="spike attempts per buyer")
    parser.add_argument("--rate", type=float, default=50, help="fan-out purchases per second")
    parser.add_argument("--seconds", type=float, default=20, help="fan-out duration")
    parser.add_argument(
        "--replay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="figure (a): replay the fan-out's events through the broadcast, no buyers",
    )
    parser.add_argument(
        "--stalled",
        type=int,
        default=10,
        help="viewers that stop reading during a second replay (0: no second replay)",
    )
    parser.add_argument("--coalesce-rate", type=float, default=500)
    parser.add_argument("--coalesce-seconds", type=float, default=6)
    parser.add_argument("--concurrency", type=int, default=64, help="HTTP requests in flight")
    parser.add_argument("--healthz-seconds", type=float, default=3)
    parser.add_argument("--gate-requests", type=int, default=200_000)
    parser.add_argument("--pgbench-seconds", type=float, default=5)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument(
        "--viewer-compression",
        choices=("none", "deflate"),
        default="none",
        help="what the fan-out's viewers offer (browsers offer deflate); the ceiling: none",
    )
    parser.add_argument(
        "--ws-workers",
        type=int,
        default=0,
        help="uvicorn processes for websockets only (0: the web processes serve them too)",
    )
    parser.add_argument("--celery", type=int, default=2)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--connect-timeout", type=float, default=300)
    parser.add_argument(
        "--quiet-seconds", type=float, default=2, help="pause after connecting, before measuring"
    )
    parser.add_argument("--final-timeout", type=float, default=30)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bench_live")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/4")
    parser.add_argument("--reuse", action="store_true", help="use the stack serving --port")
    parser.add_argument("--results", default=str(RESULTS), help="where to write the results")
    parser.add_argument("--label", default="", help="added to the result file names")
    args = parser.parse_args(argv)
    if args.reuse and args.ws_workers:
        parser.error("--ws-workers starts its own processes: not with --reuse")
    if args.smoke:
        explicit = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv or sys.argv[1:])}
        for key, value in SMOKE.items():
            if key not in explicit:
                setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stack_module.install_cleanup()
    stack_module.raise_fd_limit()
    progress = Progress()
    stack = stack_module.Stack(
        database_url=args.database_url,
        redis_url=args.redis_url,
        port=args.port,
        web_workers=args.web_workers,
        ws_workers=args.ws_workers,
        celery=args.celery,
        reuse=args.reuse,
    )
    stack.prepare()
    results: dict = {}
    started = time.monotonic()
    try:
        if not args.reuse:
            progress(f"fresh database {stack.database}, Redis {args.redis_url}")
            stack.fresh_database()
        progress(f"seeding {args.buyers} buyers, a live stream and its drops")
        fanout_units = int(
            args.rate * args.seconds + 2 * args.coalesce_rate * args.coalesce_seconds
        )
        seed = stack.seed(
            buyers=args.buyers, spike_units=args.units, fanout_units=max(fanout_units * 2, 1000)
        )
        websockets = f" (+ x{args.ws_workers} for websockets)" if args.ws_workers else ""
        progress(f"starting uvicorn x{args.web_workers}{websockets} and Celery x{args.celery}")
        if args.only == "storm":
            stack.env["WS_MAX_CONNECTIONS_PER_PROCESS"] = str(args.storm_cap)
        stack.start()
        if args.only == "storm":
            results["storm"] = run_storm(stack, seed, args, progress)
        if args.only == "fanout-c":
            results["fanout_c"] = run_fanout_c(stack, seed, args, progress)
        if args.only in ("all", "limits", "spike"):
            progress("limit: GET /healthz")
            results["healthz"] = run_once(
                "healthz",
                {
                    "base_url": stack.base_url,
                    "concurrency": args.concurrency,
                    "seconds": args.healthz_seconds,
                },
                env=stack.env,
                timeout=args.healthz_seconds + 60,
                progress=progress,
                label="healthz",
            )
        if args.only in ("all", "limits"):
            progress("limit: the gate's Lua script (redis-benchmark)")
            results["gate"] = limits.gate_admissions_per_second(
                redis_url=args.redis_url, requests=args.gate_requests
            )
            progress("limit: the hot-row UPDATE (pgbench)")
            results["pgbench"] = limits.pgbench_hot_row(
                database=stack.database,
                allocation_id=seed.hot_allocation,
                seconds=args.pgbench_seconds,
            )
        if args.only in ("all", "limits"):
            progress(f"pending -> held: {len(seed.backlog_customers)} holds queued at once")
            results["settle"] = limits.settle_backlog(
                allocation_id=seed.backlog_allocation, customer_ids=seed.backlog_customers
            )
        if args.only in ("all", "spike"):
            results["spike"] = run_spike(
                base_url=stack.base_url,
                host_token=seed.host_token,
                drop_id=seed.spike_drop,
                units=args.units,
                tokens=seed.buyer_tokens,
                attempts=args.attempts,
                concurrency=args.concurrency,
                progress=progress,
            )
        if args.only in ("all", "fanout"):
            fanout, viewers = run_fanout(stack, seed, args, progress)
            viewers.stop()
            results["fanout"] = fanout
            # The real stack idles meanwhile (its viewers are gone), as in a fair match.
            results["ceiling"] = run_ceiling(stack, seed, args, fanout, progress)
    finally:
        progress("stopping the stack")
        stack.stop()
        stack_module.stop_all()
        progress.done()

    ok, line = correctness(results, args)
    rows = build_table(results, args)
    when = datetime.now(UTC)
    config = {
        k: getattr(args, k)
        for k in (
            "smoke",
            "viewers",
            "client_processes",
            "buyers",
            "units",
            "attempts",
            "rate",
            "seconds",
            "replay",
            "stalled",
            "coalesce_rate",
            "coalesce_seconds",
            "concurrency",
            "web_workers",
            "ws_workers",
            "viewer_compression",
            "celery",
            "reuse",
        )
    }
    document = {
        "when": when.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
        "config": config,
        "correct": ok,
        "table": rows,
        "results": results,
    }
    table = markdown(rows)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    name = f"bench-{when.strftime('%Y%m%dT%H%M%SZ')}{'-' + args.label if args.label else ''}"
    (out / f"{name}.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    settings_line = ", ".join(f"{k}={v}" for k, v in config.items())
    (out / f"{name}.md").write_text(
        f"# Benchmark, {document['when']}\n\n{settings_line}\n\n{table}\n\n{line}\n"
    )
    print(table)
    print(line)
    print(f"written: {out / name}.md and .json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
