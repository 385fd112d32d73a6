"""Test mode: a fake clock, jobs collected for assertions and drained on demand, or run
inline as they are enqueued.

Arguments always go through the real codec, so a call that could not be stored in
production fails (or warns) in tests the same way::

    clock = FakeClock()
    app = Afterward("memory://", clock=clock)
    with collect(app) as jobs:
        app.enqueue(send_email, "a@example.com")
        assert [j.task for j in jobs.jobs()] == ["myapp.mail:send_email"]
        jobs.drain()          # runs them, advancing the fake clock through retry waits
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from afterward.app import Afterward
from afterward.jobs import Job, JobState
from afterward.storage.base import JobClaim, JobsList

__all__ = ["Collected", "FakeClock", "collect", "drain", "inline"]


class FakeClock:
    """A clock that moves only when told: ``advance(seconds)`` or ``set(t)``."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        """The fake current time (unix seconds)."""
        return self.t

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.t += seconds

    def set(self, t: float) -> None:
        """Jump to ``t`` (never backwards)."""
        self.t = max(self.t, t)


async def adrain(app: Afterward, *, advance: bool = True, max_rounds: int = 10_000) -> list[Job]:
    """Run every due job until none is left; returns all jobs, oldest first.

    With a ``FakeClock`` and ``advance=True``, time jumps to the next retry or scheduled
    job so backoff plays out instantly.
    """
    ex = app.executor
    lease = app.worker_settings.lease_seconds
    for _ in range(max_rounds):
        now = app.clock.now()
        jobs = await app.storage.job_claim(JobClaim(ex.owner, now, now + lease, limit=100))
        for job in jobs:
            nxt: Job | None = job
            while nxt is not None:
                nxt = await ex.run(nxt, continue_chain=True)
        if jobs:
            continue
        if not advance or not isinstance(app.clock, FakeClock):
            break
        waiting = await app.storage.jobs_list(
            JobsList((JobState.SCHEDULED, JobState.RETRYABLE), limit=100_000)
        )
        times = [j.run_at for j in waiting if j.run_at is not None]
        if not times:
            break
        app.clock.set(min(times))
    listed = await app.storage.jobs_list(JobsList(limit=1_000_000))
    return list(reversed(listed))


def drain(app: Afterward, *, advance: bool = True) -> list[Job]:
    """Blocking ``adrain``; call ``adrain`` from async tests."""
    return asyncio.run(adrain(app, advance=advance))


class Collected:
    """Jobs stored while ``collect`` was active."""

    def __init__(self, app: Afterward) -> None:
        self.app = app

    def jobs(self, *states: JobState) -> list[Job]:
        """Stored jobs, oldest first, optionally only some states."""
        return list(reversed(self.app.list_jobs(*states, limit=1_000_000)))

    def drain(self, *, advance: bool = True) -> list[Job]:
        """Run everything due (see ``drain``)."""
        return drain(self.app, advance=advance)

    async def adrain(self, *, advance: bool = True) -> list[Job]:
        """Async ``drain``."""
        return await adrain(self.app, advance=advance)


@contextlib.contextmanager
def collect(app: Afterward) -> Iterator[Collected]:
    """Store jobs but run none (no worker, no run after the response) until ``drain``."""
    saved = app.run_after_response, app.worker_mode
    app.run_after_response, app.worker_mode = False, "off"
    try:
        yield Collected(app)
    finally:
        app.run_after_response, app.worker_mode = saved


@contextlib.contextmanager
def inline(app: Afterward) -> Iterator[Afterward]:
    """Run each job as soon as ``enqueue``/``enqueue_many`` stored it (blocking)."""
    saved = app.worker_mode, app.after_enqueue
    app.worker_mode = "off"
    app.after_enqueue = lambda: drain(app)
    try:
        yield app
    finally:
        app.worker_mode, app.after_enqueue = saved
