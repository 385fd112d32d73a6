"""A synchronous handle on one backend that checks every state change it causes.

Each mutating call snapshots every job's state before and after; any job whose state
changed must have taken an edge of ``jobs.TRANSITIONS``, and the edge is recorded so tests
can assert which edges an operation produced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from afterward.jobs import TRANSITIONS, Job, JobState, NewJob
from afterward.storage import storage_from_url
from afterward.storage.base import (
    JobCancel,
    JobClaim,
    JobComplete,
    JobFail,
    JobHeartbeat,
    JobRelease,
    JobsList,
    JobsPrune,
    JobsRescue,
    RescueResult,
    Storage,
)

T = TypeVar("T")
T0 = 1_000.0
LEASE = 30.0
Edge = tuple[JobState, JobState]


def new(job_id: str, **fields: Any) -> NewJob:
    """A job due at ``T0`` unless ``fields`` say otherwise."""
    fields.setdefault("run_at", T0)
    fields.setdefault("payload", '{"args":[],"kwargs":{}}')
    fields.setdefault("task", "tests.conformance:noop")
    return NewJob(id=job_id, **fields)


class Store:
    """Runs contract calls on a private event loop and records state edges."""

    def __init__(self, url: str) -> None:
        self.storage: Storage = storage_from_url(url)
        self.loop = asyncio.new_event_loop()
        self.edges: list[tuple[str, Edge]] = []
        """Every (job id, (before, after)) change, in order."""
        self.run(self.storage.open())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.storage.close())
        self.loop.close()

    def states(self) -> dict[str, JobState]:
        return {j.id: j.state for j in self.run(self.storage.jobs_list(JobsList(limit=100_000)))}

    def _changing(self, coro: Coroutine[Any, Any, T]) -> T:
        before = self.states()
        result = self.run(coro)
        after = self.states()
        for job_id, old in before.items():
            now = after.get(job_id)
            if now is not None and now is not old:
                assert (old, now) in TRANSITIONS, f"{job_id}: {old} -> {now} is not in TRANSITIONS"
                self.edges.append((job_id, (old, now)))
        return result

    def edges_of(self, job_id: str) -> list[Edge]:
        return [e for i, e in self.edges if i == job_id]

    def all_edges(self) -> set[Edge]:
        return {e for _, e in self.edges}

    # -- the contract, synchronously ------------------------------------------------------

    def insert(self, jobs: Sequence[NewJob], now: float = T0) -> None:
        self._changing(self.storage.job_insert_many(jobs, now))

    def claim(
        self,
        owner: str = "w1",
        now: float = T0,
        limit: int = 1,
        queues: tuple[str, ...] | None = None,
        lease: float = LEASE,
    ) -> list[Job]:
        return self._changing(
            self.storage.job_claim(JobClaim(owner, now, now + lease, limit, queues))
        )

    def claim_one(self, owner: str = "w1", now: float = T0) -> Job:
        jobs = self.claim(owner, now)
        assert len(jobs) == 1, jobs
        return jobs[0]

    def complete(
        self,
        job: Job | tuple[str, int],
        now: float = T0 + 1,
        result: str | None = None,
        next_owner: str | None = None,
        *,
        known: bool = False,
    ) -> tuple[bool, Job | None]:
        """``known``: pass the job's ``chain_next`` along, as the executor does."""
        job_id, token = _key(job)
        params = JobComplete(
            job_id,
            token,
            now,
            result,
            next_owner,
            now + LEASE if next_owner else None,
            job.chain_next if known and isinstance(job, Job) else ...,
        )
        return self._changing(self.storage.job_complete(params))

    def fail(
        self,
        job: Job | tuple[str, int],
        now: float = T0 + 1,
        retry_at: float | None = None,
        message: str = "boom",
        final_state: JobState = JobState.DISCARDED,
    ) -> bool:
        job_id, token = _key(job)
        error = {"error": message, "at": now}
        params = JobFail(job_id, token, now, error, retry_at, final_state)
        return self._changing(self.storage.job_fail(params))

    def release(self, job: Job | tuple[str, int], now: float = T0 + 1) -> bool:
        job_id, token = _key(job)
        return self._changing(self.storage.job_release(JobRelease(job_id, token, now)))

    def heartbeat(self, owner: str, leases: Sequence[tuple[str, int]], expires: float) -> set[str]:
        return self._changing(self.storage.job_heartbeat(JobHeartbeat(owner, leases, expires)))

    def rescue(self, now: float, dead_owners: Sequence[str] = ()) -> RescueResult:
        return self._changing(self.storage.jobs_rescue(JobsRescue(now, dead_owners)))

    def cancel(self, job_id: str, now: float = T0 + 1, reason: str = "cancelled") -> bool:
        return self._changing(self.storage.job_cancel(JobCancel(job_id, now, reason)))

    def get(self, job_id: str) -> Job:
        job = self.run(self.storage.job_get(job_id))
        assert job is not None, f"job {job_id} is not stored"
        return job

    def find(self, job_id: str) -> Job | None:
        return self.run(self.storage.job_get(job_id))

    def listed(self, *states: JobState, queue: str | None = None, limit: int = 100) -> list[Job]:
        return self.run(self.storage.jobs_list(JobsList(tuple(states), queue, limit)))

    def count(self) -> dict[JobState, int]:
        return self.run(self.storage.jobs_count())

    def prune(self, before: float, include_discarded: bool = False, limit: int = 10_000) -> int:
        return self._changing(self.storage.jobs_prune(JobsPrune(before, limit, include_discarded)))

    def delete(self, job_id: str) -> bool:
        return self._changing(self.storage.job_delete(job_id))

    def owners(self) -> list[str]:
        return self.run(self.storage.owners_running())


def _key(job: Job | tuple[str, int]) -> tuple[str, int]:
    return (job.id, job.lease_token) if isinstance(job, Job) else job


def open_store(url: str) -> Iterator[Store]:
    """Fixture body: a store that is closed when the test ends."""
    store = Store(url)
    try:
        yield store
    finally:
        store.close()
