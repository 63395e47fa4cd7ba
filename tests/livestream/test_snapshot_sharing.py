"""A connect storm shares snapshot builds: viewers joining one stream together cost a
few builds, not one each, and a shared snapshot is never older than an event that
reached the process before the viewer started buffering."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest
from channels.db import database_sync_to_async

from livestream import broadcast, consumers
from tests.livestream.test_consumers import (
    _fresh_hub,  # noqa: F401 (autouse fixture)
    make_stream,
    receive_type,
    viewer,
)

pytestmark = pytest.mark.django_db(transaction=True)
MODES = ["local", pytest.param("redis", marks=pytest.mark.redis)]
VIEWERS = 25


@pytest.fixture
def mode(request, settings):
    if request.param == "local":
        settings.REDIS_URL = ""
    return request.param


@pytest.fixture
def builds(monkeypatch):
    """Counts the snapshot builds (each one reads the database)."""
    counted = {"n": 0}
    real = consumers._build_state

    def counting(stream_id, slug):
        counted["n"] += 1
        return real(stream_id, slug)

    monkeypatch.setattr(consumers, "_build_state", counting)
    return counted


@pytest.mark.parametrize("mode", MODES, indirect=True)
async def test_viewers_joining_together_share_a_few_snapshot_builds(mode, builds, settings):
    # As in production: arrivals within a second fold into one viewer-count event (one
    # event per arrival would outdate each snapshot as soon as it was built).
    settings.VIEWERS_COALESCE_MS = 1000
    stream, _, _ = await make_stream()

    async with AsyncExitStack() as stack:
        # The first viewer makes the process subscribe; until Redis confirms it, no
        # snapshot can be shared (nobody could tell what was missed meanwhile).
        await stack.enter_async_context(viewer(stream.slug))
        states = await asyncio.gather(
            *(stack.enter_async_context(viewer(stream.slug)) for _ in range(VIEWERS - 1))
        )

        assert all(state["stream"]["id"] == stream.pk for _, state in states)
        # About one build per second of the storm and per count event: far fewer
        # builds than viewers, however slow the machine.
        assert builds["n"] < VIEWERS / 2, builds
    await asyncio.sleep(1.2)  # let the last window close inside the test


@pytest.mark.parametrize("mode", MODES, indirect=True)
async def test_a_snapshot_older_than_an_event_already_seen_is_not_shared(mode, builds):
    stream, _, _ = await make_stream()
    publish = database_sync_to_async(broadcast.publish)

    async with viewer(stream.slug) as (first, first_state):
        seq = await publish(stream.pk, "drop.unpinned", drop=1)
        assert (await receive_type(first, "drop.unpinned"))["seq"] == seq > first_state["seq"]

        # Within the sharing window, but the shared snapshot predates that event.
        async with viewer(stream.slug) as (_, second_state):
            assert second_state["seq"] >= seq


@pytest.mark.parametrize("mode", MODES, indirect=True)
async def test_a_fresh_snapshot_is_shared_while_no_event_passed(mode, builds, settings):
    # Arrivals change the viewer count: with coalescing (as in production) the later
    # arrivals fold into one trailing event instead of one event each.
    settings.VIEWERS_COALESCE_MS = 1000
    stream, _, _ = await make_stream()

    async with viewer(stream.slug) as (first, first_state):
        assert builds["n"] == 1
        async with viewer(stream.slug) as (_, second_state), viewer(stream.slug) as (_, third):
            assert builds["n"] == 1  # both served from the first viewer's snapshot
            assert second_state["seq"] == third["seq"] == first_state["seq"]
        # The folded arrivals go out as one trailing count.
        assert (await receive_type(first, "viewers.changed", timeout=3))["seq"] > first_state["seq"]
        await asyncio.sleep(1.2)  # let the last window close inside the test
