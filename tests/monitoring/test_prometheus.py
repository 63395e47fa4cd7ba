"""A real Prometheus (Debian's, beside promtool) scrapes the real stack with the
repository's own config and rules: every target is up, the alert rules load and
evaluate, and every query the dashboard draws is valid PromQL that Prometheus answers,
the main ones with the figures the stack serves."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from rest_framework.authtoken.models import Token

from inventory.models import Reservation
from tests.factories import UserFactory, live_drop
from tests.monitoring.helpers import PROMETHEUS, TOKEN, dashboard_queries, scraped_stack, tool
from tests.processes import free_port, reserve_over_http, wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.celery_worker,
    pytest.mark.server,
]


def _config_for(tmp: Path, *, web: str, worker: str) -> Path:
    """The compose profile's config, pointed at these processes: the same jobs, paths
    and bearer token file, scraped every second so that a test can wait for rates."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    token_file = tmp / "metrics_token"
    token_file.write_text(TOKEN)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS / "rules.yml")]
    targets = {"web": web, "worker": worker}
    for job in config["scrape_configs"]:
        job["authorization"]["credentials_file"] = str(token_file)
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def _prometheus(config: Path, tmp: Path):
    port = free_port()
    log = open(tmp / "prometheus.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: process.poll() is not None or _get(f"{url}/-/ready") is not None,
            timeout=30,
            message="Prometheus did not come up",
        )
        assert process.poll() is None, (tmp / "prometheus.log").read_text()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()
    except OSError:
        return None


def _api(base: str, path: str, **params: str) -> dict:
    body = _get(f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}")
    assert body is not None, path
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return answer["data"]


def _query(base: str, expr: str) -> list[dict]:
    return _api(base, "query", query=expr)["result"]


@pytest.mark.django_db(transaction=True)
def test_prometheus_scrapes_the_stack_and_answers_every_panel_and_rule(
    celery_through_broker, tmp_path
):
    drop = live_drop(quantity=2, title="Scraped")
    buyers = [Token.objects.create(user=UserFactory()).key for _ in range(3)]
    with scraped_stack(tmp_path, worker_concurrency=1) as stack:
        server = stack.server
        statuses = [reserve_over_http(server, drop.pk, key).status_code for key in buyers]
        assert sorted(statuses) == [202, 202, 409]
        wait_until(
            lambda: not Reservation.objects.filter(status="pending").exists(),
            message="the admitted requests were never settled",
        )
        config = _config_for(
            tmp_path, web=f"127.0.0.1:{server.port}", worker=f"127.0.0.1:{stack.worker_port}"
        )
        with _prometheus(config, tmp_path) as prometheus:
            # Both jobs scraped, through the token, without an error.
            targets = wait_until(
                lambda: _all_up(prometheus), timeout=30, message="a target was never scraped"
            )
            assert {t["labels"]["job"] for t in targets} == {"web", "worker"}, targets
            # A few scrapes each, so that rates have points to work from.
            wait_until(
                lambda: _scrapes_each(prometheus) >= 3, timeout=30, message="too few scrapes"
            )

            # The rules file loaded, and each rule evaluated without an error.
            groups = wait_until(
                lambda: _rules_evaluated(prometheus),
                timeout=30,
                message="the rules were never evaluated",
            )
            rules = [rule for group in groups for rule in group["rules"]]
            assert len(rules) >= 8
            assert [r["name"] for r in rules if r["health"] != "ok"] == [], rules
            # A healthy stack raises no alert.
            assert [r["name"] for r in rules if r["state"] == "firing"] == []

            # Every panel's query is valid PromQL that Prometheus answers...
            panels = {expr: _query(prometheus, expr) for expr in dashboard_queries()}
            # ...and those of the stock show the stack's figures, once each, although
            # two processes are scraped: the worker serves its own counters only.
            label = str(drop.pk)
            assert _value(panels["max(liveshop_drops_live)"]) == 1
            assert _value(panels["max by (drop) (liveshop_drop_units_held)"], drop=label) == 2
            assert _value(panels["max by (drop) (liveshop_drop_units_left)"], drop=label) == 0
            assert _value(panels["sum(max by (drop) (liveshop_holds_pending))"]) == 0
            assert _query(prometheus, '{__name__=~"liveshop_drop.*", job="worker"}') == []
            gate = f'sum by (outcome) (liveshop_gate_decisions_total{{drop="{label}"}}) > 0'
            decided = _query(prometheus, gate)
            assert {r["metric"]["outcome"]: float(r["value"][1]) for r in decided} == {
                "admitted": 2.0,
                "sold_out": 1.0,
            }
            reserves = 'sum by (status) (liveshop_reserve_requests_total{job="web"})'
            assert {
                r["metric"]["status"]: float(r["value"][1]) for r in _query(prometheus, reserves)
            } == {"202": 2.0, "409": 1.0}
            held = 'sum(liveshop_reservation_changes_total{job="worker", status="held"})'
            assert _value(_query(prometheus, held)) == 2


def _all_up(prometheus: str) -> list[dict] | None:
    active = _api(prometheus, "targets")["activeTargets"]
    return active if active and all(t["health"] == "up" for t in active) else None


def _scrapes_each(prometheus: str) -> int:
    counts = _query(prometheus, "count_over_time(up[1m])")
    return min((int(r["value"][1]) for r in counts), default=0)


def _rules_evaluated(prometheus: str) -> list[dict] | None:
    """The rule groups once every rule has been evaluated (a rule never evaluated has
    the zero time, year 1)."""
    groups = _api(prometheus, "rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    done = rules and all(not r["lastEvaluation"].startswith("0001") for r in rules)
    return groups if done else None


def _value(result: list[dict], **labels: str) -> float:
    """The one series' value (with these labels)."""
    assert len(result) == 1, result
    assert labels.items() <= result[0]["metric"].items(), result
    return float(result[0]["value"][1])
