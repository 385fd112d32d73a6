"""Tasks for the queue workloads; workers run ``afterward worker qtasks:tasks``.

The storage is the SQLite file named by ``AFTERWARD_URL`` (one fresh file per phase).
``worker="off"`` so the producer process never runs tasks itself.
"""

import asyncio
import os
import time

import probe

from afterward import Afterward

tasks = Afterward(os.environ.get("AFTERWARD_URL"), worker="off")


def noop(ts: float) -> None:
    probe.record(ts, time.time())


async def anoop(ts: float) -> None:
    probe.record(ts, time.time())


async def sleeper(ts: float) -> None:
    start = time.time()
    await asyncio.sleep(0.01)
    probe.record(ts, start)


FUNCS = {"noop": noop, "anoop": anoop, "sleeper": sleeper}
