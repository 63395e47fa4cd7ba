"""The figures Prometheus scrapes: served only to the networks or token allowed, and
consistent with what happened, summed across several web and worker processes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token
from websockets.sync.client import connect

from inventory import gate, services
from inventory.models import Reservation
from monitoring.exporter import scrape_allowed
from tests.factories import UserFactory, live_drop
from tests.inventory.helpers import open_primed
from tests.inventory.invariants import assert_inventory_invariants
from tests.monitoring.helpers import TOKEN, scraped_stack
from tests.processes import reserve_over_http, wait_until

# --- who may scrape -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "authorization", "allowed"),
    [
        ("127.0.0.1", None, True),
        ("::1", None, True),
        ("203.0.113.9", None, False),
        ("203.0.113.9", f"Bearer {TOKEN}", True),
        ("203.0.113.9", "Bearer wrong", False),
        ("203.0.113.9", f"Token {TOKEN}", False),  # only a bearer token
        ("not an address", None, False),
        (None, None, False),
    ],
)
def test_a_scrape_is_allowed_from_the_networks_or_with_the_token(
    settings, address, authorization, allowed
):
    settings.METRICS_TOKEN = TOKEN

    assert scrape_allowed(address, authorization) is allowed


@pytest.mark.django_db
def test_the_view_refuses_an_address_not_allowed_with_a_json_code(client, settings):
    settings.METRICS_TOKEN = ""

    refused = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    served = client.get("/metrics")

    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert served.status_code == 200
    assert "liveshop_drops_live" in served.content.decode()


# --- the real stack ---------------------------------------------------------------


def _scrape(url: str, *, token: str | None = TOKEN) -> dict[tuple[str, tuple], float]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.celery_worker
@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_a_small_spike_moves_the_figures_consistently_across_processes(
    celery_through_broker, tmp_path
):
    drop = live_drop(quantity=5, title="Metrics")
    stream = drop.stream
    buyers = [Token.objects.create(user=UserFactory()).key for _ in range(12)]

    def sockets_open(samples) -> float:
        # One series per web process (its pid), summed.
        return sum(v for (name, _), v in samples.items() if name == "liveshop_ws_connections")

    with scraped_stack(
        tmp_path, worker_concurrency=2, DB_POOL_MAX_SIZE="4", METRICS_POOL_SAMPLE_SECONDS="0.2"
    ) as stack:
        server, web, worker = stack.server, stack.web_metrics, stack.worker_metrics
        # Neither serves a client outside the networks without the token.
        for url in (web, worker):
            with pytest.raises(urllib.error.HTTPError) as refused:
                _scrape(url, token=None)
            assert refused.value.code == 403
            assert json.loads(refused.value.read())["code"] == "forbidden"

        with contextlib.ExitStack() as held_open:
            sockets = [
                held_open.enter_context(connect(f"{server.ws_url}/ws/streams/{stream.slug}/"))
                for _ in range(4)
            ]
            for socket in sockets:
                assert json.loads(socket.recv(timeout=10))["type"] == "stream.state"
            # Four sockets, however the two processes share them: summed.
            wait_until(lambda: sockets_open(_scrape(web)) == 4)

            def reserve(token):
                return reserve_over_http(server, drop.pk, token).status_code

            with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
                statuses = list(pool.map(reserve, buyers))
            wait_until(
                lambda: not Reservation.objects.filter(status="pending").exists(),
                message="the admitted requests were never settled",
            )
            accepted, refused_409 = statuses.count(202), statuses.count(409)
            assert (accepted, refused_409) == (5, 7), statuses

        on_web = wait_until(
            lambda: (s := _scrape(web)) and sockets_open(s) == 0 and s,
            message="the sockets closed were still counted",
        )
        on_worker = _scrape(worker)

    label = str(drop.pk)
    admitted = _value(on_web, "liveshop_gate_decisions_total", drop=label, outcome="admitted")
    held = _value(on_worker, "liveshop_reservation_changes_total", status="held")
    rejected = _value(on_worker, "liveshop_reservation_changes_total", status="rejected")
    # Every admission at the gate was settled by the worker into a hold or a rejection.
    assert admitted == held + rejected == 5
    assert _value(on_web, "liveshop_gate_decisions_total", drop=label, outcome="sold_out") == 7
    # The requests as the clients saw them, from whichever of the two processes.
    assert _value(on_web, "liveshop_reserve_requests_total", status="202") == accepted
    assert _value(on_web, "liveshop_reserve_requests_total", status="409") == refused_409
    assert _value(on_web, "liveshop_reserve_request_duration_seconds_count") == 12
    # Read from the rows at scrape time.
    assert _value(on_web, "liveshop_drops_live") == 1
    assert _value(on_web, "liveshop_drop_units_held", drop=label) == 5
    assert _value(on_web, "liveshop_drop_units_left", drop=label) == 0
    assert _value(on_web, "liveshop_holds_pending", drop=label) == 0
    # The worker settled in batches, each counted once.
    assert _value(on_worker, "liveshop_settle_batch_size_sum") == 5
    assert _value(on_worker, "liveshop_settle_batch_size_count") >= 1
    assert _value(on_web, "liveshop_ws_deliveries_total") > 0
    assert _value(on_worker, "liveshop_settle_lag_seconds_count") >= 1
    # Each web process's pool, sampled: open connections, none waiting once it is quiet.
    pools = [
        value
        for (name, labels), value in on_web.items()
        if name == "liveshop_db_pool_connections" and ("state", "open") in labels
    ]
    assert pools and sum(pools) >= 1
    assert ("liveshop_db_pool_waits_total", ()) in on_web
    assert_inventory_invariants()


@pytest.mark.django_db
@pytest.mark.redis
@pytest.mark.usefixtures("gate_on")
def test_a_gate_the_reconcile_finds_missing_or_drifted_is_counted_by_reason():
    def repairs(reason):
        return REGISTRY.get_sample_value("liveshop_gate_repairs_total", {"reason": reason}) or 0

    allocation = open_primed(4)
    missing, drifted = repairs("missing"), repairs("drifted")

    gate.gate_delete(allocation_id=allocation.pk)
    assert services.gate_reconcile(allocation_id=allocation.pk)
    state = gate.gate_read(allocation_id=allocation.pk)
    state = gate.GateState(**{**state.__dict__, "remaining": state.remaining - 1})
    gate.gate_write(allocation_id=allocation.pk, state=state)
    assert services.gate_reconcile(allocation_id=allocation.pk)
    assert not services.gate_reconcile(allocation_id=allocation.pk)  # in step now

    assert (repairs("missing"), repairs("drifted")) == (missing + 1, drifted + 1)
