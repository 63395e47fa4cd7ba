"""The entry door: a draw's entries answered before Django, as the reserve's front door
answers reserves (``livestream.front_door``, whose request reading, token memory,
batching thread and response writing this uses).

A viral draw takes entries at the rate its viewers tap, and Django's request handling
alone costs several times what an entry needs. So ``POST /api/drops/{id}/entries/``
with a token and a plain ``{"quantity": N}`` is decided here, in one Redis script
(``draws.window.ENTER_AT_DOOR_LUA``: the token still valid, the window open, one entry
per viewer, the per-address cap, a refusal counted), and an accepted entry is answered
``201`` once its row is committed, written with the others accepted meanwhile in one
transaction by the door's writer thread (``draws.services.entries_write_at_door``): the
same promise as Django's path. A repeat of a committed entry is answered from Redis
while the window is open.

Everything else goes to Django unchanged, body included: a drop whose facts this
process does not hold yet (Django's first entry loads them), a drop whose entry rules
need more than the script checks (account age, watch time, the challenge), a session
(cookie) request, any body but the plain one, a token Redis does not hold as valid, a
repeat after the close (the draw has decided the entry's status), a write that failed.
Django then decides from scratch, so handing an entry on is always safe.
"""

from __future__ import annotations

import re

from django.conf import settings

from core.api.authentication import token_cache_key
from core.api.throttles import client_address_of_scope
from core.converters import IdConverter
from core.exceptions import DomainError
from core.redis import shared_connection
from draws import eligibility, metrics, refusals, selectors, services, window
from draws.exceptions import EntriesClosed, NotEligible
from draws.models import Entry
from livestream import front_door
from livestream.front_door import Answer

ENTRY_PATH = re.compile(rf"^/api/drops/({IdConverter.regex})/entries/$")


def _entry_answer(entry: Entry, *, created: bool, drop_id: int, secure: bool) -> Answer:
    metrics.ENTRY_DECISIONS.labels("entered" if created else "again").inc()
    body = selectors.entry_body(entry, drop_id=drop_id)
    return Answer(201 if created else 200, front_door.render(body), secure)


def _refusal(error: EntriesClosed | NotEligible, secure: bool) -> Answer:
    metrics.ENTRY_DECISIONS.labels(refusals.reason_of(error)).inc()
    return Answer(error.http_status, front_door.render(error.body()), secure)


async def decide(scope, request: front_door.DoorRequest, body: bytes) -> Answer | None:
    """The answer to an entry, or None to hand it to Django."""
    if request.repeated or not front_door.host_allowed(request):
        return None
    secure = front_door.is_secure(scope, request)
    if settings.SECURE_SSL_REDIRECT and not secure:
        return None  # Django redirects it
    quantity = front_door.quantity_of(request, body)
    facts = services.drop_facts_cached(request.drop_id)
    if quantity is None or facts is None or facts.draw_id is None:
        return None
    if facts.min_account_age_seconds or facts.min_watch_seconds or facts.challenge_required:
        return None  # rules the script does not check: Django's path checks them
    if quantity > facts.most_units:
        return None  # Django explains the limit
    redis = shared_connection()
    user_id = await front_door.user_of(redis, request.token)
    if user_id is None:
        return None
    address = client_address_of_scope(scope)
    cap = facts.max_entries_per_address
    keys = [
        *window.window_keys(facts.draw_id),
        token_cache_key(request.token),
        refusals.refusal_key(facts.drop_id),
    ]
    args = [
        user_id,
        quantity,
        window.KEY_TTL_SECONDS,
        address,
        cap or 0,
        user_id,
        refusals.TTL_SECONDS,
    ]
    result = await redis.evalsha(window.ENTER_AT_DOOR_LUA, window.ENTER_AT_DOOR_SHA, keys, args)
    kind = int(result[0])
    if kind == window.TOKEN_NOT_VALID:
        front_door.forget_token(request.token)
        return None
    if kind == window.CLOSED:
        return _refusal(EntriesClosed(), secure)
    if kind == window.ADDRESS_CAP:
        return _refusal(eligibility.address_cap_refusal(), secure)
    if kind == window.SEEN:
        seen = window.seen_entry(result[1])
        if seen is None:
            return None  # accepted, not known committed: Django waits for its row
        units, entry_id, entered_at = seen
        metrics.ENTRY_DECISIONS.labels("again").inc()
        body = selectors.waiting_entry_body(
            entry_id=entry_id, drop_id=facts.drop_id, quantity=units, entered_at=entered_at
        )
        return Answer(200, front_door.render(body), secure)
    if kind != window.ACCEPTED:
        return None  # no window in Redis: Django's path restores it
    pending = services.Pending(
        facts.draw_id,
        user_id,
        quantity,
        window.accepted_at(result[1]),
        address,
        cap,
    )
    # At most one INSERT statement's worth of entries per transaction.
    writer = front_door.batcher(
        "entries", services.entries_write_at_door, services.ENTRY_BATCH_MOST
    )
    outcome = await writer.submit(pending)
    if outcome is None:
        return None
    if isinstance(outcome, DomainError):
        # Refused by the batch (too late for the draw, or over the cap by the rows):
        # counted here, as Django's path counts what its batch refuses.
        reason = refusals.reason_of(outcome)
        await refusals.refusal_count_at_door(redis, drop_id=facts.drop_id, reason=reason)
        return _refusal(outcome, secure)
    entry, created = outcome
    return _entry_answer(entry, created=created, drop_id=facts.drop_id, secure=secure)


class EntryDoor:
    """ASGI middleware: a draw entry's fast answers, everything else to ``app``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        match = ENTRY_PATH.match(scope["path"])
        if match is None or not front_door.door_open():
            return await self.app(scope, receive, send)
        request = front_door.read_headers(scope, int(match.group(1)))
        if request.token is None or request.cookie:
            return await self.app(scope, receive, send)  # before reading the body
        await front_door.answer_or_hand_on(
            self.app, scope, receive, send, request, decide, "an entry"
        )
