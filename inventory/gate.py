"""The Redis admission gate: an accelerator in front of the database, never the guarantee.

Per allocation it keeps, in one hash slot (``{alloc:N}``):

* ``gate:{alloc:N}`` hash: ``status`` (open/closed), ``remaining`` (units neither held,
  sold nor pending), ``limit`` (per-customer limit, 0 for none), and what orders its
  updates: ``version`` (the allocation's ``version`` the last rebuild read),
  ``seen`` (the highest version applied since) and ``gen`` (rebuilds so far);
* ``gate:{alloc:N}:c`` hash: units each customer has pending, held or bought;
* ``gate:{alloc:N}:exp`` sorted set: held reservation ids scored by expiry time, so
  that a sold-out answer can tell, without SQL, whether expired holds could be
  reclaimed first;
* ``gate:{alloc:N}:k:<customer>:<idempotency key>``: set when a request is admitted, so
  a repeat of an admitted request is told to replay the stored reservation instead of
  being counted again (or turned away after the sell-out it contributed to).

Next to it, the demand the gate sees (``inventory.services.demand`` reads and flushes it):

* ``gate:{alloc:N}:d`` hash: request counts per outcome (``attempts``, ``admitted``,
  ``admitted_units``, ``sold_out``, ``limit``, ``not_live``) and an ``epoch`` token
  that changes when Redis lost the counters;
* sets of customer ids, exact: ``:dt`` tried, ``:da`` admitted, ``:ds`` turned away sold
  out and never admitted (an admission takes the customer out), ``:dl`` turned away at
  the limit. A set costs Redis about 50-70 bytes per customer (an intset, 4-8 bytes,
  while under 512 members), so a drop with 100,000 distinct viewers costs a few MB.

One Lua script checks and takes units atomically and counts the decision; a rejection
touches no database.
The database stays the source of truth: ``gate_rebuild`` recomputes all of it from the
rows (on a missing gate, by the periodic reconcile task, after Redis data loss).

Updates from the database side are ordered by the allocation's ``version``, which
every transaction that changes the allocation bumps once under its lock
(``inventory.services._common.allocation_version``); ``inventory.services.gate_sync`` is
the only writer of the gate from that side. A rebuild carries the version it
read; a change carries its transaction's version and is applied only if the last
rebuild did not already read it; a rebuild older than a change already applied is
refused (its writer reads again). Changes commute with each other (they add and
subtract), so their order among themselves does not matter. A request admitted here
whose row was never written is undone only if no rebuild ran since (``gen``): a rebuild
already forgot it.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from string import Template

from django.conf import settings

from core.keys import KEEP_SECONDS
from core.redis import get_redis, redis_configured

logger = logging.getLogger(__name__)


class GateDecision(enum.Enum):
    ADMITTED = "admitted"
    REPLAY = "replay"  # this customer's key was admitted before: answer from the database
    MISSING = "missing"  # no gate state in Redis: rebuild from the database
    NOT_LIVE = "drop_not_live"
    SOLD_OUT = "sold_out"
    LIMIT_REACHED = "limit_reached"
    RECLAIMABLE = "reclaimable"  # refused, but some holds past their expiry may change that


_DECISIONS = {
    2: GateDecision.REPLAY,
    1: GateDecision.ADMITTED,
    0: GateDecision.MISSING,
    -1: GateDecision.NOT_LIVE,
    -2: GateDecision.SOLD_OUT,
    -3: GateDecision.LIMIT_REACHED,
    -4: GateDecision.RECLAIMABLE,
}


def decision_of(code) -> GateDecision:
    """The decision a script's ``decide`` answered (its first item for an admission)."""
    return _DECISIONS[int(code)]


# The demand outcomes: the final decisions ``count`` tells apart, each also the name of
# the demand hash's counter it adds to. Defined once, here: formatted into the script
# below when this module loads (each call runs the same text as if written out), and
# used by ``DEMAND_OUTCOMES`` and ``inventory.services.demand``.
ADMITTED, SOLD_OUT, LIMIT, NOT_LIVE = "admitted", "sold_out", "limit", "not_live"

# Lua functions. ``k`` holds the keys of one request: state hash, customers hash,
# expiry zset, the request's idempotency key, then the demand keys (5).
# ``count`` counts a final decision in the demand keys (``epoch``: a fresh token used
# only if the counters do not exist yet).
_FUNCTIONS = Template("""
local function count(k, customer, qty, epoch, outcome)
  redis.call('HSETNX', k[5], 'epoch', epoch)
  redis.call('HINCRBY', k[5], 'attempts', 1)
  redis.call('SADD', k[6], customer)
  if outcome == '$admitted' then
    redis.call('HINCRBY', k[5], '$admitted', 1)
    redis.call('HINCRBY', k[5], 'admitted_units', qty)
    redis.call('SADD', k[7], customer)
    redis.call('SREM', k[8], customer)
  elseif outcome == '$sold_out' then
    redis.call('HINCRBY', k[5], '$sold_out', 1)
    if redis.call('SISMEMBER', k[7], customer) == 0 then
      redis.call('SADD', k[8], customer)
    end
  elseif outcome == '$limit' then
    redis.call('HINCRBY', k[5], '$limit', 1)
    redis.call('SADD', k[9], customer)
  else
    redis.call('HINCRBY', k[5], '$not_live', 1)
  end
end

-- The admission decision (the codes of _DECISIONS): an admission takes its units and
-- answers {1, gen}. Replays, a missing gate and "reclaimable" are not decisions yet:
-- not counted.
local function decide(k, customer, qty, now, ttl, epoch)
  if redis.call('EXISTS', k[4]) == 1 then return 2 end
  local state = redis.call('HMGET', k[1], 'status', 'remaining', 'limit', 'gen')
  if not state[1] then return 0 end
  if state[1] ~= 'open' then count(k, customer, qty, epoch, '$not_live') return -1 end
  local limit = tonumber(state[3])
  local taken = tonumber(redis.call('HGET', k[2], customer) or '0')
  local over_limit = limit > 0 and taken + qty > limit
  if over_limit or tonumber(state[2]) < qty then
    -- Holds past their expiry (the customer's own, or anyone's) may free what is missing.
    local due = redis.call('ZRANGEBYSCORE', k[3], '-inf', now, 'LIMIT', 0, 1)
    if #due > 0 then return -4 end
    if over_limit then count(k, customer, qty, epoch, '$limit') return -3 end
    count(k, customer, qty, epoch, '$sold_out')
    return -2
  end
  redis.call('HINCRBY', k[1], 'remaining', -qty)
  redis.call('HINCRBY', k[2], customer, qty)
  redis.call('SET', k[4], qty, 'EX', ttl)
  count(k, customer, qty, epoch, '$admitted')
  return {1, tonumber(state[4] or '0')}
end
""").substitute(admitted=ADMITTED, sold_out=SOLD_OUT, limit=LIMIT, not_live=NOT_LIVE)

# KEYS: state hash, customers hash, expiry zset, idempotency key, demand keys (5).
# ARGV: customer id, quantity, now (epoch s), idempotency TTL (s), epoch token.
_ADMIT = (
    _FUNCTIONS
    + """
return decide(KEYS, ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5])
"""
)

# A decision reached outside the admission script (after a reclaim found nothing to
# reclaim): counted the same way. KEYS: 4 unused, demand keys (5). ARGV: customer,
# quantity, outcome, unused, epoch token.
_RECORD = (
    _FUNCTIONS
    + """
count(KEYS, ARGV[1], tonumber(ARGV[2]), ARGV[5], ARGV[3])
return 1
"""
)

# Give units back (hold rejected, released or expired, or a request that failed before
# its row was written: then its idempotency key is forgotten too). A missing gate stays
# missing: the next admission rebuilds it from the database, which counts the return.
# KEYS: state hash, customers hash, expiry zset, idempotency key (or a dummy).
# ARGV: customer id, quantity, reservation id, forget key ('1' or ''), the admission's
# gen ('' for none: apply whatever the gate's history).
_GIVE_BACK = """
if ARGV[4] == '1' then redis.call('DEL', KEYS[4]) end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[5] ~= '' and tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') ~= tonumber(ARGV[5]) then
  return -1
end
local qty = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], 'remaining', qty)
local left = redis.call('HINCRBY', KEYS[2], ARGV[1], -qty)
if left <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[3], ARGV[3]) end
return 1
"""

# One committed transaction's changes, stamped with its version: applied only if the
# last rebuild did not read that version already. Returns 1 applied, 0 no gate, -1 seen.
# KEYS: state, customers, expiry.
# ARGV: version, n_returns, n_tracked, n_forgotten,
#       (customer, units, reservation or '', back on sale '1' or '')*,
#       (reservation, expiry)*, reservation*
_APPLY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local v = tonumber(ARGV[1])
local marks = redis.call('HMGET', KEYS[1], 'version', 'seen')
if v <= tonumber(marks[1] or '0') then return -1 end
if v > tonumber(marks[2] or '0') then redis.call('HSET', KEYS[1], 'seen', v) end
local i = 5
for _ = 1, tonumber(ARGV[2]) do
  local qty = tonumber(ARGV[i + 1])
  if ARGV[i + 3] == '1' then redis.call('HINCRBY', KEYS[1], 'remaining', qty) end
  local left = redis.call('HINCRBY', KEYS[2], ARGV[i], -qty)
  if left <= 0 then redis.call('HDEL', KEYS[2], ARGV[i]) end
  if ARGV[i + 2] ~= '' then redis.call('ZREM', KEYS[3], ARGV[i + 2]) end
  i = i + 4
end
for _ = 1, tonumber(ARGV[3]) do
  redis.call('ZADD', KEYS[3], ARGV[i + 1], ARGV[i])
  i = i + 2
end
for _ = 1, tonumber(ARGV[4]) do
  redis.call('ZREM', KEYS[3], ARGV[i])
  i = i + 1
end
return 1
"""

# Replace the whole gate atomically (the remembered idempotency keys are re-set, not
# cleared: keys of requests that left no row behind expire by themselves). Refused (0)
# when a change newer than the version read was applied already.
# KEYS: state, customers, expiry.
# ARGV: version ('' to write whatever is there), status, remaining, limit, n_customers,
#       n_expiries, (customer, units)*, (reservation, expiry)*,
#       (idempotency redis key, units, ttl)*
_REBUILD = """
local old = redis.call('HMGET', KEYS[1], 'seen', 'gen')
local v = tonumber(ARGV[1] ~= '' and ARGV[1] or '0')
if ARGV[1] ~= '' and old[1] and tonumber(old[1]) > v then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'remaining', ARGV[3], 'limit', ARGV[4],
  'version', v, 'seen', v, 'gen', tonumber(old[2] or '0') + 1)
local i = 7
for _ = 1, tonumber(ARGV[5]) do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, tonumber(ARGV[6]) do
  redis.call('ZADD', KEYS[3], ARGV[i + 1], ARGV[i])
  i = i + 2
end
while i <= #ARGV do
  redis.call('SET', ARGV[i], ARGV[i + 1], 'EX', ARGV[i + 2])
  i = i + 3
end
return 1
"""


def gate_enabled() -> bool:
    return redis_configured() and settings.INVENTORY_GATE_ENABLED


# How long an admitted idempotency key is remembered: as long as the API keeps a key.
IDEMPOTENCY_TTL_SECONDS = KEEP_SECONDS


def _keys(allocation_id: int) -> list[str]:
    base = f"gate:{{alloc:{allocation_id}}}"
    return [base, f"{base}:c", f"{base}:exp"]


DEMAND_SUFFIXES = (":d", ":dt", ":da", ":ds", ":dl")


def demand_keys(allocation_id: int) -> list[str]:
    """The demand hash, then the sets tried, admitted, turned away sold out, at limit."""
    base = f"gate:{{alloc:{allocation_id}}}"
    return [base + suffix for suffix in DEMAND_SUFFIXES]


def epoch_token() -> str:
    return str(time.time_ns())


def _idempotency_key(allocation_id: int, customer_id: int, key: str) -> str:
    return f"gate:{{alloc:{allocation_id}}}:k:{customer_id}:{key}"


def admission_keys(*, allocation_id: int, customer_id: int, idempotency_key: str) -> list[str]:
    """The nine keys ``decide`` reads for one request (all in the allocation's slot)."""
    return [
        *_keys(allocation_id),
        _idempotency_key(allocation_id, customer_id, idempotency_key),
        *demand_keys(allocation_id),
    ]


# For scripts that decide at the gate among other checks (the front door's): the Lua
# functions ``count`` and ``decide`` above, and the TTL an admitted key is kept.
DECIDE_LUA = _FUNCTIONS


@dataclass(frozen=True)
class GateState:
    status: str
    remaining: int
    limit: int
    customers: dict[int, int]
    expiries: dict[int, float]


def gate_admit(
    *, allocation_id: int, customer_id: int, quantity: int, idempotency_key: str, now: float
) -> GateDecision:
    return gate_admit_stamped(
        allocation_id=allocation_id,
        customer_id=customer_id,
        quantity=quantity,
        idempotency_key=idempotency_key,
        now=now,
    )[0]


def gate_admit_stamped(
    *, allocation_id: int, customer_id: int, quantity: int, idempotency_key: str, now: float
) -> tuple[GateDecision, int | None]:
    """The decision and, for an admission, the gate's ``gen`` it was made in (what
    ``gate_give_back(admitted_in=...)`` needs to undo it)."""
    result = get_redis().eval(
        _ADMIT,
        9,
        *admission_keys(
            allocation_id=allocation_id, customer_id=customer_id, idempotency_key=idempotency_key
        ),
        customer_id,
        quantity,
        now,
        IDEMPOTENCY_TTL_SECONDS,
        epoch_token(),
    )
    if isinstance(result, list):
        return _DECISIONS[int(result[0])], int(result[1])
    return _DECISIONS[int(result)], None


# The demand outcome each final decision counts as.
DEMAND_OUTCOMES = {
    GateDecision.ADMITTED: ADMITTED,
    GateDecision.SOLD_OUT: SOLD_OUT,
    GateDecision.LIMIT_REACHED: LIMIT,
    GateDecision.NOT_LIVE: NOT_LIVE,
}


def gate_record_demand(
    *, allocation_id: int, customer_id: int, quantity: int, decision: GateDecision
) -> None:
    """Count a decision the admission script did not make itself."""
    get_redis().eval(
        _RECORD,
        9,
        *_keys(allocation_id),
        _idempotency_key(allocation_id, customer_id, ""),  # unused; same hash slot
        *demand_keys(allocation_id),
        customer_id,
        quantity,
        DEMAND_OUTCOMES[decision],
        "",
        epoch_token(),
    )


def gate_give_back(
    *,
    allocation_id: int,
    customer_id: int,
    quantity: int,
    reservation_id: int | None = None,
    forget_idempotency_key: str | None = None,
    admitted_in: int | None = None,
) -> bool:
    """Return units to the gate; True when applied. ``forget_idempotency_key``: the
    admitted request left no reservation behind, so a retry with that key must be
    admitted afresh. ``admitted_in``: undo an admission only if no rebuild ran since
    (a rebuild counted from the rows, which never had this request)."""
    result = get_redis().eval(
        _GIVE_BACK,
        4,
        *_keys(allocation_id),
        _idempotency_key(allocation_id, customer_id, forget_idempotency_key or ""),
        customer_id,
        quantity,
        reservation_id or "",
        "1" if forget_idempotency_key else "",
        "" if admitted_in is None else admitted_in,
    )
    return int(result) == 1


@dataclass(frozen=True)
class GateReturn:
    """Units a customer no longer holds; ``back_on_sale`` False when they left the
    allocation (it is closed: they went back to stock)."""

    customer_id: int
    units: int
    reservation_id: int | None = None
    back_on_sale: bool = True


class Applied(enum.Enum):
    APPLIED = 1
    NO_GATE = 0
    ALREADY_READ = -1  # the last rebuild read this version: it counted the change


def gate_apply(
    *,
    allocation_id: int,
    version: int,
    returns: Iterable[GateReturn] = (),
    tracked: dict[int, float] | None = None,
    forgotten: Iterable[int] = (),
) -> Applied:
    """Apply one committed transaction's changes (``version``: the allocation's
    ``version`` that transaction wrote): units returned, holds whose expiry to
    track or forget."""
    returns, tracked, forgotten = list(returns), dict(tracked or {}), list(forgotten)
    args: list = [
        version,
        len(returns),
        len(tracked),
        len(forgotten),
    ]
    for item in returns:
        args += [
            item.customer_id,
            item.units,
            item.reservation_id or "",
            "1" if item.back_on_sale else "",
        ]
    for reservation_id, expires_at in tracked.items():
        args += [reservation_id, expires_at]
    args += forgotten
    return Applied(int(get_redis().eval(_APPLY, 3, *_keys(allocation_id), *args)))


def gate_forget_holds(*, allocation_id: int, reservation_ids: Iterable[int]) -> None:
    """Forget these holds' expiries (no longer held): unversioned, as forgetting a hold
    that is not held is right whatever the gate's history."""
    ids = [str(rid) for rid in reservation_ids]
    if ids:
        get_redis().zrem(_keys(allocation_id)[2], *ids)


@dataclass(frozen=True)
class RememberedKey:
    """An idempotency key the gate admitted, to remember again after a rebuild."""

    customer_id: int
    key: str
    units: int
    ttl_seconds: int


def gate_due_holds(*, allocation_id: int, now: float) -> list[int]:
    """Held reservation ids whose expiry has passed, as far as the gate knows."""
    return [int(rid) for rid in get_redis().zrangebyscore(_keys(allocation_id)[2], "-inf", now)]


def gate_write(
    *,
    allocation_id: int,
    state: GateState,
    remembered: Iterable[RememberedKey] = (),
    version: int | None = None,
) -> bool:
    """Replace the gate with ``state`` read at ``version``; False (nothing written) when
    a newer change was applied already. No version: written whatever is there."""
    args: list = [
        "" if version is None else version,
        state.status,
        state.remaining,
        state.limit,
        len(state.customers),
        len(state.expiries),
    ]
    for customer_id, units in state.customers.items():
        args += [customer_id, units]
    for reservation_id, expires_at in state.expiries.items():
        args += [reservation_id, expires_at]
    for item in remembered:
        args += [
            _idempotency_key(allocation_id, item.customer_id, item.key),
            item.units,
            max(1, item.ttl_seconds),
        ]
    return bool(get_redis().eval(_REBUILD, 3, *_keys(allocation_id), *args))


def gate_read(*, allocation_id: int) -> GateState | None:
    state_key, customers_key, expiry_key = _keys(allocation_id)
    pipe = get_redis().pipeline()
    pipe.hgetall(state_key)
    pipe.hgetall(customers_key)
    pipe.zrange(expiry_key, 0, -1, withscores=True)
    state, customers, expiries = pipe.execute()
    if not state:
        return None
    return GateState(
        status=state["status"],
        remaining=int(state["remaining"]),
        limit=int(state["limit"]),
        customers={int(k): int(v) for k, v in customers.items()},
        expiries={int(k): float(v) for k, v in expiries},
    )


def gate_delete(*, allocation_id: int) -> None:
    get_redis().delete(*_keys(allocation_id))


def gate_marks(*, allocation_id: int) -> dict[str, int] | None:
    """The gate's ordering marks (``version``, ``seen``, ``gen``), None without a gate."""
    values = get_redis().hmget(_keys(allocation_id)[0], "version", "seen", "gen")
    if values[0] is None:
        return None
    return dict(zip(("version", "seen", "gen"), (int(v or 0) for v in values), strict=True))
