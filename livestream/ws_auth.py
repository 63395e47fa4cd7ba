"""Who is on the other end of a websocket, and whether a browser page may open it.

- ``BrowserOriginValidator``: a browser always sends ``Origin``; when present it must
  match ``ALLOWED_HOSTS`` (Channels' ``AllowedHostsOriginValidator`` semantics) or
  ``CSRF_TRUSTED_ORIGINS``, so a foreign page cannot ride a viewer's session cookie
  (cross-site websocket hijacking). A missing ``Origin`` means a non-browser client (an
  app, a load test): it carries no ambient cookie to abuse and authenticates by token.
- ``viewer_of``: the socket's user, asked once by the consumer at connect. ``?ticket=<ticket>``
  (from ``POST /api/auth/ws-ticket/``, single use, 30 s) or ``?token=<key>``, with the
  same cached lookup as the REST API (``Authorization: Token``), authenticates; a bad,
  used or expired one means anonymous (who may still watch). Without either, the
  session cookie's user, checked as Django checks it (the session's auth hash must
  match, so a changed password signs the socket out too). A ticket keeps the
  long-lived token out of URLs, which get logged (and uvicorn's logs have both values
  redacted anyway: ``core/log_redaction.py``).

Channels' ``AuthMiddlewareStack`` would do the session part, but it stays in the path
of every frame the socket sends for its life (a session wrapper around ``send``, which
saves sessions on HTTP responses) and keeps three copies of the scope per socket; a
middleware of ours would still keep one. With thousands of viewers each receiving
every event, that is a measurable share of the fan-out's CPU and memory
(``bench/README.md``), for a socket that never changes its session: a logout reaches
it through the hub (``livestream.broadcast``) instead.
"""

from __future__ import annotations

from importlib import import_module
from urllib.parse import parse_qs, urlparse

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import parse_cookie
from rest_framework.exceptions import AuthenticationFailed

from core.api.authentication import CachedTokenAuthentication, ws_ticket_redeem

# DRF keys are 40 hex characters; anything much longer is not worth a lookup.
TOKEN_MAX_LENGTH = 64


def _from_query(scope, name: str) -> str | None:
    query = scope.get("query_string", b"")
    if isinstance(query, bytes):
        query = query.decode("latin1")
    values = parse_qs(query).get(name)
    return values[-1] if values else None


@database_sync_to_async
def _user_for_ticket(ticket: str):
    if len(ticket) > TOKEN_MAX_LENGTH:
        return AnonymousUser()
    return ws_ticket_redeem(ticket) or AnonymousUser()


@database_sync_to_async
def _user_for_token(key: str):
    if len(key) > TOKEN_MAX_LENGTH:
        return AnonymousUser()
    try:
        user, _ = CachedTokenAuthentication().authenticate_credentials(key)
    except AuthenticationFailed:
        return AnonymousUser()
    return user


def _session_key(scope) -> str | None:
    cookies = "; ".join(
        value.decode("latin1") for name, value in scope.get("headers", ()) if name == b"cookie"
    )
    return parse_cookie(cookies).get(settings.SESSION_COOKIE_NAME) if cookies else None


async def _user_for_session(session_key: str):
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return await get_user({"session": session})


async def viewer_of(scope):
    """The user a websocket speaks for: its ticket, else its token, else its session."""
    ticket = _from_query(scope, "ticket")
    if ticket is not None:
        return await _user_for_ticket(ticket)
    key = _from_query(scope, "token")
    if key is not None:
        return await _user_for_token(key)
    session_key = _session_key(scope)
    if session_key:
        return await _user_for_session(session_key)
    return AnonymousUser()  # no database or thread hop for the anonymous crowd


def _allowed_origins() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = ["localhost", "127.0.0.1", "[::1]"]  # as Django itself allows then
    # OriginValidator's subdomain wildcard is a leading dot ("https://.example.com");
    # CSRF_TRUSTED_ORIGINS writes it "https://*.example.com".
    trusted = [origin.replace("://*.", "://.", 1) for origin in settings.CSRF_TRUSTED_ORIGINS]
    return [*hosts, *trusted]


class BrowserOriginValidator(OriginValidator):
    """Refuses a websocket whose ``Origin`` is present and not ours; allows a missing one.

    Settings are read per connection (cheap, and tests can override them)."""

    def __init__(self, application):
        self.application = application

    @property
    def allowed_origins(self) -> list[str]:
        return _allowed_origins()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("BrowserOriginValidator only guards websocket connections")
        origins = [value for name, value in scope.get("headers", []) if name == b"origin"]
        if not origins or self.validate_origin(urlparse(origins[-1].decode("latin1"))):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def websocket_stack(inner):
    """The origin check; who the viewer is, the consumer asks ``viewer_of``."""
    return BrowserOriginValidator(inner)
