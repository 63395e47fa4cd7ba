"""The entry door (``draws.door``) in front of Django, on real Redis and PostgreSQL: a
new entry is answered 201 only once its row is committed, a repeat 200 from Redis with
the same body, refusals with their codes and counted, and whatever the script does not
decide (rules it does not check, a cookie, another body, a repeat after the close, a
failed write) goes to Django untouched."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync
from rest_framework.authtoken.models import Token

from core.api.authentication import CachedTokenAuthentication
from draws import door, selectors, services, window
from draws.exceptions import EntriesClosed, NotEligible
from draws.models import Draw, Entry
from livestream import front_door
from livestream import services as live
from tests.draws.helpers import draw_drop
from tests.factories import UserFactory
from tests.livestream.test_front_door import Sent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


@pytest.fixture(autouse=True)
def _door(gate_on, settings):
    settings.FRONT_DOOR_ENABLED = True
    front_door.forget_tokens()
    yield
    front_door.forget_tokens()


def _viewer() -> tuple[int, str]:
    user = UserFactory()
    token = Token.objects.create(user=user)
    CachedTokenAuthentication().authenticate_credentials(token.key)  # as Django's first
    return user.pk, token.key


async def _enter(drop_id, token, *, body=b'{"quantity": 1}', address="10.0.0.1", cookie=False):
    sent = Sent()
    headers = [
        (b"host", b"testserver"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Token {token}".encode()),
    ]
    if cookie:
        headers.append((b"cookie", b"sessionid=x"))
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": f"/api/drops/{drop_id}/entries/",
        "query_string": b"",
        "headers": headers,
        "client": (address, 5000),
    }

    async def django(scope, receive, send_):
        sent.django_got.append((await receive())["body"])
        await send_({"type": "http.response.start", "status": 299, "headers": []})
        await send_({"type": "http.response.body", "body": b"from django"})

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            sent.status = message["status"]
        else:
            sent.body += message.get("body", b"")

    await door.EntryDoor(django)(scope, receive, send)
    return sent


def _run(*calls):
    """The calls, together on one loop; their answers in order."""

    async def run():
        try:
            return await asyncio.gather(*calls)
        finally:
            await front_door.close_clients()

    return async_to_sync(run)()


def _warm(drop) -> None:
    """The process's first entry on the drop goes through the services (Django)."""
    services.entry_submit(drop_id=drop.pk, customer_id=UserFactory().pk, quantity=1)


def test_entries_are_answered_at_the_door_once_committed_and_repeats_from_redis():
    drop = draw_drop(quantity=3, per_viewer_limit=2)
    _warm(drop)
    viewers = [_viewer() for _ in range(30)]

    first = _run(*(_enter(drop.pk, token) for _, token in viewers))
    again = _run(*(_enter(drop.pk, token, body=b'{"quantity": 2}') for _, token in viewers))

    assert all(s.answered_by_door and s.status == 201 for s in first)
    rows = {e.customer_id: e for e in Entry.objects.filter(draw__drop=drop)}
    for (user_id, _), sent in zip(viewers, first, strict=True):
        assert sent.json() == selectors.entry_body(rows[user_id], drop_id=drop.pk)
    # A repeat, whatever quantity it sends, is the first entry again.
    assert all(s.answered_by_door and s.status == 200 for s in again)
    assert [s.json() for s in again] == [s.json() for s in first]
    assert len(rows) == 31
    assert window.window_in_flight(draw_id=rows[viewers[0][0]].draw_id) == 0


def test_the_door_refuses_a_closed_draw_and_an_address_over_its_cap_and_counts_them():
    drop = draw_drop(quantity=1, pin=False)
    services.entry_rules_set(drop_id=drop.pk, actor=drop.stream.host, max_entries_per_address=1)
    live.drop_pin(drop_id=drop.pk, actor=drop.stream.host)
    _warm(drop)  # from no address: the cap counts per address
    (_, one), (_, two), (_, late) = _viewer(), _viewer(), _viewer()

    entered, capped, elsewhere = _run(
        _enter(drop.pk, one), _enter(drop.pk, two), _enter(drop.pk, two, address="10.0.0.2")
    )
    services.draw_close_early(drop_id=drop.pk, actor=drop.stream.host)
    (closed, repeat) = _run(_enter(drop.pk, late), _enter(drop.pk, one))

    assert (entered.status, elsewhere.status) == (201, 201)
    assert (capped.status, capped.json()["code"], capped.json()["reason"]) == (
        409,
        "not_eligible",
        "address_cap",
    )
    assert (closed.status, closed.json()["code"]) == (409, "entries_closed")
    assert all(s.answered_by_door for s in (entered, capped, elsewhere, closed))
    # Once drawn, an entry's status is the draw's: Django answers the repeat.
    assert not repeat.answered_by_door
    assert Draw.objects.get(drop=drop).status == "drawn"
    assert selectors.refusals_of_drop(drop_id=drop.pk) == {"address_cap": 1, "entries_closed": 1}
    assert Entry.objects.filter(draw__drop=drop).count() == 3


def test_what_the_script_does_not_decide_goes_to_django_untouched():
    checked = draw_drop(quantity=1, pin=False)
    services.entry_rules_set(drop_id=checked.pk, actor=checked.stream.host, min_watch_seconds=5)
    live.drop_pin(drop_id=checked.pk, actor=checked.stream.host)
    plain = draw_drop(quantity=1)
    unseen = draw_drop(quantity=1)  # this process holds no facts of it yet
    services.entry_submit(drop_id=plain.pk, customer_id=UserFactory().pk, quantity=1)
    with pytest.raises(NotEligible):  # the facts are loaded all the same
        services.entry_submit(drop_id=checked.pk, customer_id=UserFactory().pk, quantity=1)
    _, token = _viewer()
    odd_body = b'{"quantity": 1, "challenge_token": "x"}'

    answers = _run(
        _enter(checked.pk, token),
        _enter(unseen.pk, token),
        _enter(plain.pk, token, cookie=True),
        _enter(plain.pk, token, body=odd_body),
        _enter(plain.pk, token, body=b'{"quantity": 2}'),  # over the drop's 1 unit
        _enter(plain.pk, "not-a-token"),
    )

    assert [s.django_got for s in answers] == [
        [b'{"quantity": 1}'],
        [b'{"quantity": 1}'],
        [b'{"quantity": 1}'],  # a cookie: handed on before the door reads the body
        [odd_body],
        [b'{"quantity": 2}'],
        [b'{"quantity": 1}'],
    ]
    assert Entry.objects.filter(draw__drop__in=[checked, unseen]).count() == 0
    assert Entry.objects.filter(draw__drop=plain).count() == 1  # the first, by the services


def test_a_failed_write_hands_the_entries_to_django_and_redis_forgets_them(monkeypatch):
    drop = draw_drop(quantity=1)
    _warm(drop)
    _, token = _viewer()
    draw_id = Draw.objects.get(drop=drop).pk

    def broken(batch):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(services, "_write_entries", broken)
    (failed,) = _run(_enter(drop.pk, token))
    monkeypatch.undo()

    assert not failed.answered_by_door
    assert window.window_in_flight(draw_id=draw_id) == 0
    assert selectors.entries_so_far(draw_id=draw_id) == 1  # the first, by the services
    # Redis forgot the entry: the viewer's next try is accepted and written.
    (again,) = _run(_enter(drop.pk, token))
    assert (again.answered_by_door, again.status) == (True, 201)
    assert selectors.entries_so_far(draw_id=draw_id) == Entry.objects.count() == 2


def test_a_refusal_the_batch_returns_is_answered_and_counted(monkeypatch):
    drop = draw_drop(quantity=1)
    _warm(drop)
    _, token = _viewer()

    def too_late(batch):  # as when the draw's fence refuses a write behind it
        return [EntriesClosed() for _ in batch]

    monkeypatch.setattr(services, "_write_entries", too_late)
    (refused,) = _run(_enter(drop.pk, token))

    assert (refused.answered_by_door, refused.status) == (True, 409)
    assert refused.json()["code"] == "entries_closed"
    assert selectors.refusals_of_drop(drop_id=drop.pk) == {"entries_closed": 1}
