"""The storage contract every backend implements, and the parameters of each call.

Methods are async, named noun-then-verb, and take one immutable parameters object. Every
change to a running job names the lease token it was claimed with (fencing): if the job
was rescued and claimed again since, the change is refused and the method returns False.
The memory backend is the reference implementation; ``tests/conformance`` holds the suite
that every backend passes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any, NamedTuple

from afterward.jobs import Job, JobState, NewJob

__all__ = [
    "JobCancel",
    "JobClaim",
    "JobComplete",
    "JobFail",
    "JobHeartbeat",
    "JobRelease",
    "JobsList",
    "JobsPrune",
    "JobsRescue",
    "Storage",
]


@dataclass(frozen=True, slots=True)
class JobClaim:
    """Claim up to ``limit`` due jobs (or exactly ``ids``) for ``owner``; counts an attempt."""

    owner: str
    now: float
    lease_expires_at: float
    limit: int = 1
    queues: tuple[str, ...] | None = None


class JobComplete(NamedTuple):
    """Record success. With ``next_owner``, the next chain step is claimed for that owner.

    A named tuple, unlike the other parameters: one is built for every job that succeeds,
    and a frozen dataclass costs three times as much to create.
    """

    id: str
    token: int
    now: float
    result: str | None = None
    next_owner: str | None = None
    next_lease_expires_at: float | None = None
    #: The job's ``chain_next`` as its claim returned it (it never changes), so the storage
    #: need not read it back; ``...``: not known, the storage reads it.
    chain_next: str | EllipsisType | None = ...


@dataclass(frozen=True, slots=True)
class JobFail:
    """Record a failed attempt.

    ``retry_at`` set: the job becomes ``retryable`` at that time. Otherwise it ends in
    ``final_state`` (``discarded`` or ``cancelled``) and the rest of its chain is cancelled.
    """

    id: str
    token: int
    now: float
    error: dict[str, Any]
    retry_at: float | None = None
    final_state: JobState = JobState.DISCARDED


@dataclass(frozen=True, slots=True)
class JobRelease:
    """Give an unstarted claimed job back (graceful shutdown); the attempt is not counted."""

    id: str
    token: int
    now: float


@dataclass(frozen=True, slots=True)
class JobHeartbeat:
    """Extend the leases ``owner`` holds; returns the ids whose lease it still holds."""

    owner: str
    leases: Sequence[tuple[str, int]]
    lease_expires_at: float


@dataclass(frozen=True, slots=True)
class JobsRescue:
    """Recover running jobs whose lease expired, or whose owner is in ``dead_owners``.

    A rescued job with attempts left becomes ``retryable`` at ``now``; one on its last
    attempt is discarded, with the loss recorded as its error.
    """

    now: float
    dead_owners: Sequence[str] = ()
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class JobCancel:
    """Cancel a job that has not started (and the chain steps after it)."""

    id: str
    now: float
    reason: str = "cancelled"


@dataclass(frozen=True, slots=True)
class JobsList:
    """List jobs, newest first."""

    states: tuple[JobState, ...] = ()
    queue: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class JobsPrune:
    """Delete completed and cancelled jobs that finished before ``finished_before``.

    Discarded jobs (dead letters) are kept until deleted on purpose (``include_discarded``).
    """

    finished_before: float
    limit: int = 10_000
    include_discarded: bool = False


@dataclass(frozen=True, slots=True)
class RescueResult:
    """What ``jobs_rescue`` did."""

    retried: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)


class Storage(abc.ABC):
    """One backend's implementation of the storage contract."""

    #: The URL scheme this backend serves, e.g. ``"sqlite"``.
    scheme: str = ""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations; safe to call from several processes."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads; pending calls finish first."""

    @abc.abstractmethod
    async def job_insert_many(self, jobs: Sequence[NewJob], now: float) -> None:
        """Store ``jobs`` atomically: when this returns, all are committed, or none."""

    @abc.abstractmethod
    async def job_claim(self, params: JobClaim) -> list[Job]:
        """Claim due jobs, highest priority first, then oldest run time."""

    @abc.abstractmethod
    async def job_complete(self, params: JobComplete) -> tuple[bool, Job | None]:
        """Record success; returns (accepted, next chain step claimed for ``next_owner``)."""

    @abc.abstractmethod
    async def job_fail(self, params: JobFail) -> bool:
        """Record a failed attempt; False if the lease was lost."""

    @abc.abstractmethod
    async def job_release(self, params: JobRelease) -> bool:
        """Return a claimed, unstarted job to ``available``; False if the lease was lost."""

    @abc.abstractmethod
    async def job_heartbeat(self, params: JobHeartbeat) -> set[str]:
        """Extend leases; returns the ids still held."""

    @abc.abstractmethod
    async def jobs_rescue(self, params: JobsRescue) -> RescueResult:
        """Recover jobs of dead or silent workers."""

    @abc.abstractmethod
    async def job_cancel(self, params: JobCancel) -> bool:
        """Cancel a job that has not started; False if it already started or finished."""

    @abc.abstractmethod
    async def job_get(self, job_id: str) -> Job | None:
        """Read one job."""

    @abc.abstractmethod
    async def jobs_list(self, params: JobsList) -> list[Job]:
        """Read jobs, newest first."""

    @abc.abstractmethod
    async def jobs_count(self) -> dict[JobState, int]:
        """Count jobs by state."""

    @abc.abstractmethod
    async def jobs_prune(self, params: JobsPrune) -> int:
        """Delete finished jobs; returns how many."""

    @abc.abstractmethod
    async def job_delete(self, job_id: str) -> bool:
        """Delete one job that is not running (e.g. a dead letter someone dealt with)."""

    @abc.abstractmethod
    async def owners_running(self) -> list[str]:
        """The distinct owners of running jobs (for spotting dead processes on this host)."""

    def listen(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``callback`` on the running loop when another process stores new work.

        Returns the function that stops listening, or None when the backend has no push
        channel (workers then poll).
        """
        return None

    def call_sync(self, method: str, *args: Any) -> Any:
        """Run contract method ``method`` from synchronous code (outside any event loop).

        The default runs it on a private event-loop thread; backends with their own I/O
        thread override this to skip the hop.
        """
        return _bridge().run(getattr(self, method)(*args))


class _Bridge:
    def __init__(self) -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="afterward-bridge", daemon=True).start()

    def run(self, coro: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_the_bridge: _Bridge | None = None


def _bridge() -> _Bridge:
    global _the_bridge
    if _the_bridge is None:
        _the_bridge = _Bridge()
    return _the_bridge
