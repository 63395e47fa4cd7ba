"""Caps on websockets, per server process and per client address in it.

A process past what it can serve must refuse new sockets at once rather than slow every
viewer it already has (live shopping platforms shed at the door the same way): the
sockets it holds keep their latency, and the refused client knows when to come back.

A refused socket is accepted and closed at once, before any database or Redis work
(the origin check and authentication come after this), so that the client can tell
why: a browser's ``WebSocket`` shows a close code and reason, never the status of a
refused handshake. The codes:

- 4503: this process holds ``WS_MAX_CONNECTIONS_PER_PROCESS`` sockets (``server_full``),
  or it is overloaded whatever it holds: its event loop runs its timers
  ``WS_SHED_LOOP_LAG_MS`` late or more (``server_busy``). A loop that late is already
  late with every frame it owes its viewers; each join would add a handshake, a
  snapshot and a presence write to it, so joins wait until it has caught up;
- 4429: the client's address holds ``WS_MAX_CONNECTIONS_PER_ADDRESS`` of them.

The reason is a JSON object, ``{"code": "server_full" | "server_busy" |
"too_many_connections", "retry_after": seconds}``, the seconds drawn between
``WS_RETRY_AFTER_SECONDS`` and twice that, so that a refused crowd does not come back
in one wave. A cap of 0 is no cap. Counts are per process (each uvicorn worker keeps
its own): with N workers an address may hold up to N times its cap, which is what
sharing the load across them means anyway.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

from django.conf import settings

from core.api.throttles import client_address_of_scope
from livestream import metrics

CLOSE_TOO_MANY_FROM_ADDRESS = 4429
CLOSE_SERVER_FULL = 4503


def retry_after() -> int:
    """Seconds a refused client should wait, jittered over [base, 2 x base]."""
    base = settings.WS_RETRY_AFTER_SECONDS
    return round(random.uniform(base, 2 * base))


class LoopLag:
    """How late this process's event loop runs a timer set every ``INTERVAL``: the
    worst recent lateness, halving with each prompt tick, so one slow moment sheds
    joins for a few ticks and not longer."""

    INTERVAL = 0.1

    def __init__(self):
        self.seconds = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0

    def watch(self) -> None:
        """Start ticking on the running loop (again after a new loop, as in tests)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop, self.seconds = loop, 0.0
        self._schedule(loop.time())

    def _schedule(self, now: float) -> None:
        self._due = now + self.INTERVAL
        self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self.seconds = max(now - self._due, self.seconds / 2)
        self._schedule(now)


class ConnectionLimits:
    """ASGI middleware for websocket scopes: counts this process's open sockets, in all
    and per address, and refuses a new one past either cap or while its loop is late."""

    def __init__(self, app):
        self.app = app
        self.open = 0
        self.by_address: Counter[str] = Counter()
        self.lag = LoopLag()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        if settings.WS_SHED_LOOP_LAG_MS:
            self.lag.watch()  # no timer at all when shedding by lag is off
        address = client_address_of_scope(scope)
        refusal = self._refusal(address)
        if refusal is not None:
            metrics.JOINS_REFUSED.labels(refusal[1]).inc()
            return await _refuse(receive, send, *refusal)
        self.open += 1
        self.by_address[address] += 1
        metrics.CONNECTIONS.inc()
        try:
            return await self.app(scope, receive, send)
        finally:
            metrics.CONNECTIONS.dec()
            self.open -= 1
            self.by_address[address] -= 1
            if self.by_address[address] <= 0:
                del self.by_address[address]  # bounded by the addresses connected now

    def _refusal(self, address: str) -> tuple[int, str] | None:
        most = settings.WS_MAX_CONNECTIONS_PER_PROCESS
        if most and self.open >= most:
            return CLOSE_SERVER_FULL, "server_full"
        most = settings.WS_SHED_LOOP_LAG_MS
        if most and self.lag.seconds * 1000 >= most:
            return CLOSE_SERVER_FULL, "server_busy"
        most = settings.WS_MAX_CONNECTIONS_PER_ADDRESS
        if most and self.by_address[address] >= most:
            return CLOSE_TOO_MANY_FROM_ADDRESS, "too_many_connections"
        return None


async def _refuse(receive, send, code: int, reason: str) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # gone before the handshake
    await send({"type": "websocket.accept"})
    await send(
        {
            "type": "websocket.close",
            "code": code,
            "reason": json.dumps({"code": reason, "retry_after": retry_after()}),
        }
    )
