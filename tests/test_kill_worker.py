"""A worker process killed -9 or paused mid-task: another worker process takes the job over.

Killed: the job runs again within the lease (the dead pid is spotted on this host at
once) and ends ``completed`` on attempt 2, the loss recorded as the first attempt's error.
Paused (SIGSTOP) past its lease: the other worker rescues and completes the job; when the
paused worker resumes and finishes too, its late outcome is refused ("lease moved") and
the stored result stays the second worker's.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from afterward import Afterward, JobState
from tests.apps.chaos_tasks import hold, hold_once
from tests.processes import Proc, Processes, afterward_command, processes, wait_for

LEASE = 2.0


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """What the worker processes of one test share: the SQLite file, a short lease."""
    return {
        "AFTERWARD_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "AFTERWARD_LEASE": str(LEASE),
        "CHAOS_DIR": str(tmp_path),
        "CHAOS_RESCUE_INTERVAL": "0.25",
    }


@pytest.fixture
def procs(tmp_path: Path, env: dict[str, str]) -> Iterator[Processes]:
    """Child processes that are all gone when the test ends."""
    with processes(tmp_path / "logs", env) as p:
        yield p


@pytest.fixture
def client(make_app: type[Afterward], env: dict[str, str]) -> Afterward:
    """The test's own handle on the store: enqueues and reads, runs nothing."""
    return make_app(env["AFTERWARD_URL"], worker="off")


def start_worker(
    procs: Processes, name: str, tmp_path: Path, *, go: bool, grace: float = 10.0
) -> Proc:
    """One ``afterward worker`` running one job at a time; ``go``: its ``hold`` jobs finish."""
    proc = procs.start(
        afterward_command(
            "worker",
            "tests.apps.chaos_tasks:tasks",
            "--poll",
            "0.05",
            "--concurrency",
            "1",
            "--grace",
            str(grace),
        ),
        name,
    )
    if go:
        (tmp_path / f"go-{proc.pid}").touch()

    def running() -> bool:
        assert proc.alive(), proc.output()
        return " running (concurrency" in proc.output()

    wait_for(running, timeout=30, what=f"{name} started")
    return proc


def hold_log(tmp_path: Path) -> list[tuple[str, str, int]]:
    path = tmp_path / "hold.log"
    if not path.exists():
        return []
    return [(w, k, int(p)) for w, k, p in (line.split() for line in path.read_text().splitlines())]


def wait_started(tmp_path: Path, key: str, proc: Proc, timeout: float = 20) -> None:
    wait_for(
        lambda: ("start", key, proc.pid) in hold_log(tmp_path),
        timeout=timeout,
        interval=0.01,
        what=f"{key} started in pid {proc.pid}",
    )


def write_lock_free(db: Path) -> bool:
    """Whether a writer can get the database now (a paused process may hold the lock)."""
    with closing(sqlite3.connect(db, timeout=0.3, isolation_level=None)) as conn:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        conn.execute("ROLLBACK")
        return True


def pause(proc: Proc, db: Path) -> None:
    """SIGSTOP ``proc`` at a moment it holds no SQLite write lock (else nobody could write)."""
    for _ in range(20):
        proc.signal(signal.SIGSTOP)
        wait_for(
            lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T",
            timeout=5,
            interval=0.005,
            what="process stopped",
        )
        if write_lock_free(db):
            return
        proc.signal(signal.SIGCONT)
    raise AssertionError("the paused worker held the write lock every time")


def completed(client: Afterward, job_id: str) -> bool:
    job = client.get_job(job_id)
    return job is not None and job.state is JobState.COMPLETED


@pytest.mark.slow
def test_worker_killed_mid_task_runs_again_within_the_lease(
    tmp_path: Path, procs: Processes, client: Afterward
) -> None:
    a = start_worker(procs, "worker-a", tmp_path, go=False)
    job_id = client.enqueue(hold, "k1").id
    wait_started(tmp_path, "k1", a)

    b = start_worker(procs, "worker-b", tmp_path, go=True)
    killed = time.monotonic()
    a.kill9()
    wait_started(tmp_path, "k1", b, timeout=LEASE * 5)
    restarted_after = time.monotonic() - killed
    wait_for(lambda: completed(client, job_id), timeout=20, what="job completed")

    job = client.get_job(job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert job.attempt == 2
    assert client.result(job_id) == f"k1 by {b.pid}"
    assert len(job.errors) == 1
    lost = job.errors[0]
    assert lost["attempt"] == 1
    assert lost["error"].startswith("worker died: owner ")
    assert f"/{a.pid}/" in lost["error"]
    assert restarted_after < LEASE, f"ran again {restarted_after:.2f}s after the kill"
    assert ("done", "k1", a.pid) not in hold_log(tmp_path)
    assert b.stop() == 0, b.output()
    print(f"\nkilled worker's job started again {restarted_after:.2f}s after kill -9")


@pytest.mark.slow
def test_worker_paused_past_its_lease_loses_the_job_and_its_late_outcome(
    tmp_path: Path, procs: Processes, client: Afterward
) -> None:
    db = tmp_path / "jobs.db"
    a = start_worker(procs, "worker-a", tmp_path, go=False)
    job_id = client.enqueue(hold, "k2").id
    wait_started(tmp_path, "k2", a)

    pause(a, db)
    paused = time.monotonic()
    b = start_worker(procs, "worker-b", tmp_path, go=True)
    wait_for(lambda: completed(client, job_id), timeout=LEASE * 10, what="job rescued, completed")
    rescued_after = time.monotonic() - paused
    first = client.get_job(job_id)
    assert first is not None
    assert first.attempt == 2
    assert client.result(job_id) == f"k2 by {b.pid}"
    assert [e["attempt"] for e in first.errors] == [1]
    assert first.errors[0]["error"].startswith("lease expired: owner ")
    assert f"/{a.pid}/" in first.errors[0]["error"]

    # The paused worker wakes up and finishes its (stale) attempt.
    (tmp_path / f"go-{a.pid}").touch()
    a.signal(signal.SIGCONT)
    wait_for(lambda: ("done", "k2", a.pid) in hold_log(tmp_path), timeout=20, what="late finish")
    wait_for(lambda: "lease moved" in a.output(), timeout=20, what="'lease moved' in A's log")

    last = client.get_job(job_id)
    assert last is not None
    assert last.state is JobState.COMPLETED
    assert last.attempt == 2
    assert last.lease_token == first.lease_token
    assert last.finished_at == first.finished_at
    assert last.result is not None
    assert json.loads(last.result) == f"k2 by {b.pid}"
    assert f"job {job_id} completed, but its lease moved" in a.output()
    assert a.stop() == 0, a.output()
    assert b.stop() == 0, b.output()
    print(f"\npaused worker's job completed elsewhere {rescued_after:.2f}s after SIGSTOP")


@pytest.mark.slow
def test_stop_past_its_grace_on_the_last_attempt_discards_without_another_run(
    tmp_path: Path, procs: Processes, client: Afterward
) -> None:
    a = start_worker(procs, "worker-a", tmp_path, go=False, grace=0.2)
    job_id = client.enqueue(hold_once, "k3").id
    wait_started(tmp_path, "k3", a)

    assert a.stop() == 0, a.output()
    job = client.get_job(job_id)
    assert job is not None
    # Its one attempt was used up: it ends as a dead letter, never run a second time.
    assert job.state is JobState.DISCARDED, job
    assert job.attempt == job.max_attempts == 1
    assert [e["error"] for e in job.errors] == ["interrupted: the worker shut down while it ran"]
    b = start_worker(procs, "worker-b", tmp_path, go=True)
    assert b.stop() == 0, b.output()
    job = client.get_job(job_id)
    assert job is not None
    assert job.attempt == 1
    assert [w for w, k, _ in hold_log(tmp_path) if k == "k3"] == ["start"]


@pytest.mark.slow
def test_stop_past_its_grace_exits_and_hands_a_running_sync_task_back(
    tmp_path: Path, procs: Processes, client: Afterward
) -> None:
    a = start_worker(procs, "worker-a", tmp_path, go=False, grace=0.2)
    job_id = client.enqueue(hold, "k4").id
    wait_started(tmp_path, "k4", a)

    # The task's thread cannot be stopped: the worker must exit anyway once the grace is up.
    stopping = time.monotonic()
    a.signal(signal.SIGTERM)
    assert a.popen.wait(10) == 0, a.output()
    exited_after = time.monotonic() - stopping
    assert "still running" in a.output()
    job = client.get_job(job_id)
    assert job is not None
    assert job.state is JobState.RETRYABLE
    assert job.attempt == 1
    assert [e["error"] for e in job.errors] == ["interrupted: the worker shut down while it ran"]

    b = start_worker(procs, "worker-b", tmp_path, go=True)
    wait_for(lambda: completed(client, job_id), timeout=20, what="job completed by B")
    assert client.result(job_id) == f"k4 by {b.pid}"
    assert ("done", "k4", a.pid) not in hold_log(tmp_path)
    assert b.stop() == 0, b.output()
    print(f"\nworker with a stuck sync task exited {exited_after:.2f}s after SIGTERM")
