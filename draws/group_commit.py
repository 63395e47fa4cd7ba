"""Many threads' writes in one transaction: the first caller to find no write running
writes everything queued, while the callers who arrive meanwhile wait; when its batch is
done, the first of those still waiting leads the next batch. One commit for many
entries (the commit is the database's ceiling), on the connections of the request
threads themselves (no thread or connection of its own), and no caller leads more than
one batch after its own, so no request waits on an endless stream of others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class _Slot:
    __slots__ = ("error", "item", "lead", "result", "wake")

    def __init__(self, item: Any):
        self.item = item
        self.wake = threading.Event()
        self.lead = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    def __init__(self, work: Callable[[list[Any]], list[Any]], *, most: int):
        """``work`` takes a batch of items and returns one result per item, in order."""
        self.work = work
        self.most = most
        self._lock = threading.Lock()
        self._queue: list[_Slot] = []
        self._writing = False

    def submit(self, item: Any) -> Any:
        """``work``'s result for this item, once its batch is written; its error if the
        batch's write raised."""
        slot = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            if not self._writing:
                self._writing = slot.lead = True
        if not slot.lead:
            slot.wake.wait()  # written by another's batch, or handed the next batch
        if slot.lead:
            # Led from the start (the queue was empty) or handed the lead as the first
            # in line: either way its own item is at the head of this batch.
            self._write_one_batch()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _write_one_batch(self) -> None:
        with self._lock:
            batch = self._queue[: self.most]
            del self._queue[: len(batch)]
        try:
            results = self.work([slot.item for slot in batch])
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
        except BaseException as exc:
            for slot in batch:
                slot.error = exc
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].lead = True  # the next batch's writer
                    self._queue[0].wake.set()
                else:
                    self._writing = False
            for slot in batch:
                slot.lead = False
                slot.wake.set()
