"""The alert rules, the Prometheus config and the Grafana dashboard in the repository
are valid, and every figure they name is one that a scrape serves."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

# The reserve requests' instruments, as the web process loads them (config.asgi).
import monitoring.asgi  # noqa: F401
from tests.monitoring.helpers import (
    DASHBOARD,
    GRAFANA,
    PROMETHEUS,
    dashboard_panels,
    dashboard_queries,
    tool,
)

DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
NAME = re.compile(r"\bliveshop_[a-z0-9_]+")
# What a family's samples are called besides its own name (counters, histograms).
SUFFIXES = ("", "_total", "_created", "_bucket", "_sum", "_count")


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    done = subprocess.run(
        [tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_alert_rules_pass_promtool():
    assert "SUCCESS" in _promtool("check", "rules", "rules.yml")


def test_the_alerts_fire_on_their_series_and_not_before():
    assert "SUCCESS" in _promtool("test", "rules", "rules_test.yml")


def test_the_compose_prometheus_config_passes_promtool():
    _promtool("check", "config", "--syntax-only", "prometheus.yml")


def test_the_dashboard_is_grafana_json_on_the_provisioned_datasource():
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]

    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = list(dashboard_panels(dashboard))
    assert panels
    for panel in panels:
        assert panel["description"], panel["title"]  # the question it answers
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # No two panels overlap on the grid.
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def _named_in_rules_and_dashboard() -> set[str]:
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    exprs += dashboard_queries()
    return {name for expr in exprs for name in NAME.findall(expr)}


@pytest.mark.django_db
def test_every_figure_a_panel_or_rule_names_is_in_a_scrape(client):
    scraped = client.get("/metrics")
    assert scraped.status_code == 200
    served = {
        family.name + suffix
        for family in text_string_to_metric_families(scraped.content.decode())
        for suffix in SUFFIXES
    }

    named = _named_in_rules_and_dashboard()

    assert len(named) > 15
    assert named - served == set()
