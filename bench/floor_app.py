"""The floor of a Python HTTP request on this machine: a raw ASGI app on uvicorn, no
framework, that reads the request body and answers the same JSON 409 a sold-out
reserve gets. The front door's figures are compared with it (bench/front_door.py)."""

from __future__ import annotations

import json

BODY = json.dumps({"code": "sold_out", "detail": "Sold out."}).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    # GET /healthz says it is up (the bench waits for it); everything else is refused.
    status = 200 if scope["path"] == "/healthz" and scope["method"] == "GET" else 409
    await send({"type": "http.response.start", "status": status, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
