"""A draw's entry window in Redis, next to the gate: the decision on each entry in one
script call, with no SQL (open window, one entry per viewer, the per-address cap,
counted).

Keys per draw (``draw:{id}:...``): ``window`` (a hash: the close in epoch ms, a closed
flag, the count accepted), ``entrants`` (viewer -> quantity: who entered; once the row
is committed, "quantity id entered-ms", so the entry door answers a repeat without the
database), ``inflight``
(a sorted set of viewers whose entry was accepted and is not yet known durable, scored
by when), ``addresses`` (client address -> entries from it, for the per-address cap).
The database is the truth: Redis accepts, the row is written in a batch, and only a
committed row is ever answered ``201``; the draw waits for ``inflight`` to drain
(bounded) and its row lock refuses any write still late (see ``draws.services``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from string import Template

from core.redis import get_redis
from draws import eligibility
from draws.exceptions import EntriesClosed

# How long a draw's keys outlive its close (the draw runs within seconds of it).
KEY_TTL_SECONDS = 24 * 3600

# The script's answers.
NO_WINDOW, CLOSED, SEEN, ACCEPTED, ADDRESS_CAP = range(5)
# The door's script only: the token is not (or no longer) valid in Redis.
TOKEN_NOT_VALID = -1

# KEYS: window, entrants, inflight, addresses. ARGV: viewer id, quantity, key TTL (s),
# client address, entries allowed per address (0: no cap).
# Redis's own clock decides "before the close", so every process agrees on it.
_ENTER = """
local w = redis.call('HMGET', KEYS[1], 'close_ms', 'closed')
if not w[1] then return {0} end
local seen = redis.call('HGET', KEYS[2], ARGV[1])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open = w[2] ~= '1' and now_ms < tonumber(w[1])
if seen then
  if DOOR and not open then return {0} end
  return {2, seen}
end
if not open then refused('$entries_closed') return {1} end
local cap = tonumber(ARGV[5])
if cap > 0 then
  if tonumber(redis.call('HGET', KEYS[4], ARGV[4]) or '0') >= cap then
    refused('$address_cap')
    return {4}
  end
  redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
  redis.call('EXPIRE', KEYS[4], ARGV[3])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], now_ms, ARGV[1])
redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {3, tostring(now_ms)}
"""
# The refusal reasons the door's script counts, spelled where they are defined.
_ENTER = Template(_ENTER).substitute(
    entries_closed=EntriesClosed.code, address_cap=eligibility.ADDRESS_CAP
)
ENTER_LUA = "local DOOR = false\nlocal function refused(reason) end\n" + _ENTER

# The entry door's decision (``draws.door``): the same, after the token check its
# answers rest on, with its refusals counted here (one round trip), and a repeat
# answered only while the window is open (after the close, an entry's status is the
# draw's: the database says it). KEYS: the four above, the token's cache entry, the
# drop's refusal counts. ARGV: the five above, the token's user, the counts' TTL (s).
# TOKEN_NOT_VALID: the token is not (or no longer) valid here: Django answers.
ENTER_AT_DOOR_LUA = (
    """
local DOOR = true
local token = redis.call('HMGET', KEYS[5], 'pk', 'is_active')
if token[1] ~= ARGV[6] or token[2] ~= '1' then return {-1} end
local function refused(reason)
  redis.call('HINCRBY', KEYS[6], reason, 1)
  redis.call('EXPIRE', KEYS[6], ARGV[7])
end
"""
    + _ENTER
)
ENTER_AT_DOOR_SHA = hashlib.sha1(ENTER_AT_DOOR_LUA.encode()).hexdigest()

# KEYS: window, inflight. Closes the window (whatever its close time) and answers how
# many accepted entries are not known durable yet (-1: no window in Redis).
CLOSE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'closed', '1')
return redis.call('ZCARD', KEYS[2])
"""


def window_keys(draw_id: int) -> list[str]:
    base = f"draw:{draw_id}"
    return [f"{base}:window", f"{base}:entrants", f"{base}:inflight", f"{base}:addresses"]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Decision:
    kind: int
    entered_at: datetime | None = None  # ACCEPTED: Redis's time of the acceptance


def window_prime(*, draw_id: int, close_at: datetime, closed: bool = False) -> None:
    """Write the draw's window (at its opening; again if Redis lost it)."""
    window = window_keys(draw_id)[0]
    pipe = get_redis().pipeline()
    pipe.hset(window, mapping={"close_ms": _ms(close_at), "closed": "1" if closed else "0"})
    pipe.expireat(window, int(close_at.timestamp()) + KEY_TTL_SECONDS)
    pipe.execute()


def window_enter(
    *,
    draw_id: int,
    customer_id: int,
    quantity: int,
    client_address: str = "",
    address_cap: int | None = None,
) -> Decision:
    """Redis's decision on a viewer's entry (one script call)."""
    # A registered script runs by its SHA and loads itself after a Redis restart.
    answer = get_redis().register_script(ENTER_LUA)(
        keys=window_keys(draw_id),
        args=[customer_id, quantity, KEY_TTL_SECONDS, client_address, address_cap or 0],
    )
    kind = int(answer[0])
    if kind == ACCEPTED:
        return Decision(kind, accepted_at(answer[1]))
    return Decision(kind)


def accepted_at(value) -> datetime:
    """The time of an acceptance, as the script answers it (Redis's clock, in ms)."""
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def seen_entry(value: str) -> tuple[int, int, datetime] | None:
    """A committed entry as ``entrants`` holds it: (quantity, entry id, entered at), or
    None while its row is not known committed."""
    parts = value.split()
    if len(parts) != 3:
        return None
    quantity, entry_id, entered_ms = parts
    return int(quantity), int(entry_id), accepted_at(entered_ms)


def window_settled(
    *,
    draw_id: int,
    customer_ids: list[int],
    kept: bool,
    addresses: list[str] | None = None,
    committed: dict[int, tuple[int, int, datetime]] | None = None,
) -> None:
    """The entries of these viewers are committed (``kept``; ``committed``: viewer ->
    (quantity, entry id, entered at) of the rows just written) or were refused: either
    way no longer in flight; refused ones are forgotten (and no longer count against
    their ``addresses``), so Redis agrees with the rows."""
    if not customer_ids:
        return
    window, entrants, inflight, counted = window_keys(draw_id)
    pipe = get_redis().pipeline(transaction=False)
    pipe.zrem(inflight, *customer_ids)
    if committed:
        pipe.hset(
            entrants,
            mapping={
                customer: f"{quantity} {entry_id} {_ms(entered_at)}"
                for customer, (quantity, entry_id, entered_at) in committed.items()
            },
        )
    if not kept:
        pipe.hdel(entrants, *customer_ids)
        # The count shown live is of the entries accepted and not refused since.
        pipe.hincrby(window, "count", -len(customer_ids))
        pipe.expire(window, KEY_TTL_SECONDS, nx=True)  # should the window have gone
        for address in addresses or []:
            pipe.hincrby(counted, address, -1)
    pipe.execute()


def window_close(*, draw_id: int) -> int:
    """Close the window now; how many accepted entries are still in flight (-1: Redis
    holds no window for the draw)."""
    window, _, inflight, _ = window_keys(draw_id)
    return int(get_redis().eval(CLOSE_LUA, 2, window, inflight))


def window_in_flight(*, draw_id: int) -> int:
    return int(get_redis().zcard(window_keys(draw_id)[2]))


def window_count(*, draw_id: int) -> int | None:
    """Entries Redis accepted (None: no window in Redis)."""
    value = get_redis().hget(window_keys(draw_id)[0], "count")
    return None if value is None else int(value)
