"""Request rate limits (rates in settings REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]),
counted in the cache: Redis when configured, so every process shares the counts.
Throttles shed load; they are no guarantee: hard limits live in the services."""

import ipaddress

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


def client_address(request) -> str:
    """The client's address, for per-IP throttles and the sign-in lockout alike.

    ``X-Forwarded-For`` is read only when ``TRUSTED_PROXY_COUNT`` proxies stand in
    front of the server: each appends the address it was reached from, so the entry
    that many places from the right was written by the outermost one, and whatever the
    client put to its left is ignored. With no proxy (0, the default) the header is
    the client's own words and never read. ``request`` is Django's or DRF's request.
    """
    remote = request.META.get("REMOTE_ADDR") or ""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
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

    def get_cache_key(self, request, view):
        if self.by_user:
            if not request.user or not request.user.is_authenticated:
                return None  # anonymous requests are refused before they cost anything
            ident = request.user.pk
        else:
            ident = client_address(request)
        return f"throttle:{self.scope}:{ident}"


class ReserveUserThrottle(_ScopedThrottle):
    scope = "reserve_user"


class ReserveIPThrottle(_ScopedThrottle):
    scope = "reserve_ip"
    by_user = False


class AuthIPThrottle(_ScopedThrottle):
    scope = "auth_ip"
    by_user = False
