"""The worker: claim due jobs, run them with bounded concurrency, keep leases alive,
rescue the jobs of dead workers, prune old finished jobs, and shut down gracefully.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from afterward.engine.executor import Executor
from afterward.engine.owner import is_dead
from afterward.jobs import Job
from afterward.storage.base import JobClaim, JobHeartbeat, JobRelease, JobsPrune, JobsRescue

__all__ = ["Worker", "WorkerSettings"]

log = logging.getLogger("afterward.engine.worker")

_PRUNE_BATCH = 10_000
#: A bound on one round (10 million jobs); whatever is left waits for the next round.
_MAX_PRUNE_BATCHES = 1_000


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker claims and looks after jobs (all times in seconds)."""

    concurrency: int = 32
    poll_interval: float = 0.5
    lease_seconds: float = 30.0
    rescue_interval: float = 2.0
    prune_interval: float = 600.0
    retention: float = 86_400.0
    shutdown_grace: float = 10.0
    queues: tuple[str, ...] | None = None


class Worker:
    """Runs on one event loop until ``stop`` is called."""

    def __init__(self, executor: Executor, settings: WorkerSettings) -> None:
        self.executor = executor
        self.settings = settings
        self.storage = executor.storage
        self.clock = executor.clock
        self._running: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._inflight = 0
        self._wake: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._unlisten: Callable[[], None] | None = None
        self._main: asyncio.Task[None] | None = None
        self._side: list[asyncio.Task[None]] = []
        self._started: list[Job] = []

    # -- control --------------------------------------------------------------------------

    def wake(self) -> None:
        """Ask the claim loop to look for work now; safe from any thread."""
        loop, event = self._loop, self._wake
        if loop is None or event is None or loop.is_closed():
            return
        try:
            if asyncio.get_running_loop() is loop:
                self._wake_here()
                return
        except RuntimeError:
            pass
        try:
            loop.call_soon_threadsafe(self._wake_here)
        except RuntimeError:  # loop closed meanwhile
            pass

    def _wake_here(self) -> None:
        # A bare future rather than Event + wait_for: the claim loop resumes in the very next
        # loop iteration, so its claim joins the same SQLite transaction as the completions
        # that freed the slots (one commit, not two, per round of finished tasks).
        waiter = self._wake
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def start(self) -> None:
        """Start the claim, heartbeat and maintenance loops on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._wake = self._loop.create_future()
        self._stopping = False
        # Other processes storing work wake this loop at once; polling is the fallback.
        self._unlisten = self.storage.listen(self.wake)
        await self._maintain_once(prune=False)
        self._main = asyncio.create_task(self._claim_loop(), name="afterward-claim")
        self._side = [
            asyncio.create_task(self._heartbeat_loop(), name="afterward-heartbeat"),
            asyncio.create_task(self._maintenance_loop(), name="afterward-maintenance"),
        ]

    async def run(self) -> None:
        """Start, then run until the claim loop ends (after ``stop``)."""
        await self.start()
        assert self._main is not None
        await self._main

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming, give running jobs ``grace`` seconds, then hand the rest back."""
        grace = self.settings.shutdown_grace if grace is None else grace
        self._stopping = True
        if self._wake is not None:
            self._wake_here()
        if self._main is not None:
            await asyncio.gather(self._main, return_exceptions=True)
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        for t in self._side:
            t.cancel()
        await asyncio.gather(*self._side, return_exceptions=True)
        self._side = []
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    # -- loops ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        # Claim only as many jobs as there are idle slots: an attempt is charged at claim, so
        # a job claimed ahead of time would be charged for a crash it never saw. A slot counts
        # as idle once its function returned, while its outcome is still being stored.
        self._slots = asyncio.Semaphore(s.concurrency)
        while not self._stopping:
            # A fresh waiter before claiming: a slot freed while the claim is in flight
            # sets it, so that wake-up is not lost.
            waiter = self._wake = loop.create_future()
            free = s.concurrency - self._inflight
            jobs: list[Job] = []
            if free > 0:
                now = self.clock.now()
                try:
                    jobs = await self.storage.job_claim(
                        JobClaim(
                            self.executor.owner,
                            now,
                            now + s.lease_seconds,
                            limit=free,
                            queues=s.queues,
                        )
                    )
                except Exception:
                    log.exception("claim failed; retrying", extra={"action": "claim"})
                for job in jobs:
                    if self._stopping:
                        await self._release(job)
                        continue
                    self.executor.hold(job)
                    self._inflight += 1
                    task = loop.create_task(self._run_chain(job))
                    self._running.add(task)
                    task.add_done_callback(self._done)
            if jobs and len(jobs) == free:
                continue
            if self._stopping:
                break
            if not waiter.done():
                timer = loop.call_later(s.poll_interval, self._wake_here)
                try:
                    await waiter
                finally:
                    timer.cancel()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake_here()
        if not task.cancelled() and task.exception() is not None:
            log.error("job runner crashed", exc_info=task.exception(), extra={"action": "run"})

    async def _run_chain(self, first: Job) -> None:
        # A slot is held while a task's function runs, not while its outcome is stored, so
        # a commit waiting for the write lock never keeps the next job from starting.
        slots = self._slots
        assert slots is not None
        job: Job | None = first
        while job is not None:
            current = job
            if current is not first:  # a chain step claimed for us by the step before
                self._inflight += 1
            try:
                await slots.acquire()
            except asyncio.CancelledError:
                self._inflight -= 1
                await self._hand_back(current)
                raise
            held = [True]

            def free(held: list[bool] = held) -> None:
                if held[0]:
                    held[0] = False
                    slots.release()
                    self._inflight -= 1
                    self._wake_here()

            try:
                if self._stopping and current is first:  # claimed, never started
                    await self._hand_back(current)
                    return
                job = await self.executor.run(current, continue_chain=not self._stopping, ran=free)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Recording the outcome failed (storage down): the lease will lapse and the
                # job will be rescued, so nothing is lost.
                log.exception(
                    "could not record the outcome of job %s",
                    current.id,
                    extra={"action": "record", "job_id": current.id},
                )
                return
            finally:
                free()

    async def _hand_back(self, job: Job) -> None:
        self.executor.drop(job.id)
        try:
            await asyncio.shield(self._release(job))
        except Exception:  # the lease lapses instead and the job is rescued
            log.exception("could not release job %s", job.id, extra={"action": "release"})

    async def _release(self, job: Job) -> None:
        await self.storage.job_release(JobRelease(job.id, job.lease_token, self.clock.now()))

    async def _heartbeat_loop(self) -> None:
        every = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            held = self.executor.held()
            if not held:
                continue
            try:
                kept = await self.storage.job_heartbeat(
                    JobHeartbeat(
                        self.executor.owner, held, self.clock.now() + self.settings.lease_seconds
                    )
                )
            except Exception:
                log.exception("heartbeat failed", extra={"action": "heartbeat"})
                continue
            for job_id, _ in held:
                if job_id not in kept:
                    log.warning(
                        "lost the lease of job %s; its outcome from here will be rejected",
                        job_id,
                        extra={"action": "lease_lost", "job_id": job_id},
                    )

    async def _maintenance_loop(self) -> None:
        s = self.settings
        since_prune = 0.0
        while True:
            await asyncio.sleep(s.rescue_interval)
            since_prune += s.rescue_interval
            prune = since_prune >= s.prune_interval
            if prune:
                since_prune = 0.0
            try:
                await self._maintain_once(prune=prune)
            except Exception:
                log.exception("maintenance failed", extra={"action": "maintenance"})

    async def _maintain_once(self, *, prune: bool) -> None:
        now = self.clock.now()
        owners = await self.storage.owners_running()
        dead = [o for o in owners if o != self.executor.owner and is_dead(o)]
        rescued = await self.storage.jobs_rescue(JobsRescue(now, dead_owners=dead))
        if rescued.retried or rescued.discarded:
            log.warning(
                "rescued %d job(s) of dead or silent workers (%d discarded on their last attempt)",
                len(rescued.retried) + len(rescued.discarded),
                len(rescued.discarded),
                extra={"action": "rescue"},
            )
            self.wake()
        if prune:
            n = await self.prune(now - self.settings.retention)
            if n:
                log.info("pruned %d finished job(s)", n, extra={"action": "prune"})

    async def prune(self, before: float) -> int:
        """Delete completed and cancelled jobs that finished before ``before``; returns how many.

        Goes on, a batch at a time, until none is left: one batch per round could not keep
        up with a busy queue, and the file would grow without bound.
        """
        total = 0
        for _ in range(_MAX_PRUNE_BATCHES):
            n = await self.storage.jobs_prune(JobsPrune(before, limit=_PRUNE_BATCH))
            total += n
            if n < _PRUNE_BATCH:
                break
        return total
