"""ASGI entry point: Django for HTTP, Channels for websockets."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

from django.core.asgi import get_asgi_application

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import path  # noqa: E402

from core import log_redaction  # noqa: E402
from core.body_limit import BodySizeLimit  # noqa: E402
from core.health import HealthConsumer  # noqa: E402
from core.request_context import RequestId  # noqa: E402
from draws.door import EntryDoor  # noqa: E402
from livestream.front_door import FrontDoor  # noqa: E402
from livestream.routing import websocket_urlpatterns  # noqa: E402
from livestream.ws_auth import websocket_stack  # noqa: E402
from livestream.ws_limits import ConnectionLimits  # noqa: E402
from monitoring.asgi import ReserveRequestMetrics  # noqa: E402

# Tokens and tickets in websocket URLs never reach uvicorn's logs.
log_redaction.install()

# Thousands of open websockets make a big, long-lived heap, and a full collection of
# the cyclic garbage collector walks all of it: measured at 0.8-1.2 s per pause with
# 2,500 viewers per process, every few seconds, which was the fan-out's p99. What exists
# now (the framework, the settings, the URL map) lives as long as the process: freeze
# it, so no collection walks it again; and make full collections rare (the young
# generations, where the requests' short-lived cycles die, are still collected often).
# Non-cyclic garbage is freed by reference counting as always. bench/README.md has the
# figures.
gc.collect()
gc.freeze()
gc.set_threshold(*settings.ASGI_GC_THRESHOLDS)

application = ProtocolTypeRouter(
    {
        # Bodies over the cap are refused before anything reads them (core/body_limit.py);
        # the reserve request's refusals and replays are answered ahead of Django
        # (livestream/front_door.py), as are a draw's entries (draws/door.py), everything
        # else by Django.
        # The reserve requests are counted and timed first, whoever answers them.
        # Outermost, the request id every log line of the request carries.
        "http": RequestId(
            ReserveRequestMetrics(BodySizeLimit(FrontDoor(EntryDoor(django_asgi_app))))
        ),
        # A full process refuses new sockets first (ws_limits), before any database
        # work; then browser origins are checked, then the session or ?token= user.
        "websocket": RequestId(
            ConnectionLimits(
                websocket_stack(
                    URLRouter(
                        [path("ws/healthz/", HealthConsumer.as_asgi()), *websocket_urlpatterns]
                    )
                )
            )
        ),
    }
)
