"""Request bodies capped at the server, before Django reads them.

Django's ASGI handler reads a whole body (into a temporary file) before any view runs,
and DRF's parser reads the stream past ``DATA_UPLOAD_MAX_MEMORY_SIZE``: without a cap
here, a client decides how much every request makes the server read, store and parse.
A body declared too big (``Content-Length``) is refused at once, unread; one streamed
without a length (chunked) is refused as soon as it grows past the cap. The refusal
closes the connection, so the rest of the body is never read either.
"""

from __future__ import annotations

import json

from django.conf import settings


def _declared_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses a malformed length before we run
    return None


def _limit_for(path: str) -> int:
    if path.startswith("/api/"):
        return settings.API_MAX_BODY_BYTES
    return settings.REQUEST_MAX_BODY_BYTES


async def _refuse(path: str, limit: int, send) -> None:
    if path.startswith("/api/"):
        body = json.dumps(
            {
                "code": "too_large",
                "detail": f"The request body exceeds {limit} bytes.",
                "max_bytes": limit,
            }
        ).encode()
        content_type = b"application/json"
    else:
        body = f"Request body larger than {limit} bytes.\n".encode()
        content_type = b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """ASGI middleware for HTTP: 413 for a body over the cap for its path."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit = _limit_for(path)
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            return await _refuse(path, limit, send)

        received = 0
        refused = False

        async def limited_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _refuse(path, limit, send)
                    # Django stops reading at a disconnect and answers nothing itself.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)
