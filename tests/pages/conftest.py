"""Browser fixtures: the system's headless Chromium driven by Playwright.

Never a downloaded browser: Chromium is the Debian package (``scripts/install-tools``
installs it). Without it the browser tests skip with a reason, or fail under
``REQUIRE_SERVICES=1`` (CI), like every test whose service is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.processes import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
# Generous for a loaded CI machine; every wait is for an event that does come.
TIMEOUT_MS = 20_000


def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"needs Chromium at {CHROMIUM}: run scripts/install-tools"
    return None


def pytest_runtest_setup(item):
    if item.get_closest_marker("browser") is None:
        return
    reason = _browser_missing()
    if reason is None:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES is set but a service is missing: {reason}", pytrace=False)
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Browser]:
    """The headless browser, for a ``with`` block inside a test.

    Not a fixture: Playwright's sync API runs an event loop in the test's thread while
    it is open, and Django refuses database calls from a thread with a running loop.
    Tests seed data before the block and check the database after it; while it is open
    they act the way users do, over HTTP.
    """
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go: ``ARTIFACTS_DIR``, by default ``tests/artifacts/``."""
    path = Path(os.environ.get("ARTIFACTS_DIR") or ROOT / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
