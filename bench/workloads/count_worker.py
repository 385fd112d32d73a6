"""One in-process worker (uvloop, concurrency 32) drains N jobs of ``sleeper``, then stops.

usage: count_worker.py N      (run under valgrind by ``bench/count.py``)

The storage is a fresh SQLite file in a temporary folder. Stops when every job is stored
as completed or after 10 minutes, whichever comes first.
"""

import asyncio
import dataclasses
import os
import sys
import tempfile
import time

from afterward import Afterward, Call

aw = Afterward(f"sqlite:///{tempfile.mkdtemp(prefix='aw_count_')}/jobs.db", worker="off")


finished = 0


async def sleeper(ts: float) -> None:
    global finished
    await asyncio.sleep(0.01)
    finished += 1


async def drain(n: int) -> None:
    await aw.storage.open()
    settings = dataclasses.replace(aw.worker_settings, concurrency=32, poll_interval=0.01)
    worker = aw.new_worker(settings)
    await worker.start()
    deadline = time.monotonic() + 600
    # A counter, not a count of the table, while they run: counting scans the whole table,
    # and how often it ran would depend on how long the drain took.
    while finished < n and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    while time.monotonic() < deadline:
        counts = await aw.storage.jobs_count()
        if sum(v for k, v in counts.items() if k.value == "completed") >= n:
            break
        await asyncio.sleep(0.005)
    await worker.stop()
    await aw.storage.close()


def main() -> None:
    n = int(sys.argv[1])
    aw.enqueue_many([Call(sleeper, 0.0) for _ in range(n)])
    import uvloop

    uvloop.run(drain(n))
    os.write(1, b"ok\n")


if __name__ == "__main__":
    main()
