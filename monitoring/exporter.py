"""Serving the figures: ``/metrics`` for the web processes, a port of its own for a
Celery worker; both only to the addresses or the bearer token the settings allow."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitoring.registry import scrape_registry

logger = logging.getLogger(__name__)


def scrape_allowed(address: str | None, authorization: str | None) -> bool:
    """A bearer token equal to ``METRICS_TOKEN`` (when set) admits any address;
    otherwise the address must be in ``METRICS_ALLOWED_NETWORKS``."""
    token = settings.METRICS_TOKEN
    if token and authorization:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
            return True
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net) for net in settings.METRICS_ALLOWED_NETWORKS)


def metrics_view(request: HttpRequest) -> HttpResponse:
    # The peer's own address, not a forwarded one: a scraper reaches the process directly.
    if not scrape_allowed(request.META.get("REMOTE_ADDR"), request.headers.get("Authorization")):
        return JsonResponse(
            {"code": "forbidden", "detail": "Metrics are not served to this client."}, status=403
        )
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if not scrape_allowed(self.client_address[0], self.headers.get("Authorization")):
            self._answer(403, b'{"code":"forbidden"}', "application/json")
            return
        if self.path.split("?", 1)[0] != "/metrics":
            self._answer(404, b'{"code":"not_found"}', "application/json")
            return
        # The worker's own counters; the shared figures come from the web's /metrics.
        body = generate_latest(scrape_registry(shared_state=False))
        self._answer(200, body, CONTENT_TYPE_LATEST)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # scrapes every few seconds are not news
        pass


def serve_worker_metrics(port: int) -> ThreadingHTTPServer:
    """In a Celery worker's main process: its processes' figures on ``port`` (a daemon
    thread; the worker's children write theirs to the shared multiprocess directory)."""
    server = ThreadingHTTPServer((settings.METRICS_WORKER_BIND, port), _Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("worker metrics on %s:%s", settings.METRICS_WORKER_BIND, port)
    return server


def on_worker_ready(**_kwargs) -> None:
    """Celery's ``worker_ready`` (in the worker's main process, once it is up): serve
    the worker's figures when a port is set."""
    if settings.METRICS_WORKER_PORT:
        serve_worker_metrics(settings.METRICS_WORKER_PORT)
