"""The monitoring files of the repository and the tools that check them, and the real
stack as Prometheus scrapes it: two uvicorn workers and a Celery worker, each kind with
its own multiprocess directory, serving figures only with a token."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.processes import Server, asgi_server, celery_worker, free_port

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "monitoring" / "prometheus"
GRAFANA = ROOT / "monitoring" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "live-event.json"
TOKEN = "scrape-token-for-tests"


def tool(name: str) -> str:
    """The path of a Debian tool the checks run (promtool, prometheus). Missing, the
    test is skipped with the command that installs it, or fails under
    ``REQUIRE_SERVICES`` (CI), as the browser tests do."""
    path = shutil.which(name)
    if path is None:
        reason = f"needs {name}: run scripts/install-tools"
        if REQUIRE_SERVICES:
            pytest.fail(f"REQUIRE_SERVICES is set but a tool is missing: {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def dashboard_panels(dashboard: dict):
    """The dashboard's panels, those inside rows included."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard_panels(dashboard) for target in panel["targets"]]


@dataclass
class ScrapedStack:
    server: Server
    worker_port: int

    @property
    def web_metrics(self) -> str:
        return f"{self.server.base_url}/metrics"

    @property
    def worker_metrics(self) -> str:
        return f"http://127.0.0.1:{self.worker_port}/metrics"


@contextmanager
def scraped_stack(
    tmp_path: Path, *, worker_concurrency: int, **web_env: str
) -> Iterator[ScrapedStack]:
    """Needs ``celery_through_broker``: the test's own ``.delay()`` calls reach the worker."""
    web_dir, worker_dir = tmp_path / "web", tmp_path / "worker"
    web_dir.mkdir()
    worker_dir.mkdir()
    worker_port = free_port()
    # No network is allowed: a scrape needs the token, as in the compose profile.
    scrape_only = {"METRICS_ALLOWED_NETWORKS": "10.255.255.0/24", "METRICS_TOKEN": TOKEN}
    with (
        celery_worker(
            concurrency=worker_concurrency,
            PROMETHEUS_MULTIPROC_DIR=str(worker_dir),
            METRICS_WORKER_PORT=str(worker_port),
            **scrape_only,
        ),
        asgi_server(
            workers=2,
            CELERY_TASK_ALWAYS_EAGER="false",
            PROMETHEUS_MULTIPROC_DIR=str(web_dir),
            **scrape_only,
            **web_env,
        ) as server,
    ):
        yield ScrapedStack(server, worker_port)
