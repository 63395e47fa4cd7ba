"""What the browser tests share: users who sign in through the sign-in page, one
browser context per person, and the server's settings for the pages."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group
from django.test import Client
from playwright.sync_api import Page, expect

from tests.pages.conftest import TIMEOUT_MS

PASSWORD = "stage-pass-2026"
# The server process runs the base settings, whose hashers do not include the test
# settings' fast MD5 one: store a hash it can check.
_HASHER = PBKDF2PasswordHasher()
_PASSWORD_HASH = _HASHER.encode(PASSWORD, _HASHER.salt())

SERVER_ENV = {
    # Holds settle on the worker, as in production.
    "CELERY_TASK_ALWAYS_EAGER": "false",
    # The origin the browser pages come from: websockets and CSRF check it.
    "ALLOWED_HOSTS": "127.0.0.1",
    "HOST_STATS_SECONDS": "0.5",
}


def site_user(username: str, *, host: bool = False):
    """A user who signs in with ``PASSWORD``; ``host``: in the hosts group."""
    user = get_user_model().objects.create(username=username, password=_PASSWORD_HASH)
    if host:
        user.groups.add(Group.objects.get_or_create(name="hosts")[0])
    return user


def session_of(user) -> str:
    """A signed-in session for ``user``, made here rather than through the sign-in page:
    each sign-in costs the server two slow password hashes (the check, then the rehash
    to Argon2id), seconds on a loaded machine. Call it before the browser opens (the
    database is not for the browser's thread)."""
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


class Browsers:
    """One browser context per person; records script errors on every page."""

    def __init__(self, chromium, base_url: str):
        self.chromium = chromium
        self.base_url = base_url
        self.errors: list[str] = []

    def page(self) -> Page:
        context = self.chromium.new_context(
            base_url=self.base_url, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        return page

    def with_session(self, session: str, path: str) -> Page:
        """A page at ``path`` in the session ``session_of`` made."""
        page = self.page()
        page.context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": self.base_url}]
        )
        page.goto(path)
        expect(page.locator("header .who")).to_be_visible()
        return page

    def signed_in(self, username: str, path: str) -> Page:
        page = self.page()
        page.goto(f"/accounts/login/?next={path}")
        page.fill("#id_username", username)
        page.fill("#id_password", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"**{path}")
        expect(page.locator("header .who strong")).to_have_text(username)
        return page


def connected(page: Page) -> None:
    expect(page.locator("#connection")).to_have_attribute("data-status", "live")


def mark(page: Page) -> None:
    """Tag the page's window: a reload would lose the tag."""
    page.evaluate("window.__noReload = true")


def not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__noReload === true")
