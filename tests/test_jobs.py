"""The job model: final states, the transition table, ids, and the state a reader sees."""

from __future__ import annotations

import itertools

from afterward.jobs import TRANSITIONS, Job, JobState, can_transition, new_job_id

S = JobState


def test_final_states_have_no_way_out() -> None:
    assert {s for s in JobState if s.finished} == {S.COMPLETED, S.DISCARDED, S.CANCELLED}
    for old, new in TRANSITIONS:
        assert not old.finished, (old, new)


def test_every_state_a_job_can_start_in_reaches_a_final_state() -> None:
    reach = {s: {b for a, b in TRANSITIONS if a is s} for s in JobState}
    for start in (S.SCHEDULED, S.AVAILABLE, S.RUNNING):
        seen: set[JobState] = set()
        todo = [start]
        while todo:
            for nxt in reach[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        assert {S.COMPLETED, S.DISCARDED, S.CANCELLED} <= seen


def test_can_transition_follows_the_table() -> None:
    for old, new in itertools.product(JobState, repeat=2):
        assert can_transition(old, new) is ((old, new) in TRANSITIONS)
    assert not can_transition(S.COMPLETED, S.RUNNING)
    assert not can_transition(S.AVAILABLE, S.COMPLETED)  # a job runs before it completes


def test_job_ids_are_unique_and_sort_by_creation_time() -> None:
    ids = [new_job_id() for _ in range(5_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 and int(i, 16) >= 0 for i in ids)
    stamps = [int(i[:12], 16) for i in ids]
    assert stamps == sorted(stamps)


def _job(state: JobState, run_at: float | None) -> Job:
    return Job(
        id="j",
        task="m:f",
        payload="{}",
        state=state,
        queue="default",
        priority=0,
        attempt=0,
        max_attempts=5,
        timeout=None,
        run_at=run_at,
        created_at=0.0,
        attempted_at=None,
        finished_at=None,
        lease_owner=None,
        lease_token=0,
        lease_expires_at=None,
        chain_next=None,
    )


def test_a_scheduled_job_whose_time_came_reads_as_available() -> None:
    assert _job(S.SCHEDULED, 10.0).effective_state(10.0) is S.AVAILABLE
    assert _job(S.SCHEDULED, 10.0).effective_state(9.9) is S.SCHEDULED
    assert _job(S.SCHEDULED, None).effective_state(1e12) is S.SCHEDULED  # waits for its chain
    assert _job(S.RETRYABLE, 1.0).effective_state(2.0) is S.RETRYABLE


def test_error_is_the_latest_recorded_failure() -> None:
    job = _job(S.RETRYABLE, 1.0)
    assert job.error is None

    job = job._replace(errors=({"error": "first"}, {"error": "second"}))
    assert job.error == {"error": "second"}
