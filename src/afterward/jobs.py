"""The job record, its states and the table of allowed transitions.

States follow River and Oban::

    scheduled ──(due)──> available ──(claim)──> running ──> completed
        ^                    ^                     │  ├──> retryable ──(due, claim)──> running
        │ (chain step waits) │ (release)           │  ├──> discarded  (dead letter, kept)
        └────────────────────┴─────────────────────┘  └──> cancelled

A chain step waits in ``scheduled`` with no run time until the step before it completes.
"""

from __future__ import annotations

import enum
import os
import random
import time
from typing import Any, NamedTuple

__all__ = ["TRANSITIONS", "Job", "JobState", "NewJob", "can_transition", "new_job_id"]


class JobState(enum.StrEnum):
    """Where a job is in its life."""

    SCHEDULED = "scheduled"
    AVAILABLE = "available"
    RUNNING = "running"
    RETRYABLE = "retryable"
    COMPLETED = "completed"
    DISCARDED = "discarded"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for states a job never leaves."""
        return self in _FINAL


_FINAL = frozenset({JobState.COMPLETED, JobState.DISCARDED, JobState.CANCELLED})
S = JobState

#: Every allowed (from, to) edge; backends and the memory reference follow it, a test checks each.
TRANSITIONS: frozenset[tuple[JobState, JobState]] = frozenset(
    {
        (S.SCHEDULED, S.AVAILABLE),  # due time reached, or the chain step before completed
        (S.SCHEDULED, S.RUNNING),  # claimed once due
        (S.SCHEDULED, S.CANCELLED),  # cancelled, or an earlier chain step failed for good
        (S.AVAILABLE, S.RUNNING),  # claimed
        (S.AVAILABLE, S.CANCELLED),
        (S.RUNNING, S.COMPLETED),
        (S.RUNNING, S.RETRYABLE),  # failed with attempts left, or its worker died
        (S.RUNNING, S.DISCARDED),  # failed on its last attempt: dead letter
        (S.RUNNING, S.AVAILABLE),  # released unstarted at graceful shutdown
        (S.RUNNING, S.CANCELLED),
        (S.RETRYABLE, S.RUNNING),
        (S.RETRYABLE, S.CANCELLED),
    }
)


def can_transition(old: JobState, new: JobState) -> bool:
    """Whether a job may move from ``old`` to ``new``."""
    return (old, new) in TRANSITIONS


_counter = 0
# os.urandom per id gives up the GIL on every call, which under load costs far more than
# the id; a generator seeded from it once per process (and again after fork) does not.
_rng = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(16)))


def new_job_id() -> str:
    """A sortable, unique job id: 12 hex digits of milliseconds, 4 of a per-process
    counter, then 10 random ones."""
    global _counter
    _counter = (_counter + 1) & 0xFFFF
    # One number formatted once: three separate hex fields cost twice as much per job.
    return "%026x" % ((_time_ns() // 1_000_000) << 56 | _counter << 40 | _rng.getrandbits(40))


_time_ns = time.time_ns


class NewJob(NamedTuple):
    """A job as the caller hands it to storage.

    A named tuple rather than a frozen dataclass: one is built per enqueued job, and a
    frozen dataclass costs several times more to create (``enqueue_many`` is bulk work).
    """

    id: str
    task: str
    payload: str
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 5
    timeout: float | None = None
    run_at: float | None = None
    """When the job may start; ``None`` means it waits for the chain step before it."""
    chain_next: str | None = None
    """The id of the chain step that starts after this one succeeds."""
    owner: str | None = None
    """Insert already claimed by this owner (the process that will run it right away)."""
    lease_expires_at: float | None = None


class Job(NamedTuple):
    """A stored job as read back from storage: an immutable named tuple (every claim builds
    one per job; a frozen dataclass costs several times more to create)."""

    id: str
    task: str
    payload: str
    state: JobState
    queue: str
    priority: int
    attempt: int
    max_attempts: int
    timeout: float | None
    run_at: float | None
    created_at: float
    attempted_at: float | None
    finished_at: float | None
    lease_owner: str | None
    lease_token: int
    lease_expires_at: float | None
    chain_next: str | None
    errors: tuple[dict[str, Any], ...] = ()
    result: str | None = None

    @property
    def error(self) -> dict[str, Any] | None:
        """The latest recorded failure (``error``, ``traceback``, ``attempt``, ``at``)."""
        return self.errors[-1] if self.errors else None

    def effective_state(self, now: float) -> JobState:
        """``scheduled`` jobs whose time has come are reported as ``available``."""
        if self.state is JobState.SCHEDULED and self.run_at is not None and self.run_at <= now:
            return JobState.AVAILABLE
        return self.state
