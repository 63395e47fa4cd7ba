"""Websocket routes of the live part of the product (wrapped by
``livestream.ws_auth.websocket_stack`` in ``config/asgi.py``)."""

from django.urls import path

from livestream.consumers import StreamConsumer

websocket_urlpatterns: list = [
    path("ws/streams/<slug:slug>/", StreamConsumer.as_asgi()),
]
