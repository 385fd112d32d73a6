"""2,000 tasks on a fixed schedule of failures, timeouts and worker crashes.

A deterministic function of (task index, attempt) decides whether each attempt succeeds,
raises, exceeds its per-task timeout, or kills its worker process with ``os._exit(1)``.
Two worker processes (restarted when they crash) run everything; every job must end
exactly as the schedule predicts: ``completed`` or ``discarded``, on the predicted attempt,
with one recorded error per failed attempt saying what happened, and ran exactly as many
times as storage charged it. None is lost.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from afterward import Afterward, Call
from tests.apps.chaos_tasks import CHAOS_MAX_ATTEMPTS, CHAOS_TIMEOUT, chaos_step, predict
from tests.processes import Proc, afterward_command, processes, read_db, wait_for

N = 2000
WORKERS = 2
MAX_RESTARTS = 60


def expected_error(what: str, error: dict[str, object]) -> bool:
    """Whether a recorded error is the one the schedule's ``what`` should leave."""
    message = str(error["error"])
    if what == "raise":
        return error.get("type") == "ValueError" and "scheduled failure" in message
    if what == "timeout":
        return message == f"timed out after {CHAOS_TIMEOUT:g}s"
    if what == "crash":
        return message.startswith("worker died: owner ")
    return False


@pytest.mark.slow
def test_schedule_of_failures_timeouts_and_crashes_ends_as_predicted(
    tmp_path: Path, make_app: type[Afterward]
) -> None:
    db = tmp_path / "jobs.db"
    url = f"sqlite:///{db}"
    plan = [predict(i) for i in range(N)]
    scheduled_crashes = sum(did.count("crash") for _, did in plan)
    assert 0 < scheduled_crashes < N // 50  # crashes are a small fraction

    client = make_app(url, worker="off")
    started = time.monotonic()
    jobs = [h.id for h in client.enqueue_many([Call(chaos_step, i) for i in range(N)])]
    env = {
        "AFTERWARD_URL": url,
        "AFTERWARD_LEASE": "5",
        "CHAOS_DIR": str(tmp_path),
        "CHAOS_MAY_CRASH": "1",
        "CHAOS_RESCUE_INTERVAL": "0.25",
    }
    crashes = 0
    with processes(tmp_path / "logs", env) as procs:
        launched = 0

        def launch() -> Proc:
            nonlocal launched
            launched += 1
            # One job at a time: a crash then takes down only the job that scheduled it.
            return procs.start(
                afterward_command(
                    "worker", "tests.apps.chaos_tasks:tasks", "--poll", "0.05", "--concurrency", "1"
                ),
                f"worker-{launched}",
            )

        workers = [launch() for _ in range(WORKERS)]

        def reap_crashed(relaunch: bool = True) -> None:
            nonlocal crashes
            for slot, w in enumerate(workers):
                if w.alive():
                    continue
                assert w.popen.returncode == 1, w.output()[-3000:]
                crashes += 1
                assert crashes <= MAX_RESTARTS, "too many worker crashes"
                if relaunch:
                    workers[slot] = launch()

        def settled() -> bool:
            reap_crashed()
            rows = read_db(
                db,
                "SELECT count(*) FROM afterward_jobs "
                "WHERE state NOT IN ('completed', 'discarded', 'cancelled')",
            )
            return int(rows[0][0]) == 0

        wait_for(settled, timeout=150, interval=0.05, what="every job final")
        elapsed = time.monotonic() - started
        # A crash on a last attempt may end its job before the loop noticed the crash.
        reap_crashed(relaunch=False)
        for w in workers:
            if w.popen.returncode is None:
                # SIGTERM is a graceful stop only once the worker installed its handler.
                wait_for(lambda: " running (" in w.output(), timeout=30, what="worker up")  # noqa: B023
                assert w.stop() == 0, (w.popen.returncode, w.output()[-3000:])

    rows = {r["id"]: r for r in read_db(db, "SELECT * FROM afterward_jobs")}
    assert len(rows) == N
    marks = Counter(int(p.name.split(".")[0]) for p in (tmp_path / "marks").iterdir())
    mismatches = []
    for index, job_id in enumerate(jobs):
        row = rows[job_id]
        state, did = plan[index]
        job = client.get_job(job_id)
        assert job is not None
        got = (row["state"], row["attempt"], marks[index])
        if got != (state, len(did), len(did)):
            mismatches.append((index, got, (state, did)))
            continue
        assert row["attempt"] <= CHAOS_MAX_ATTEMPTS
        failed = [w for w in did if w != "succeed"]
        assert [e["attempt"] for e in job.errors] == list(range(1, len(failed) + 1))
        for what, error in zip(failed, job.errors, strict=True):
            assert expected_error(what, error), (index, what, error)
        if state == "completed":
            assert client.result(job_id) == index * 2
    assert mismatches == [], f"{len(mismatches)} job(s) off schedule, e.g. {mismatches[:5]}"
    assert crashes == scheduled_crashes

    finals = Counter(state for state, _ in plan)
    kinds = Counter(w for _, did in plan for w in did)
    print(
        f"\n{N} jobs final in {elapsed:.1f}s: {dict(finals)}; attempts {dict(kinds)}; "
        f"{crashes} worker crashes, each restarted"
    )
