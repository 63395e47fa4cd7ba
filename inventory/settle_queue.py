"""How the services have pending holds settled once they are committed.

The services write pending holds; the task layer settles them (a Celery task, one per
allocation under a spike, or in process when tasks run eagerly). ``inventory.tasks``
imports the services, so the services never import it: it is plugged in here when the
app is ready (``InventoryConfig.ready``), as ``livestream`` subscribes to
``inventory.events``.
"""

from __future__ import annotations

from typing import Protocol


class SettleQueue(Protocol):
    def settle_soon(self, allocation_id: int) -> None:
        """Have the allocation's pending holds settled (called after they committed)."""

    def settles_inline(self) -> bool:
        """Whether ``settle_soon`` has settled by the time it returns (tasks run in
        the caller's process)."""


_queue: SettleQueue | None = None


def register(queue: SettleQueue) -> None:
    global _queue
    _queue = queue


def current() -> SettleQueue:
    if _queue is None:
        raise RuntimeError("no settle queue: InventoryConfig.ready registers inventory.tasks")
    return _queue
