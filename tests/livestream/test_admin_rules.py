"""The ops admin keeps the API's rules: a stream edited while it ends stays ended, and
opening or closing a drop's allocation by hand follows the drop's rules (no sale on a
stream that is not live or before the drop's start; closing unpins it and tells
viewers)."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone

from inventory.models import Allocation
from livestream import announce, services
from livestream.models import Drop, Stream
from tests.factories import host_user, live_drop, stream_drop
from tests.inventory.interleave import inside

ALLOCATION_CHANGELIST = "admin:inventory_allocation_changelist"


def _stream_form(stream: Stream, **changes) -> dict:
    data = {
        "title": stream.title,
        "description": stream.description,
        "scheduled_start_0": "",
        "scheduled_start_1": "",
        "playback_url": stream.playback_url,
        "expected_viewers": "",
        "drops-TOTAL_FORMS": "0",
        "drops-INITIAL_FORMS": "0",
        "drops-MIN_NUM_FORMS": "0",
        "drops-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    return {**data, **changes}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_stream_edited_while_it_ends_stays_ended(admin_client, gate_off):
    host = host_user()
    stream = services.stream_create(host=host, title="Glow Live")
    services.stream_start(stream_id=stream.pk, actor=host)
    url = reverse("admin:livestream_stream_change", args=[stream.pk])

    outcome = inside(
        lambda: admin_client.post(url, _stream_form(stream, title="Glow Live (encore)")),
        point="livestream.admin.StreamAdmin.save_model",
        after=False,
        guest=lambda: services.stream_end(stream_id=stream.pk, actor=host),
    )

    assert outcome.host.status_code == 302
    stream.refresh_from_db()
    assert (stream.title, stream.status) == ("Glow Live (encore)", Stream.Status.ENDED)
    assert stream.ended_at is not None


@pytest.mark.django_db
def test_a_blank_title_is_refused_on_the_form(admin_client):
    host = host_user()
    stream = services.stream_create(host=host, title="Glow Live")
    url = reverse("admin:livestream_stream_change", args=[stream.pk])

    response = admin_client.post(url, _stream_form(stream, title="   "))

    assert response.status_code == 200
    assert Stream.objects.get(pk=stream.pk).title == "Glow Live"


def _act(admin_client, action: str, allocation_id: int):
    return admin_client.post(
        reverse(ALLOCATION_CHANGELIST),
        {"action": action, "_selected_action": [str(allocation_id)]},
        follow=True,
    )


@pytest.mark.django_db
def test_opening_the_allocation_of_a_drop_on_a_scheduled_stream_is_refused(admin_client):
    host = host_user()
    stream = services.stream_create(host=host, title="Later")
    drop = stream_drop(stream=stream, quantity=3)

    response = _act(admin_client, "open_allocations", drop.allocation_id)

    assert "Not opened" in response.content.decode()
    assert Allocation.objects.get(pk=drop.allocation_id).status == Allocation.Status.READY


@pytest.mark.django_db
def test_opening_a_timed_drop_before_its_start_is_refused(admin_client):
    drop = live_drop(quantity=3, pin=False)
    Drop.objects.filter(pk=drop.pk).update(starts_at=timezone.now() + timedelta(minutes=5))

    response = _act(admin_client, "open_allocations", drop.allocation_id)

    assert "has not started yet" in response.content.decode()
    assert Allocation.objects.get(pk=drop.allocation_id).status == Allocation.Status.READY


@pytest.mark.django_db
def test_opening_a_drop_on_a_live_stream_opens_it_and_tells_viewers(
    admin_client, django_capture_on_commit_callbacks
):
    drop = live_drop(quantity=3, pin=False)

    with (
        mock.patch.object(announce, "drop_opened") as opened,
        django_capture_on_commit_callbacks(execute=True),
    ):
        _act(admin_client, "open_allocations", drop.allocation_id)

    assert Allocation.objects.get(pk=drop.allocation_id).status == Allocation.Status.OPEN
    opened.assert_called_once_with(drop.pk)


@pytest.mark.django_db
def test_closing_a_pinned_drops_allocation_unpins_it_and_tells_viewers(
    admin_client, django_capture_on_commit_callbacks
):
    drop = live_drop(quantity=3)
    assert drop.is_pinned

    with (
        mock.patch.object(announce, "drop_closed") as closed,
        mock.patch.object(announce, "drop_unpinned") as unpinned,
        django_capture_on_commit_callbacks(execute=True),
    ):
        _act(admin_client, "close_allocations", drop.allocation_id)

    drop.refresh_from_db()
    assert drop.is_pinned is False
    assert drop.allocation.status == Allocation.Status.CLOSED
    closed.assert_called_once_with(drop.pk)
    unpinned.assert_called_once_with(drop.pk, drop.stream_id)
