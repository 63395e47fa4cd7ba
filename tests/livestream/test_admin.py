"""The ops admin for streams and drops: pages load, status, pins and counters are
read-only, and the actions go through the services."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.urls import reverse

from inventory.models import Allocation, StockItem, StockMovement
from livestream import selectors, services
from livestream.models import Drop, Stream
from tests.factories import UserFactory, stocked_variant
from tests.inventory.invariants import assert_inventory_invariants

AStatus = Allocation.Status


@pytest.fixture(autouse=True)
def _fresh_routing_cache():
    selectors.drop_routing_cache_clear()
    yield
    selectors.drop_routing_cache_clear()


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _live_stream_with_drops(title: str = "Glow Live") -> tuple[Stream, Drop, Drop]:
    host = UserFactory()
    host.groups.add(Group.objects.get_or_create(name="hosts")[0])
    stream = services.stream_create(host=host, title=title)
    services.stream_start(stream_id=stream.pk, actor=host)
    drops = [
        services.drop_create(
            stream_id=stream.pk,
            variant_id=stocked_variant(on_hand=10).pk,
            quantity=4,
            price=Decimal("9.99"),
            per_viewer_limit=2,
            actor=host,
        )
        for _ in range(2)
    ]
    services.drop_pin(drop_id=drops[0].pk, actor=host)
    return stream, drops[0], drops[1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url_name", ["admin:livestream_stream_changelist", "admin:livestream_drop_changelist"]
)
def test_changelist_loads(admin_client, url_name):
    _live_stream_with_drops()

    response = admin_client.get(reverse(url_name))

    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


@pytest.mark.django_db
def test_change_pages_load_and_drop_counters_come_from_the_allocation(admin_client):
    stream, pinned, _other = _live_stream_with_drops()

    stream_page = admin_client.get(reverse("admin:livestream_stream_change", args=[stream.pk]))
    drop_page = admin_client.get(reverse("admin:livestream_drop_change", args=[pinned.pk]))

    assert stream_page.status_code == 200
    assert drop_page.status_code == 200
    # A view-only page: no field of a drop is editable.
    assert list(drop_page.context["adminform"].form.fields) == []
    assert "9.99" in drop_page.content.decode()


@pytest.mark.django_db
def test_streams_and_drops_are_neither_added_nor_deleted_here(admin_client):
    stream, drop, _other = _live_stream_with_drops()

    assert admin_client.get(reverse("admin:livestream_stream_add")).status_code == 403
    assert admin_client.get(reverse("admin:livestream_drop_add")).status_code == 403
    delete_stream = reverse("admin:livestream_stream_delete", args=[stream.pk])
    assert admin_client.post(delete_stream, {"post": "yes"}).status_code == 403
    delete_drop = reverse("admin:livestream_drop_delete", args=[drop.pk])
    assert admin_client.post(delete_drop, {"post": "yes"}).status_code == 403
    assert (Stream.objects.count(), Drop.objects.count()) == (1, 2)


@pytest.mark.django_db
def test_the_stream_form_edits_descriptions_but_not_status_or_slug(admin_client):
    stream, pinned, other = _live_stream_with_drops()
    url = reverse("admin:livestream_stream_change", args=[stream.pk])

    response = admin_client.post(
        url,
        {
            "title": "Glow Live (encore)",
            "description": "More serums.",
            "scheduled_start_0": "",
            "scheduled_start_1": "",
            "playback_url": "https://video.example.com/live/2",
            "status": "ended",
            "slug": "hijacked",
            "drops-TOTAL_FORMS": "2",
            "drops-INITIAL_FORMS": "2",
            "drops-MIN_NUM_FORMS": "0",
            "drops-MAX_NUM_FORMS": "1000",
            "drops-0-id": str(pinned.pk),
            "drops-0-stream": str(stream.pk),
            "drops-1-id": str(other.pk),
            "drops-1-stream": str(stream.pk),
        },
    )

    assert response.status_code == 302
    stream.refresh_from_db()
    assert stream.title == "Glow Live (encore)"
    assert stream.playback_url == "https://video.example.com/live/2"
    assert (stream.status, stream.slug) == (Stream.Status.LIVE, "glow-live")


@pytest.mark.django_db
def test_end_stream_action_ends_closes_and_returns_units(admin_client, admin_user):
    first, *_ = _live_stream_with_drops("One")
    second, *_ = _live_stream_with_drops("Two")

    response = admin_client.post(
        reverse("admin:livestream_stream_changelist"),
        {"action": "end_streams", "_selected_action": [first.pk, second.pk]},
    )

    assert response.status_code == 302
    assert _messages(response) == ["Ended: One, Two."]
    assert set(Stream.objects.values_list("status", flat=True)) == {Stream.Status.ENDED}
    assert Drop.objects.filter(is_pinned=True).count() == 0
    assert set(Allocation.objects.values_list("status", "quantity")) == {(AStatus.CLOSED, 0)}
    assert set(StockItem.objects.values_list("on_hand", "reserved")) == {(10, 0)}
    returns = StockMovement.objects.filter(reason=StockMovement.Reason.ALLOCATION_RETURN)
    assert [m.actor for m in returns] == [admin_user] * 4
    assert_inventory_invariants()


@pytest.mark.django_db
def test_end_stream_action_on_an_ended_stream_changes_nothing(admin_client):
    stream, *_ = _live_stream_with_drops()
    services.stream_end(stream_id=stream.pk, actor=stream.host)
    ended_at = Stream.objects.get().ended_at
    movements = StockMovement.objects.count()

    response = admin_client.post(
        reverse("admin:livestream_stream_changelist"),
        {"action": "end_streams", "_selected_action": [stream.pk]},
    )

    assert response.status_code == 302
    assert Stream.objects.get().ended_at == ended_at
    assert StockMovement.objects.count() == movements


@pytest.mark.django_db
def test_unpin_action_unpins_and_keeps_the_units_on_sale(admin_client):
    _stream, pinned, other = _live_stream_with_drops()

    response = admin_client.post(
        reverse("admin:livestream_drop_changelist"),
        {"action": "unpin_drops", "_selected_action": [pinned.pk, other.pk]},
    )

    assert response.status_code == 302
    assert _messages(response) == [f"Unpinned: drop #{pinned.pk}, drop #{other.pk}."]
    pinned.refresh_from_db()
    assert pinned.is_pinned is False
    assert pinned.allocation.status == AStatus.OPEN


@pytest.mark.django_db
def test_staff_without_the_change_permission_get_no_actions(client):
    _stream, pinned, _other = _live_stream_with_drops()
    viewer_staff = UserFactory(is_staff=True)
    client.force_login(viewer_staff)

    response = client.post(
        reverse("admin:livestream_drop_changelist"),
        {"action": "unpin_drops", "_selected_action": [pinned.pk]},
    )

    assert response.status_code == 403
    pinned.refresh_from_db()
    assert pinned.is_pinned is True
