"""The full local stack for the benchmarks: a fresh database, seed data, uvicorn and a
Celery worker, always stopped again (also on Ctrl-C, SIGTERM and errors).

Every child is started in its own session, so stopping it signals its whole process
group (uvicorn's workers, Celery's pool) and nothing is left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOGS = RESULTS / "logs"
# The product code the stack runs: this checkout, unless a bench asks for another tree
# (``use_code``: e.g. an export of a commit, to measure it while this one changes).
CODE = ROOT


def use_code(path: Path) -> None:
    """Run the stack's processes (and this process's Django) from ``path``, a tree with
    the product's packages and no ``bench/``; the bench modules stay this checkout's."""
    global CODE
    CODE = Path(path).resolve()


# Every child this process started and has not stopped yet.
_children: list[subprocess.Popen] = []


def stocked_drop(*, stream, host, product, sku: str, units: int, **sale):
    """A drop of ``units`` on ``stream``, carved from a new variant restocked with as many
    (through the services, as the host); ``sale`` goes to ``drop_create`` as it is (a draw:
    ``mode="draw", entry_seconds=...``)."""
    from inventory import services as inventory
    from livestream import services as live
    from shop.models import Variant

    variant = Variant.objects.create(product=product, sku=sku, price=Decimal("10.00"))
    item = inventory.stock_item_ensure(variant_id=variant.pk)
    inventory.stock_restock(stock_item_id=item.pk, quantity=units)
    return live.drop_create(
        stream_id=stream.pk,
        variant_id=variant.pk,
        quantity=units,
        price=Decimal("10.00"),
        per_viewer_limit=None,
        actor=host,
        **sale,
    )


def raise_fd_limit() -> int:
    """Let this process (and the children it starts, which inherit it) hold as many
    sockets as the hard limit allows: thousands of websockets need thousands of fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def spawn(args: list[str], *, env: dict[str, str], log: str, **kwargs) -> subprocess.Popen:
    LOGS.mkdir(parents=True, exist_ok=True)
    if CODE != ROOT:
        # The product from CODE (the working directory comes first on sys.path), the
        # bench's own modules (bench.floor_app) from this checkout.
        env = {**env, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        args,
        cwd=CODE,
        env=env,
        stdout=kwargs.pop("stdout", None) or open(LOGS / log, "w"),  # noqa: SIM115 (child owns it)
        stderr=kwargs.pop("stderr", subprocess.STDOUT),
        start_new_session=True,
        **kwargs,
    )
    _children.append(process)
    return process


def stop(process: subprocess.Popen, *, timeout: float = 15) -> None:
    """SIGTERM the child's process group, SIGKILL it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # The group may outlive its leader (a pool child): make sure it is gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process in _children:
        _children.remove(process)


def stop_all() -> None:
    for process in list(reversed(_children)):
        stop(process, timeout=5)


def _on_signal(signum, frame):
    # Unwinds through every ``finally`` (which stop the children), then exits.
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


def wait_http(url: str, seconds: float = 60, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[:4]} exited early (see {LOGS})")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def wait_log_words(
    process: subprocess.Popen, log: str, word: str, count: int, seconds: float = 60
) -> None:
    """Wait until the child's log holds ``word`` ``count`` times (each of its processes
    announcing it is ready): a fixed sleep is too short on a loaded box. Counted
    anywhere, not per line: processes sharing a log may interleave their lines."""
    deadline = time.monotonic() + seconds
    path = LOGS / log
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:4]} exited early: {_tail(path)}")
        with contextlib.suppress(OSError):
            if path.read_text().count(word) >= count:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{process.args[:4]} not ready after {seconds:.0f} s: {_tail(path)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def free_port() -> int:
    """A port nobody listens on now (the kernel's pick), for a helper server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kb(pids: list[int]) -> int:
    """Resident memory of these processes together (VmRSS), in KiB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                found += map(int, children)
                todo += map(int, children)
    return found


def listening_server_pids(port: int) -> list[int]:
    """With ``--reuse``: the processes whose command line runs uvicorn on this port."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            if any(b"uvicorn" in part for part in cmd) or any(
                b"multiprocessing" in part for part in cmd
            ):
                pids.append(int(proc.name))
    # uvicorn's workers are multiprocessing children of the master: keep those only.
    masters = [p for p in pids if str(port).encode() in Path(f"/proc/{p}/cmdline").read_bytes()]
    return masters + [d for m in masters for d in descendants(m)]


@dataclass
class Seed:
    host_token: str
    buyer_tokens: list[str]
    stream_slug: str
    stream_id: int
    spike_drop: int
    fanout_drop: int
    hot_allocation: int
    # An open allocation with a unit for each of these customers, for the settle backlog.
    backlog_allocation: int
    backlog_customers: list[int]


@dataclass
class Stack:
    database_url: str
    redis_url: str
    port: int = 8765
    web_workers: int = 2
    # With ws_workers > 0, websockets get their own uvicorn processes on ws_port (as a
    # proxy would route /ws/ in production) and HTTP keeps web_workers processes.
    ws_workers: int = 0
    ws_port: int = 0
    celery: int = 2
    reuse: bool = False
    env: dict[str, str] = field(default_factory=dict)
    web: subprocess.Popen | None = None
    ws: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port if self.ws_workers else self.port}"

    @property
    def database(self) -> str:
        return self.database_url.rsplit("/", 1)[1]

    def prepare(self) -> None:
        """The environment every process of the stack runs with; Django set up here."""
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            # (web workers + Celery processes) x pool size stays under max_connections.
            "DB_POOL_MAX_SIZE": "8",
            # All load comes from one address and few users: lift the per-IP and per-user
            # rates and the cap of active holds (a bench buyer holds many).
            "THROTTLE_RESERVE_USER": "1000000/min",
            "THROTTLE_RESERVE_IP": "100000000/min",
            "RESERVATION_MAX_ACTIVE_PER_CUSTOMER": "100000",
            # Every viewer connects from 127.0.0.1.
            "WS_MAX_CONNECTIONS_PER_ADDRESS": "0",
            "CELERY_TASK_ALWAYS_EAGER": "false",
        }
        os.environ.update(self.env)
        sys.path.insert(0, str(CODE))
        import django

        django.setup()

    def fresh_database(self) -> None:
        import redis

        for cmd in ("dropdb", "createdb"):
            extra = ["--if-exists"] if cmd == "dropdb" else []
            subprocess.run(
                [cmd, "-h", "127.0.0.1", "-U", "postgres", *extra, self.database], check=True
            )
        # Only this db of Redis, never the others.
        redis.Redis.from_url(self.redis_url).flushdb()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def seed(self, *, buyers: int, spike_units: int, fanout_units: int) -> Seed:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.db import connection
        from rest_framework.authtoken.models import Token

        from inventory import services as inventory
        from livestream import services as live
        from shop.models import Product

        stamp = f"{int(time.time())}"  # unique names, so --reuse can seed again
        User = get_user_model()
        host = User.objects.create_user(f"bench-host-{stamp}")
        host.groups.add(Group.objects.get_or_create(name="hosts")[0])
        users = User.objects.bulk_create([User(username=f"b{stamp}-{i}") for i in range(buyers)])
        tokens = Token.objects.bulk_create(
            [Token(user=u, key=f"{stamp}{u.pk:030d}"[-40:]) for u in users]
        )
        product = Product.objects.create(name=f"Bench {stamp}", slug=f"bench-{stamp}")
        stream = live.stream_create(host=host, title=f"Bench {stamp}", slug=f"bench-{stamp}")
        live.stream_start(stream_id=stream.pk, actor=host)
        drops = []
        hot = 1_000_000  # pgbench's row (the most one restock allows): enough for minutes
        backlog = len(users)
        for n, units in enumerate((spike_units, fanout_units, hot, backlog)):
            drops.append(
                stocked_drop(
                    stream=stream, host=host, product=product, sku=f"B{stamp}-{n}", units=units
                )
            )
        seed = Seed(
            host_token=Token.objects.create(user=host).key,
            buyer_tokens=[t.key for t in tokens],
            stream_slug=stream.slug,
            stream_id=stream.pk,
            spike_drop=drops[0].pk,
            fanout_drop=drops[1].pk,
            hot_allocation=drops[2].allocation_id,
            backlog_allocation=drops[3].allocation_id,
            backlog_customers=[u.pk for u in users],
        )
        # The backlog's drop sells without being pinned on stage.
        inventory.allocation_open(allocation_id=drops[3].allocation_id)
        connection.close()
        return seed

    def start(self) -> None:
        if self.reuse:
            wait_http(f"{self.base_url}/healthz", 5)
            return
        self.web = self.uvicorn(self.port, self.web_workers, "web.log")
        if self.ws_workers:
            self.ws_port = self.ws_port or free_port()
            self.ws = self.uvicorn(self.ws_port, self.ws_workers, "ws.log")
        self.worker = spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--concurrency",
                str(self.celery),
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
            ],
            # The production configuration: workers drop the pool themselves
            # (config/celery.py; this benchmark found why).
            env=self.env,
            log="worker.log",
        )
        wait_http(f"{self.base_url}/healthz", 60, self.web)
        if self.ws is not None:
            wait_http(f"http://127.0.0.1:{self.ws_port}/healthz", 60, self.ws)
        from config.celery import app

        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline or self.worker.poll() is not None:
                raise RuntimeError(f"the Celery worker did not answer (see {LOGS})")

    def uvicorn(
        self, port: int, workers: int, log: str, *, app: str = "config.asgi:application"
    ) -> subprocess.Popen:
        """uvicorn serving ``app`` (the service unless told) with the stack's settings."""
        return spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--lifespan",
                "off",
                # Room for the connect storm of thousands of viewers.
                "--backlog",
                "8192",
                # As the service runs: browsers offer compression, we decline it, and a
                # client's websocket message is capped before it is buffered.
                "--no-proxy-headers",
                "--ws-per-message-deflate",
                "false",
                "--ws-max-size",
                "16384",
            ],
            env=self.env,
            log=log,
        )

    def server_pids(self) -> list[int]:
        """The uvicorn processes serving websockets (the workers, or the one process)."""
        server = self.ws if self.ws_workers else self.web
        if server is None:
            return listening_server_pids(self.ws_port if self.ws_workers else self.port)
        workers = descendants(server.pid)
        # With --workers, the master only supervises: its workers hold the sockets.
        return workers or [server.pid]

    def stop(self) -> None:
        for process in (self.web, self.ws, self.worker):
            if process is not None:
                stop(process)
        self.web = self.ws = self.worker = None
