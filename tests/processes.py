"""Real processes for end-to-end tests: the ASGI server (uvicorn) and a Celery worker,
started against the test database and the test Redis, and always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The URL of the database the tests use right now (the test database)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.postgresql":
        user = db.get("USER") or "postgres"
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        host = db.get("HOST") or "127.0.0.1"
        port = db.get("PORT") or 5432
        return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


def child_env(**overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DB_POOL_MAX_SIZE": "0",
        "PYTHONUNBUFFERED": "1",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        # Tests that want a real worker say so (and start one).
        "CELERY_TASK_ALWAYS_EAGER": "true",
    }
    env.update(overrides)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_file(name: str):
    """Child output goes to a file: a pipe nobody reads would block a chatty child."""
    return tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)


def output_of(process: subprocess.Popen) -> str:
    return Path(process.log_path).read_text(errors="replace")


def _stop(process: subprocess.Popen, *, timeout: float = 10) -> str:
    """Stop the child (SIGTERM, then SIGKILL) and return what it printed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return output_of(process)


@dataclass
class Server:
    process: subprocess.Popen
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@contextmanager
def asgi_server(*, workers: int = 1, **env: str) -> Iterator[Server]:
    port = free_port()
    log = _log_file("uvicorn")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            # As the service runs (scripts/run, the image).
            "--no-proxy-headers",
            "--ws-per-message-deflate",
            "false",
            "--ws-max-size",
            "16384",
        ],
        cwd=ROOT,
        env=child_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log_path = log.name
    server = Server(process=process, port=port)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ASGI server exited early:\n{_stop(process)}")
            try:
                with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ASGI server did not come up:\n{_stop(process)}")
            time.sleep(0.1)
        yield server
    finally:
        _stop(process)


@contextmanager
def celery_worker(
    *, concurrency: int = 2, queue: str = "celery", loglevel: str = "WARNING", **env: str
) -> Iterator[subprocess.Popen]:
    """A real worker process (prefork pool) consuming the test broker."""
    from config.celery import app

    hostname = f"test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    log = _log_file("celery")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "--queues",
            queue,
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            hostname,
        ],
        cwd=ROOT,
        env=child_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its pool children get the signals too
    )
    process.hostname = hostname
    process.log_path = log.name
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[hostname], timeout=0.5):
            if process.poll() is not None:
                raise RuntimeError(f"Celery worker exited early:\n{output_of(process)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Celery worker did not answer:\n{output_of(process)}")
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_until(predicate, *, timeout: float = 20, interval: float = 0.05, message: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or "condition not met in time")
        time.sleep(interval)


def reserve_over_http(
    server: Server, drop_id: int, token: str, *, quantity: int = 1, timeout: float = 10, **headers
) -> httpx.Response:
    """One reserve request to a running server, as a client sends it: its token, a fresh
    idempotency key, and any other ``headers``."""
    with httpx.Client(base_url=server.base_url, timeout=timeout) as http:
        return http.post(
            f"/api/drops/{drop_id}/reservations/",
            json={"quantity": quantity},
            headers={
                "Authorization": f"Token {token}",
                "Idempotency-Key": str(uuid.uuid4()),
                **headers,
            },
        )


def burst_with_a_fault(
    base_url: str, tokens: list[str], send, *, tries: int, during, timeout: float = 15
) -> list[tuple[str, httpx.Response]]:
    """Every token's client sends ``tries`` requests at once (``send(http, token)``, on
    its own connection); ``during`` runs once one is answered (a kill, a wipe). Returns
    (token, response) for every answer received: a request the server died under has
    none, and was promised nothing."""
    answers: list[tuple[str, httpx.Response]] = []
    answered = threading.Event()
    lock = threading.Lock()

    def client(token: str) -> None:
        with httpx.Client(base_url=base_url, timeout=timeout) as http:
            for _ in range(tries):
                try:
                    response = send(http, token)
                except httpx.HTTPError:
                    continue
                with lock:
                    answers.append((token, response))
                answered.set()

    threads = [threading.Thread(target=client, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    assert answered.wait(timeout=30), "no request was answered"
    during()
    for thread in threads:
        thread.join(timeout=60)
    return answers
