"""ASGI entry point: Django for HTTP, Channels for websockets."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

from django.core.asgi import get_asgi_application

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from config.health import HealthConsumer  # noqa: E402
from livestream.routing import websocket_urlpatterns  # noqa: E402
from livestream.ws_auth import websocket_stack  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Browser origins checked, then the session or ?token= user (see ws_auth).
        "websocket": websocket_stack(
            URLRouter([path("ws/healthz/", HealthConsumer.as_asgi()), *websocket_urlpatterns])
        ),
    }
)
