"""Tasks that ``afterward worker tests.apps.chaos_tasks:tasks`` runs in the worker tests.

``hold`` logs its start, then waits for ``$CHAOS_DIR/go-<its pid>`` so a test can kill or
pause the worker while it runs. ``chaos_step`` follows a fixed schedule, a function of
(task index, attempt), that says whether the attempt succeeds, raises, exceeds its
timeout, or crashes the worker process (only where ``CHAOS_MAY_CRASH=1`` says the process
is a worker a test started).

``tasks`` is built on first use from ``AFTERWARD_URL`` (and ``AFTERWARD_LEASE``), so a
test process can import the task functions to enqueue them without an app of its own.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import time
from pathlib import Path

from afterward import Afterward, RetryPolicy, task
from tests.apps._append import append_line

__all__ = [
    "CHAOS_MAX_ATTEMPTS",
    "CHAOS_TIMEOUT",
    "chaos_step",
    "hold",
    "hold_once",
    "outcome",
    "predict",
]

CHAOS_MAX_ATTEMPTS = 3
CHAOS_TIMEOUT = 0.05


@functools.cache
def _tasks() -> Afterward:
    return Afterward(
        os.environ["AFTERWARD_URL"],
        max_attempts=CHAOS_MAX_ATTEMPTS,
        rescue_interval=float(os.environ.get("CHAOS_RESCUE_INTERVAL", "0.25")),
    )


def __getattr__(name: str) -> Afterward:
    if name == "tasks":
        return _tasks()
    raise AttributeError(name)


def _dir() -> Path:
    return Path(os.environ["CHAOS_DIR"])


@task(max_attempts=3)
def hold(key: str) -> str:
    """Log the start, wait (bounded) for this process's go-file, log the end."""
    pid = os.getpid()
    append_line(_dir() / "hold.log", f"start {key} {pid}")
    go = _dir() / f"go-{pid}"
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{go} never appeared")
        time.sleep(0.01)
    append_line(_dir() / "hold.log", f"done {key} {pid}")
    return f"{key} by {pid}"


@task(max_attempts=1)
async def hold_once(key: str) -> str:
    """``hold`` as a coroutine with a single attempt (a worker's stop can cancel it)."""
    pid = os.getpid()
    append_line(_dir() / "hold.log", f"start {key} {pid}")
    go = _dir() / f"go-{pid}"
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{go} never appeared")
        await asyncio.sleep(0.01)
    append_line(_dir() / "hold.log", f"done {key} {pid}")
    return f"{key} by {pid}"


def outcome(index: int, attempt: int) -> str:
    """What attempt ``attempt`` of task ``index`` does: succeed, raise, timeout or crash."""
    if index % 997 == 3:  # crashes every time: discarded when its last attempt is rescued
        return "crash"
    if index % 127 == 7 and attempt == 1:
        return "crash"
    r = random.Random(index * 1009 + attempt).random()
    if r < 0.2:
        return "raise"
    if r < 0.26:
        return "timeout"
    return "succeed"


def predict(index: int) -> tuple[str, list[str]]:
    """The final state of task ``index`` and what each of its attempts did."""
    did: list[str] = []
    for attempt in range(1, CHAOS_MAX_ATTEMPTS + 1):
        did.append(outcome(index, attempt))
        if did[-1] == "succeed":
            return "completed", did
    return "discarded", did


def _next_attempt(index: int) -> int:
    # Each attempt leaves a marker file; a worker runs one job at a time, so the markers
    # of a job count exactly the attempts storage charged it.
    marks = _dir() / "marks"
    marks.mkdir(exist_ok=True)
    for attempt in range(1, CHAOS_MAX_ATTEMPTS + 2):
        try:
            os.close(os.open(marks / f"{index}.{attempt}", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        return attempt
    return CHAOS_MAX_ATTEMPTS + 1


@task(
    max_attempts=CHAOS_MAX_ATTEMPTS,
    timeout=CHAOS_TIMEOUT,
    retry=RetryPolicy(max_attempts=CHAOS_MAX_ATTEMPTS, base_delay=0.01, jitter=0),
)
async def chaos_step(index: int) -> int:
    """Do what the schedule says for this attempt."""
    attempt = _next_attempt(index)
    what = outcome(index, attempt)
    if what == "crash":
        if os.environ.get("CHAOS_MAY_CRASH") == "1":
            os._exit(1)
        raise RuntimeError("scheduled crash, outside a worker that may crash")
    if what == "raise":
        raise ValueError(f"scheduled failure: task {index}, attempt {attempt}")
    if what == "timeout":
        await asyncio.sleep(CHAOS_TIMEOUT * 40)
    return index * 2
