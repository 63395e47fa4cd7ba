"""The live pages in a real browser (headless Chromium) against the real stack: a
uvicorn process, a Celery worker, PostgreSQL and Redis. A host and two viewers, each in
their own browser context (their own session), signed in through the sign-in page."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect
from rest_framework.authtoken.models import Token
from websockets.sync.client import connect as ws_connect

from inventory.models import Reservation
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


def _stage(*, units: int):
    """A scheduled stream with two drops, nothing pinned yet; the second one's sale
    starts in two hours (a countdown)."""
    host = site_user("stage-host", host=True)
    stream = live.stream_create(host=host, title="Glow Friday", slug="glow-friday")
    serum = stocked_variant(on_hand=units)
    serum.product.name = "Glow Serum"
    serum.product.save()
    serum_drop = live.drop_create(
        stream_id=stream.pk,
        variant_id=serum.pk,
        quantity=units,
        price=Decimal("12.50"),
        per_viewer_limit=2,
        actor=host,
    )
    other_drop = live.drop_create(
        stream_id=stream.pk,
        variant_id=stocked_variant(on_hand=5).pk,
        quantity=5,
        price=Decimal("30.00"),
        per_viewer_limit=None,
        actor=host,
        starts_at=timezone.now() + timedelta(hours=2),
    )
    return host, stream, serum_drop, other_drop


def _counter(page: Page, left: int, sold: int) -> None:
    expect(page.locator("#drop-left")).to_have_text(str(left))
    expect(page.locator("#drop-sold")).to_have_text(str(sold))


def _sold_out_shown(page: Page) -> None:
    expect(page.locator("#sold-out")).to_be_visible()
    expect(page.locator("#buy-button")).to_be_disabled()
    expect(page.locator("#buy-button")).to_have_text("Sold out")


@pytest.mark.django_db(transaction=True)
def test_a_host_goes_live_and_pins_viewers_buy_and_everyone_sees_it_sell_out(
    artifacts, celery_through_broker
):
    host, stream, serum_drop, _ = _stage(units=3)
    first_buyer, second_buyer = site_user("first-buyer"), site_user("second-buyer")
    viewer_path = f"/streams/{stream.slug}/"
    serum_text = f"1 \N{MULTIPLICATION SIGN} Glow Serum ({serum_drop.variant.sku})"
    serum_row = f'#drop-rows tr[data-drop-id="{serum_drop.pk}"]'

    with (
        celery_worker(concurrency=2),
        asgi_server(**SERVER_ENV) as server,
        chromium() as browser,
    ):
        browsers = Browsers(browser, server.base_url)
        first = browsers.signed_in(first_buyer.username, viewer_path)
        second = browsers.signed_in(second_buyer.username, viewer_path)
        console = browsers.signed_in(host.username, f"/streams/{stream.slug}/host/")
        for page in (first, second, console):
            connected(page)
            mark(page)
        for page in (first, second):
            expect(page.locator("#no-drop")).to_be_visible()
            expect(page.locator("#stream-status")).to_have_text("Scheduled")

        # The host goes live and pins the serum: the viewers see both without reloading.
        console.click("#start-button")
        expect(console.locator("#stream-status")).to_have_text("Live")
        console.click(f'#drop-rows button[data-action="pin"][data-drop-id="{serum_drop.pk}"]')
        expect(console.locator(serum_row)).to_have_class(re.compile(r"\bis-pinned\b"))
        for page in (first, second):
            expect(page.locator("#stream-status")).to_have_text("Live")
            expect(page.locator("#drop-name")).to_have_text("Glow Serum")
            expect(page.locator("#drop-price")).to_have_text("$12.50")
            _counter(page, left=3, sold=0)
            expect(page.locator("#drop-limit")).to_have_text("Up to 2 per viewer")
            expect(page.locator("#buy-button")).to_be_enabled()

        # The first viewer buys one: the hold appears (settled by the worker, told over
        # the buyer's own websocket events) and the counter drops, for the other viewer too.
        first.click("#buy-button")
        expect(first.locator("#hold")).to_have_attribute("data-status", "held")
        expect(first.locator("#hold-text")).to_have_text(f"Held for you: {serum_text}.")
        expect(first.locator("#hold-timer")).to_contain_text("left to check out")
        _counter(first, left=2, sold=0)
        _counter(second, left=2, sold=0)
        expect(console.locator(f"{serum_row} td.left")).to_have_text("2")

        first.click("#checkout-button")
        expect(first.locator("#order-text")).to_contain_text("$12.50, paid.")
        expect(first.locator("#hold")).to_have_attribute("data-status", "confirmed")
        for page in (first, second):
            _counter(page, left=2, sold=1)
        first.screenshot(path=str(artifacts / "viewer-bought.png"), full_page=True)

        # The second viewer takes the last two units: sold out everywhere.
        second.fill("#buy-quantity", "2")
        second.click("#buy-button")
        expect(second.locator("#hold")).to_have_attribute("data-status", "held")
        second.click("#checkout-button")
        expect(second.locator("#hold")).to_have_attribute("data-status", "confirmed")
        for page in (first, second):
            _counter(page, left=0, sold=3)
            _sold_out_shown(page)
        expect(console.locator(f"{serum_row} td.left")).to_have_text("0")
        expect(console.locator(f"{serum_row} td.sold")).to_have_text("3")
        expect(console.locator(f"{serum_row} .sold-out-tag")).to_have_text("Sold out")

        # One more try is refused by the server, and the page says why.
        first.evaluate("document.getElementById('buy-button').disabled = false")
        first.click("#buy-button")
        expect(first.locator("#buy-error")).to_have_attribute("data-code", "sold_out")
        expect(first.locator("#buy-error")).to_be_visible()

        # The host's live stats: both viewers (and the console) counted, sell-through
        # 100%, drawn on the chart.
        expect(console.locator("#stat-sell-through")).to_have_text("100%")
        expect(console.locator("#stat-projection")).to_have_text("Sold out")
        assert int(console.locator("#stat-viewers").text_content()) >= 3
        expect(console.locator("#chart-sell-through")).not_to_have_attribute("points", "")

        for page in (first, second, console):
            not_reloaded(page)
        second.screenshot(path=str(artifacts / "viewer-sold-out.png"), full_page=True)
        console.screenshot(path=str(artifacts / "host-console.png"), full_page=True)

    assert browsers.errors == []
    assert Order.objects.filter(status="paid").count() == 2
    assert sorted(
        Reservation.objects.filter(status="confirmed").values_list("quantity", flat=True)
    ) == [1, 2]
    assert_inventory_invariants()


@pytest.mark.django_db(transaction=True)
def test_a_viewer_reconnects_after_a_dropped_connection_and_resyncs_on_a_gap():
    host, stream, serum_drop, other_drop = _stage(units=4)
    live.stream_start(stream_id=stream.pk, actor=host)
    as_host = {"Authorization": f"Token {Token.objects.create(user=host).key}"}

    with asgi_server(**SERVER_ENV) as server, chromium() as browser:
        api = httpx.Client(base_url=server.base_url, headers=as_host, timeout=10)
        browsers = Browsers(browser, server.base_url)
        viewer = browsers.page()  # anonymous
        viewer.goto(f"/streams/{stream.slug}/")
        connected(viewer)
        mark(viewer)
        assert viewer.evaluate("Live.socket.connects") == 1

        # The network goes away and the connection drops; the page keeps retrying, backing
        # off. Meanwhile the host pins a drop. Back online, the page reconnects by itself
        # and the fresh snapshot shows the drop it missed.
        viewer.context.set_offline(True)
        viewer.evaluate("Live.socket.socket.close()")
        viewer.wait_for_function("Live.socket.attempt >= 2")  # failed retries, spaced out
        expect(viewer.locator("#connection")).to_have_attribute("data-status", "reconnecting")
        assert api.post(f"/api/drops/{serum_drop.pk}/pin/").status_code == 200
        expect(viewer.locator("#no-drop")).to_be_visible()
        viewer.context.set_offline(False)
        connected(viewer)
        expect(viewer.locator("#drop-name")).to_have_text("Glow Serum")
        assert viewer.evaluate("Live.socket.connects") == 2
        expect(viewer.locator("#drop-countdown")).to_be_hidden()  # on sale now
        expect(viewer.locator("#sign-in-to-buy")).to_be_visible()  # watching needs no account

        # A gap in seq (as if an event were lost): the next event makes the page ask for
        # a fresh snapshot instead of applying it blindly.
        viewer.evaluate("Live.socket.seq -= 2")
        assert api.post(f"/api/drops/{other_drop.pk}/pin/").status_code == 200
        expect(viewer.locator("#drop-price")).to_have_text("$30.00")
        expect(viewer.locator("#drop-left")).to_have_text("5")
        # Its sale starts in two hours: the page counts down.
        expect(viewer.locator("#drop-countdown")).to_have_text(re.compile(r"^Starts in 1:59:\d\d$"))
        assert viewer.evaluate("Live.socket.resyncs") == 1
        assert viewer.evaluate("Live.socket.connects") == 2  # resynced on the same socket
        not_reloaded(viewer)

    assert browsers.errors == []


@pytest.mark.django_db(transaction=True)
def test_a_refused_viewer_comes_back_after_the_servers_retry_hint_not_at_once():
    host, stream, _, _ = _stage(units=1)
    live.stream_start(stream_id=stream.pk, actor=host)
    env = {**SERVER_ENV, "WS_MAX_CONNECTIONS_PER_ADDRESS": "1", "WS_RETRY_AFTER_SECONDS": "2"}

    with asgi_server(**env) as server, chromium() as browser:
        browsers = Browsers(browser, server.base_url)
        viewer = browsers.page()
        # Someone else on the same address holds its one socket: the page is refused.
        with ws_connect(f"{server.ws_url}/ws/streams/{stream.slug}/", open_timeout=10) as held:
            assert json.loads(held.recv(timeout=10))["type"] == "stream.state"
            viewer.goto(f"/streams/{stream.slug}/")
            # It waits the 2-4 s the server asked for (its own backoff would retry
            # within half a second), and once the address has room it is back by itself.
            connection = viewer.locator("#connection")
            expect(connection).to_have_attribute("data-status", "reconnecting")
            expect(connection).to_have_text(re.compile(r"Reconnecting in [234] s"))
        connected(viewer)
        # Two opened: the refused one (accepted only to be told why) and this one.
        assert viewer.evaluate("Live.socket.connects") == 2

    assert browsers.errors == []


@pytest.mark.django_db(transaction=True)
def test_a_sold_out_viewer_queues_and_gets_the_unit_that_comes_back(
    artifacts, celery_through_broker
):
    host, stream, serum_drop, _ = _stage(units=1)
    live.stream_start(stream_id=stream.pk, actor=host)
    live.drop_pin(drop_id=serum_drop.pk, actor=host)
    holder, waiting = site_user("holder"), site_user("waiting")
    viewer_path = f"/streams/{stream.slug}/"

    with (
        celery_worker(concurrency=2),
        asgi_server(**SERVER_ENV) as server,
        chromium() as browser,
    ):
        browsers = Browsers(browser, server.base_url)
        first = browsers.signed_in(holder.username, viewer_path)
        second = browsers.signed_in(waiting.username, viewer_path)
        for page in (first, second):
            connected(page)
            mark(page)

        # The first viewer holds the only unit: the second sees sold out and the line.
        first.click("#buy-button")
        expect(first.locator("#hold")).to_have_attribute("data-status", "held")
        _sold_out_shown(second)
        expect(second.locator("#waitlist")).to_be_visible()
        second.click("#waitlist-join")
        expect(second.locator("#waitlist-text")).to_have_text("You are number 1 in line.")
        expect(second.locator("#waitlist-leave")).to_be_visible()
        second.screenshot(path=str(artifacts / "viewer-waitlist.png"), full_page=True)

        # The holder lets it go: it is offered to the second viewer, nobody else.
        first.click("#release-button")
        expect(first.locator("#hold")).to_have_attribute("data-status", "released")
        expect(second.locator("#waitlist-text")).to_contain_text("A unit came back for you")
        expect(second.locator("#hold")).to_have_attribute("data-status", "held")
        _sold_out_shown(first)  # the unit never became free for everyone
        second.click("#checkout-button")
        expect(second.locator("#hold")).to_have_attribute("data-status", "confirmed")
        expect(second.locator("#waitlist-text")).to_have_text("You got one from the waitlist.")
        for page in (first, second):
            not_reloaded(page)

    assert browsers.errors == []
    order = Order.objects.get(status="paid")
    assert order.customer_id == waiting.pk
    assert_inventory_invariants()
