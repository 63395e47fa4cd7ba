"""The front door: how many decisions the request path answers in a viral moment,
measured with a C load generator (wrk) so that the client does not eat the two cores it
measures, each figure beside its limit measured in the same run on the same uvicorn
workers, with the server CPU each answer cost.

    bench/setup                                   # once: wrk and redis-benchmark (apt)
    .venv/bin/python bench/front_door.py          # this checkout, ~4-5 minutes
    .venv/bin/python bench/front_door.py --rev HEAD   # the servers run a commit's code

Rows (``bench/README.md`` says what each one means):

* limits: the raw ASGI floor (``bench/floor_app.py``, at 64 and 256 connections), the
  gate's Lua script alone (``redis-benchmark``, EVALSHA, refusing and admitting), and
  ``GET /healthz`` through Django;
* refusals: ``POST /api/drops/{id}/reservations/`` on a sold-out drop at 64 and 256
  connections, each request its own buyer (round robin) and a fresh ``Idempotency-Key``;
* entries: ``POST /api/drops/{id}/entries/`` on a drop sold by draw (pinned just before,
  entries open an hour) at 64 and 256 connections, the same way: ``entries (new)`` each
  request a buyer who has not entered (201, then the Entry rows counted), ``entries
  (again)`` those buyers entering again (200);
* admissions: the same on a drop of 1,000,000 units, the real Celery worker settling,
  with the pending -> held lag;
* the spike: 50,000 attempts by 20,000 buyers (2 or 3 each) on a 500-unit drop, fired
  the moment it is pinned, exactly that many (wrk stopped by count): time until every
  attempt has an answer, oversold, the ledger, SQL per unit sold;
* ``GET /api/streams/{slug}/`` and ``POST /api/auth/token/`` (bounded by hashing).

Needs PostgreSQL and Redis. Its own database (``bench_door``, recreated) and Redis db 5
(flushed; no other db is touched). Results: ``bench/results/door-<UTC stamp>.json``,
``.md`` and ``.svg``; the table is printed at the end. Exit 1 if a correctness check
failed (a refusal that was not a refusal, a 5xx, an oversold unit, a ledger mismatch,
an attempt left unanswered, an Entry row missing or extra for the 201s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import door_chart, door_wrk, limits
from bench import stack as stack_module
from bench.door_meter import Meter, tree
from bench.stack import (
    LOGS,
    RESULTS,
    ROOT,
    Stack,
    free_port,
    install_cleanup,
    raise_fd_limit,
    stop,
    wait_http,
)

SIGNIN_PASSWORD = "door-bench-pass-4711"
# PostgreSQL's backends flush their statistics at most once a second, and an idle one
# with some left waits PGSTAT_IDLE_INTERVAL (10 s) before it does: pg_stat_database is
# complete only that long after the last query.
PG_STATS_SETTLE_S = 11.0


def progress(text: str) -> None:
    print(f"[door {time.strftime('%H:%M:%S')}] {text}", flush=True)


# --- tools ----------------------------------------------------------------------------


def ensure_tools() -> None:
    """wrk and redis-benchmark, installed from Debian's packages by ``bench/setup`` if
    missing; a loud failure if that cannot be done."""
    missing = [tool for tool in ("wrk", "redis-benchmark") if shutil.which(tool) is None]
    if not missing:
        return
    progress(f"missing {', '.join(missing)}: running bench/setup")
    done = subprocess.run([str(ROOT / "bench" / "setup")])
    still = [tool for tool in ("wrk", "redis-benchmark") if shutil.which(tool) is None]
    if done.returncode != 0 or still:
        raise SystemExit(
            f"front door: needs {', '.join(still or missing)}; bench/setup could not install"
            " it (as root: apt-get install -y wrk redis-tools)"
        )


def export_code(rev: str) -> tuple[Path, str]:
    """The product's packages at ``rev`` in a temporary tree (``git archive``: the
    checkout, its index and its working tree are left as they are)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    target = Path(tempfile.mkdtemp(prefix=f"door-code-{commit}-"))
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    # The bench's own modules come from this checkout, never from the export.
    shutil.rmtree(target / "bench", ignore_errors=True)
    return target, commit


def code_label(rev: str | None) -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    if rev:
        return git("rev-parse", "--short", rev)
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench")
    return f"{head}+working tree" if dirty else head


# --- seed -----------------------------------------------------------------------------


def seed(
    *,
    door_buyers: int,
    spike_buyers: int,
    spike_units: int,
    admission_units: int,
    signin_users: int,
    entry_buyers: int = 0,
    entry_warmers: int = 0,
    draw_units: int = 500,
    entry_seconds: int = 3600,
) -> dict:
    """Buyers with tokens (bulk: unusable passwords, one Token row each), a few users
    who sign in with a password, one live stream with three drops; with entry buyers, a
    second live stream with one drop sold by draw (not pinned: its row pins it)."""

    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from inventory import services as inventory
    from livestream import services as live
    from shop.models import Product

    User = get_user_model()
    stamp = f"{int(time.time())}"
    host = User.objects.create_user(f"door-host-{stamp}")
    host.groups.add(Group.objects.get_or_create(name="hosts")[0])

    def buyers(prefix: str, n: int, ids: list[int] | None = None) -> list[str]:
        # "!" + anything is an unusable password (what set_unusable_password writes).
        users = User.objects.bulk_create(
            [User(username=f"{prefix}{stamp}-{i}", password=f"!door{i}") for i in range(n)],
            batch_size=2000,
        )
        tokens = Token.objects.bulk_create(
            [Token(user=u, key=Token.generate_key()) for u in users], batch_size=2000
        )
        if ids is not None:
            ids += [u.pk for u in users]
        return [t.key for t in tokens]

    door_tokens = buyers("d", door_buyers)
    spike_tokens = buyers("s", spike_buyers)
    entry_ids: list[int] = []
    entry_tokens = buyers("e", entry_buyers, entry_ids)
    warmer_tokens = buyers("w", entry_warmers)
    # One hash for every sign-in user (same password, same salt): hashing it once per
    # user would cost ~0.5 s each here.
    encoded = make_password(SIGNIN_PASSWORD)
    signin = User.objects.bulk_create(
        [User(username=f"signin{stamp}-{i}", password=encoded) for i in range(signin_users)]
    )
    product = Product.objects.create(name=f"Door {stamp}", slug=f"door-{stamp}")
    stream = live.stream_create(host=host, title=f"Door {stamp}", slug=f"door-{stamp}")
    live.stream_start(stream_id=stream.pk, actor=host)
    drops = {}
    for n, (name, units) in enumerate(
        (("sold_out", 1), ("admissions", admission_units), ("spike", spike_units))
    ):
        drops[name] = stack_module.stocked_drop(
            stream=stream, host=host, product=product, sku=f"D{stamp}-{n}", units=units
        )
    # The sold-out drop: pinned, its one unit reserved by the host's stand-in buyer.
    live.drop_pin(drop_id=drops["sold_out"].pk, actor=host)
    live.drop_reserve(
        drop_id=drops["sold_out"].pk,
        customer_id=User.objects.create_user(f"door-first-{stamp}").pk,
        quantity=1,
        idempotency_key="door-first",
    )
    # Settled here, not by the servers' worker: with --rev its tasks may have other names.
    inventory.allocation_settle_pending(allocation_id=drops["sold_out"].allocation_id)
    # The admissions drop sells without the stage; the spike's is pinned when it fires.
    inventory.allocation_open(allocation_id=drops["admissions"].allocation_id)
    draw_slug = ""
    if entry_buyers:
        # Its own stream: pinning it leaves the sold-out drop on its stage.
        draw_slug = f"door-draw-{stamp}"
        draw_stream = live.stream_create(host=host, title=f"Door draw {stamp}", slug=draw_slug)
        live.stream_start(stream_id=draw_stream.pk, actor=host)
        drops["draw"] = stack_module.stocked_drop(
            stream=draw_stream,
            host=host,
            product=product,
            sku=f"D{stamp}-draw",
            units=draw_units,
            mode="draw",
            entry_seconds=entry_seconds,
        )
    connection.close()
    return {
        "host_id": host.pk,
        "door_tokens": door_tokens,
        "spike_tokens": spike_tokens,
        "entry_tokens": entry_tokens,
        "entry_users": entry_ids,
        "warmer_tokens": warmer_tokens,
        "signin_users": [u.username for u in signin],
        "slug": stream.slug,
        "draw_slug": draw_slug,
        "drops": {name: d.pk for name, d in drops.items()},
        "allocations": {name: d.allocation_id for name, d in drops.items()},
    }


def wait_until(predicate, seconds: float, what: str) -> int:
    """Poll ``predicate`` every 0.1 s; returns how many times it was called."""
    deadline = time.monotonic() + seconds
    calls = 0
    while True:
        calls += 1
        if predicate():
            return calls
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {seconds:.0f} s")
        time.sleep(0.1)


def no_pending(allocation_id: int) -> bool:
    from inventory.models import Reservation

    return not Reservation.objects.filter(allocation_id=allocation_id, status="pending").exists()


# --- measurement ----------------------------------------------------------------------


class Bench:
    def __init__(self, args, stack: Stack, seed_data: dict, floor_port: int, floor_proc):
        self.args = args
        self.stack = stack
        self.seed = seed_data
        self.floor_port = floor_port
        self.floor_proc = floor_proc
        self.redis_pid = self._redis_pid()
        self.pg = self._pg()
        self.meter = Meter(
            {
                "web": lambda: tree(stack.web.pid),
                "floor": lambda: tree(floor_proc.pid),
                "celery": lambda: tree(stack.worker.pid),
                "redis": lambda: [self.redis_pid] if self.redis_pid else [],
                "pg": self.pg_backends,
            }
        )
        self.rows: dict[str, dict] = {}
        self.last_db_use = time.monotonic()

    # Redis and PostgreSQL, seen from outside the stack.
    def _redis_pid(self) -> int | None:
        import redis

        try:
            return int(redis.Redis.from_url(self.args.redis_url).info("server")["process_id"])
        except Exception:  # another host, or no permission: Redis CPU not reported
            return None

    def _pg(self):
        import psycopg

        # The statistics are read from the "postgres" database: these queries are not
        # counted in the bench's own database.
        url = self.args.database_url.rsplit("/", 1)[0] + "/postgres"
        return psycopg.connect(url, autocommit=True)

    def pg_backends(self) -> list[int]:
        rows = self.pg.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s"
            " AND backend_type = 'client backend'",
            (self.stack.database,),
        ).fetchall()
        return [r[0] for r in rows]

    def pg_counters(self) -> dict:
        row = self.pg.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted"
            " FROM pg_stat_database WHERE datname = %s",
            (self.stack.database,),
        ).fetchone()
        return dict(
            zip(("commits", "rollbacks", "inserted", "updated", "deleted"), row, strict=True)
        )

    def redis_commands(self) -> int:
        import redis

        return int(
            redis.Redis.from_url(self.args.redis_url).info("stats")["total_commands_processed"]
        )

    # One load run with its CPU.
    def wrk(
        self,
        name: str,
        url: str,
        load: door_wrk.Load,
        *,
        connections: int,
        seconds: float,
        count: int = 0,
        timeout_s: float = 30,
        limit: dict | None = None,
        keep: bool = True,
    ) -> dict:
        from django.db import connection

        connection.close()  # our own backend gone: the pg group is the stack's alone
        progress(
            f"{name}: wrk -c{connections} "
            + (f"{count} requests (cap {seconds:.0f} s)" if count else f"-d{seconds:.0f}s")
        )
        background = self.redis_background()
        before = self.meter.snapshot()
        commands = self.redis_commands()
        started = time.monotonic()
        result = door_wrk.run(
            url,
            load,
            threads=self.args.threads,
            connections=connections,
            seconds=seconds,
            count=count,
            timeout_s=timeout_s,
        )
        wall = time.monotonic() - started
        commands = self.redis_commands() - commands
        after = self.meter.snapshot()
        cpu = Meter.delta(before, after)
        self._net_of_background(result, cpu, commands, background, wall)
        self._cpu(result, cpu, result["answered"], result["redis_commands_net"])
        result["name"] = name
        result["limit"] = limit or {}
        if keep:
            self.rows[name] = result
        progress(
            f"{name}: {result['answered']} answers, {result['rate']}/s, p50 {result['p50_ms']:.1f}"
            f" ms, p99 {result['p99_ms']:.1f} ms, {result['answers']}"
        )
        return result

    def wait_celery_quiet(self, seconds: float = 30) -> None:
        meter = Meter({"celery": lambda: tree(self.stack.worker.pid)})
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            before = meter.snapshot()
            time.sleep(0.5)
            if Meter.delta(before, meter.snapshot())["celery"] < 0.02:
                return

    def redis_background(self, seconds: float = 1.0) -> dict:
        """What the shared Redis does while our stack idles (other people's tests use
        other dbs of it): CPU and commands per second over ``seconds``."""
        if not self.redis_pid:
            return {"cpu_per_s": 0.0, "commands_per_s": 0.0}
        meter = Meter({"redis": lambda: [self.redis_pid]})
        before, commands = meter.snapshot(), self.redis_commands()
        time.sleep(seconds)
        after, commands = meter.snapshot(), self.redis_commands() - commands
        return {
            "cpu_per_s": Meter.delta(before, after)["redis"] / seconds,
            "commands_per_s": commands / seconds,
        }

    @staticmethod
    def _net_of_background(
        result: dict, cpu: dict, commands: int, background: dict, wall: float
    ) -> None:
        result["redis_raw"] = {"cpu_s": round(cpu["redis"], 3), "commands": commands}
        result["redis_background"] = {k: round(v, 3) for k, v in background.items()}
        cpu["redis"] = max(0.0, cpu["redis"] - background["cpu_per_s"] * wall)
        result["redis_commands_net"] = max(0, round(commands - background["commands_per_s"] * wall))

    @staticmethod
    def _cpu(result: dict, cpu: dict, answered: int, redis_commands: int | None = None) -> None:
        per = max(answered, 1)
        groups = ("web", "floor", "celery", "redis", "pg")
        result["cpu_s"] = {g: round(cpu[g], 3) for g in groups}
        result["cpu_us_per_answer"] = {g: round(cpu[g] / per * 1e6, 1) for g in groups}
        client = result.get("wrk_cpu_s", result.get("client_cpu_s", 0.0))
        result["client_cpu_us_per_answer"] = round(client / per * 1e6, 1)
        wall = cpu["machine_wall_s"] or 1
        ours = sum(cpu[g] for g in groups) + client
        result["machine_busy_cores"] = round(cpu["machine_busy_s"] / wall, 2)
        result["others_cores"] = round(max(0.0, cpu["machine_busy_s"] - ours) / wall, 2)
        if redis_commands is not None:
            result["redis_commands_per_answer"] = round(redis_commands / per, 2)

    def warm(self, url: str, load: door_wrk.Load, count: int) -> dict:
        """Requests whose figures are no row: each token seen once, the drop's routing
        cached in every worker, Django's lazy imports done."""
        return door_wrk.run(
            url,
            load,
            threads=self.args.threads,
            connections=min(64, count),
            seconds=120,
            count=count,
            timeout_s=60,
        )

    # Rows.
    def reserve_url(self, drop: str) -> str:
        return f"{self.stack.base_url}/api/drops/{self.seed['drops'][drop]}/reservations/"

    def reserve_load(
        self, drop: str, tokens: list[str], plan: list[tuple[int, int]] | None = None
    ) -> door_wrk.Load:
        return door_wrk.Load(
            path=f"/api/drops/{self.seed['drops'][drop]}/reservations/",
            mode="spike" if plan else "reserve",
            tokens=tokens,
            nonce=f"{drop}{time.time_ns()}",
            plan=plan or [],
        )

    def floor(self, connections: int) -> dict:
        url = f"http://127.0.0.1:{self.floor_port}/"
        load = door_wrk.Load(path="/", tokens=self.seed["door_tokens"])
        return self.wrk(
            f"floor @{connections}", url, load, connections=connections, seconds=self.args.seconds
        )

    def gate_lua(self, sold_out: bool) -> dict:
        import resource

        name = "gate Lua, refusing" if sold_out else "gate Lua, admitting"
        progress(f"{name}: redis-benchmark EVALSHA x{self.args.gate_requests}")
        background = self.redis_background()
        before = self.meter.snapshot()
        commands = self.redis_commands()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        result = limits.gate_admissions_per_second(
            redis_url=self.args.redis_url, requests=self.args.gate_requests, sold_out=sold_out
        )
        wall = time.monotonic() - started
        after_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        after = self.meter.snapshot()
        result["client_cpu_s"] = (after_usage.ru_utime - usage.ru_utime) + (
            after_usage.ru_stime - usage.ru_stime
        )
        result.update(
            name=name,
            rate=result["calls_per_s"],
            answered=result["calls"],
            connections=result["clients"],
            wall_s=round(wall, 2),
            limit={},
        )
        commands = self.redis_commands() - commands
        cpu = Meter.delta(before, after)
        self._net_of_background(result, cpu, commands, background, wall)
        self._cpu(result, cpu, result["calls"], result["redis_commands_net"])
        self.rows[name] = result
        progress(f"{name}: {result['rate']:.0f} calls/s")
        return result

    def admissions(self) -> dict:
        from inventory.models import Reservation

        allocation = self.seed["allocations"]["admissions"]
        url = self.reserve_url("admissions")
        load = self.reserve_load("admissions", self.seed["door_tokens"])
        offset = time.time() - time.monotonic()
        before_celery = self.meter.snapshot()
        result = self.wrk(
            f"admissions @{self.args.connections}",
            url,
            load,
            connections=self.args.connections,
            seconds=self.args.admission_seconds,
            limit={"names": ["floor @64", "gate Lua, admitting"]},
        )
        ended = time.monotonic()
        wait_until(lambda: no_pending(allocation), 120, "admissions settled")
        drained = time.monotonic()
        # Every admission queued a reserve task; the late ones find nothing to settle
        # but cost CPU all the same: wait for the worker to go quiet before reading it.
        self.wait_celery_quiet()
        after_celery = self.meter.snapshot()
        self.last_db_use = time.monotonic()
        rows = list(
            Reservation.objects.filter(allocation_id=allocation).values_list(
                "created_at", "updated_at", "status"
            )
        )
        created = sorted(c.timestamp() - offset for c, _, _ in rows)
        held = sorted(u.timestamp() - offset for _, u, s in rows if s == "held")
        lags = sorted((u - c).total_seconds() for c, u, s in rows if s == "held")
        # Pending rows at each 0.1 s: admitted so far minus settled so far.
        backlog, i, j = [], 0, 0
        t = created[0] if created else ended
        while t <= max(held[-1] if held else t, ended) + 0.1:
            while i < len(created) and created[i] <= t:
                i += 1
            while j < len(held) and held[j] <= t:
                j += 1
            backlog.append((round(t, 2), i - j))
            t += 0.1
        celery = Meter.delta(before_celery, after_celery)["celery"]
        settle = {
            "admitted_rows": len(rows),
            "status_202": result["statuses"].get(202, 0),
            "held": len(held),
            "rejected": sum(1 for *_, s in rows if s == "rejected"),
            "lag_p50_ms": _pct_ms(lags, 0.5),
            "lag_p99_ms": _pct_ms(lags, 0.99),
            "lag_max_ms": round(lags[-1] * 1000, 1) if lags else None,
            "held_per_s": round(len(held) / (held[-1] - created[0]), 1) if len(held) > 1 else None,
            "max_backlog": max((b for _, b in backlog), default=0),
            "pending_when_load_ended": next((b for t, b in backlog if t >= ended), 0),
            "drained_after_load_s": round(max(0.0, (held[-1] if held else ended) - ended), 3),
            "poll_seen_drained_after_s": round(drained - ended, 2),
            "celery_cpu_s": round(celery, 3),
            "celery_cpu_us_per_hold": round(celery / max(len(held), 1) * 1e6, 1),
            "held_timeline": _timeline(held),
            "backlog": backlog,
        }
        # Keeps up: the last hold within a second of the last admission, and no backlog
        # larger than one second of admissions.
        rate = result["rate"] or 0
        settle["keeps_up"] = bool(
            held and settle["drained_after_load_s"] <= 1.0 and settle["max_backlog"] <= max(rate, 1)
        )
        result["settle"] = settle
        progress(
            f"admissions settled: {len(held)} held, lag p50 {settle['lag_p50_ms']} ms p99"
            f" {settle['lag_p99_ms']} ms, max backlog {settle['max_backlog']}, drained"
            f" {settle['drained_after_load_s']} s after the load"
        )
        return result

    def entries_url(self) -> str:
        return f"{self.stack.base_url}/api/drops/{self.seed['drops']['draw']}/entries/"

    def entries(self) -> list[dict]:
        """Entries into a draw, at each connection count: ``entries (new)``, every
        request a buyer who has not entered (a 201 comes only once its row is committed),
        then ``entries (again)``, the buyers who just entered entering again (200)."""
        from django.contrib.auth import get_user_model
        from django.db import connection

        from draws.models import Draw, Entry
        from livestream import services as live

        args = self.args
        drop_id = self.seed["drops"]["draw"]
        tokens, users = self.seed["entry_tokens"], self.seed["entry_users"]
        token_of = dict(zip(users, tokens, strict=True))
        url = self.entries_url()
        path = url.removeprefix(self.stack.base_url)
        conns = sorted({args.connections, args.wide_connections})
        share = len(tokens) // len(conns)
        host = get_user_model().objects.get(pk=self.seed["host_id"])
        live.drop_pin(drop_id=drop_id, actor=host)
        draw_id = Draw.objects.get(drop_id=drop_id).pk
        connection.close()
        # As for the refusals: each buyer's token seen once first (on the sold-out drop:
        # no entry), then the entry path itself warmed by buyers of its own.
        everyone = tokens + self.seed["warmer_tokens"]
        progress(f"entries: warm-up, each of {len(everyone)} entry tokens once, sold-out drop")
        self.warm(
            self.reserve_url("sold_out"), self.reserve_load("sold_out", everyone), len(everyone)
        )
        warmers = self.seed["warmer_tokens"]
        warm = self.warm(url, door_wrk.Load(path=path, tokens=warmers), len(warmers))
        # Not a row, but what the first entries into fresh workers were answered is kept.
        warmup = {
            "buyers": len(warmers),
            "connections": min(64, len(warmers)),
            "answers": warm["answers"],
            "p99_ms": warm["p99_ms"],
            "span_s": warm["span_s"],
        }
        progress(f"entries: warm-up answers {warm['answers']}")

        def counts() -> dict:
            from draws import window

            rows = Entry.objects.filter(draw_id=draw_id).count()
            connection.close()
            try:
                redis = {
                    "redis_accepted": window.window_count(draw_id=draw_id),
                    "redis_in_flight": window.window_in_flight(draw_id=draw_id),
                }
            except Exception as exc:  # the window's shape changed: reported, not fatal
                redis = {"redis_accepted": f"unreadable: {exc}", "redis_in_flight": None}
            return {"rows": rows, **redis}

        results, entered_by_conns = [], {}
        for index, c in enumerate(conns):
            part = slice(index * share, (index + 1) * share)
            before = counts()
            result = self.wrk(
                f"entries (new) @{c}",
                url,
                door_wrk.Load(path=path, tokens=tokens[part], nonce=f"enter{time.time_ns()}"),
                connections=c,
                seconds=args.seconds,
                # Never a buyer twice: at most one request per buyer of this row.
                count=len(tokens[part]),
                limit={"names": [f"floor @{c}", f"refusals @{c}"]},
            )
            after = counts()
            entered = list(
                Entry.objects.filter(draw_id=draw_id, customer_id__in=users[part]).values_list(
                    "customer_id", flat=True
                )
            )
            connection.close()
            entered_by_conns[c] = [token_of[u] for u in entered]
            statuses = result["statuses"]
            new_rows = after["rows"] - before["rows"]
            accepted = (
                after["redis_accepted"] - before["redis_accepted"]
                if isinstance(after["redis_accepted"], int)
                and isinstance(before["redis_accepted"], int)
                else None
            )
            checks = {
                "every request sent was answered": result["drained"]
                and result["answered"] == result["sent"],
                "no 5xx": not any(s >= 500 for s in statuses),
                "only 201": set(statuses) <= {201},
                "one Entry row per 201": new_rows == statuses.get(201, 0),
                "each buyer's row once": len(entered) == new_rows,
                "none left in flight in Redis": after["redis_in_flight"] == 0,
            }
            result["entries"] = {
                "kind": "new",
                "draw_id": draw_id,
                "warmup": warmup if index == 0 else None,
                "buyers": len(tokens[part]),
                "buyer_cap_reached": result["sent"] >= len(tokens[part]),
                "status_201": statuses.get(201, 0),
                "rows_before": before["rows"],
                # Above rows_before only after entries Redis accepted and that failed.
                "redis_accepted_before": before["redis_accepted"],
                "rows_added": new_rows,
                "redis_accepted_added": accepted,
                "redis_in_flight_after": after["redis_in_flight"],
                "checks": checks,
            }
            self.last_db_use = time.monotonic()
            progress(
                f"entries (new) @{c}: {statuses.get(201, 0)} 201s, {new_rows} rows written,"
                f" Redis accepted {accepted}, checks"
                f" {'ok' if all(checks.values()) else [k for k, v in checks.items() if not v]}"
            )
            results.append(result)
        for c in conns:
            again = entered_by_conns[c]
            if not again:
                progress(f"entries (again) @{c}: nobody entered in its new row; skipped")
                continue
            before = counts()
            result = self.wrk(
                f"entries (again) @{c}",
                url,
                door_wrk.Load(path=path, tokens=again, nonce=f"again{time.time_ns()}"),
                connections=c,
                seconds=args.seconds,
                limit={"names": [f"floor @{c}", f"refusals @{c}"]},
            )
            after = counts()
            statuses = result["statuses"]
            checks = {
                "every request sent was answered": result["drained"]
                and result["answered"] == result["sent"],
                "no 5xx": not any(s >= 500 for s in statuses),
                "only 200": set(statuses) <= {200},
                "no Entry row added": after["rows"] == before["rows"],
            }
            result["entries"] = {
                "kind": "again",
                "draw_id": draw_id,
                "buyers": len(again),
                "status_200": statuses.get(200, 0),
                "rows_before": before["rows"],
                "rows_added": after["rows"] - before["rows"],
                "checks": checks,
            }
            self.last_db_use = time.monotonic()
            progress(
                f"entries (again) @{c}: {statuses.get(200, 0)} 200s, checks"
                f" {'ok' if all(checks.values()) else [k for k, v in checks.items() if not v]}"
            )
            results.append(result)
        return results

    def spike(self) -> dict:
        from django.contrib.auth import get_user_model
        from django.db import connection
        from django.db.models import Sum

        from inventory.models import Allocation, Reservation, StockMovement
        from livestream import services as live

        args = self.args
        allocation_id = self.seed["allocations"]["spike"]
        # pg_stat_database is complete only PG_STATS_SETTLE_S after the last query.
        quiet = PG_STATS_SETTLE_S - (time.monotonic() - self.last_db_use)
        if quiet > 0:
            progress(f"spike: {quiet:.1f} s for PostgreSQL's statistics to settle")
            time.sleep(quiet)
        host = get_user_model().objects.get(pk=self.seed["host_id"])
        tables_before = table_counters()
        counters_before = self.pg_counters()
        offset = time.time() - time.monotonic()
        live.drop_pin(drop_id=self.seed["drops"]["spike"], actor=host)
        pinned = time.monotonic()
        connection.close()
        result = self.wrk(
            f"spike @{args.spike_connections}",
            self.reserve_url("spike"),
            self.reserve_load(
                "spike",
                self.seed["spike_tokens"],
                spike_plan(len(self.seed["spike_tokens"]), args.spike_attempts, args.spike_group),
            ),
            connections=args.spike_connections,
            seconds=args.spike_cap,
            count=args.spike_attempts,
            timeout_s=60,
            limit={"names": [f"floor @{args.spike_connections}", "gate Lua, refusing"]},
        )
        ended = time.monotonic()
        polls = wait_until(lambda: no_pending(allocation_id), 120, "spike settled")
        settled = time.monotonic()
        connection.close()
        time.sleep(PG_STATS_SETTLE_S)
        counters = self.pg_counters()
        tables = table_counters()
        delta = {k: counters[k] - counters_before[k] for k in counters}
        # Our own settle polls ran one query each in the bench's database, and the
        # table counters' read just before (right after another query, its statistics
        # are flushed late, inside the window): about one more.
        delta["commits"] -= polls + 1
        by_table = {
            name: {k: v - tables_before.get(name, {}).get(k, 0) for k, v in now.items()}
            for name, now in tables.items()
        }
        by_table = {n: d for n, d in by_table.items() if any(d.values())}

        allocation = Allocation.objects.get(pk=allocation_id)
        rows = Reservation.objects.filter(allocation_id=allocation_id)
        by_status = _count_by(rows.values_list("status", flat=True))
        active = sum(by_status.get(s, 0) for s in ("pending", "held", "confirmed"))
        held_rows = list(rows.filter(status="held").values_list("created_at", "updated_at"))
        lags = sorted((u - c).total_seconds() for c, u in held_rows)
        last_held = max((u.timestamp() - offset for _, u in held_rows), default=None)
        moves = StockMovement.objects.filter(allocation_id=allocation_id).aggregate(
            held=Sum("held_delta"), sold=Sum("sold_delta")
        )
        item = allocation.stock_item
        item_moves = StockMovement.objects.filter(stock_item_id=item.pk).aggregate(
            on_hand=Sum("on_hand_delta"), reserved=Sum("reserved_delta")
        )
        gate_remaining = None
        try:
            from inventory import gate

            state = gate.gate_read(allocation_id=allocation_id)
            gate_remaining = state.remaining if state else None
        except Exception as exc:  # the gate's shape changed: reported, not fatal
            gate_remaining = f"unreadable: {exc}"
        connection.close()
        units_sold = allocation.held + allocation.sold
        answered = result["answered"]
        statuses = result["statuses"]
        checks = {
            "every request sent was answered": result["drained"] and answered == result["sent"],
            "no 5xx": not any(s >= 500 for s in statuses),
            "only 202, 409, 429": set(statuses) <= {202, 409, 429},
            "held + sold <= units": units_sold <= args.spike_units,
            "pending + held + confirmed <= units": active <= args.spike_units,
            "one row per 202": rows.count() == statuses.get(202, 0),
            "ledger: allocation held, sold = sums of deltas": (moves["held"] or 0)
            == allocation.held
            and (moves["sold"] or 0) == allocation.sold,
            "ledger: stock on_hand, reserved = sums of deltas": (item_moves["on_hand"] or 0)
            == item.on_hand
            and (item_moves["reserved"] or 0) == item.reserved,
            "gate remaining = allocation remaining": gate_remaining == allocation.remaining,
        }
        decisions = statuses.get(202, 0) + statuses.get(409, 0) + statuses.get(429, 0)
        result["spike"] = {
            "units": args.spike_units,
            "buyers": len(self.seed["spike_tokens"]),
            "attempts": args.spike_attempts,
            "sent": result["sent"],
            "answered": answered,
            # Capacity, not correctness: the cap stops the sending, never an answer.
            "all_sent_within_cap": result["sent"] == args.spike_attempts,
            "decisions": decisions,
            "all_answered_after_s": round(result["last_answer"] - pinned, 3),
            "first_to_last_s": result["span_s"],
            "decisions_per_s": round(decisions / result["span_s"], 1) if result["span_s"] else None,
            "sold_out_after_s": round(last_held - pinned, 3) if last_held else None,
            "settled_after_load_s": round(settled - ended, 2),
            "units_sold": units_sold,
            "oversold": max(0, units_sold - args.spike_units),
            "rows_by_status": by_status,
            "to_held_p50_ms": _pct_ms(lags, 0.5),
            "to_held_p99_ms": _pct_ms(lags, 0.99),
            "gate_remaining": gate_remaining,
            "allocation_remaining": allocation.remaining,
            "db": delta,
            "db_commits_per_unit": round(delta["commits"] / max(units_sold, 1), 2),
            "db_rows_written_per_unit": round(
                (delta["inserted"] + delta["updated"] + delta["deleted"]) / max(units_sold, 1), 2
            ),
            "db_commits_per_decision": round(delta["commits"] / max(decisions, 1), 3),
            # Per table: scans (reads) and rows written, where the SQL went.
            "db_by_table": by_table,
            "checks": checks,
            "held_timeline": _timeline([u.timestamp() - offset for _, u in held_rows]),
        }
        progress(
            f"spike: {answered}/{args.spike_attempts} answered after"
            f" {result['spike']['all_answered_after_s']} s, sold {units_sold}, checks"
            f" {'ok' if all(checks.values()) else [k for k, v in checks.items() if not v]}"
        )
        return result

    def signin_hash_seconds(self) -> float:
        """The CPU of one password check in this process (the server runs the same
        hasher with the same settings)."""
        from django.contrib.auth.hashers import check_password, make_password

        encoded = make_password(SIGNIN_PASSWORD)
        # CPU time, not wall time: the box is shared, a hash's cost is its CPU.
        started = time.thread_time()
        check_password(SIGNIN_PASSWORD, encoded)
        return time.thread_time() - started


def table_counters() -> dict[str, dict[str, int]]:
    """Scans and row writes per table of the bench's database (pg_stat_user_tables)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, seq_scan, coalesce(idx_scan, 0), n_tup_ins, n_tup_upd, n_tup_del"
            " FROM pg_stat_user_tables"
        )
        rows = cursor.fetchall()
    connection.close()
    keys = ("seq_scan", "idx_scan", "inserted", "updated", "deleted")
    return {name: dict(zip(keys, values, strict=True)) for name, *values in rows}


def spike_plan(buyers: int, attempts: int, group: int = 1024) -> list[tuple[int, int]]:
    """Who sends each attempt, in order: (buyer, that buyer's attempt number). Buyers get
    ``attempts // buyers`` attempts, the remainder one more, spread evenly. Buyers come
    in groups of ``group``: each of them taps, then each taps again, so that any prefix
    of the plan (a run stopped by its cap) has the whole spike's mix of first and repeat
    attempts. With a group larger than the connections, a buyer's next attempt is sent
    after the previous one was answered (a viewer who taps again on seeing the answer),
    not beside it in flight."""
    base, extra = divmod(attempts, buyers)
    counts = [base + ((b + 1) * extra // buyers - b * extra // buyers) for b in range(buyers)]
    plan = []
    for start in range(0, buyers, group):
        members = range(start, min(start + group, buyers))
        for round_ in range(max(counts[b] for b in members)):
            plan += [(b, round_) for b in members if counts[b] > round_]
    return plan


def _count_by(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _pct_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def _timeline(times: list[float]) -> dict:
    """Events per 0.1 s bucket (monotonic seconds)."""
    out: dict[float, int] = {}
    for t in times:
        b = round(int(t / door_wrk.BUCKET_S) * door_wrk.BUCKET_S, 1)
        out[b] = out.get(b, 0) + 1
    return dict(sorted(out.items()))


# --- report ---------------------------------------------------------------------------

TABLE_HEAD = (
    "| row | conns | answers/s | limit | limit /s | x limit | p50 ms | p99 ms"
    " | web CPU µs | Redis µs | Redis cmds | PG µs | Celery µs | wrk µs | other cores"
    " | answers |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _num(value, digits: int = 0) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def table(rows: dict[str, dict]) -> str:
    lines = [TABLE_HEAD]
    for name, r in rows.items():
        limit_names = r.get("limit", {}).get("names", [])
        limits_ = [(n, rows[n]["rate"]) for n in limit_names if n in rows and rows[n].get("rate")]
        cpu = r.get("cpu_us_per_answer", {})
        server = "floor" if name.startswith("floor") else "web"
        answers = r.get("answers") or {}
        if not answers and "calls" in r:
            answers = {"sold_out" if r.get("sold_out") else "admitted": r["calls"]}
        shown = ", ".join(f"{k.strip()}: {v:,}" for k, v in sorted(answers.items()))
        for index, (limit_name, limit_rate) in enumerate(limits_ or [(None, None)]):
            head = index == 0
            lines.append(
                "| "
                + " | ".join(
                    [
                        name if head else "",
                        str(r.get("connections", "")) if head else "",
                        _num(r.get("rate"), 1 if (r.get("rate") or 0) < 100 else 0) if head else "",
                        limit_name or "",
                        _num(limit_rate, 1 if (limit_rate or 0) < 100 else 0),
                        f"{r['rate'] / limit_rate:.3f}" if limit_rate and r.get("rate") else "",
                        _num(r.get("p50_ms"), 1) if head else "",
                        _num(r.get("p99_ms"), 1) if head else "",
                        _num(cpu.get(server), 0) if head and "p50_ms" in r else "",
                        _num(cpu.get("redis"), 1) if head else "",
                        _num(r.get("redis_commands_per_answer"), 1) if head else "",
                        _num(cpu.get("pg"), 0) if head and "p50_ms" in r else "",
                        _num(cpu.get("celery"), 0) if head and "p50_ms" in r else "",
                        _num(r.get("client_cpu_us_per_answer"), 1) if head else "",
                        _num(r.get("others_cores"), 2) if head else "",
                        shown if head else "",
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def details(rows: dict[str, dict], meta: dict) -> str:
    out = []
    adm = next((r for n, r in rows.items() if n.startswith("admissions")), None)
    if adm:
        s = adm["settle"]
        out.append(
            f"- admissions: {s['status_202']:,} answered 202 at {adm['rate']:,.0f}/s over"
            f" {adm['span_s']:.1f} s; the worker held {s['held']:,} ({s['held_per_s']}/s),"
            f" rejected {s['rejected']}; pending -> held lag p50 {s['lag_p50_ms']} ms, p99"
            f" {s['lag_p99_ms']} ms, max {s['lag_max_ms']} ms; largest backlog"
            f" {s['max_backlog']} pending, {s['pending_when_load_ended']} when the load"
            f" ended, last hold {s['drained_after_load_s']} s after it; Celery"
            f" {s['celery_cpu_us_per_hold']:,.0f} µs CPU per hold. Settle keeps up:"
            f" {'yes' if s['keeps_up'] else '**no**'}."
        )
    spike = next((r for n, r in rows.items() if n.startswith("spike")), None)
    if spike:
        s = spike["spike"]
        failed = [k for k, v in s["checks"].items() if not v]
        out.append(
            f"- spike: {s['attempts']:,} attempts by {s['buyers']:,} buyers on {s['units']}"
            f" units, {spike['connections']} connections: "
            + (
                f"every attempt answered {s['all_answered_after_s']} s after the pin"
                if s["all_sent_within_cap"] and s["answered"] == s["attempts"]
                else f"**only {s['sent']:,} sent within the {spike['seconds_asked']:.0f} s"
                f" cap** ({s['answered']:,} answered, the last"
                f" {s['all_answered_after_s']} s after the pin; all of them would take about"
                f" {s['attempts'] / max(s['decisions_per_s'] or 1, 1):.0f} s at this rate)"
            )
            + f" ({s['decisions_per_s']:,} decisions/s, p50 {spike['p50_ms']:.0f} ms, p99"
            f" {spike['p99_ms']:.0f} ms); sold out {s['sold_out_after_s']} s after the pin;"
            f" to held p50 {s['to_held_p50_ms']} ms, p99 {s['to_held_p99_ms']} ms; rows"
            f" {s['rows_by_status']}; sold {s['units_sold']} of {s['units']}, oversold"
            f" {s['oversold']}; gate remaining {s['gate_remaining']}, allocation remaining"
            f" {s['allocation_remaining']}."
        )
        out.append(
            f"- spike, database (`pg_stat_database`, our own polls taken off):"
            f" {s['db']['commits']:,} commits, {s['db']['inserted']:,} rows inserted,"
            f" {s['db']['updated']:,} updated, {s['db']['deleted']:,} deleted:"
            f" {s['db_commits_per_unit']} commits and {s['db_rows_written_per_unit']} rows"
            f" written per unit sold, {s['db_commits_per_decision']} commits per decision."
        )
        tables = sorted(
            s.get("db_by_table", {}).items(),
            key=lambda item: -(item[1]["seq_scan"] + item[1]["idx_scan"]),
        )
        if tables:
            out.append(
                "- spike, by table (scans; rows written): "
                + ", ".join(
                    f"`{name}` {d['seq_scan'] + d['idx_scan']:,};"
                    f" {d['inserted'] + d['updated'] + d['deleted']:,}"
                    for name, d in tables[:8]
                )
                + "."
            )
        out.append(
            "- spike checks: "
            + ("all passed" if not failed else "**FAILED**: " + "; ".join(failed))
            + " ("
            + "; ".join(s["checks"])
            + ")."
        )
    shown_gap = 0  # Redis's count of accepted entries minus the rows, last said
    for name, r in rows.items():
        if not name.startswith("entries"):
            continue
        e = r["entries"]
        warmup = e.get("warmup")
        if warmup:
            fives = sum(n for k, n in warmup["answers"].items() if k.startswith("5"))
            out.append(
                f"- entries, warm-up (not a row): the first {warmup['buyers']} entries into"
                f" the fresh workers, {warmup['connections']} connections, answered "
                + ", ".join(f"{k.strip()}: {n:,}" for k, n in sorted(warmup["answers"].items()))
                + f" in {warmup['span_s']:.1f} s (p99 {warmup['p99_ms']:,.0f} ms)"
                + (f"; **{fives} 5xx**" if fives else "")
                + "."
            )
        failed = [k for k, v in e["checks"].items() if not v]
        verdict = "checks passed" if not failed else "**checks FAILED**: " + "; ".join(failed)
        if e["kind"] == "new":
            out.append(
                f"- {name}: {e['status_201']:,} answered 201 at {r['rate']:,.0f}/s over"
                f" {r['span_s']:.1f} s by {e['buyers']:,} buyers who had not entered"
                + (
                    " (**every one of them sent**: the row ended by count, not time)"
                    if e["buyer_cap_reached"]
                    else ""
                )
                + f"; Entry rows +{e['rows_added']:,} (Redis accepted"
                f" +{e['redis_accepted_added']}, in flight after"
                f" {e['redis_in_flight_after']}); {verdict}."
            )
            drift = e.get("redis_accepted_before")
            gap = drift - e["rows_before"] if isinstance(drift, int) else 0
            if gap != shown_gap:
                shown_gap = gap
                out.append(
                    f"- {name}, before it: Redis had counted {drift:,} entries accepted for"
                    f" {e['rows_before']:,} Entry rows (accepted entries whose write then"
                    " failed stay in its count)."
                )
        else:
            out.append(
                f"- {name}: {e['status_200']:,} answered 200 at {r['rate']:,.0f}/s, the"
                f" {e['buyers']:,} buyers who entered at the same connections, in turn;"
                f" Entry rows +{e['rows_added']}; {verdict}."
            )
    sign = next((r for n, r in rows.items() if n.startswith("sign-in")), None)
    if sign and sign.get("rate"):
        bound = meta["signin_bound_per_s"]
        out.append(
            f"- sign-in: {sign['rate']:.1f}/s, mean {sign['mean_ms']:,.0f} ms; one password"
            f" check takes {meta['hash_s'] * 1000:.0f} ms of a core here, so"
            f" {meta['cores']} cores bound it at {bound:.1f}/s"
            f" ({sign['rate'] / bound:.2f}x of that)."
        )
    return "\n".join(out)


def correctness(rows: dict[str, dict]) -> list[str]:
    problems = []
    for name, r in rows.items():
        statuses = r.get("statuses", {})
        if any(s >= 500 for s in statuses):
            problems.append(f"{name}: 5xx {statuses}")
        errors = r.get("socket_errors", {})
        if any(errors.get(k) for k in ("connect", "read", "write")):
            problems.append(f"{name}: socket errors {errors}")
        if "drained" in r and not (r["drained"] and r["answered"] == r["sent"]):
            problems.append(f"{name}: {r['sent'] - r['answered']} requests sent, never answered")
        if name.startswith("refusals"):
            codes = {k.strip() for k in r["answers"]}
            if not codes <= {"409 sold_out", "429 throttled"}:
                problems.append(f"{name}: not only refusals: {r['answers']}")
        if name.startswith("admissions"):
            if set(statuses) - {202, 429}:
                problems.append(f"{name}: {r['answers']}")
            if r["settle"]["admitted_rows"] != statuses.get(202, 0):
                problems.append(
                    f"{name}: {r['settle']['admitted_rows']} rows for {statuses.get(202, 0)} 202s"
                )
        if name.startswith("spike"):
            problems += [f"spike: {k}" for k, v in r["spike"]["checks"].items() if not v]
        if name.startswith("entries"):
            problems += [f"{name}: {k}" for k, v in r["entries"]["checks"].items() if not v]
    return problems


# --- main -----------------------------------------------------------------------------


def parse(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bench_door")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--rev", help="run the servers on this commit's code (git archive)")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--celery", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--wide-connections", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=4, help="each duration row")
    parser.add_argument(
        "--door-buyers",
        type=int,
        default=1000,
        help="buyers for refusals and admissions (tokens warmed first)",
    )
    parser.add_argument("--admission-units", type=int, default=1_000_000)
    parser.add_argument("--admission-seconds", type=float, default=5)
    parser.add_argument("--spike-units", type=int, default=500)
    parser.add_argument("--spike-buyers", type=int, default=20_000)
    parser.add_argument("--spike-attempts", type=int, default=50_000)
    parser.add_argument("--spike-connections", type=int, default=256)
    parser.add_argument(
        "--spike-group",
        type=int,
        default=1024,
        help="buyers per group: a buyer's next attempt comes after the group's (spike_plan)",
    )
    parser.add_argument(
        "--spike-cap",
        type=float,
        default=150,
        help="seconds of sending at most (then every answer is waited for)",
    )
    parser.add_argument(
        "--entry-buyers",
        type=int,
        default=6_000,
        help="buyers who enter the draw, shared out between the entries (new) rows; each"
        " row sends for --seconds or until each of its buyers has sent one entry",
    )
    parser.add_argument(
        "--entry-warmers", type=int, default=256, help="buyers who enter first, as a warm-up"
    )
    parser.add_argument("--draw-units", type=int, default=500)
    parser.add_argument(
        "--entry-seconds", type=int, default=3600, help="the draw's entry window (10-3600)"
    )
    parser.add_argument("--signin-users", type=int, default=5)
    parser.add_argument("--signin-connections", type=int, default=8)
    parser.add_argument("--signin-count", type=int, default=12, help="sign-ins sent")
    parser.add_argument("--signin-seconds", type=float, default=20, help="at most")
    parser.add_argument("--gate-requests", type=int, default=60_000)
    # All of wrk's traffic comes from 127.0.0.1: the product's per-IP rates (600/min to
    # reserve, 30/min to sign in) would turn nearly every request into a 429. Lifted
    # here, explicitly; the throttles still run (and count) on every request.
    parser.add_argument("--throttle-reserve-user", default="1000000/min")
    parser.add_argument("--throttle-reserve-ip", default="100000000/min")
    parser.add_argument("--throttle-auth-ip", default="1000000/min")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=("admissions", "spike", "stream", "signin", "healthz", "refusals", "entries"),
    )
    parser.add_argument("--label", default="")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    ensure_tools()
    raise_fd_limit()
    install_cleanup()
    started = time.monotonic()
    code_dir = None
    label = code_label(args.rev)
    if args.rev:
        code_dir, _ = export_code(args.rev)
        stack_module.use_code(code_dir)
        progress(f"servers run {args.rev} ({label}) from {code_dir}")
    else:
        progress(f"servers run this checkout ({label})")

    stack = Stack(
        database_url=args.database_url,
        redis_url=args.redis_url,
        port=free_port(),
        web_workers=args.web_workers,
        celery=args.celery,
    )
    stack.prepare()
    throttles = {
        "THROTTLE_RESERVE_USER": args.throttle_reserve_user,
        "THROTTLE_RESERVE_IP": args.throttle_reserve_ip,
        "THROTTLE_AUTH_IP": args.throttle_auth_ip,
    }
    stack.env.update(throttles)
    os.environ.update(throttles)
    floor_proc = None
    try:
        progress(f"fresh database {stack.database}, Redis {args.redis_url}")
        stack.fresh_database()
        entry_buyers = 0 if "entries" in args.skip else args.entry_buyers + args.entry_warmers
        progress(
            f"seeding {args.door_buyers + args.spike_buyers + entry_buyers:,} buyers with tokens"
        )
        t = time.monotonic()
        seed_data = seed(
            door_buyers=args.door_buyers,
            spike_buyers=args.spike_buyers,
            spike_units=args.spike_units,
            admission_units=args.admission_units,
            signin_users=args.signin_users,
            entry_buyers=0 if "entries" in args.skip else args.entry_buyers,
            entry_warmers=0 if "entries" in args.skip else args.entry_warmers,
            draw_units=args.draw_units,
            entry_seconds=args.entry_seconds,
        )
        seeded_s = time.monotonic() - t
        progress(
            f"seeded in {seeded_s:.1f} s; starting uvicorn x{args.web_workers}, Celery"
            f" x{args.celery} and the floor"
        )
        stack.start()
        floor_port = free_port()
        floor_proc = stack.uvicorn(
            floor_port, args.web_workers, "floor.log", app="bench.floor_app:app"
        )
        wait_http(f"http://127.0.0.1:{floor_port}/healthz", 30, floor_proc)
        wait_until(
            lambda: no_pending(seed_data["allocations"]["sold_out"]),
            30,
            "the sold-out drop's one hold",
        )
        bench = Bench(args, stack, seed_data, floor_port, floor_proc)
        meta = run_rows(bench, args, seed_data)
    finally:
        progress("stopping the stack")
        if floor_proc is not None:
            stop(floor_proc)
        stack.stop()
        stack_module.stop_all()
        if code_dir is not None:
            shutil.rmtree(code_dir, ignore_errors=True)

    rows = bench.rows
    problems = correctness(rows)
    when = datetime.now(UTC)
    stamp = when.strftime("%Y%m%dT%H%M%SZ") + (f"-{args.label}" if args.label else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = RESULTS / f"door-{stamp}"
    settings_line = (
        f"code {label}; {args.web_workers} uvicorn workers, Celery x{args.celery}; wrk"
        f" -t{args.threads}; {os.cpu_count()} cores shared with everything else on the box;"
        f" throttles THROTTLE_RESERVE_USER={args.throttle_reserve_user},"
        f" THROTTLE_RESERVE_IP={args.throttle_reserve_ip},"
        f" THROTTLE_AUTH_IP={args.throttle_auth_ip} (all load from 127.0.0.1)"
    )
    svg = door_chart.render(rows, title=f"front door, {label}, {when:%Y-%m-%d %H:%M} UTC")
    base.with_suffix(".svg").write_text(svg)
    verdict = (
        "correctness: every refusal a refusal, no 5xx, no socket errors, every request sent"
        " was answered; spike: oversold 0, one row per 202, ledger and gate consistent;"
        " entries: one Entry row per 201, none in flight after, entering again only 200"
        " and no row"
        if not problems
        else "CORRECTNESS FAILED: " + "; ".join(problems)
    )
    spike = next((r["spike"] for n, r in rows.items() if n.startswith("spike")), None)
    if spike and not spike["all_sent_within_cap"]:
        verdict += (
            f"\n\ncapacity: the spike's cap ({args.spike_cap:.0f} s) stopped the sending after"
            f" {spike['sent']:,} of {spike['attempts']:,} attempts (not a correctness failure)"
        )
    md = (
        f"# Front door, {when:%Y-%m-%d %H:%M} UTC\n\n{settings_line}\n\n{table(rows)}\n\n"
        f"{details(rows, meta)}\n\n{verdict}\n\n![timeline and latency]({base.name}.svg)\n"
    )
    base.with_suffix(".md").write_text(md)
    document = {
        "when": when.isoformat(timespec="seconds"),
        "code": label,
        "seconds": round(time.monotonic() - started, 1),
        "args": vars(args),
        "settings": settings_line,
        "meta": meta,
        "correct": not problems,
        "problems": problems,
        "rows": {n: {k: v for k, v in r.items() if k not in ("tokens",)} for n, r in rows.items()},
    }
    base.with_suffix(".json").write_text(json.dumps(document, indent=1, default=str) + "\n")
    print()
    print(settings_line)
    print(table(rows))
    print(details(rows, meta))
    print(verdict)
    print(f"written: {base}.md, .json, .svg (logs: {LOGS}); {document['seconds']:.0f} s")
    return 0 if not problems else 1


def run_rows(bench: Bench, args, seed_data: dict) -> dict:
    """Every row, DB-heavy ones first so that PostgreSQL's statistics have settled by
    the spike (it needs them whole)."""
    meta: dict = {"cores": os.cpu_count()}
    c, wide = args.connections, args.wide_connections
    door = seed_data["door_tokens"]
    sold_out_url = bench.reserve_url("sold_out")
    need_refusal_warmup = "refusals" not in args.skip or "admissions" not in args.skip
    if need_refusal_warmup:
        progress(f"warm-up: each of {len(door)} door tokens once, on the sold-out drop")
        bench.warm(sold_out_url, bench.reserve_load("sold_out", door), len(door))
    if "admissions" not in args.skip:
        bench.admissions()
    if "stream" not in args.skip:
        url = f"{bench.stack.base_url}/api/streams/{seed_data['slug']}/"
        load = door_wrk.Load(path=f"/api/streams/{seed_data['slug']}/", mode="get")
        bench.warm(url, load, 200)
        bench.wrk(
            f"GET stream @{c}",
            url,
            load,
            connections=c,
            seconds=args.seconds,
            limit={"names": [f"floor @{c}", f"GET /healthz @{c}"]},
        )
    if "signin" not in args.skip:
        meta["hash_s"] = round(bench.signin_hash_seconds(), 4)
        meta["signin_bound_per_s"] = round(meta["cores"] / meta["hash_s"], 2)
        load = door_wrk.Load(
            path="/api/auth/token/",
            mode="token",
            users=seed_data["signin_users"],
            password=SIGNIN_PASSWORD,
        )
        bound = "password hashing (cores / one check)"
        bench.rows[bound] = {
            "name": bound,
            "rate": meta["signin_bound_per_s"],
            "answers": {},
            "computed": True,
        }
        bench.wrk(
            f"sign-in @{args.signin_connections}",
            f"{bench.stack.base_url}/api/auth/token/",
            load,
            connections=args.signin_connections,
            seconds=args.signin_seconds,
            count=args.signin_count,
            timeout_s=60,
            limit={"names": [bound]},
        )
        bench.last_db_use = time.monotonic()
    if "healthz" not in args.skip:
        url = f"{bench.stack.base_url}/healthz"
        load = door_wrk.Load(path="/healthz", mode="get")
        bench.warm(url, load, 200)
        bench.wrk(
            f"GET /healthz @{c}",
            url,
            load,
            connections=c,
            seconds=args.seconds,
            limit={"names": [f"floor @{c}"]},
        )
    if "refusals" not in args.skip:
        for conns in (c, wide):
            bench.wrk(
                f"refusals @{conns}",
                sold_out_url,
                bench.reserve_load("sold_out", door),
                connections=conns,
                seconds=args.seconds,
                limit={"names": [f"floor @{conns}", "gate Lua, refusing"]},
            )
    if "entries" not in args.skip:
        bench.entries()
    bench.warm(f"http://127.0.0.1:{bench.floor_port}/", door_wrk.Load(path="/", tokens=door), 2000)
    for conns in sorted({c, wide, args.spike_connections}):
        bench.floor(conns)
    bench.gate_lua(sold_out=True)
    bench.gate_lua(sold_out=False)
    if "spike" not in args.skip:
        bench.spike()
    # The order a reader wants: limits first, then the rows.
    order = [n for n in bench.rows if n.startswith(("floor", "gate", "GET /healthz", "password"))]
    order += [n for n in bench.rows if n not in order]
    bench.rows = {n: bench.rows[n] for n in order}
    # Limits the rows named but which this run measured under another name.
    return meta


if __name__ == "__main__":
    sys.exit(main())
