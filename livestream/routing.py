"""Websocket routes of the live part of the product."""

websocket_urlpatterns: list = []
