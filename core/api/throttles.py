"""Request rate limits (rates in settings REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]).
Throttles shed load; they are no guarantee: hard limits live in the services.

DRF's rule (a sliding log: at most N requests in the last period; a refused request is
not counted), kept in Redis when it is configured, so every process shares the counts,
as a sorted set of request times per client that one Lua script reads and writes
atomically. The front door (``livestream/front_door.py``) runs the same Lua inside its
one script per request, so both paths count into the same sets. Without Redis (the
embedded default), DRF's own implementation on the local cache.
"""

from __future__ import annotations

import ipaddress
import itertools
import secrets

from django.conf import settings
from rest_framework.exceptions import Throttled
from rest_framework.throttling import SimpleRateThrottle

from core.redis import get_redis, redis_configured

# Lua functions: the wait before a slot frees (-1: allowed now, -2: over a limit lowered
# since, no wait known, as DRF answers), and counting one request. A limit below 0: none.
THROTTLE_LUA = """
local function throttle_wait(key, now, duration, limit)
  if limit < 0 then return -1 end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - duration)
  local count = redis.call('ZCARD', key)
  if count < limit then return -1 end
  local available = limit - count + 1
  if available <= 0 then return -2 end
  local remaining = duration
  if count > 0 then
    remaining = duration - (now - tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]))
  end
  return remaining / available
end
local function throttle_hit(key, now, duration, limit, member)
  if limit < 0 then return end
  redis.call('ZADD', key, now, member)
  redis.call('EXPIRE', key, math.ceil(duration))
end
"""

# KEYS: the client's set. ARGV: now, duration, limit, a unique member.
_CHECK = (
    THROTTLE_LUA
    + """
local now, duration, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wait = throttle_wait(KEYS[1], now, duration, limit)
if wait == -1 then throttle_hit(KEYS[1], now, duration, limit, ARGV[4]) end
return tostring(wait)
"""
)


def throttle_redis_key(scope: str, ident) -> str:
    return f"api:throttle:{scope}:{ident}"


# Unique per process (random) and per request (a counter): a member is never reused,
# at no system call per request.
_MEMBER_PREFIX = secrets.token_hex(6)
_member_counter = itertools.count()


def throttle_member() -> str:
    """A unique member for one request in a client's set."""
    return f"{_MEMBER_PREFIX}{next(_member_counter):x}"


def throttle_wait_of(raw: str | float) -> float | None:
    """The script's wait as DRF's ``wait()`` says it (None: no wait known)."""
    wait = float(raw)
    return None if wait == -2 else max(wait, 0.0)


def throttled_error(wait: float | None) -> tuple[dict, dict[str, str]]:
    """The 429's body and headers, as the API's exception handler shapes them."""
    exc = Throttled(wait)
    body = {"code": "throttled", "detail": str(exc.detail)}
    headers = {}
    if exc.wait is not None:
        body["retry_after"] = int(exc.wait)
    if exc.wait:
        headers["Retry-After"] = str(int(exc.wait))
    return body, headers


def client_address(request) -> str:
    """The client's address, for per-IP throttles and the sign-in lockout alike.

    ``X-Forwarded-For`` is read only when ``TRUSTED_PROXY_COUNT`` proxies stand in
    front of the server: each appends the address it was reached from, so the entry
    that many places from the right was written by the outermost one, and whatever the
    client put to its left is ignored. With no proxy (0, the default) the header is
    the client's own words and never read. ``request`` is Django's or DRF's request.
    """
    return client_address_of(
        request.META.get("REMOTE_ADDR") or "", request.META.get("HTTP_X_FORWARDED_FOR", "")
    )


def client_address_of_scope(scope) -> str:
    """``client_address`` of an ASGI connection (the front door, websockets). Repeated
    ``X-Forwarded-For`` headers are joined with commas, as Django joins them: reading
    only the first would let a client's own header stand in for what the trusted proxy
    appended. With no trusted proxy the headers are not even looked at."""
    remote = (scope.get("client") or ("",))[0] or ""
    if settings.TRUSTED_PROXY_COUNT <= 0:
        return remote
    forwarded_for = ",".join(
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name == b"x-forwarded-for"
    )
    return client_address_of(remote, forwarded_for)


def client_address_of(remote: str, forwarded_for: str) -> str:
    """``client_address`` from the peer's address and the ``X-Forwarded-For`` text."""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    hops = [hop for hop in hops if hop]
    if not hops:
        return remote
    candidate = hops[-min(proxies, len(hops))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:  # not an address: a proxy misconfigured, never trusted
        return remote


class _ScopedThrottle(SimpleRateThrottle):
    by_user = True
    _wait: float | None = None

    def allow_request(self, request, view):
        if not redis_configured():
            return super().allow_request(request, view)
        if self.rate is None:
            return True
        ident = self.ident(request)
        if ident is None:
            return True
        raw = get_redis().eval(
            _CHECK,
            1,
            throttle_redis_key(self.scope, ident),
            self.timer(),
            self.duration,
            self.num_requests,
            throttle_member(),
        )
        if float(raw) == -1:
            return True
        self._wait = throttle_wait_of(raw)
        return False

    def wait(self):
        if not redis_configured():
            return super().wait()
        return self._wait

    def ident(self, request):
        """Whom the rate counts: the user, or the client's address."""
        if self.by_user:
            if not request.user or not request.user.is_authenticated:
                return None  # anonymous requests are refused before they cost anything
            return request.user.pk
        return client_address(request)

    def get_cache_key(self, request, view):
        ident = self.ident(request)
        return None if ident is None else f"throttle:{self.scope}:{ident}"


class ReserveUserThrottle(_ScopedThrottle):
    scope = "reserve_user"


class ReserveIPThrottle(_ScopedThrottle):
    scope = "reserve_ip"
    by_user = False


class AuthIPThrottle(_ScopedThrottle):
    scope = "auth_ip"
    by_user = False
