"""The fan-out ceiling: a broadcast server written with the ``websockets`` package only.

    python bench/ceiling_ws_server.py --port 8790 --schedule schedule.json [--processes 2]

Every client gets a small ``stream.state`` on connect; on SIGUSR1 each process replays
the schedule (``[[seconds after start, event text], ...]``, the events one viewer of
the real stack received in the fan-out phase) to all its clients with
``websockets.broadcast``, stamping each ``ts`` with the time the event was due (the
real stack's publisher stamps on time too, so a server that falls behind its events
shows it in the latency either way), and finally sends ``final``
(a text from the schedule file), so the same client code measures it the same way.
With ``--processes N`` (as many as the real server's workers) the processes share the
port with SO_REUSEPORT and the kernel spreads the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import signal
import sys
import time


def _stamped(text: str, ts: float) -> str:
    event = json.loads(text)
    event["ts"] = round(ts, 6)
    return json.dumps(event, separators=(",", ":"))


async def _serve(port: int, schedule: dict) -> None:
    from websockets.asyncio.server import broadcast, serve

    clients = set()
    state = json.dumps(schedule["state"], separators=(",", ":"))

    async def handler(ws):
        await ws.send(state)
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async def replay():
        started, wall = time.monotonic(), time.time()
        at = 0.0
        for at, text in schedule["events"]:
            delay = started + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            broadcast(clients, _stamped(text, wall + at))
        final_at = at + 0.3  # the real stack's trailing event comes a window later
        await asyncio.sleep(started + final_at - time.monotonic())
        broadcast(clients, _stamped(schedule["final"], wall + final_at))

    loop = asyncio.get_running_loop()
    tasks = set()

    def start():
        task = loop.create_task(replay())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGUSR1, start)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        # Keepalive as uvicorn runs it for the real stack (ws_ping_interval and
        # ws_ping_timeout, 20 s each): a production server pings, and with thousands of
        # sockets per process that is part of the load.
        ping_interval=20,
        ping_timeout=20,
        reuse_port=True,
        backlog=8192,
        max_queue=16,
    ):
        # The benchmark waits for one such word per process before it connects clients.
        # One write each: unbuffered, print() writes the text and its newline apart, and
        # the processes share the log.
        sys.stdout.write(f"ready {os.getpid()}\n")
        sys.stdout.flush()
        await stop


def _run(port: int, schedule_path: str) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with open(schedule_path) as handle:
        schedule = json.load(handle)
    asyncio.run(_serve(port, schedule))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--schedule", required=True)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.processes == 1:
        _run(args.port, args.schedule)
        return
    workers = [
        multiprocessing.Process(target=_run, args=(args.port, args.schedule))
        for _ in range(args.processes)
    ]
    for worker in workers:
        worker.start()

    def forward(signum, frame):
        for worker in workers:
            if worker.pid is not None:
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGUSR1, forward)
    signal.signal(signal.SIGTERM, forward)
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
