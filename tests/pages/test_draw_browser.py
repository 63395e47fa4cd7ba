"""A drop sold by draw in a real browser (headless Chromium) against the real stack: a
uvicorn process, a Celery worker (the draw is its task, due at the close), PostgreSQL
and Redis. The host pins a draw of one unit from the console; two viewers enter while
the countdown runs, one reloads and still sees their entry; at the close each sees the
result (the winner checks out the unit held for them, the other sees their place in
line); a viewer who comes too late is told entries closed."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from draws.models import Draw, Entry
from inventory.models import Reservation, WaitlistEntry
from livestream import services as live
from shop.models import Order
from tests.factories import stocked_variant
from tests.inventory.invariants import assert_inventory_invariants
from tests.pages.browsing import (
    SERVER_ENV,
    Browsers,
    connected,
    mark,
    not_reloaded,
    session_of,
    site_user,
)
from tests.pages.conftest import chromium
from tests.processes import asgi_server, celery_worker

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.celery_worker,
    pytest.mark.server,
    pytest.mark.browser,
]

# The API's least: the test waits for the real close, drawn by the worker's task.
ENTRY_SECONDS = 10


def _draw_stage():
    """A live stream with one drop sold by draw (one unit, one per viewer), not pinned."""
    host = site_user("draw-host", host=True)
    stream = live.stream_create(host=host, title="Sneaker Sunday", slug="sneaker-sunday")
    live.stream_start(stream_id=stream.pk, actor=host)
    variant = stocked_variant(on_hand=3)
    variant.product.name = "Cloud Runner"
    variant.product.save()
    drop = live.drop_create(
        stream_id=stream.pk,
        variant_id=variant.pk,
        quantity=1,
        price=Decimal("89.00"),
        per_viewer_limit=1,
        mode="draw",
        entry_seconds=ENTRY_SECONDS,
        actor=host,
    )
    return host, stream, drop


def _entry_state(page: Page) -> str:
    return page.locator("#draw").get_attribute("data-entry")


@pytest.mark.django_db(transaction=True)
def test_viewers_enter_a_draw_the_winner_checks_out_and_the_other_sees_their_place(
    artifacts, celery_through_broker
):
    host, stream, drop = _draw_stage()
    entrants = [site_user("first-entrant"), site_user("second-entrant")]
    late_viewer = site_user("late-viewer")
    sessions = {user.username: session_of(user) for user in [host, *entrants, late_viewer]}
    viewer_path = f"/streams/{stream.slug}/"

    with (
        celery_worker(concurrency=2),
        asgi_server(**SERVER_ENV) as server,
        chromium() as browser,
    ):
        browsers = Browsers(browser, server.base_url)
        first = browsers.with_session(sessions["first-entrant"], viewer_path)
        second = browsers.with_session(sessions["second-entrant"], viewer_path)
        console = browsers.with_session(sessions[host.username], f"/streams/{stream.slug}/host/")
        for page in (first, second, console):
            connected(page)
            mark(page)
        draw_block = console.locator(f'#draw-list .draw-row[data-drop-id="{drop.pk}"]')
        expect(draw_block.locator(".draw-countdown")).to_have_text(
            "Entries open at the pin, for 0:10."
        )

        # The host pins the draw: entries open for ten seconds, on every page at once.
        console.click(f'#drop-rows button[data-action="pin"][data-drop-id="{drop.pk}"]')
        expect(draw_block.locator(".draw-countdown")).to_have_text(
            re.compile(r"^Entries close at .+ \(in 0:(10|0\d)\)$")
        )
        for page in (first, second):
            expect(page.locator("#drop-name")).to_have_text("Cloud Runner")
            expect(page.locator("#draw")).to_be_visible()
            expect(page.locator("#buy-form")).to_be_hidden()
            expect(page.locator("#enter-button")).to_have_text("Enter the draw")
            expect(page.locator("#draw-countdown")).to_have_text(
                re.compile(r"^Entries close in 0:(10|0\d)$")
            )
            expect(page.locator("#draw-commitment")).to_have_text(re.compile(r"^[0-9a-f]{12}…$"))
        commitment = first.locator("#draw-commitment").get_attribute("title")
        assert re.fullmatch(r"[0-9a-f]{64}", commitment)
        assert console.locator(".draw-commitment").get_attribute("title") == commitment

        # Both enter; the count moves on every page, the console's too.
        for page in (first, second):
            page.click("#enter-button")
            expect(page.locator("#draw-entry")).to_have_text(
                "You're in for 1 unit. The draw runs when entries close."
            )
            expect(page.locator("#enter-button")).to_be_hidden()
        for page in (first, second):
            expect(page.locator("#draw-entries")).to_have_text("2")
        expect(draw_block.locator(".draw-entries strong")).to_have_text("2")
        first.screenshot(path=str(artifacts / "viewer-draw-entered.png"), full_page=True)

        # A reload still shows the entry (asked of the API, not remembered by the page).
        second.reload()
        connected(second)
        expect(second.locator("#draw")).to_have_attribute("data-entry", "entered")
        expect(second.locator("#draw-entries")).to_have_text("2")
        mark(second)

        # At the close the worker draws: the seed is revealed, one winner, one in line.
        for page in (first, second):
            expect(page.locator("#draw")).to_have_attribute("data-phase", "drawn")
            expect(page.locator("#draw-outcome")).to_have_text("Drawn: 1 winner from 2 entries.")
            expect(page.locator("#draw")).to_have_attribute(
                "data-entry", re.compile("^(won|lost)$")
            )
        expect(draw_block.locator(".draw-outcome")).to_have_text("Drawn: 1 winner from 2 entries.")
        seed = console.locator(".draw-seed").get_attribute("title")
        assert first.locator("#draw-seed").get_attribute("title") == seed
        winner, loser = (first, second) if _entry_state(first) == "won" else (second, first)
        assert _entry_state(loser) == "lost"

        expect(winner.locator("#draw-entry")).to_contain_text("You won!")
        expect(winner.locator("#hold")).to_have_attribute("data-status", "held")
        expect(winner.locator("#hold-timer")).to_contain_text("left to check out")
        winner.screenshot(path=str(artifacts / "viewer-draw-won.png"), full_page=True)
        winner.click("#checkout-button")
        expect(winner.locator("#order-text")).to_contain_text("$89.00, paid.")
        expect(winner.locator("#hold")).to_have_attribute("data-status", "confirmed")
        expect(winner.locator("#draw-entry")).to_have_text("You won, and it's yours.")

        expect(loser.locator("#draw-entry")).to_have_text(
            "Not drawn this time. You are number 1 on the waitlist: a winner's unit "
            "that comes back goes to the first in line."
        )
        expect(loser.locator("#hold")).to_be_hidden()
        loser.screenshot(path=str(artifacts / "viewer-draw-lost.png"), full_page=True)

        # Someone arriving after the close cannot enter, and if they try the page says why.
        late = browsers.with_session(sessions["late-viewer"], viewer_path)
        connected(late)
        expect(late.locator("#draw")).to_have_attribute("data-entry", "none")
        expect(late.locator("#enter-button")).to_be_disabled()
        expect(late.locator("#enter-button")).to_have_text("Entries closed")
        # As a stale page would (the page itself keeps the button disabled).
        late.evaluate(
            "const button = document.getElementById('enter-button');"
            "button.disabled = false; button.click();"
        )
        expect(late.locator("#draw-error")).to_have_attribute("data-code", "entries_closed")
        expect(late.locator("#draw-error")).to_be_visible()
        expect(late.locator("#draw-form")).to_be_visible()  # still usable, nothing broken

        for page in (first, second, console):
            not_reloaded(page)
        console.screenshot(path=str(artifacts / "host-console-draw.png"), full_page=True)

    assert browsers.errors == []
    draw = Draw.objects.get(drop=drop)
    assert draw.status == "drawn"
    assert (draw.seed, draw.seed_commitment) == (seed, commitment)
    assert hashlib.sha256(seed.encode()).hexdigest() == commitment
    won = Entry.objects.get(draw=draw, status="won")
    lost = Entry.objects.get(draw=draw, status="lost")
    assert Entry.objects.filter(draw=draw).count() == 2
    assert draw.winners == [won.pk]
    assert won.reservation.status == Reservation.Status.CONFIRMED
    assert won.customer_id == entrants[0 if winner is first else 1].pk
    order = Order.objects.get(status="paid")
    assert order.customer_id == won.customer_id
    assert lost.reservation is None
    assert lost.waitlist_entry.status == WaitlistEntry.Status.WAITING
    assert not Entry.objects.filter(draw=draw, customer=late_viewer).exists()
    assert_inventory_invariants()
