import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from demand.models import DropDemand
from demand.readers import stream_readiness
from inventory.models import StockMovement
from livestream.models import Drop, Stream
from tests.inventory.invariants import assert_inventory_invariants


@pytest.mark.django_db
def test_demo_data_gives_users_stock_and_a_live_stream_and_is_idempotent(
    settings, django_capture_on_commit_callbacks
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

    # As on a real run, what happens on commit happens (the flush on ending a stream).
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", verbosity=0)
    movements = StockMovement.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", verbosity=0)

    assert StockMovement.objects.count() == movements
    ops = authenticate(username="ops", password="demo-pass-123")
    assert ops is not None and ops.is_staff
    host = authenticate(username="host", password="demo-pass-123")
    assert list(host.groups.values_list("name", flat=True)) == ["hosts"]
    assert authenticate(username="viewer", password="demo-pass-123") is not None
    stream = Stream.objects.get(slug="launch-night")
    assert (stream.status, stream.host) == ("live", host)
    pinned = Drop.objects.get(is_pinned=True)
    assert (pinned.variant.sku, pinned.allocation.status, pinned.allocation.remaining) == (
        "SERUM-30ML",
        "open",
        20,
    )
    assert stream.drops.count() == 2
    # The host's history and next stream, so the readiness report has something to say.
    past = Stream.objects.get(slug="spring-preview")
    assert past.status == "ended"
    history = DropDemand.objects.filter(drop__stream=past, final=True)
    assert history.count() == 3
    # The recorded figures, not the empty ones the stream's end flushed before them.
    assert sorted(history.values_list("buyers", flat=True)) == [8, 10, 30]
    upcoming = Stream.objects.get(slug="summer-drop")
    assert (upcoming.status, upcoming.expected_viewers) == ("scheduled", 1500)
    report = stream_readiness(stream=upcoming).as_dict()
    assert report["rate"]["drops"] == 3
    verdicts = {row["sku"]: row["verdict"] for row in report["drops"]}
    assert verdicts["HOODIE-L"] == "short"
    assert_inventory_invariants()
