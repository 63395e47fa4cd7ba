"""Numbering, publishing and coalescing of stream events."""

import json
import threading
import time
from decimal import Decimal
from unittest import mock

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.redis import get_redis
from inventory import services as inventory
from inventory.tasks import settle
from livestream import broadcast, receivers, services, topics
from tests.factories import UserFactory, live_drop, stocked_variant
from tests.inventory.helpers import request_hold


def _listen(stream_id):
    return _subscribed(topics.stream_channel(stream_id))


def _subscribed(*channels):
    pubsub = get_redis().pubsub()
    pubsub.subscribe(*channels)
    for _ in channels:
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    return pubsub


def _personal(pubsub, *, wait=2.0) -> dict[int, list[dict]]:
    """The personal events heard, per user id (from the channel's name)."""
    found: dict[int, list[dict]] = {}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.05)
        if message and message["type"] == "message":
            user_id = int(message["channel"].split(":")[-2])
            found.setdefault(user_id, []).append(json.loads(message["data"]))
    return found


def _events(pubsub, *, wait=1.0):
    found, deadline = [], time.monotonic() + wait
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.05)
        if message and message["type"] == "message":
            found.append(json.loads(message["data"]))
    return found


@pytest.mark.redis
def test_events_are_numbered_per_stream_and_published_once_serialised():
    pubsub = _listen(41)

    first = broadcast.publish(41, "viewers.changed", viewers=3)
    second = broadcast.publish(41, "viewers.changed", viewers=4)
    broadcast.publish(42, "viewers.changed", viewers=9)  # another stream, its own count

    assert (first, second) == (1, 2)
    events = _events(pubsub)
    # Each carries the server's time of the event (clients measure delivery with it).
    stamps = [event.pop("ts") for event in events]
    assert all(abs(stamp - time.time()) < 5 for stamp in stamps)
    assert events == [
        {"seq": 1, "type": "viewers.changed", "viewers": 3},
        {"seq": 2, "type": "viewers.changed", "viewers": 4},
    ]
    assert broadcast.current_seq(41) == 2
    assert broadcast.current_seq(42) == 1


@pytest.mark.redis
def test_concurrent_publishers_never_send_seq_out_of_order():
    pubsub = _listen(7)

    def burst():
        for _ in range(50):
            broadcast.publish(7, "stock.changed", drop=1, remaining=0, sold=0)

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    seqs = [event["seq"] for event in _events(pubsub, wait=1.5)]
    assert seqs == list(range(1, 201))


@pytest.mark.parametrize("mode", ["local", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_burst_is_coalesced_and_the_last_value_delivered(mode, settings):
    if mode == "local":
        settings.REDIS_URL = ""
    settings.BROADCAST_COALESCE_MS = 100
    value = {"n": 0}
    sent = []
    coalescer = broadcast.Coalescer(f"test-{mode}", lambda key: sent.append((key, value["n"])))

    for n in range(1, 51):  # 50 changes at once (a sleep between them would make the
        value["n"] = n  # burst's length, and so the count, depend on the machine's load)
        coalescer.touch("drop-1")
    time.sleep(0.5)

    assert sent[0] == ("drop-1", 1)  # the first change goes out at once
    assert sent[-1] == ("drop-1", 50)  # the last value always arrives
    assert len(sent) <= 3  # ...and a burst costs a few events, not fifty
    assert [n for _, n in sent] == sorted(n for _, n in sent)


@pytest.mark.redis
def test_a_late_trailing_timer_lets_no_other_process_send_inside_the_window(settings):
    """Two processes share the window in Redis. The owner's timer fires late (a busy
    process): the window must still be closed to the other process until the owner's
    trailing send, so sends stay a window apart."""
    settings.BROADCAST_COALESCE_MS = 100
    sent = []
    owner = broadcast.Coalescer("test-late", lambda key: sent.append(("owner", time.monotonic())))
    other = broadcast.Coalescer("test-late", lambda key: sent.append(("other", time.monotonic())))
    late = 0.2  # twice the window
    owner._arm = lambda key, window_ms: broadcast._timers.call_later(
        late, owner._trail, key, window_ms
    )

    owner.touch(3)
    time.sleep(0.15)  # past the window, before the owner's late timer
    other.touch(3)
    time.sleep(0.3)

    assert [who for who, _ in sent] == ["owner", "owner"]  # the lead, then its trail
    assert sent[1][1] - sent[0][1] >= 0.1


@pytest.mark.redis
def test_trailing_sends_of_many_keys_run_on_one_thread_in_due_order(settings):
    """Each trailing send may read the database: one long-lived thread keeps one
    connection for them all, instead of a thread (and a connection) per send."""
    settings.BROADCAST_COALESCE_MS = 100
    sent = []
    coalescer = broadcast.Coalescer(
        "test-threads", lambda key: sent.append((key, threading.current_thread().name))
    )
    for key in range(20):
        coalescer.touch(key)
        coalescer.touch(key)  # folded into the window: a trailing send each
    time.sleep(0.6)

    trailing = sent[20:]
    assert sorted(key for key, _ in trailing) == list(range(20))
    assert [key for key, _ in trailing] == list(range(20))  # as they fell due
    assert {name for _, name in trailing} == {"broadcast-timers"}
    assert [t.name for t in threading.enumerate()].count("broadcast-timers") == 1


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_stock_changes_sold_out_and_pins_reach_the_stream_channel():
    host = UserFactory()
    host.groups.add(Group.objects.get_or_create(name="hosts")[0])
    stream = services.stream_create(host=host, title="Events")
    services.stream_start(stream_id=stream.pk, actor=host)
    variant = stocked_variant(on_hand=5)
    drop = services.drop_create(
        stream_id=stream.pk,
        variant_id=variant.pk,
        quantity=2,
        price=Decimal("5.00"),
        per_viewer_limit=None,
        actor=host,
    )
    pubsub = _listen(stream.pk)

    services.drop_pin(drop_id=drop.pk, actor=host)
    for i in range(2):
        services.drop_reserve(
            drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1, idempotency_key=f"k{i}"
        )
    services.stream_end(stream_id=stream.pk, actor=host)

    events = _events(pubsub)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "drop.pinned"
    assert events[0]["drop"]["id"] == drop.pk
    stock = [e for e in events if e["type"] == "stock.changed"]
    assert stock[-1] == {
        "seq": stock[-1]["seq"],
        "ts": stock[-1]["ts"],
        "type": "stock.changed",
        "drop": drop.pk,
        "remaining": 0,
        "sold": 0,
    }
    assert kinds.count("drop.sold_out") == 1
    assert kinds.index("drop.sold_out") > kinds.index("stock.changed")
    assert kinds[-1] == "stream.ended"
    assert kinds.index("drop.unpinned") > kinds.index("drop.sold_out")
    assert [e["seq"] for e in events] == list(
        range(events[0]["seq"], events[0]["seq"] + len(events))
    )


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_the_buyer_gets_a_personal_reservation_event_on_their_own_channel():
    from tests.factories import open_allocation

    buyer, other = UserFactory(), UserFactory()
    pubsub = _subscribed(topics.user_channel(buyer.pk), topics.user_channel(other.pk))
    allocation = open_allocation(quantity=3)

    reservation = inventory.reservation_request(
        customer_id=buyer.pk,
        allocation_id=allocation.pk,
        quantity=1,
        idempotency_key="mine",
        unit_price=Decimal("5.00"),
        currency="USD",
    )

    heard = _personal(pubsub, wait=1.0)
    assert set(heard) == {buyer.pk}  # nobody else hears of it
    assert [e["type"] for e in heard[buyer.pk]] == ["reservation.updated"]
    event = heard[buyer.pk][0]
    assert (event["reservation"]["id"], event["reservation"]["status"]) == (reservation.pk, "held")


@pytest.mark.redis
@pytest.mark.django_db
def test_every_buyer_of_a_settled_batch_gets_their_own_event(django_capture_on_commit_callbacks):
    """A batch this big is told by a task (eager here), one trip for all buyers."""
    from inventory.models import Reservation
    from tests.factories import open_allocation

    allocation = open_allocation(quantity=30)
    buyers = [UserFactory() for _ in range(20)]
    pubsub = _subscribed(*(topics.user_channel(buyer.pk) for buyer in buyers))
    rows = Reservation.objects.bulk_create(
        [
            Reservation(
                customer=buyer,
                allocation=allocation,
                quantity=1,
                unit_price=Decimal("5.00"),
                currency="USD",
                idempotency_key=f"batch-{buyer.pk}",
            )
            for buyer in buyers
        ]
    )

    assert len(rows) >= receivers.NOTIFY_IN_BACKGROUND_FROM

    with django_capture_on_commit_callbacks(execute=True):
        inventory.allocation_settle_pending(allocation_id=allocation.pk)

    heard = _personal(pubsub)
    for buyer, row in zip(buyers, rows, strict=True):
        [event] = heard[buyer.pk]
        assert event["type"] == "reservation.updated"
        assert (event["reservation"]["id"], event["reservation"]["status"]) == (row.pk, "held")


@pytest.mark.redis
def test_a_settled_batch_tells_its_buyers_in_one_round_trip(monkeypatch):
    """One pipeline of PUBLISHes, not a round trip (or several) per buyer."""
    import redis

    trips = []
    real = redis.client.Pipeline.execute
    monkeypatch.setattr(
        redis.client.Pipeline,
        "execute",
        lambda self, *a, **k: trips.append(len(self.command_stack)) or real(self, *a, **k),
    )
    pubsub = _subscribed(*(topics.user_channel(uid) for uid in (901, 902, 903)))

    broadcast.send_personal_many(
        [(uid, "reservation.updated", {"reservation": {"id": uid}}) for uid in (901, 902, 903)]
    )

    assert trips == [3]
    heard = _personal(pubsub, wait=0.5)
    assert {uid: [e["reservation"]["id"] for e in events] for uid, events in heard.items()} == {
        901: [901],
        902: [902],
        903: [903],
    }


@pytest.mark.redis
def test_a_window_stranded_by_a_dead_process_is_delivered_by_the_sweep(settings):
    from livestream.tasks import flush_counters

    settings.BROADCAST_COALESCE_MS = 100
    sent = []
    coalescer = broadcast.Coalescer("test-sweep", sent.append)
    _window, dirty = coalescer._keys(7)
    # Another process took the window, a later change marked it dirty, and the owner
    # died before its trailing send: only the dirty mark is left once the window ends.
    get_redis().set(dirty, "1", px=60000)

    assert coalescer.sweep() == 1
    assert sent == [7]
    assert coalescer.sweep() == 0  # claimed once
    time.sleep(0.3)
    assert sent == [7]  # and the window it opened closed quietly
    assert flush_counters() == {"stock": 0, "viewers": 0}


@pytest.mark.redis
def test_the_sweep_leaves_a_live_window_to_its_owner(settings):
    settings.BROADCAST_COALESCE_MS = 1000
    sent = []
    coalescer = broadcast.Coalescer("test-live", sent.append)
    coalescer.touch(3)  # this process owns the window now
    coalescer.touch(3)  # dirty, for the owner's trailing send

    assert coalescer.sweep() == 0
    assert sent == [3]


# --- versions: a send that comes late never shows an older value ---------------------


class _LocalHub:
    """What the broadcast hands to this process's hub without Redis."""

    def __init__(self):
        self.stream: list[dict] = []
        self.personal: list[tuple[int, dict]] = []

    def deliver(self, stream_id, text):
        self.stream.append(json.loads(text))

    def deliver_personal(self, user_id, text):
        self.personal.append((user_id, json.loads(text)))


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def heard(request, settings, monkeypatch):
    """Where the test's stream 61 and user 62 are heard: this process's hub without
    Redis, their channels with it. Returns a function giving (stream events, personal
    events)."""
    if request.param == "local":
        settings.REDIS_URL = ""
        hub = _LocalHub()
        monkeypatch.setattr(broadcast, "get_hub", lambda: hub)
        return lambda: (hub.stream, [event for _, event in hub.personal])
    stream, personal = _listen(61), _subscribed(topics.user_channel(62))
    return lambda: (_events(stream, wait=0.5), _personal(personal, wait=0.5).get(62, []))


def test_a_latest_value_older_than_the_one_kept_is_dropped_and_never_sent(heard):
    latest = broadcast.Latest("test-stock")

    assert latest.publish("d1", 61, "stock.changed") is None  # nothing kept: nothing sent
    assert latest.offer("d1", 5, drop=1, remaining=3, sold=2)
    assert not latest.offer("d1", 4, drop=1, remaining=4, sold=1)  # older, offered late
    assert latest.publish("d1", 61, "stock.changed") == {"drop": 1, "remaining": 3, "sold": 2}
    assert latest.offer("d1", 5, drop=1, remaining=2, sold=3)  # the same commit, later
    assert latest.offer("d1", 6, drop=1, remaining=1, sold=4)
    latest.publish("d1", 61, "stock.changed")

    stream, _ = heard()
    assert [(e["type"], e["remaining"], e["sold"]) for e in stream] == [
        ("stock.changed", 3, 2),
        ("stock.changed", 1, 4),
    ]
    assert stream[1]["seq"] == stream[0]["seq"] + 1  # numbered like every stream event
    assert all(isinstance(e["ts"], float) for e in stream)


def test_a_personal_event_older_than_one_sent_about_the_same_thing_is_not_sent(heard):
    def told(about, version, status, scope="allocation:5"):
        return broadcast.VersionedPersonal(
            scope, about, version, 62, "reservation.updated", {"reservation": {"status": status}}
        )

    sent = broadcast.send_personal_versioned(
        [told("7", 3, "confirmed"), told("8", 1, "held"), told("7", 1, "held", "allocation:6")]
    )
    late = broadcast.send_personal_versioned([told("7", 2, "held"), told("8", 1, "released")])

    assert (sent, late) == (3, 1)
    _, personal = heard()
    # Reservation 7's hold, told after its confirmation, is dropped; reservation 8's two
    # changes of one commit both go, in order; another allocation counts its own.
    assert [e["reservation"]["status"] for e in personal] == [
        "confirmed",
        "held",
        "held",
        "released",
    ]


@pytest.mark.redis
@pytest.mark.django_db
def test_a_settle_told_late_never_undoes_the_checkout_viewers_saw_first(
    django_capture_on_commit_callbacks, settings
):
    """The settle's sends run after the buyer checked out (another process, told late):
    the buyer never hears ``held`` after ``confirmed``, and the stock never goes back.
    What they say is the change's own data: the late sends read no row."""
    settings.BROADCAST_COALESCE_MS = 0  # every change sent
    capture = django_capture_on_commit_callbacks
    with capture(execute=True):
        drop = live_drop(quantity=3)
    buyer = UserFactory()
    stream, personal = _listen(drop.stream_id), _subscribed(topics.user_channel(buyer.pk))

    with mock.patch.object(settle, "delay"):  # admitted; its settle runs below
        pending = request_hold(buyer.pk, drop.allocation_id, key="late")
    with capture(execute=False) as settle_sends:
        inventory.allocation_settle_pending(allocation_id=drop.allocation_id)
    with capture(execute=True):
        inventory.reservation_confirm(reservation_id=pending.pk)

    with CaptureQueriesContext(connection) as queries:
        for send in settle_sends:
            send()

    assert [q["sql"] for q in queries] == []
    told = _personal(personal)[buyer.pk]
    assert [e["reservation"]["status"] for e in told] == ["confirmed"]
    figures = [(e["remaining"], e["sold"]) for e in _events(stream) if e["type"] == "stock.changed"]
    assert figures == [(2, 1)]
