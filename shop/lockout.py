"""Sign-in lockout: django-axes' backend, for sign-ins that come from a client."""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class LockoutBackend(AxesStandaloneBackend):
    """Refuses a sign-in while its username and client address are locked out (first in
    ``AUTHENTICATION_BACKENDS``, so no password is hashed for it).

    axes raises for an ``authenticate()`` with no request. Every sign-in a client can
    make passes one (the login pages, the admin, the API token); one without comes from
    code (a shell, a command, a test's ``Client.login``), with no client to lock out.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
