"""Token authentication that answers from the cache, so a request turned away (sold
out, throttled) costs no SQL on the hot path."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

# A revoked token keeps working this long at most (logout deletes the entry at once).
TOKEN_CACHE_SECONDS = 300
_USER_FIELDS = ("pk", "username", "is_active", "is_staff", "is_superuser")


def _cache_key(key: str) -> str:
    return f"authtoken:{key}"


def token_forget(key: str) -> None:
    cache.delete(_cache_key(key))


class CachedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``. The user is rebuilt from cached fields; views
    needing more of the user load it themselves."""

    def authenticate_credentials(self, key):
        cached = cache.get(_cache_key(key))
        if cached is None:
            token = Token.objects.select_related("user").filter(key=key).first()
            if token is None:
                raise AuthenticationFailed("Invalid token.")
            cached = {field: getattr(token.user, field) for field in _USER_FIELDS}
            cache.set(_cache_key(key), cached, TOKEN_CACHE_SECONDS)
        if not cached["is_active"]:
            raise AuthenticationFailed("User inactive or deleted.")
        user = get_user_model()(**cached)
        user._state.adding = False  # it exists; saving it would update, not insert
        user._state.db = "default"
        return user, key
