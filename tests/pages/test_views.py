"""The browser pages as Django renders them: who may see what, and what is on them
before any script runs (the live part is covered in test_browser.py)."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from draws.models import Draw
from inventory.models import Reservation
from livestream import services as live
from tests.factories import ProductFactory, UserFactory, VariantFactory, stocked_variant

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"  # UserFactory's


@pytest.fixture
def host():
    user = UserFactory(username="stage-host")
    user.groups.add(Group.objects.get_or_create(name="hosts")[0])
    return user


@pytest.fixture
def stream(host):
    """A live stream with two drops; the serum one is pinned."""
    stream = live.stream_create(
        host=host,
        title="Glow <Friday>",
        slug="glow-friday",
        playback_url="https://video.example/live/1.m3u8",
    )
    live.stream_start(stream_id=stream.pk, actor=host)
    serum = stocked_variant(on_hand=10)
    serum.product.name = "Glow Serum"
    serum.product.image_url = "https://img.example/serum.jpg"
    serum.product.save()
    drop = live.drop_create(
        stream_id=stream.pk,
        variant_id=serum.pk,
        quantity=6,
        price=Decimal("12.50"),
        per_viewer_limit=2,
        actor=host,
    )
    hoodie = VariantFactory(product=ProductFactory(name="Cloud Hoodie"))
    live.drop_create(
        stream_id=stream.pk,
        variant_id=stocked_variant_for(hoodie, on_hand=3),
        quantity=3,
        price=Decimal("39.00"),
        per_viewer_limit=None,
        actor=host,
    )
    live.drop_pin(drop_id=drop.pk, actor=host)
    return stream


def stocked_variant_for(variant, *, on_hand: int) -> int:
    from inventory import services

    item = services.stock_item_ensure(variant_id=variant.pk)
    services.stock_restock(stock_item_id=item.pk, quantity=on_hand, note="test stock")
    return variant.pk


def _signed_in(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


# --- the viewer page -------------------------------------------------------------------


def test_anyone_sees_the_viewer_page_with_the_pinned_drop_and_its_counter(stream):
    response = Client().get("/streams/glow-friday/")

    assert response.status_code == 200
    assert response.templates[0].name == "livestream/stream_viewer.html"
    page = response.content.decode()
    assert "Glow &lt;Friday&gt;" in page and "Glow <Friday>" not in page.split("<script")[0]
    assert '<h2 id="drop-name">Glow Serum</h2>' in page
    assert '<p class="price" id="drop-price">12.50 USD</p>' in page
    assert '<strong id="drop-left">6</strong> left / <strong id="drop-sold">0</strong> sold' in page
    assert '<video id="video" src="https://video.example/live/1.m3u8"' in page
    # The snapshot the scripts start from, and the scripts, served as static files.
    assert '<script id="stream-snapshot" type="application/json">' in page
    assert "/static/livestream/viewer.js" in page and "/static/livestream/live.js" in page
    snapshot = response.context["snapshot"]
    assert (snapshot["pinned_drop"]["product"], snapshot["pinned_drop"]["remaining"]) == (
        "Glow Serum",
        6,
    )
    # Anonymous viewers watch; buying asks them to sign in first.
    assert 'id="sign-in-to-buy" href="/accounts/login/?next=/streams/glow-friday/"' in page
    assert 'id="buy-button"' not in page


def test_a_signed_in_viewer_gets_the_buy_button_and_a_csrf_token_for_the_api(stream):
    viewer = UserFactory(username="buyer")

    response = _signed_in(viewer).get("/streams/glow-friday/")

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="buy-button"' in page and 'id="sign-in-to-buy"' not in page
    assert 'data-signed-in="true"' in page
    assert '<meta name="csrf-token" content="' in page
    assert "csrftoken" in response.cookies
    # Not the host: no way into the console from here.
    assert "/streams/glow-friday/host/" not in page


def test_a_stream_with_nothing_pinned_says_so_and_shows_a_video_placeholder(host):
    live.stream_create(host=host, title="Quiet", slug="quiet")

    page = Client().get("/streams/quiet/").content.decode()

    assert 'id="no-drop">' in page and 'id="no-drop" hidden' not in page
    assert 'id="video-placeholder"' in page and "<video" not in page


def test_an_unknown_stream_is_a_404_page(db):
    response = Client().get("/streams/nope/")

    assert response.status_code == 404
    assert response.templates[0].name == "livestream/not_found.html"
    assert b"Stream not found" in response.content


# --- the host console ------------------------------------------------------------------


def test_the_host_gets_the_console_with_every_drop_and_the_readiness_hook(stream, host):
    response = _signed_in(host).get("/streams/glow-friday/host/")

    assert response.status_code == 200
    assert response.templates[0].name == "livestream/stream_host.html"
    page = response.content.decode()
    assert "Glow Serum" in page and "Cloud Hoodie" in page
    assert page.count('<tr data-drop-id="') == 2
    assert 'id="start-button"' in page and 'id="end-button"' in page
    assert 'id="stats-chart"' in page
    # The readiness panel is there, and empty until a later change fills it.
    assert '<section id="readiness" class="panel readiness"></section>' in page
    assert "/static/livestream/host.js" in page


def test_staff_may_run_any_stream(stream):
    staff = UserFactory(username="ops", is_staff=True)

    assert _signed_in(staff).get("/streams/glow-friday/host/").status_code == 200


def test_another_user_gets_a_403_page_not_the_console(stream):
    other_host = UserFactory(username="other-host")
    other_host.groups.add(Group.objects.get(name="hosts"))

    response = _signed_in(other_host).get("/streams/glow-friday/host/")

    assert response.status_code == 403
    assert response.templates[0].name == "livestream/forbidden.html"
    assert b"Only the host can run this stream" in response.content
    assert b'id="start-button"' not in response.content


def test_anonymous_visitors_are_sent_to_sign_in(stream):
    response = Client().get("/streams/glow-friday/host/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/streams/glow-friday/host/"


def test_the_console_of_an_unknown_stream_is_a_404_page(host):
    response = _signed_in(host).get("/streams/nope/host/")

    assert response.status_code == 404
    assert response.templates[0].name == "livestream/not_found.html"


# --- the stream list and signing in ----------------------------------------------------


def test_the_stream_list_links_each_stream_and_the_console_only_for_its_host(stream, host):
    other = live.stream_create(host=UserFactory(username="rival", is_staff=True), title="Other")

    anonymous = Client().get("/streams/").content.decode()
    as_host = _signed_in(host).get("/streams/").content.decode()

    assert 'href="/streams/glow-friday/"' in anonymous
    assert f'href="/streams/{other.slug}/"' in anonymous
    assert "/host/" not in anonymous
    assert 'href="/streams/glow-friday/host/"' in as_host
    assert f'href="/streams/{other.slug}/host/"' not in as_host


def test_the_home_page_is_the_stream_list(db):
    response = Client().get("/")

    assert (response.status_code, response["Location"]) == (302, "/streams/")


def test_signing_in_with_the_session_then_out(stream):
    viewer = UserFactory(username="buyer")
    client = Client()

    page = client.get("/accounts/login/?next=/streams/glow-friday/")
    assert page.status_code == 200
    assert page.templates[0].name == "registration/login.html"

    wrong = client.post("/accounts/login/", {"username": "buyer", "password": "nope"})
    assert wrong.status_code == 200
    assert b'role="alert"' in wrong.content
    assert "_auth_user_id" not in client.session

    signed_in = client.post(
        "/accounts/login/",
        {"username": "buyer", "password": PASSWORD, "next": "/streams/glow-friday/"},
    )
    assert (signed_in.status_code, signed_in["Location"]) == (302, "/streams/glow-friday/")
    assert client.session["_auth_user_id"] == str(viewer.pk)
    assert b"Signed in as <strong>buyer</strong>" in client.get("/streams/").content

    signed_out = client.post("/accounts/logout/")
    assert signed_out.status_code == 200
    assert signed_out.templates[0].name == "registration/signed_out.html"
    assert "_auth_user_id" not in client.session


def test_signing_in_without_a_destination_lands_on_the_stream_list(db):
    UserFactory(username="buyer")

    response = Client().post("/accounts/login/", {"username": "buyer", "password": PASSWORD})

    assert (response.status_code, response["Location"]) == (302, "/streams/")


def test_the_session_drives_the_api_with_a_csrf_token(stream):
    """What the page's scripts do: reserve with the session, sending X-CSRFToken."""
    viewer = UserFactory(username="buyer")
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    page = client.get("/streams/glow-friday/")
    token = page.cookies["csrftoken"].value
    drop_id = page.context["snapshot"]["pinned_drop"]["id"]

    refused = client.post(
        f"/api/drops/{drop_id}/reservations/",
        {"quantity": 1},
        content_type="application/json",
        headers={"Idempotency-Key": "page-key-1"},
    )
    assert refused.status_code == 403  # no CSRF token: a foreign page cannot buy
    reserved = client.post(
        f"/api/drops/{drop_id}/reservations/",
        {"quantity": 1},
        content_type="application/json",
        headers={"Idempotency-Key": "page-key-1", "X-CSRFToken": token},
    )
    assert reserved.status_code == 202, reserved.content
    # Settled after commit (this test's transaction never commits): pending here.
    assert reserved.json()["status"] in ("pending", "held")
    assert Reservation.objects.filter(customer=viewer).count() == 1


def test_a_pinned_draw_renders_its_countdown_place_and_commitment_not_a_buy_button(host):
    stream = live.stream_create(host=host, title="Sneaker Sunday", slug="sneaker-sunday")
    live.stream_start(stream_id=stream.pk, actor=host)
    drop = live.drop_create(
        stream_id=stream.pk,
        variant_id=stocked_variant(on_hand=3).pk,
        quantity=1,
        price=Decimal("89.00"),
        per_viewer_limit=1,
        mode="draw",
        entry_seconds=60,
        actor=host,
    )
    live.drop_pin(drop_id=drop.pk, actor=host)
    commitment = Draw.objects.get(drop=drop).seed_commitment

    anonymous = Client().get("/streams/sneaker-sunday/").content.decode()
    signed_in = _signed_in(UserFactory(username="entrant")).get("/streams/sneaker-sunday/")
    page = signed_in.content.decode()

    assert '<div class="draw" id="draw" aria-live="polite">' in page
    assert f'<code id="draw-commitment" title="{commitment}">{commitment[:12]}…</code>' in page
    assert f'href="/api/drops/{drop.pk}/draw/"' in page
    assert 'id="enter-button">Enter the draw</button>' in page
    assert '<form class="buy" id="buy-form" hidden>' in page
    assert "Sign in to enter the draw</a>" in anonymous
    assert 'id="enter-button"' not in anonymous
