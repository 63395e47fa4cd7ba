"""A draw's entry window in Redis, next to the gate: the decision on each entry in one
script call, with no SQL (open window, one entry per viewer, the per-address cap,
counted).

Keys per draw (``draw:{id}:...``): ``window`` (a hash: the close in epoch ms, a closed
flag, the count accepted), ``entrants`` (viewer -> quantity: who entered), ``inflight``
(a sorted set of viewers whose entry was accepted and is not yet known durable, scored
by when), ``addresses`` (client address -> entries from it, for the per-address cap).
The database is the truth: Redis accepts, the row is written in a batch, and only a
committed row is ever answered ``201``; the draw waits for ``inflight`` to drain
(bounded) and its row lock refuses any write still late (see ``draws.services``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from core.redis import get_redis

# How long a draw's keys outlive its close (the draw runs within seconds of it).
KEY_TTL_SECONDS = 24 * 3600

# The script's answers.
NO_WINDOW, CLOSED, SEEN, ACCEPTED, ADDRESS_CAP = range(5)

# KEYS: window, entrants, inflight, addresses. ARGV: viewer id, quantity, key TTL (s),
# client address, entries allowed per address (0: no cap).
# Redis's own clock decides "before the close", so every process agrees on it.
ENTER_LUA = """
local w = redis.call('HMGET', KEYS[1], 'close_ms', 'closed')
if not w[1] then return {0} end
local seen = redis.call('HGET', KEYS[2], ARGV[1])
if seen then return {2, seen} end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if w[2] == '1' or now_ms >= tonumber(w[1]) then return {1} end
local cap = tonumber(ARGV[5])
if cap > 0 then
  if tonumber(redis.call('HGET', KEYS[4], ARGV[4]) or '0') >= cap then return {4} end
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

# KEYS: window, inflight. Closes the window (whatever its close time) and answers how
# many accepted entries are not known durable yet (-1: no window in Redis).
CLOSE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'closed', '1')
return redis.call('ZCARD', KEYS[2])
"""


def _keys(draw_id: int) -> list[str]:
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
    window = _keys(draw_id)[0]
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
        keys=_keys(draw_id),
        args=[customer_id, quantity, KEY_TTL_SECONDS, client_address, address_cap or 0],
    )
    kind = int(answer[0])
    if kind == ACCEPTED:
        return Decision(kind, datetime.fromtimestamp(int(answer[1]) / 1000, tz=UTC))
    return Decision(kind)


def window_settled(
    *, draw_id: int, customer_ids: list[int], kept: bool, addresses: list[str] | None = None
) -> None:
    """The entries of these viewers are committed (``kept``) or were refused: either way
    no longer in flight; refused ones are forgotten (and no longer count against their
    ``addresses``), so Redis agrees with the rows."""
    if not customer_ids:
        return
    _window, entrants, inflight, counted = _keys(draw_id)
    pipe = get_redis().pipeline(transaction=False)
    pipe.zrem(inflight, *customer_ids)
    if not kept:
        pipe.hdel(entrants, *customer_ids)
        for address in addresses or []:
            pipe.hincrby(counted, address, -1)
    pipe.execute()


def window_close(*, draw_id: int) -> int:
    """Close the window now; how many accepted entries are still in flight (-1: Redis
    holds no window for the draw)."""
    window, _, inflight, _ = _keys(draw_id)
    return int(get_redis().eval(CLOSE_LUA, 2, window, inflight))


def window_in_flight(*, draw_id: int) -> int:
    return int(get_redis().zcard(_keys(draw_id)[2]))


def window_count(*, draw_id: int) -> int | None:
    """Entries Redis accepted (None: no window in Redis)."""
    value = get_redis().hget(_keys(draw_id)[0], "count")
    return None if value is None else int(value)
