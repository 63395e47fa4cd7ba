"""How the services have a draw run when its entries close. ``draws.tasks`` imports the
services, so the services never import it: it is plugged in here when the app is ready
(``DrawsConfig.ready``), as inventory's settle queue is."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class CloseQueue(Protocol):
    def close_at(self, *, draw_id: int, at: datetime) -> None:
        """Have the draw run at ``at`` (called after its opening committed)."""


_queue: list[CloseQueue] = []


def register(queue: CloseQueue) -> None:
    _queue[:] = [queue]


def current() -> CloseQueue:
    if not _queue:
        raise RuntimeError("no close queue: DrawsConfig.ready registers draws.tasks")
    return _queue[0]
