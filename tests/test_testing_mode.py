"""Test mode (``afterward.testing``): collect jobs, drain them with a fake clock so retry
waits pass instantly, or run them inline as they are enqueued; arguments still go through
the real codec.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel

from afterward import Afterward, AfterwardWarning, JobState, NotStorableError, task
from afterward.testing import FakeClock, collect, inline

CALLS: Counter[str] = Counter()
RECEIVED: list[Any] = []


class Invoice(BaseModel):
    id: uuid.UUID
    due: dt.date


def flaky(key: str) -> str:
    """Fails on its first two attempts, then succeeds."""
    CALLS[key] += 1
    if CALLS[key] <= 2:
        raise ConnectionError(f"attempt {CALLS[key]} of {key} failed")
    return f"done {key}"


@task(max_attempts=3)
def always_fails(key: str) -> None:
    CALLS[key] += 1
    raise RuntimeError(f"{key} is broken")


def record(invoice: Invoice, when: dt.datetime, tags: tuple[str, ...]) -> None:
    RECEIVED.append((invoice, when, tags))


def test_drain_plays_out_retry_backoff_instantly(
    make_app: type[Afterward], clock: FakeClock
) -> None:
    app = make_app("memory://", clock=clock, worker="off")
    start = clock.now()
    with collect(app) as jobs:
        handle = app.enqueue(flaky, "drain-retry")
        assert CALLS["drain-retry"] == 0  # collected, not run
        assert [j.task for j in jobs.jobs()] == [f"{__name__}:flaky"]
        finished = jobs.drain()
    assert [j.id for j in finished] == [handle.id]
    job = app.get_job(handle.id)
    assert job is not None
    assert (job.state, job.attempt, CALLS["drain-retry"]) == (JobState.COMPLETED, 3, 3)
    assert app.result(handle.id) == "done drain-retry"
    assert [e["error"] for e in job.errors] == [
        "ConnectionError('attempt 1 of drain-retry failed')",
        "ConnectionError('attempt 2 of drain-retry failed')",
    ]
    for error in job.errors:
        assert "Traceback (most recent call last)" in error["traceback"]
        assert "in flaky" in error["traceback"]
    # The fake clock moved through both waits (about 1s and 2s, with jitter).
    assert 0.75 + 1.5 <= clock.now() - start <= 1.25 + 2.5


def test_a_task_that_always_fails_ends_discarded_at_max_attempts(
    make_app: type[Afterward], clock: FakeClock
) -> None:
    app = make_app("memory://", clock=clock, worker="off")
    with collect(app) as jobs:
        handle = app.enqueue(always_fails, "dead-letter")
        jobs.drain()
        assert [j.id for j in jobs.jobs(JobState.DISCARDED)] == [handle.id]
    job = app.get_job(handle.id)
    assert job is not None
    assert (job.state, job.attempt, len(job.errors)) == (JobState.DISCARDED, 3, 3)
    assert CALLS["dead-letter"] == 3
    # Draining again runs nothing: a dead letter is never retried beyond max_attempts.
    with collect(app) as jobs:
        jobs.drain()
    assert CALLS["dead-letter"] == 3


def test_inline_runs_each_job_as_it_is_enqueued(
    make_app: type[Afterward], clock: FakeClock
) -> None:
    app = make_app("memory://", clock=clock, worker="off")
    with inline(app):
        handle = app.enqueue(flaky, "inline")
        job = app.get_job(handle.id)
        assert job is not None
        assert job.state is JobState.COMPLETED
        assert CALLS["inline"] == 3
    assert app.after_enqueue is None


def test_arguments_go_through_the_codec_in_test_mode(
    make_app: type[Afterward], clock: FakeClock
) -> None:
    app = make_app("memory://", clock=clock, worker="off")
    invoice = Invoice(id=uuid.uuid4(), due=dt.date(2025, 1, 31))
    when = dt.datetime(2025, 1, 1, 9, 30, tzinfo=dt.UTC)
    RECEIVED.clear()
    with collect(app) as jobs:
        app.enqueue(record, invoice, when, tags=("a", "b"))
        stored = jobs.jobs()[0].payload
        assert str(invoice.id) in stored  # stored as JSON text, not a pickled object
        jobs.drain()
    assert [(invoice, when, ("a", "b"))] == RECEIVED
    assert isinstance(RECEIVED[0][0], Invoice)


def test_enqueue_refuses_arguments_that_cannot_be_stored(
    make_app: type[Afterward], clock: FakeClock
) -> None:
    app = make_app("memory://", clock=clock, worker="off")
    with collect(app) as jobs:
        with (
            pytest.warns(AfterwardWarning, match="argument 'lock'"),
            pytest.raises(NotStorableError, match="enqueue cannot run"),
        ):
            app.enqueue(record, lock=threading.Lock())  # type: ignore[call-arg]
        assert jobs.jobs() == []
