import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from inventory.models import StockMovement
from livestream.models import Drop, Stream
from tests.inventory.invariants import assert_inventory_invariants


@pytest.mark.django_db
def test_demo_data_gives_users_stock_and_a_live_stream_and_is_idempotent(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

    call_command("seed_demo", verbosity=0)
    movements = StockMovement.objects.count()
    call_command("seed_demo", verbosity=0)

    assert StockMovement.objects.count() == movements
    ops = authenticate(username="ops", password="demo-pass-123")
    assert ops is not None and ops.is_staff
    host = authenticate(username="host", password="demo-pass-123")
    assert list(host.groups.values_list("name", flat=True)) == ["hosts"]
    assert authenticate(username="viewer", password="demo-pass-123") is not None
    stream = Stream.objects.get()
    assert (stream.slug, stream.status, stream.host) == ("launch-night", "live", host)
    pinned = Drop.objects.get(is_pinned=True)
    assert (pinned.variant.sku, pinned.allocation.status, pinned.allocation.remaining) == (
        "SERUM-30ML",
        "open",
        20,
    )
    assert Drop.objects.count() == 2
    assert_inventory_invariants()
