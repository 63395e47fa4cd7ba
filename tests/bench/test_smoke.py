"""The benchmark at its smoke size, so that it cannot rot: the one documented command
(``bench/run.py --smoke``) on the real stack, asserting only the correctness line.
Timing goals live in the benchmark's own table, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.processes import ROOT, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.server]

# Its own database and Redis db: never the test suite's (test_*, db 1) nor a full run's.
SMOKE_DATABASE = "bench_smoke"
SMOKE_REDIS_DB = 7


def _smoke_urls() -> tuple[str, str]:
    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    redis_base = settings.REDIS_URL.rsplit("/", 1)[0]
    return (
        f"postgres://{user}{password}@{host}:{port}/{SMOKE_DATABASE}",
        f"{redis_base}/{SMOKE_REDIS_DB}",
    )


def test_the_smoke_run_sells_no_unit_twice_answers_everyone_and_reaches_every_viewer(tmp_path):
    database_url, redis_url = _smoke_urls()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    completed = subprocess.run(
        [
            sys.executable,
            str(Path(ROOT) / "bench" / "run.py"),
            "--smoke",
            "--database-url",
            database_url,
            "--redis-url",
            redis_url,
            "--port",
            str(port),
            "--results",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    [result] = tmp_path.glob("bench-*.json")
    document = json.loads(result.read_text())
    assert document["correct"] is True
    results = document["results"]

    spike = results["spike"]
    assert spike["oversold"] == 0
    assert spike["held_plus_sold"] == spike["units"]  # sold out, exactly
    assert spike["answered"] == spike["requests"]
    assert spike["status_5xx"] == 0

    fanout = results["fanout"]
    viewers = document["config"]["viewers"]
    assert fanout["connect"]["connected"] == viewers
    for phase in ("fanout", "coalesce", "coalesce_direct"):
        assert fanout[phase]["oversold"] == 0
        assert fanout[phase]["buyers"]["answered"] == fanout[phase]["buyers"]["requests"]
        assert fanout[phase]["saw_final"] == viewers
        assert fanout[phase]["closes"] == {}  # nobody was dropped as too slow
    ceiling = results["ceiling"]
    assert ceiling["connect"]["connected"] == viewers, ceiling["connect"]
    assert ceiling["saw_final"] == viewers
    # Every figure was measured and set beside its limit.
    for limit in ("healthz", "gate", "pgbench"):
        assert results[limit]
    assert "| fan-out: deliveries/s |" in completed.stdout
