"""The group commit under real threads: every caller gets its own result, items that
arrive while a write runs share the next one, a failed write fails only its batch."""

from __future__ import annotations

import threading
import time

from draws.group_commit import GroupCommit

CALLERS = 24


def _run(commit: GroupCommit, items: list[int]) -> list[object]:
    barrier = threading.Barrier(len(items))
    results: list[object] = [None] * len(items)

    def caller(index: int) -> None:
        barrier.wait()
        try:
            results[index] = commit.submit(items[index])
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    return results


def test_each_caller_gets_its_result_and_writes_are_shared():
    batches: list[list[int]] = []

    def work(batch: list[int]) -> list[int]:
        batches.append(list(batch))
        time.sleep(0.05)  # a commit's time: the others queue meanwhile
        return [item * 10 for item in batch]

    results = _run(GroupCommit(work, most=100), list(range(CALLERS)))

    assert results == [item * 10 for item in range(CALLERS)]
    assert sorted(item for batch in batches for item in batch) == list(range(CALLERS))
    assert len(batches) < CALLERS / 2, batches


def test_a_batch_never_exceeds_its_size():
    sizes: list[int] = []

    def work(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        time.sleep(0.02)
        return batch

    assert _run(GroupCommit(work, most=3), list(range(CALLERS))) == list(range(CALLERS))
    assert max(sizes) <= 3 and sum(sizes) == CALLERS


def test_a_failed_write_fails_its_own_batch_only():
    calls = []

    def work(batch: list[int]) -> list[int]:
        calls.append(list(batch))
        time.sleep(0.02)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return batch

    results = _run(GroupCommit(work, most=100), list(range(CALLERS)))

    failed = [i for i, r in enumerate(results) if isinstance(r, RuntimeError)]
    assert failed == sorted(calls[0])
    assert all(results[i] == i for i in range(CALLERS) if i not in failed)
