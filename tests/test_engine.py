"""The engine's promises seen from storage: unknown names never run, timeouts and Retry are
recorded and retried, and the demo app does what the README says."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from afterward import Afterward, Call, JobState, Retry, RetryPolicy, task
from afterward.jobs import NewJob, new_job_id
from afterward.storage.base import JobCancel, JobClaim, JobComplete
from afterward.testing import FakeClock, collect

CALLS: list[str] = []


@task(max_attempts=2, timeout=0.05, retry=RetryPolicy(base_delay=0.01, jitter=0))
async def too_slow() -> None:
    CALLS.append("too_slow")
    await asyncio.sleep(5)


@task(max_attempts=3)
def asks_again(n: int) -> int:
    CALLS.append(f"asks_again {n}")
    if len(CALLS) < 2:
        raise Retry(delay=30, reason="the mail server said 421")
    return n + 1


def test_a_name_written_by_someone_else_never_runs_and_ends_a_dead_letter(
    make_app: type[Afterward], backend_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    app = make_app(backend_url, clock=FakeClock(), max_attempts=3)
    now = app.clock.now()
    # A row naming an importable function that nobody registered: os.system.
    payload = f'{{"args":["touch {marker}"],"kwargs":{{}}}}'
    job_id = new_job_id()
    app.storage.call_sync(
        "job_insert_many", [NewJob(job_id, "os:system", payload, max_attempts=3, run_at=now)], now
    )
    with collect(app) as jobs:
        jobs.drain()
    job = app.get_job(job_id)
    assert job is not None
    assert job.state is JobState.DISCARDED
    assert job.attempt == 3  # retried, then dead-lettered, never beyond max_attempts
    assert all("unknown task 'os:system'" in e["error"] for e in job.errors)
    assert not marker.exists()


def test_a_timeout_is_recorded_and_retried_then_discarded(
    make_app: type[Afterward], sqlite_url: str
) -> None:
    CALLS.clear()
    app = make_app(sqlite_url, clock=FakeClock())
    with collect(app) as jobs:
        handle = app.enqueue(too_slow)
        jobs.drain()  # the timeout is real time; the backoff between attempts is fake
    job = app.get_job(handle.id)
    assert job is not None
    assert job.state is JobState.DISCARDED
    assert CALLS == ["too_slow", "too_slow"]
    assert [e["error"] for e in job.errors] == ["timed out after 0.05s"] * 2


def test_retry_asks_for_another_attempt_after_its_delay(
    make_app: type[Afterward], backend_url: str
) -> None:
    CALLS.clear()
    clock = FakeClock()
    app = make_app(backend_url, clock=clock)
    start = clock.now()
    with collect(app) as jobs:
        handle = app.enqueue(asks_again, 41)
        jobs.drain()
    job = app.get_job(handle.id)
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert job.attempt == 2
    assert app.result(handle.id) == 42
    assert job.errors[0]["error"] == "the mail server said 421"
    assert clock.now() - start == pytest.approx(30)


def test_pruning_removes_every_old_finished_job_however_many_and_keeps_the_rest(
    make_app: type[Afterward], backend_url: str
) -> None:
    # More than one prune batch (10,000) and many SQLite chunks (1,000): one round must
    # catch up with a busy queue, or the file grows without bound.
    clock = FakeClock()
    app = make_app(backend_url, clock=clock, worker="off")
    store = app.storage
    old = app.enqueue_many([Call(asks_again, i) for i in range(23_456)])
    running = app.enqueue(asks_again, -1)  # claimed below but never finished
    cancelled = app.enqueue(asks_again, -2)

    async def finish_all(now: float) -> list[str]:
        claim = JobClaim("test-owner", now, now + 60, limit=30_000)
        jobs = [j for j in await store.job_claim(claim) if j.id != running.id]
        done = await asyncio.gather(
            *(store.job_complete(JobComplete(j.id, j.lease_token, now)) for j in jobs)
        )
        assert all(ok for ok, _ in done)
        return [j.id for j in jobs]

    async def scenario() -> tuple[int, int]:
        assert await store.job_cancel(JobCancel(cancelled.id, clock.now(), "not needed"))
        finished = await finish_all(clock.now())
        assert len(finished) == len(old)
        clock.advance(3_600)
        recent = app.enqueue(asks_again, -3)
        await finish_all(clock.now())
        worker = app.new_worker()
        first = await worker.prune(before=clock.now() - 60)
        again = await worker.prune(before=clock.now() - 60)
        assert (await store.job_get(recent.id)) is not None
        return first, again

    first, again = asyncio.run(scenario())
    assert (first, again) == (len(old) + 1, 0)  # the old completed ones and the cancelled one
    left = {j.id: j.state for j in app.list_jobs(limit=100)}
    assert len(left) == 2
    assert left[running.id] is JobState.RUNNING


def test_the_demo_stores_runs_and_reports_its_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AFTERWARD_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    sys.modules.pop("examples.demo", None)
    demo = importlib.import_module("examples.demo")
    try:
        with TestClient(demo.app) as client:
            assert "signup" in client.get("/").json()["try"]
            answer = client.post("/signup", json={"email": "ada@example.com", "name": "Ada"})
            assert answer.status_code == 200
            welcome, crm = answer.json()["jobs"]
            first = client.get(f"/jobs/{welcome}").json()
            assert first["state"] == "completed"
            assert first["result"] == "welcome sent to Ada <ada@example.com>"
            # The flaky CRM call either succeeded or waits for its retry: never lost.
            assert client.get(f"/jobs/{crm}").json()["state"] in ("completed", "retryable")
            assert {j["id"] for j in client.get("/jobs").json()} == {welcome, crm}
            assert client.get("/jobs/nope").status_code == 404
    finally:
        demo.tasks.close()
        sys.modules.pop("examples.demo", None)
