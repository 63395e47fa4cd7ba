"""Request rate limits (rates in settings REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]),
counted in the cache: Redis when configured, so every process shares the counts.
Throttles shed load; they are no guarantee: hard limits live in the services."""

from rest_framework.throttling import SimpleRateThrottle


class _ScopedThrottle(SimpleRateThrottle):
    by_user = True

    def get_cache_key(self, request, view):
        if self.by_user:
            if not request.user or not request.user.is_authenticated:
                return None  # anonymous requests are refused before they cost anything
            ident = request.user.pk
        else:
            ident = self.get_ident(request)
        return f"throttle:{self.scope}:{ident}"


class ReserveUserThrottle(_ScopedThrottle):
    scope = "reserve_user"


class ReserveIPThrottle(_ScopedThrottle):
    scope = "reserve_ip"
    by_user = False


class AuthIPThrottle(_ScopedThrottle):
    scope = "auth_ip"
    by_user = False
