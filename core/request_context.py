"""One request id per request, carried into every log line it causes, here and in the
Celery tasks it queues.

The id is the client's ``X-Request-ID`` when it sends a sane one (a proxy in front
usually sets it), else a fresh one; it goes back in the response's ``X-Request-ID``.
It lives in a context variable, so every log record made while the request runs (in
its coroutine, or in the threads ``sync_to_async`` runs it on, which copy the context)
carries it as ``request_id``; a task queued meanwhile takes it along in its message
headers and sets it again while it runs in the worker. With ``LOG_REQUESTS`` the
middleware also writes one access line per HTTP request.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import secrets
import time

from django.conf import settings

REQUEST_ID_HEADER = "request_id"  # in a task message's headers
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class _Ids:
    """Fresh ids: a random prefix per process and a counter, unique across processes
    and restarts without a system call per request (the front door answers tens of
    thousands a second; ``uuid4`` reads the OS's random source each time)."""

    def __init__(self):
        self.reset()
        os.register_at_fork(after_in_child=self.reset)  # a forked child gets its own

    def reset(self) -> None:
        self.prefix = secrets.token_hex(6)
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter):x}"


_ids = _Ids()

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
access_logger = logging.getLogger("access")


class RequestIdFilter(logging.Filter):
    """Gives every record a ``request_id`` (``-`` outside any request or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get() or "-"
        return True


def _request_id_of(scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _SANE.match(given):
                return given
            break
    return _ids.next()


class RequestId:
    """ASGI middleware, outermost: sets the request id for HTTP and websocket scopes,
    returns it on HTTP responses, and writes the access line when asked."""

    def __init__(self, app):
        self.app = app
        self.log_requests = settings.LOG_REQUESTS  # read once: asked on every request

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        request_id = _request_id_of(scope)
        encoded = request_id.encode()
        token = current_request_id.set(request_id)
        started, status = time.perf_counter(), None

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Appended, never replacing: no app of ours sets the header itself.
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (b"x-request-id", encoded)],
                }
            await send(message)

        try:
            if scope["type"] == "websocket":
                return await self.app(scope, receive, send)
            return await self.app(scope, receive, send_with_id)
        finally:
            if self.log_requests and scope["type"] == "http":
                access_logger.info(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],  # never the query string: it may hold credentials
                    status,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            current_request_id.reset(token)


# --- Celery: the id travels with the tasks a request queues ----------------------------


def add_request_id_to_task(headers=None, **_kwargs) -> None:
    """Celery's ``before_task_publish``: the current request's id into the message."""
    request_id = current_request_id.get()
    if request_id is not None and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, request_id)


def set_request_id_of_task(task=None, **_kwargs) -> None:
    """Celery's ``task_prerun``, in the worker: the id the message carries, if any."""
    request = getattr(task, "request", None)
    if request is None or getattr(request, "is_eager", False):
        return  # run in the caller's process: its id is current already
    request_id = getattr(request, REQUEST_ID_HEADER, None) or (request.headers or {}).get(
        REQUEST_ID_HEADER
    )
    current_request_id.set(request_id)


def clear_request_id_of_task(task=None, **_kwargs) -> None:
    """Celery's ``task_postrun``: the next task on this process starts without one."""
    request = getattr(task, "request", None)
    if request is not None and not getattr(request, "is_eager", False):
        current_request_id.set(None)
