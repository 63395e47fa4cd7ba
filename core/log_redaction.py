"""Keep credentials sent in query strings out of the server's logs.

Websocket clients may authenticate with ``?token=<API token>`` (the public contract
keeps it working) or a single-use ``?ticket=``. uvicorn logs every request's path with
its query: HTTP requests on ``uvicorn.access``, websocket handshakes on
``uvicorn.error`` ('"WebSocket /ws/streams/x/?token=..." [accepted]'). A long-lived
token written to a log file is a credential anyone reading the logs can use, so both
loggers get a filter that rewrites those values before any handler formats them.

Installed on the logger objects themselves (``install``, from ``config/asgi.py``), not
through ``LOGGING``: configuring uvicorn's loggers there would replace the handlers
uvicorn set up from its own command line (``--log-level``, ``--no-access-log``).
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

SECRET_PARAMETERS = frozenset({"token", "ticket"})
REDACTED = "[redacted]"
LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact_credentials(text: str) -> str:
    """``text`` with the value of every ``token`` / ``ticket`` query parameter hidden.

    Names are compared as the server decodes them (``%74oken`` is ``token``), so no
    spelling that authenticates slips through."""
    path, sep, query = text.partition("?")
    if not sep:
        return text
    query, hash_sep, tail = query.partition(" ")  # a request line goes on after the path
    pairs = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        if eq and unquote_plus(name) in SECRET_PARAMETERS:
            pair = f"{name}={REDACTED}"
        pairs.append(pair)
    return f"{path}?{'&'.join(pairs)}{hash_sep}{tail}"


class RedactCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                redact_credentials(arg) if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        if isinstance(record.msg, str) and "?" in record.msg:
            record.msg = redact_credentials(record.msg)
        return True


def install() -> None:
    """Add the filter to uvicorn's loggers (once, however often called)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCredentials) for f in logger.filters):
            logger.addFilter(RedactCredentials())
