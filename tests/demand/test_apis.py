"""The readiness and demand reports over HTTP: who may read them, their content, CSV."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import DropDemandFactory, StreamFactory, UserFactory, stream_drop

pytestmark = pytest.mark.django_db


def _client(user=None) -> APIClient:
    api = APIClient()
    if user is not None:
        api.force_authenticate(user)
    return api


@pytest.fixture
def stream():
    return StreamFactory(slug="friday", title="Friday", expected_viewers=1000)


@pytest.fixture
def sold_out_drop(stream):
    drop = stream_drop(stream=stream, quantity=50, on_hand=80)
    opened = timezone.now() - timedelta(hours=1)
    DropDemandFactory(
        drop=drop,
        supply=50,
        sold=48,
        held=2,
        attempts=400,
        viewers_tried=170,
        buyers=50,
        admitted_units=50,
        viewers_turned_away=100,
        turned_away_sold_out=300,
        waitlist_joined=40,
        waitlist_only=10,
        waitlist_waiting=30,
        viewers_at_pin=1500,
        peak_viewers=2100,
        pinned_at=opened,
        opened_at=opened,
        sold_out_at=opened + timedelta(seconds=95),
        closed_at=opened + timedelta(minutes=10),
    )
    return drop


@pytest.mark.parametrize("report", ["readiness", "demand"])
def test_reports_need_a_signed_in_user(stream, report):
    response = _client().get(f"/api/streams/{stream.slug}/{report}/")

    assert (response.status_code, response.json()["code"]) == (401, "not_authenticated")


@pytest.mark.parametrize("report", ["readiness", "demand"])
def test_reports_are_for_the_host_and_staff_only(stream, report):
    stranger = _client(UserFactory()).get(f"/api/streams/{stream.slug}/{report}/")
    host = _client(stream.host).get(f"/api/streams/{stream.slug}/{report}/")
    staff = _client(UserFactory(is_staff=True)).get(f"/api/streams/{stream.slug}/{report}/")

    assert (stranger.status_code, stranger.json()["code"]) == (403, "permission_denied")
    assert "drops" not in stranger.json()
    assert (host.status_code, staff.status_code) == (200, 200)


@pytest.mark.parametrize("report", ["readiness", "demand"])
def test_reports_of_an_unknown_stream_are_not_found(report):
    response = _client(UserFactory(is_staff=True)).get(f"/api/streams/nope/{report}/")

    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_an_error_stays_json_when_csv_was_asked_for(stream):
    response = _client(UserFactory()).get(f"/api/streams/{stream.slug}/demand/?format=csv")

    assert response.status_code == 403
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == "permission_denied"


def test_the_readiness_report_answers_per_planned_drop(stream):
    host = stream.host
    for _ in range(4):  # past drops: 10 % of viewers wanted them
        DropDemandFactory(
            drop=stream_drop(stream=StreamFactory(host=host), quantity=20),
            viewers_at_pin=500,
            buyers=20,
            admitted_units=20,
            viewers_turned_away=25,
            waitlist_only=5,
        )
    drop = stream_drop(stream=stream, quantity=60, on_hand=200)

    body = _client(host).get(f"/api/streams/{stream.slug}/readiness/").json()

    assert (body["slug"], body["confidence"], body["expected_viewers"]["basis"]) == (
        "friday",
        0.9,
        "declared",
    )
    assert (body["rate"]["value"], body["rate"]["basis"], body["rate"]["drops"]) == (
        0.1,
        "history",
        4,
    )
    (row,) = body["drops"]
    assert (row["drop"], row["quantity"], row["stock_on_hand"], row["stock_free"]) == (
        drop.pk,
        60,
        200,
        140,
    )
    assert row["expected_demand"]["value"] == 100.0
    assert (row["verdict"], row["shortfall"], row["problems"]) == (
        "short",
        40,
        ["demand_exceeds_drop"],
    )
    assert row["cover"] == "Add 40 units to the drop; 140 free in stock."


def test_the_demand_report_shows_supply_sales_unmet_demand_and_timing(stream, sold_out_drop):
    unmeasured = stream_drop(stream=stream, quantity=5)

    body = _client(stream.host).get(f"/api/streams/{stream.slug}/demand/").json()

    assert [r["drop"] for r in body["drops"]] == [sold_out_drop.pk, unmeasured.pk]
    measured, pending = body["drops"]
    assert {k: measured[k] for k in ("supply", "sold", "unmet_demand", "total_demand")} == {
        "supply": 50,
        "sold": 48,
        "unmet_demand": 110,  # 100 turned away + 10 who only queued
        "total_demand": 160,
    }
    assert (measured["seconds_to_sell_out"], measured["viewers_at_pin"]) == (95.0, 1500)
    assert (measured["peak_viewers"], measured["demand_per_viewer"]) == (2100, 0.1067)
    assert (pending["measured"], pending["supply"], pending["unmet_demand"]) == (False, 5, None)


def test_the_demand_report_as_csv(stream, sold_out_drop):
    response = _client(stream.host).get(f"/api/streams/{stream.slug}/demand/?format=csv")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="friday-demand.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 1
    row = rows[0]
    assert (row["drop"], row["supply"], row["sold"], row["unmet_demand"]) == (
        str(sold_out_drop.pk),
        "50",
        "48",
        "110",
    )
    assert (row["seconds_to_sell_out"], row["viewers_at_pin"], row["final"]) == (
        "95.0",
        "1500",
        "True",
    )
    assert row["sold_out_at"].endswith("+00:00")


def test_the_demand_report_as_csv_by_accept_header(stream, sold_out_drop):
    response = _client(stream.host).get(
        f"/api/streams/{stream.slug}/demand/", HTTP_ACCEPT="text/csv"
    )

    assert response["Content-Type"].startswith("text/csv")
    assert response.content.decode().splitlines()[0].startswith("drop,sku,product,measured")


@pytest.mark.parametrize("fmt", ["", "xml"])
def test_an_unknown_format_is_bad_input(stream, fmt):
    response = _client(stream.host).get(f"/api/streams/{stream.slug}/demand/?format={fmt}")

    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    assert response.json()["errors"] == {"format": ["Use json or csv."]}
