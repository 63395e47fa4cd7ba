"""Server CPU for the front door: ``utime + stime`` of every server process from
``/proc/<pid>/stat``, read before and after a load run, so that a rate comes with the
CPU each answer cost.

Groups, reported separately: ``web`` (the uvicorn master and its workers), ``floor``
(the raw ASGI app's uvicorn), ``celery`` (the worker and its pool), ``redis`` (the
Redis server: shared with whatever else uses that Redis, so an upper bound), ``pg``
(PostgreSQL client backends connected to the bench's database; a backend that started
during the run is counted whole, one that ended during it is missed). The machine's
own busy time (``/proc/stat``) says how much of the two cores something else used.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from bench.stack import descendants

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int] | None:
    """(utime + stime, starttime) in clock ticks, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, starttime 22.
    return int(fields[11]) + int(fields[12]), int(fields[19])


def tree(pid: int | None) -> list[int]:
    if pid is None:
        return []
    return [pid, *descendants(pid)]


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores together."""
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in cpu[:8]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def uptime_ticks() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * TICK)


@dataclass
class Snapshot:
    at: dict[str, dict[int, tuple[int, int]]]
    machine: tuple[int, int]
    uptime: int


class Meter:
    """``groups`` maps a name to a callable giving that group's pids now."""

    def __init__(self, groups: dict):
        self.groups = groups

    def snapshot(self) -> Snapshot:
        uptime = uptime_ticks()
        at: dict[str, dict[int, tuple[int, int]]] = {}
        for name, pids in self.groups.items():
            found = {}
            with contextlib.suppress(Exception):
                for pid in pids():
                    stat = _stat(pid)
                    if stat is not None:
                        found[pid] = stat
            at[name] = found
        return Snapshot(at=at, machine=machine_ticks(), uptime=uptime)

    @staticmethod
    def delta(before: Snapshot, after: Snapshot) -> dict:
        """CPU seconds per group between two snapshots (a process that started in
        between counts whole), and the machine's busy and wall seconds."""
        out: dict[str, float] = {}
        for name, now in after.at.items():
            then = before.at.get(name, {})
            ticks = 0
            for pid, (cpu, start) in now.items():
                if pid in then and then[pid][1] == start:
                    ticks += cpu - then[pid][0]
                elif start >= before.uptime - 1:
                    ticks += cpu
            out[name] = ticks / TICK
        out["machine_busy_s"] = (after.machine[0] - before.machine[0]) / TICK
        cores = max(1, os.cpu_count() or 1)
        out["machine_wall_s"] = (after.machine[1] - before.machine[1]) / TICK / cores
        return out
