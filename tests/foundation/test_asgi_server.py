"""The real ASGI server, as a process, over real HTTP and a real websocket."""

import json

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.processes import asgi_server


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), asgi_server() as running:
        yield running


def test_http_health_and_readiness(server):
    assert httpx.get(f"{server.base_url}/healthz").json() == {"status": "ok"}

    ready = httpx.get(f"{server.base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


def test_openapi_schema_is_served(server):
    response = httpx.get(f"{server.base_url}/api/schema/", headers={"Accept": "application/json"})

    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


def test_websocket_upgrade_answers(server):
    with connect(f"{server.ws_url}/ws/healthz/", origin="http://127.0.0.1", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"type": "ok"}
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "pong"}


def test_websocket_compression_offered_by_a_client_is_declined(server):
    # Browsers always offer permessage-deflate; accepted, it costs a compressor per
    # viewer (the benchmark measured +43 KB per viewer and twice the delivery latency).
    with connect(f"{server.ws_url}/ws/healthz/", compression="deflate", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"type": "ok"}
        assert ws.protocol.extensions == []


def test_websocket_from_a_foreign_origin_is_refused(server):
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{server.ws_url}/ws/healthz/", origin="https://evil.example", open_timeout=5)

    assert refused.value.response.status_code == 403


def test_admin_static_files_are_served(server):
    response = httpx.get(f"{server.base_url}/static/admin/css/base.css")

    assert response.status_code == 200
    assert "text/css" in response.headers["content-type"]


def test_the_asgi_server_tunes_the_garbage_collector_for_a_big_heap(settings):
    import gc

    import config.asgi  # noqa: F401 (importing it applies the tuning)

    assert gc.get_threshold() == tuple(settings.ASGI_GC_THRESHOLDS)
    assert settings.ASGI_GC_THRESHOLDS[2] >= 100  # full collections made rare
    assert gc.get_freeze_count() > 0  # the framework's objects are never walked again
