"""The in-memory backend: the reference implementation of the contract, and test mode.

Nothing survives the process; use it in tests (``memory://``) or to read what the
contract means. Thread-safe: one lock guards every call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from afterward.errors import StorageError
from afterward.jobs import Job, JobState, NewJob
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

__all__ = ["MemoryStorage"]

S = JobState
_WAITING = (S.SCHEDULED, S.AVAILABLE, S.RETRYABLE)


class MemoryStorage(Storage):
    """Jobs in a dict, guarded by a lock."""

    scheme = "memory"

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    async def open(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Nothing to release."""

    def call_sync(self, method: str, *args: Any) -> Any:
        """Run a contract method directly: every memory call is synchronous underneath."""
        impl: Callable[..., Any] = getattr(self, "_" + method)
        with self._lock:
            return impl(*args)

    def _put(self, job: Job, **changes: Any) -> Job:
        new = job._replace(**changes)
        self._jobs[job.id] = new
        return new

    def _job_insert_many(self, jobs: Sequence[NewJob], now: float) -> None:
        seen: set[str] = set()
        for n in jobs:
            if n.id in self._jobs or n.id in seen:
                # The same error SQLite's primary key gives, before anything is stored.
                raise StorageError(f"job id {n.id!r} already stored")
            seen.add(n.id)
        for n in jobs:
            claimed = n.owner is not None
            self._jobs[n.id] = Job(
                id=n.id,
                task=n.task,
                payload=n.payload,
                state=S.RUNNING
                if claimed
                else S.SCHEDULED
                if n.run_at is None or n.run_at > now
                else S.AVAILABLE,
                queue=n.queue,
                priority=n.priority,
                attempt=1 if claimed else 0,
                max_attempts=n.max_attempts,
                timeout=n.timeout,
                run_at=n.run_at,
                created_at=now,
                attempted_at=now if claimed else None,
                finished_at=None,
                lease_owner=n.owner,
                lease_token=1 if claimed else 0,
                lease_expires_at=n.lease_expires_at if claimed else None,
                chain_next=n.chain_next,
            )

    def _claimable(self, job: Job, now: float, queues: tuple[str, ...] | None) -> bool:
        return (
            job.state in _WAITING
            and job.run_at is not None
            and job.run_at <= now
            and (queues is None or job.queue in queues)
        )

    def _claim(self, job: Job, owner: str, now: float, expires: float) -> Job:
        return self._put(
            job,
            state=S.RUNNING,
            attempt=job.attempt + 1,
            attempted_at=now,
            lease_owner=owner,
            lease_token=job.lease_token + 1,
            lease_expires_at=expires,
        )

    def _job_claim(self, p: JobClaim) -> list[Job]:
        due = [j for j in self._jobs.values() if self._claimable(j, p.now, p.queues)]
        due.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return [self._claim(j, p.owner, p.now, p.lease_expires_at) for j in due[: p.limit]]

    def _held(self, job_id: str, token: int) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.state is not S.RUNNING or job.lease_token != token:
            return None
        return job

    def _job_complete(self, p: JobComplete) -> tuple[bool, Job | None]:
        job = self._held(p.id, p.token)
        if job is None:
            return False, None
        self._put(
            job,
            state=S.COMPLETED,
            finished_at=p.now,
            result=p.result,
            lease_owner=None,
            lease_expires_at=None,
        )
        nxt = self._jobs.get(job.chain_next) if job.chain_next else None
        if nxt is None or nxt.state is not S.SCHEDULED or nxt.run_at is not None:
            return True, None
        if p.next_owner is not None:
            nxt = self._put(nxt, run_at=p.now)
            return True, self._claim(nxt, p.next_owner, p.now, p.next_lease_expires_at or p.now)
        self._put(nxt, state=S.AVAILABLE, run_at=p.now)
        return True, None

    def _cancel_chain(self, job: Job, now: float, reason: str) -> None:
        nid = job.chain_next
        while nid:
            nxt = self._jobs.get(nid)
            if nxt is None or nxt.state not in _WAITING:  # as SQLite: only unstarted steps
                return
            self._put(
                nxt,
                state=S.CANCELLED,
                finished_at=now,
                errors=(*nxt.errors, {"error": reason, "at": now, "attempt": nxt.attempt}),
            )
            nid = nxt.chain_next

    def _job_fail(self, p: JobFail) -> bool:
        job = self._held(p.id, p.token)
        if job is None:
            return False
        errors = (*job.errors, p.error)
        if p.retry_at is not None:
            self._put(
                job,
                state=S.RETRYABLE,
                run_at=p.retry_at,
                errors=errors,
                lease_owner=None,
                lease_expires_at=None,
            )
            return True
        job = self._put(
            job,
            state=p.final_state,
            finished_at=p.now,
            errors=errors,
            lease_owner=None,
            lease_expires_at=None,
        )
        self._cancel_chain(job, p.now, f"cancelled: chain step {job.id} ended {job.state.value}")
        return True

    def _job_release(self, p: JobRelease) -> bool:
        job = self._held(p.id, p.token)
        if job is None:
            return False
        self._put(
            job,
            state=S.AVAILABLE,
            attempt=max(0, job.attempt - 1),
            run_at=p.now,
            lease_owner=None,
            lease_expires_at=None,
        )
        return True

    def _job_heartbeat(self, p: JobHeartbeat) -> set[str]:
        held = set()
        for job_id, token in p.leases:
            job = self._held(job_id, token)
            if job is not None and job.lease_owner == p.owner:
                self._put(job, lease_expires_at=p.lease_expires_at)
                held.add(job_id)
        return held

    def _jobs_rescue(self, p: JobsRescue) -> RescueResult:
        dead = set(p.dead_owners)
        out = RescueResult()
        lost = [
            j
            for j in self._jobs.values()
            if j.state is S.RUNNING and ((j.lease_expires_at or 0) < p.now or j.lease_owner in dead)
        ]
        for job in lost[: p.limit]:
            why = "worker died" if job.lease_owner in dead else "lease expired"
            error = {
                "error": f"{why}: owner {job.lease_owner} stopped while running "
                f"attempt {job.attempt}",
                "at": p.now,
                "attempt": job.attempt,
            }
            if job.attempt < job.max_attempts:
                self._job_fail(JobFail(job.id, job.lease_token, p.now, error, retry_at=p.now))
                out.retried.append(job.id)
            else:
                self._job_fail(JobFail(job.id, job.lease_token, p.now, error))
                out.discarded.append(job.id)
        return out

    def _job_cancel(self, p: JobCancel) -> bool:
        job = self._jobs.get(p.id)
        if job is None or job.state not in _WAITING:
            return False
        job = self._put(
            job,
            state=S.CANCELLED,
            finished_at=p.now,
            errors=(*job.errors, {"error": p.reason, "at": p.now, "attempt": job.attempt}),
        )
        self._cancel_chain(job, p.now, f"cancelled: chain step {job.id} was cancelled")
        return True

    def _job_get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def _jobs_list(self, p: JobsList) -> list[Job]:
        jobs = [
            j
            for j in self._jobs.values()
            if (not p.states or j.state in p.states) and (p.queue is None or j.queue == p.queue)
        ]
        jobs.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return jobs[: p.limit]

    def _jobs_count(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for j in self._jobs.values():
            counts[j.state] += 1
        return counts

    def _jobs_prune(self, p: JobsPrune) -> int:
        states = {S.COMPLETED, S.CANCELLED} | ({S.DISCARDED} if p.include_discarded else set())
        old = [
            j.id
            for j in self._jobs.values()
            if j.state in states and j.finished_at is not None and j.finished_at < p.finished_before
        ][: p.limit]
        for job_id in old:
            del self._jobs[job_id]
        return len(old)

    def _job_delete(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.state is S.RUNNING:
            return False
        del self._jobs[job_id]
        return True

    def _owners_running(self) -> list[str]:
        return sorted(
            {j.lease_owner for j in self._jobs.values() if j.state is S.RUNNING and j.lease_owner}
        )

    async def job_insert_many(self, jobs: Sequence[NewJob], now: float) -> None:
        """See ``Storage.job_insert_many``."""
        self.call_sync("job_insert_many", jobs, now)

    async def job_claim(self, params: JobClaim) -> list[Job]:
        """See ``Storage.job_claim``."""
        return self.call_sync("job_claim", params)  # type: ignore[no-any-return]

    async def job_complete(self, params: JobComplete) -> tuple[bool, Job | None]:
        """See ``Storage.job_complete``."""
        return self.call_sync("job_complete", params)  # type: ignore[no-any-return]

    async def job_fail(self, params: JobFail) -> bool:
        """See ``Storage.job_fail``."""
        return self.call_sync("job_fail", params)  # type: ignore[no-any-return]

    async def job_release(self, params: JobRelease) -> bool:
        """See ``Storage.job_release``."""
        return self.call_sync("job_release", params)  # type: ignore[no-any-return]

    async def job_heartbeat(self, params: JobHeartbeat) -> set[str]:
        """See ``Storage.job_heartbeat``."""
        return self.call_sync("job_heartbeat", params)  # type: ignore[no-any-return]

    async def jobs_rescue(self, params: JobsRescue) -> RescueResult:
        """See ``Storage.jobs_rescue``."""
        return self.call_sync("jobs_rescue", params)  # type: ignore[no-any-return]

    async def job_cancel(self, params: JobCancel) -> bool:
        """See ``Storage.job_cancel``."""
        return self.call_sync("job_cancel", params)  # type: ignore[no-any-return]

    async def job_get(self, job_id: str) -> Job | None:
        """See ``Storage.job_get``."""
        return self.call_sync("job_get", job_id)  # type: ignore[no-any-return]

    async def jobs_list(self, params: JobsList) -> list[Job]:
        """See ``Storage.jobs_list``."""
        return self.call_sync("jobs_list", params)  # type: ignore[no-any-return]

    async def jobs_count(self) -> dict[JobState, int]:
        """See ``Storage.jobs_count``."""
        return self.call_sync("jobs_count")  # type: ignore[no-any-return]

    async def jobs_prune(self, params: JobsPrune) -> int:
        """See ``Storage.jobs_prune``."""
        return self.call_sync("jobs_prune", params)  # type: ignore[no-any-return]

    async def job_delete(self, job_id: str) -> bool:
        """See ``Storage.job_delete``."""
        return self.call_sync("job_delete", job_id)  # type: ignore[no-any-return]

    async def owners_running(self) -> list[str]:
        """See ``Storage.owners_running``."""
        return self.call_sync("owners_running")  # type: ignore[no-any-return]
