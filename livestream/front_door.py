"""The front door: the hot request of a viral pin answered before Django, when it can be.

``POST /api/drops/{id}/reservations/`` is what tens of thousands of viewers send in the
second a drop is pinned, and most of them are told no (sold out, at their limit,
throttled) or are retries of a request already answered. Django's request handling
alone tops out near 1,800 requests/s on two cores, so those answers cannot come from
inside it at the rate they are asked for. This ASGI app, mounted in ``config/asgi.py``
ahead of Django, answers them from memory and one Redis script per request, which runs
the same checks, in the same order, on the same Redis keys as the Django view:

1. the token (``Authorization: Token``): the user's entry in the token cache must be
   there and active (a logout deletes it, so a revoked token is never answered here);
2. both throttles (``core.api.throttles``: the same sliding logs);
3. the ``Idempotency-Key``'s stored answer (``core.api.idempotency``): a replay gets it
   back, the same key with another body a 422;
4. the gate's decision (``inventory.gate``): a refusal is counted as demand and stored
   as the key's answer, exactly as the view would; an admission takes its units.

Everything else goes to Django unchanged, body included: any request that is not a
plain token-authenticated reserve with a valid key and body, a session (cookie)
request (CSRF is Django's), a drop this process has not routed yet, an unknown or
inactive token, a key whose reservation Redis forgot. Django then decides from
scratch, so handing a request on is always safe.

An admission takes its units in the script and is answered 202 once its pending row
is committed (see "admissions" below): the same promise as Django's path, made for
many requests per commit. A token the cache does not hold is loaded from the database
by the door itself, many per query ("tokens" below).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.core.signals import setting_changed
from django.db import connection
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host
from redis.exceptions import RedisError
from rest_framework.renderers import JSONRenderer

from core.api import idempotency
from core.api.authentication import token_cache_key, tokens_load
from core.api.parsers import refuse_constant
from core.api.throttles import (
    THROTTLE_LUA,
    ReserveIPThrottle,
    ReserveUserThrottle,
    client_address_of_scope,
    throttle_member,
    throttle_redis_key,
    throttle_wait_of,
    throttled_error,
)
from core.converters import IdConverter
from core.exceptions import IdempotencyKeyReused, InvalidInput
from core.redis import SharedConnection, shared_connection, shared_connection_close
from inventory import gate
from inventory.exceptions import DropNotLive, LimitReached, SoldOut, TooManyHolds
from inventory.models import Reservation
from inventory.services import AdmittedRequest, reservations_create_pending, validate_quantity
from inventory.services.gate_sync import gate_undo_admission
from livestream import snapshot_cache
from livestream.models import Drop
from livestream.selectors import drop_routing_cached
from livestream.serializers import ReservationSerializer

logger = logging.getLogger(__name__)

RESERVE_PATH = re.compile(rf"^/api/drops/({IdConverter.regex})/reservations/$")
# Django's ``slug`` path converter.
STREAM_PATH = re.compile(r"^/api/streams/([-a-zA-Z0-9_]+)/$")
_KEY = re.compile(idempotency.KEY_PATTERN)

# What the script answers (its first item).
PASS, THROTTLED, REPLAY, KEY_REUSED, REFUSED, ADMITTED = range(6)

# KEYS: token entry, user throttle, address throttle, the key's stored answer, then the
#       gate's nine keys (``gate.admission_keys``).
# ARGV: user id, quantity, now, epoch token, fingerprint, user rate (limit, period),
#       address rate (limit, period), a throttle member, the gate's key TTL, the answer's
#       TTL, the bodies of sold_out, limit_reached and drop_not_live.
# An admission takes its units here (and is counted by both throttles and as demand);
# its pending row is written by the caller before it answers.
_SCRIPT = (
    THROTTLE_LUA
    + gate.DECIDE_LUA
    + """
local user, qty, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local token = redis.call('HMGET', KEYS[1], 'pk', 'is_active')
if token[1] ~= user or token[2] ~= '1' then return {0, 'token'} end

local user_limit, user_period = tonumber(ARGV[6]), tonumber(ARGV[7])
local ip_limit, ip_period = tonumber(ARGV[8]), tonumber(ARGV[9])
local user_wait = throttle_wait(KEYS[2], now, user_period, user_limit)
local ip_wait = throttle_wait(KEYS[3], now, ip_period, ip_limit)
-- As DRF: every throttle that allows the request counts it, even when another refuses.
local function count_request()
  if user_wait == -1 then throttle_hit(KEYS[2], now, user_period, user_limit, ARGV[10]) end
  if ip_wait == -1 then throttle_hit(KEYS[3], now, ip_period, ip_limit, ARGV[10]) end
end
if user_wait ~= -1 or ip_wait ~= -1 then
  count_request()
  local wait = -2  -- no wait known, unless a throttle that refuses knows one
  if user_wait >= 0 then wait = user_wait end
  if ip_wait >= 0 and ip_wait > wait then wait = ip_wait end
  return {1, tostring(wait)}
end

local stored = redis.call('HMGET', KEYS[4], 'fp', 'status', 'body')
if stored[1] then
  count_request()
  if stored[1] ~= ARGV[5] then return {3} end
  return {2, stored[2], stored[3]}
end

local g = {KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13]}
local decision = decide(g, user, qty, ARGV[3], ARGV[11], ARGV[4])
if type(decision) == 'table' then
  count_request()
  return {5, decision[2]}
end
local body
if decision == -2 then body = ARGV[13]
elseif decision == -3 then body = ARGV[14]
elseif decision == -1 then body = ARGV[15]
else return {0, 'gate'} end  -- a replay, a missing gate, reclaimable holds
count_request()
redis.call('HSET', KEYS[4], 'fp', ARGV[5], 'status', '409', 'body', body)
redis.call('EXPIRE', KEYS[4], ARGV[12])
return {4, decision}
"""
)


def render(body) -> bytes:
    return JSONRenderer().render(body)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    secure: bool = False  # the request came over HTTPS (HSTS applies)
    extra: dict[str, str] = field(default_factory=dict)  # headers beyond the usual ones
    allow: str = "POST, OPTIONS"


@dataclass
class DoorRequest:
    """The parts of a reserve request the door reads; None where it must hand on."""

    drop_id: int
    token: str | None = None
    key: str | None = None
    content_type: str | None = None
    host: str | None = None
    forwarded_host: bool = False
    forwarded_proto: str | None = None
    cookie: bool = False
    repeated: bool = False
    authorization: bool = False  # any scheme
    accept: str | None = None


def read_headers(scope, drop_id: int) -> DoorRequest:
    request = DoorRequest(drop_id=drop_id)
    seen: set[bytes] = set()
    proto_header = _proxy_ssl_header()
    for name, value in scope["headers"]:
        if name in seen and name in _SINGLE:
            request.repeated = True
        seen.add(name)
        if name == b"authorization":
            request.authorization = True
            parts = value.split()
            if len(parts) == 2 and parts[0].lower() == b"token":
                request.token = parts[1].decode("latin-1")
        elif name == b"idempotency-key":
            request.key = value.decode("latin-1")
        elif name == b"content-type":
            request.content_type = value.decode("latin-1")
        elif name == b"host":
            request.host = value.decode("latin-1")
        elif name == b"cookie":
            request.cookie = True
        elif name == b"accept":
            request.accept = value.decode("latin-1").strip()
        elif name == b"x-forwarded-host":
            request.forwarded_host = True
        if proto_header is not None and name == proto_header[0]:
            request.forwarded_proto = value.decode("latin-1")
    return request


_SINGLE = {b"authorization", b"idempotency-key", b"content-type", b"host", b"cookie", b"accept"}


# What the door derives from settings is derived once (``_forget_settings`` clears it
# when a setting changes, as tests do).
@lru_cache(maxsize=1)
def _proxy_ssl_header() -> tuple[bytes, str] | None:
    header = settings.SECURE_PROXY_SSL_HEADER
    if not header:
        return None
    meta_name, expected = header
    return meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode(), expected


def host_allowed(request: DoorRequest) -> bool:
    """Django's ``get_host`` check: a Host it would refuse (400) is Django's to answer."""
    if request.host is None:
        return False
    return _host_allowed_by_settings(request.host, request.forwarded_host)


@lru_cache(maxsize=256)
def _host_allowed_by_settings(host: str, forwarded_host: bool) -> bool:
    if forwarded_host and settings.USE_X_FORWARDED_HOST:
        return False
    domain, _port = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


def is_secure(scope, request: DoorRequest) -> bool:
    header = _proxy_ssl_header()
    if header is not None and request.forwarded_proto is not None:
        return request.forwarded_proto.split(",")[0].strip() == header[1]
    return scope.get("scheme") == "https"


@lru_cache(maxsize=4)
def _response_headers(
    secure: bool, allow: str = "POST, OPTIONS"
) -> tuple[tuple[bytes, bytes], ...]:
    """The headers Django's middleware and DRF put on a view's JSON answer (``allow``:
    the view's methods, as DRF lists them)."""
    headers = {"Content-Type": "application/json", "Allow": allow}
    if settings.X_FRAME_OPTIONS:
        headers["X-Frame-Options"] = settings.X_FRAME_OPTIONS
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers["X-Content-Type-Options"] = "nosniff"
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        headers["Referrer-Policy"] = policy if isinstance(policy, str) else ",".join(policy)
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers["Cross-Origin-Opener-Policy"] = settings.SECURE_CROSS_ORIGIN_OPENER_POLICY
    if secure and settings.SECURE_HSTS_SECONDS:
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"
        headers["Strict-Transport-Security"] = hsts
    return tuple((name.lower().encode(), value.encode()) for name, value in headers.items())


@receiver(setting_changed)
def _forget_settings(**_kwargs) -> None:
    for derived in (_proxy_ssl_header, _host_allowed_by_settings, _response_headers, door_open):
        derived.cache_clear()


# A reserve body is a few bytes; anything longer is not one the door reads.
MAX_BODY_BYTES = 256


def quantity_of(request: DoorRequest, body: bytes) -> int | None:
    """The quantity of a body exactly like ``{"quantity": 2}``, else None (hand on)."""
    content_type = (request.content_type or "").lower().replace(" ", "")
    if content_type not in ("application/json", "application/json;charset=utf-8"):
        return None
    if len(body) > MAX_BODY_BYTES:
        return None
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=refuse_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(data, dict) or data.keys() != {"quantity"}:
        return None
    try:
        return validate_quantity(data["quantity"])  # the services' own rule
    except InvalidInput:
        return None


_SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


async def close_clients() -> None:
    """Close the running loop's Redis connection and its batchers' database connections
    (tests that run the door on short-lived loops)."""
    await shared_connection_close()
    loop = asyncio.get_running_loop()
    for key in [key for key in _batchers if key[0] is loop]:
        await _batchers.pop(key).close()


# --- the decision ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def door_open() -> bool:
    """The door answers only where Django's path would use the same Redis state."""
    return (
        settings.FRONT_DOOR_ENABLED and gate.gate_enabled() and not settings.DISALLOWED_USER_AGENTS
    )


@lru_cache(maxsize=4096)
def _fingerprint(path: str, quantity: int) -> str:
    return idempotency.request_fingerprint("POST", path, {"quantity": quantity})


def _rate(throttle_class) -> tuple[int, int]:
    throttle = throttle_class()
    if throttle.rate is None:
        return -1, 1  # no limit
    return throttle.num_requests, throttle.duration


# The refusals the script answers by itself, in the order its ARGV carries their bodies.
_REFUSALS = {
    gate.GateDecision.SOLD_OUT: SoldOut,
    gate.GateDecision.LIMIT_REACHED: LimitReached,
    gate.GateDecision.NOT_LIVE: DropNotLive,
}


@lru_cache(maxsize=1)
def _refusal_bodies() -> dict[gate.GateDecision, str]:
    """Each refusal's body, rendered once."""
    return {decision: render(error().body()).decode() for decision, error in _REFUSALS.items()}


async def decide(scope, request: DoorRequest, body: bytes) -> Answer | None:
    """The answer to a reserve request, or None to hand it to Django."""
    if request.repeated or request.cookie or request.token is None:
        return None
    if request.key is None or not _KEY.match(request.key) or not host_allowed(request):
        return None
    secure = is_secure(scope, request)
    if settings.SECURE_SSL_REDIRECT and not secure:
        return None  # Django redirects it
    quantity = quantity_of(request, body)
    routing = drop_routing_cached(request.drop_id)
    if quantity is None or routing is None or routing.mode != Drop.Mode.FIRST_COME:
        return None  # a drop sold by draw: Django refuses the reserve
    if routing.buyer_rules:
        return None  # its buyers pass entry rules first, which Django checks
    redis = shared_connection()
    user_id = await user_of(redis, request.token)
    if user_id is None:
        return None  # Django refuses it

    address = client_address_of_scope(scope)
    bodies = _refusal_bodies()
    fingerprint = _fingerprint(scope["path"], quantity)
    keys = [
        token_cache_key(request.token),
        throttle_redis_key(ReserveUserThrottle.scope, user_id),
        throttle_redis_key(ReserveIPThrottle.scope, address),
        idempotency.answer_key(user_id, request.key),
        *gate.admission_keys(
            allocation_id=routing.allocation_id,
            customer_id=user_id,
            idempotency_key=request.key,
        ),
    ]
    args = [
        user_id,
        quantity,
        time.time(),
        gate.epoch_token(),
        fingerprint,
        *_rate(ReserveUserThrottle),
        *_rate(ReserveIPThrottle),
        throttle_member(),
        gate.IDEMPOTENCY_TTL_SECONDS,
        idempotency.KEEP_SECONDS,
        *bodies.values(),
    ]
    result = await redis.evalsha(_SCRIPT, _SCRIPT_SHA, keys, args)
    kind = int(result[0])
    if kind == ADMITTED:
        admitted = _Admitted(
            request=AdmittedRequest(
                customer_id=user_id,
                allocation_id=routing.allocation_id,
                quantity=quantity,
                idempotency_key=request.key,
                unit_price=routing.price,
                currency=routing.currency,
            ),
            drop_id=request.drop_id,
            admitted_in=int(result[1]),
            fingerprint=fingerprint,
        )
        written = await _write(admitted)
        if written is None:
            return None
        status, text = written
        return Answer(status, text, secure)
    if kind == PASS:
        if result[1] == "token":
            forget_token(request.token)
        return None
    if kind == THROTTLED:
        error, extra = throttled_error(throttle_wait_of(result[1]))
        return Answer(429, render(error), secure, extra)
    if kind == REPLAY:
        return Answer(int(result[1]), result[2].encode(), secure, {"Idempotent-Replay": "true"})
    if kind == KEY_REUSED:
        return Answer(422, render(IdempotencyKeyReused().body()), secure)
    return Answer(409, bodies[gate.decision_of(result[1])].encode(), secure)


# --- admissions ---------------------------------------------------------------------------
# An admitted request is answered 202 only once its pending row is committed, as on
# Django's path: whatever dies after the answer, the row is there for the settle. The
# rows of the requests a process admitted while the previous write ran are written
# together, in one transaction (``reservations_create_pending``): one commit for many
# admissions, since the commit is the database's ceiling. One write at a time per
# process, in a thread of its own (the ORM is synchronous), holding one database
# connection of the process's pool for as long as it lives (taking it from the pool per
# batch cost as much as the batch's insert); a failed write closes it.


@dataclass(frozen=True)
class _Admitted:
    request: AdmittedRequest
    drop_id: int
    admitted_in: int
    fingerprint: str


def _write_admitted(batch: list[_Admitted]) -> list[tuple[int, bytes] | None]:
    """Write the batch's rows; per request its answer (status, body) or None to hand it
    to Django (its key had a reservation already: Django replays it; or the write
    failed: Django tries afresh). Every admission that left no row is undone."""
    try:
        outcomes = reservations_create_pending([item.request for item in batch])
    except Exception:
        logger.exception("writing %d admitted holds failed; handing them to Django", len(batch))
        connection.close()  # the next batch starts on a fresh connection
        outcomes = [_FAILED] * len(batch)
    answers: dict[int, tuple[int, bytes] | None] = {}
    kept: list[tuple[int, idempotency.StoredAnswer]] = []
    made: dict[int, list[tuple[int, Reservation]]] = {}  # per drop
    for i, (item, outcome) in enumerate(zip(batch, outcomes, strict=True)):
        undo = {
            "allocation_id": item.request.allocation_id,
            "customer_id": item.request.customer_id,
            "quantity": item.request.quantity,
            "admitted_in": item.admitted_in,
        }
        if isinstance(outcome, Reservation):
            made.setdefault(item.drop_id, []).append((i, outcome))
        elif isinstance(outcome, TooManyHolds):
            gate_undo_admission(**undo, forget_key=item.request.idempotency_key)
            kept.append((i, _kept(item, outcome.http_status, outcome.body())))
        elif outcome is None:
            gate_undo_admission(**undo)  # the key stays: Django's gate says "replay"
            answers[i] = None
        else:
            gate_undo_admission(**undo, forget_key=item.request.idempotency_key)
            answers[i] = None
    for drop_id, rows in made.items():
        bodies = ReservationSerializer(
            [row for _, row in rows], many=True, context={"drop_id": drop_id}
        ).data
        kept += [(i, _kept(batch[i], 202, body)) for (i, _), body in zip(rows, bodies, strict=True)]
    # Kept for the key's replays, as the view's ``idempotent`` does.
    texts = idempotency.answers_store([answer for _, answer in kept])
    for (i, answer), text in zip(kept, texts, strict=True):
        answers[i] = (answer.status, text)
    return [answers[i] for i in range(len(batch))]


_FAILED = object()


def _kept(item: _Admitted, status: int, body) -> idempotency.StoredAnswer:
    return idempotency.StoredAnswer(
        idempotency.answer_key(item.request.customer_id, item.request.idempotency_key),
        item.fingerprint,
        status,
        body,
    )


def _close_connection() -> None:
    connection.close()  # the calling thread's own (Django's connections are per thread)


class _Batcher:
    """Runs ``work`` on everything submitted while its previous run was busy, one run
    at a time, in a thread of its own (per event loop): requests that arrive together
    share one round trip to the database."""

    def __init__(self, loop: asyncio.AbstractEventLoop, work, name: str, most: int):
        self.loop = loop
        self.work = work
        self.most = most
        self.waiting: list[tuple[object, asyncio.Future]] = []
        self.busy = False
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def close(self) -> None:
        """Give the thread's database connection back, and end the thread."""
        await self.loop.run_in_executor(self.thread, _close_connection)
        self.thread.shutdown(wait=False)

    async def submit(self, item):
        future = self.loop.create_future()
        self.waiting.append((item, future))
        if not self.busy:
            self.busy = True
            self.loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch = self.waiting[: self.most]
                del self.waiting[: len(batch)]
                try:
                    results = await self.loop.run_in_executor(
                        self.thread, self.work, [item for item, _ in batch]
                    )
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    raise
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.busy = False


_batchers: dict[tuple[asyncio.AbstractEventLoop, str], _Batcher] = {}


def batcher(name: str, work, most: int) -> _Batcher:
    loop = asyncio.get_running_loop()
    batcher = _batchers.get((loop, name))
    if batcher is None:
        for stale in [key for key in _batchers if key[0].is_closed()]:
            thread = _batchers.pop(stale).thread
            thread.submit(_close_connection)  # its loop is gone: close from the thread itself
            thread.shutdown(wait=False)
        batcher = _batchers[(loop, name)] = _Batcher(loop, work, f"door-{name}", most)
    return batcher


async def _write(admitted: _Admitted) -> tuple[int, bytes] | None:
    # At most what the settle takes in one transaction: one task settles the lot.
    writer = batcher("writer", _write_admitted, settings.RESERVATION_SETTLE_BATCH)
    return await writer.submit(admitted)


# --- tokens ------------------------------------------------------------------------------
# A buyer's first request brings a token this process has not seen, and often one the
# cache has not either (it keeps entries for minutes): the door loads those from the
# database itself, many in one query, instead of sending every first tap through
# Django. Which user a token belongs to never changes, so the door remembers it
# (bounded); the script checks on every request that the token is still valid and
# active (a logout deletes the cache entry).
TOKEN_MEMORY_SIZE = 100_000
_token_users: OrderedDict[str, int] = OrderedDict()


def _remember_token(token: str, user_id: int) -> None:
    _token_users[token] = user_id
    if len(_token_users) > TOKEN_MEMORY_SIZE:
        _token_users.popitem(last=False)


def forget_tokens() -> None:
    """Empty this process's token memory (tests)."""
    _token_users.clear()


def forget_token(token: str) -> None:
    """Forget one token (the cache no longer holds it as valid: Django answers it)."""
    _token_users.pop(token, None)


def _load_tokens(tokens: list[str]) -> list[int | None]:
    try:
        loaded = tokens_load(set(tokens))
    except Exception:
        connection.close()  # the next batch starts on a fresh connection
        raise
    users = [loaded.get(token) for token in tokens]
    return [user["pk"] if user and user["is_active"] else None for user in users]


async def user_of(redis: SharedConnection, token: str) -> int | None:
    """The active user of a valid token, or None (Django answers it: a 401)."""
    user_id = _token_users.get(token)
    if user_id is not None:
        return user_id
    pk, active = await redis.execute("HMGET", token_cache_key(token), "pk", "is_active")
    if pk is not None:
        user_id = int(pk) if active == "1" else None
    else:
        user_id = await batcher("tokens", _load_tokens, 500).submit(token)
    if user_id is not None:
        _remember_token(token, user_id)
    return user_id


# --- the ASGI app --------------------------------------------------------------------------


async def answer_or_hand_on(app, scope, receive, send, request, decide, what: str) -> None:
    """Read the body, and send ``decide``'s answer, or hand the request (its body given
    again) to ``app`` when there is none."""
    body, more = await read_body(receive)
    if not more:
        return  # the client went away
    try:
        answer = await decide(scope, request, body)
    except RedisError as exc:
        # Redis away: Django's path answers what it can (a 503 while Redis is gone).
        logger.warning("front door handing %s to Django: %s", what, exc)
        answer = None
    if answer is None:
        return await app(scope, replaying(body, receive), send)
    await send_answer(send, answer)


class FrontDoor:
    """ASGI middleware: the reserve request's fast answers, everything else to ``app``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "GET":
            return await self._stream_snapshot(scope, receive, send)
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        match = RESERVE_PATH.match(scope["path"])
        if match is None or not door_open():
            return await self.app(scope, receive, send)
        request = read_headers(scope, int(match.group(1)))
        if request.token is None or request.cookie:
            return await self.app(scope, receive, send)  # before reading the body
        await answer_or_hand_on(self.app, scope, receive, send, request, decide, "a reserve")

    async def _stream_snapshot(self, scope, receive, send):
        """``GET /api/streams/{slug}/`` from the snapshot Django's view last stored
        (``livestream.snapshot_cache``), for anonymous readers."""
        match = STREAM_PATH.match(scope["path"])
        answer = None
        if match is not None and door_open():
            try:
                answer = await snapshot_answer(scope, match.group(1))
            except RedisError as exc:
                logger.warning("front door handing a stream read to Django: %s", exc)
        if answer is None:
            return await self.app(scope, receive, send)
        await send_answer(send, answer)


# What an anonymous reader may send and still get the one stored rendering: DRF would
# render the same bytes for these (an ``indent`` parameter, a format, a cookie or a token
# would not be the same answer).
_PLAIN_ACCEPT = {None, "*/*", "application/json"}
# The snapshot script's answers (livestream.snapshot_cache.READ_LUA), and how often a
# reader waiting for another's rebuild looks again.
SNAPSHOT_STORED, SNAPSHOT_WAIT = 1, 2
SNAPSHOT_POLL_SECONDS = 0.01


async def snapshot_answer(scope, slug: str) -> Answer | None:
    """The stored snapshot for an anonymous reader, or None to hand the read to Django."""
    most_ms = settings.STREAM_SNAPSHOT_MAX_AGE_MS
    if most_ms <= 0 or scope.get("query_string"):
        return None
    request = read_headers(scope, drop_id=0)
    if request.repeated or request.cookie or request.authorization:
        return None
    if request.accept not in _PLAIN_ACCEPT or not host_allowed(request):
        return None
    secure = is_secure(scope, request)
    if settings.SECURE_SSL_REDIRECT and not secure:
        return None  # Django redirects it
    keys = [snapshot_cache.snapshot_key(slug), snapshot_cache.rebuild_key(slug)]
    deadline = time.monotonic() + most_ms / 1000
    while True:
        result = await shared_connection().evalsha(
            snapshot_cache.READ_LUA,
            snapshot_cache.READ_SHA,
            keys,
            [int(time.time() * 1000), most_ms],
        )
        kind = int(result[0])
        if kind != SNAPSHOT_WAIT or time.monotonic() >= deadline:
            break
        await asyncio.sleep(SNAPSHOT_POLL_SECONDS)  # another reader's rebuild
    if kind != SNAPSHOT_STORED:
        return None
    # The session middleware reads the (absent) session of an anonymous reader, so
    # Django's answer varies on the cookie: say so too, for caches in between.
    return Answer(200, result[1].encode(), secure, {"Vary": "Cookie"}, allow="GET, HEAD, OPTIONS")


async def read_body(receive) -> tuple[bytes, bool]:
    """The whole body (the size cap outside this app bounds it), and False if the client
    disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def replaying(body: bytes, receive):
    """A ``receive`` that gives the body already read, then the client's own messages."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def send_answer(send, answer: Answer) -> None:
    headers = [
        *_response_headers(answer.secure, answer.allow),
        *((name.lower().encode(), value.encode()) for name, value in answer.extra.items()),
        (b"content-length", str(len(answer.body)).encode()),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
