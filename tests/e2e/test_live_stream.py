"""A viral drop on the real stack: uvicorn (two processes), a Celery worker, Redis,
PostgreSQL. Hundreds of websocket clients watch; hundreds of buyers race over HTTP."""

import asyncio
import json
import uuid
from collections import Counter
from decimal import Decimal

import httpx
import pytest
import websockets
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token

from inventory.models import Reservation
from livestream import services as live
from tests.factories import stocked_variant
from tests.inventory.invariants import assert_inventory_invariants
from tests.processes import asgi_server, celery_worker

pytestmark = [pytest.mark.postgres, pytest.mark.celery_worker, pytest.mark.server]

UNITS = 12
WATCHERS = 100  # anonymous viewers
BUYERS = 200  # each also watching, signed in by token


class Viewer:
    """One websocket client: records every event and checks the seq never goes back or
    skips (a gap triggers a resync, as a real client does)."""

    def __init__(self, url: str):
        self.url = url
        self.events: list[dict] = []
        self.seq = None
        self.gaps = 0
        self.backwards = 0
        self.personal: list[dict] = []

    async def run(self, everyone_connected: asyncio.Event, done: asyncio.Event, room: list):
        async with websockets.connect(self.url, open_timeout=30, max_queue=None) as ws:
            # In the room once the snapshot arrived: what follows is the live part.
            state = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
            assert state["type"] == "stream.state"
            self.seq = state["seq"]
            self.events.append(state)
            room.append(self)
            if len(room) == room.capacity:
                everyone_connected.set()
            while not done.is_set():
                try:
                    text = await asyncio.wait_for(ws.recv(), timeout=0.5)
                except TimeoutError:
                    continue
                event = json.loads(text)
                if event["type"] == "reservation.updated":
                    self.personal.append(event)
                    continue
                if event["type"] == "stream.state":
                    self.seq = event["seq"]
                    self.events.append(event)
                    continue
                if "seq" not in event:
                    continue
                if self.seq is not None and event["seq"] <= self.seq:
                    self.backwards += 1
                elif self.seq is not None and event["seq"] > self.seq + 1:
                    self.gaps += 1
                    await ws.send(json.dumps({"type": "resync"}))
                self.seq = max(self.seq or 0, event["seq"])
                self.events.append(event)


class Room(list):
    """The viewers connected so far, and how many are expected."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity


@pytest.mark.django_db(transaction=True)
def test_a_viral_drop_every_viewer_sees_the_same_truth_and_nothing_oversells(
    celery_through_broker,
):
    host = get_user_model().objects.create_user("viral-host")
    host.groups.add(Group.objects.get_or_create(name="hosts")[0])
    host_token = Token.objects.create(user=host).key
    buyers = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"buyer-{i}") for i in range(BUYERS)]
    )
    tokens = Token.objects.bulk_create([Token(user=b, key=uuid.uuid4().hex[:40]) for b in buyers])
    stream = live.stream_create(host=host, title="Viral")
    live.stream_start(stream_id=stream.pk, actor=host)
    drop = live.drop_create(
        stream_id=stream.pk,
        variant_id=stocked_variant(on_hand=UNITS).pk,
        quantity=UNITS,
        price=Decimal("25.00"),
        per_viewer_limit=1,
        actor=host,
    )

    with (
        celery_worker(concurrency=2),
        asgi_server(
            workers=2,
            CELERY_TASK_ALWAYS_EAGER="false",
            THROTTLE_RESERVE_IP="100000/min",
            # All 300 sockets come from 127.0.0.1, and workers share them unevenly.
            WS_MAX_CONNECTIONS_PER_ADDRESS="0",
        ) as server,
    ):
        outcome = asyncio.run(
            _spike(server, stream.slug, drop.pk, host_token, [t.key for t in tokens])
        )

    watchers, buyer_viewers, reserve_codes, checkout_codes = outcome
    everyone = watchers + buyer_viewers
    # Exactly UNITS holds, all bought; everyone else turned away, nobody errored.
    assert reserve_codes == Counter({202: UNITS, 409: BUYERS - UNITS})
    assert checkout_codes == Counter({201: UNITS})
    assert Reservation.objects.filter(status="confirmed").count() == UNITS
    assert Reservation.objects.count() == UNITS
    for viewer in everyone:
        kinds = [e["type"] for e in viewer.events]
        assert kinds[0] == "stream.state"
        assert "drop.pinned" in kinds
        assert "drop.sold_out" in kinds
        stock = [e for e in viewer.events if e["type"] == "stock.changed"]
        assert (stock[-1]["remaining"], stock[-1]["sold"]) == (0, UNITS)
        assert viewer.backwards == 0
    # Gaps are allowed only if the viewer resynced (each gap sends a resync).
    assert sum(v.gaps for v in everyone) == sum(
        kinds.count("stream.state") - 1
        for kinds in ([e["type"] for e in v.events] for v in everyone)
    )
    # Each buyer whose request was taken got its own reservation events.
    winners = [v for v in buyer_viewers if v.personal]
    assert len(winners) == UNITS
    for viewer in winners:
        statuses = [e["reservation"]["status"] for e in viewer.personal]
        assert "held" in statuses and statuses[-1] == "confirmed"
        assert len({e["reservation"]["id"] for e in viewer.personal}) == 1
    assert_inventory_invariants()


async def _spike(server, slug, drop_id, host_token, buyer_tokens):
    ws_url = f"{server.ws_url}/ws/streams/{slug}/"
    watchers = [Viewer(ws_url) for _ in range(WATCHERS)]
    buyer_viewers = [Viewer(f"{ws_url}?token={token}") for token in buyer_tokens]
    ready, done = asyncio.Event(), asyncio.Event()
    room = Room(len(watchers) + len(buyer_viewers))
    tasks = [asyncio.create_task(v.run(ready, done, room)) for v in watchers + buyer_viewers]
    await asyncio.wait_for(ready.wait(), timeout=90)

    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as http:
        pinned = await http.post(
            f"/api/drops/{drop_id}/pin/", headers={"Authorization": f"Token {host_token}"}
        )
        assert pinned.status_code == 200

        async def reserve(token):
            return token, await http.post(
                f"/api/drops/{drop_id}/reservations/",
                json={"quantity": 1},
                headers={"Authorization": f"Token {token}", "Idempotency-Key": uuid.uuid4().hex},
            )

        answers = await asyncio.gather(*(reserve(t) for t in buyer_tokens))
        reserve_codes = Counter(r.status_code for _, r in answers)
        holders = [(t, r.json()["id"]) for t, r in answers if r.status_code == 202]

        async def held(token, reservation_id):
            for _ in range(300):
                body = (
                    await http.get(
                        f"/api/reservations/{reservation_id}/",
                        headers={"Authorization": f"Token {token}"},
                    )
                ).json()
                if body["status"] != "pending":
                    return body["status"]
                await asyncio.sleep(0.1)
            return "pending"

        assert set(await asyncio.gather(*(held(t, r) for t, r in holders))) == {"held"}

        async def checkout(token, reservation_id):
            return await http.post(
                f"/api/reservations/{reservation_id}/checkout/",
                headers={"Authorization": f"Token {token}"},
            )

        checkouts = await asyncio.gather(*(checkout(t, r) for t, r in holders))
        checkout_codes = Counter(r.status_code for r in checkouts)

    await asyncio.sleep(2)  # the trailing coalesced counters arrive
    done.set()
    await asyncio.gather(*tasks)
    return watchers, buyer_viewers, reserve_codes, checkout_codes
