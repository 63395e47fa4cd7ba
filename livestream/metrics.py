"""The live transport's figures, per process (summed across processes at scrape, see
``monitoring.registry``): sockets open, joins refused, viewers closed for not keeping
up, frames delivered, the hub's lost subscriptions and the resyncs they cause.

Each is one increment where the thing happens, never per frame: a fan-out counts its
deliveries once per event.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from core.metrics import PREFIX

CONNECTIONS = Gauge(
    f"{PREFIX}_ws_connections",
    "Websockets open, per process (the pid label, with several).",
    multiprocess_mode="liveall",
)
JOINS_REFUSED = Counter(
    f"{PREFIX}_ws_joins_refused",
    "Websockets refused at the door, by reason (server_full, server_busy, too_many_connections).",
    ["reason"],
)
SLOW_CLOSED = Counter(
    f"{PREFIX}_ws_slow_viewers_closed", "Viewers closed because they did not keep up."
)
DELIVERIES = Counter(f"{PREFIX}_ws_deliveries", "Stream events handed to viewers' sockets.")
SUPERSEDED = Counter(
    f"{PREFIX}_ws_superseded_dropped",
    "Buffered events a viewer never got because a snapshot covered them.",
)
SUBSCRIPTION_LOST = Counter(
    f"{PREFIX}_pubsub_reconnects", "Times a process's Redis subscription was lost and redone."
)
RESYNCS = Counter(f"{PREFIX}_ws_resyncs", "Fresh snapshots sent on a client's resync request.")
