"""Token authentication that answers from the cache, so a request turned away (sold
out, throttled) costs no SQL on the hot path; and single-use websocket tickets."""

from __future__ import annotations

import secrets
from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib.auth import get_user as session_user
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

from core.redis import get_redis, redis_configured

# A revoked token keeps working this long at most (logout deletes the entry at once).
TOKEN_CACHE_SECONDS = 300
_USER_FIELDS = ("pk", "username", "is_active", "is_staff", "is_superuser")
_FLAGS = ("is_active", "is_staff", "is_superuser")


def token_cache_key(key: str) -> str:
    """With Redis, a hash of the user's fields (flags as "1"/"0"), which the front door's
    script (``livestream/front_door.py``) checks on every request it answers."""
    return f"api:token:{key}"


def _cached_user(key: str) -> dict | None:
    if not redis_configured():
        return cache.get(token_cache_key(key))
    fields = get_redis().hgetall(token_cache_key(key))
    if not fields:
        return None
    return {
        "pk": int(fields["pk"]),
        "username": fields["username"],
        **{flag: fields[flag] == "1" for flag in _FLAGS},
    }


def _cache_users(users: dict[str, dict]) -> None:
    """Cache these tokens' users (token -> fields), in one round trip to Redis."""
    if not redis_configured():
        for key, cached in users.items():
            cache.set(token_cache_key(key), cached, TOKEN_CACHE_SECONDS)
        return
    pipe = get_redis().pipeline(transaction=True)
    for key, cached in users.items():
        fields = {**cached, **{flag: "1" if cached[flag] else "0" for flag in _FLAGS}}
        pipe.hset(token_cache_key(key), mapping=fields)
        pipe.expire(token_cache_key(key), TOKEN_CACHE_SECONDS)
    pipe.execute()


def tokens_load(keys) -> dict[str, dict]:
    """The users of these tokens from the database (one query), cached; unknown tokens
    are left out."""
    rows = Token.objects.filter(key__in=list(keys)).values_list(
        "key", *(f"user__{field}" for field in _USER_FIELDS)
    )
    loaded = {key: dict(zip(_USER_FIELDS, values, strict=True)) for key, *values in rows}
    if loaded:
        _cache_users(loaded)
    return loaded


def token_forget(key: str) -> None:
    if redis_configured():
        get_redis().delete(token_cache_key(key))
    else:
        cache.delete(token_cache_key(key))


class CachedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``. The user is rebuilt from cached fields; views
    needing more of the user load it themselves."""

    def authenticate_credentials(self, key):
        cached = _cached_user(key) or tokens_load([key]).get(key)
        if cached is None:
            raise AuthenticationFailed("Invalid token.")
        if not cached["is_active"]:
            raise AuthenticationFailed("User inactive or deleted.")
        user = get_user_model()(**cached)
        user._state.adding = False  # it exists; saving it would update, not insert
        user._state.db = "default"
        return user, key


# --- websocket tickets -------------------------------------------------------------------
# A browser cannot set headers on a websocket, so token clients put ``?token=`` in its
# URL, where proxies and servers log it. A ticket is what goes there instead: random,
# good for one connection within WS_TICKET_SECONDS, and only while the credential that
# asked for it (the token, or the session) still holds.
WS_TICKET_SECONDS = 30


def _ticket_key(ticket: str) -> str:
    # Its own namespace: no client-chosen value is ever a key here but the ticket itself.
    return f"wsticket:{ticket}"


def ws_ticket_issue(*, user_id: int, token: str | None, session_key: str | None) -> str:
    """A new ticket for this user, bound to the token or session it was asked with."""
    ticket = secrets.token_urlsafe(32)
    grant = {"user": user_id, "token": token, "session": session_key}
    cache.set(_ticket_key(ticket), grant, WS_TICKET_SECONDS)
    return ticket


def ws_ticket_redeem(ticket: str):
    """The user of an unused, unexpired ticket whose credential still holds, else None.

    Used up by the first caller, whatever the outcome: the cache's delete says which of
    two racing callers removed it, and only that one may use what it read."""
    key = _ticket_key(ticket)
    grant = cache.get(key)
    if not isinstance(grant, dict) or not cache.delete(key):
        return None
    if grant.get("token"):
        try:
            user, _ = CachedTokenAuthentication().authenticate_credentials(grant["token"])
        except AuthenticationFailed:
            return None  # revoked since (logged out)
    elif grant.get("session"):
        # Django's own check of a session: its user, and its auth hash (a password
        # change or a logout ends it).
        store = import_module(settings.SESSION_ENGINE).SessionStore(grant["session"])
        user = session_user(SimpleNamespace(session=store))
    else:
        return None
    if not user.is_authenticated or user.pk != grant["user"]:
        return None
    return user
