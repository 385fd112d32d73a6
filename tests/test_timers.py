"""A worker's event-loop thread asks the kernel for timers without slack, so that the sleeps
of a round of tasks end when they are due; the threads of the process it runs in keep theirs.
"""

from __future__ import annotations

import threading
from pathlib import Path

from afterward import Afterward, JobState
from afterward.engine.timers import precise_timers, timer_slack_ns
from tests.apps import timer_tasks
from tests.processes import afterward_command, processes, wait_for


def all_completed(app: Afterward, ids: list[str]) -> bool:
    jobs = [app.get_job(i) for i in ids]
    return all(job is not None and job.state is JobState.COMPLETED for job in jobs)


def test_precise_timers_change_the_calling_thread_and_the_threads_it_starts_only() -> None:
    before = timer_slack_ns()
    assert before is not None
    assert before > 1  # the kernel's default is 50 µs
    seen: dict[str, int | None] = {}

    def worker_thread() -> None:
        seen["set"] = int(precise_timers())
        seen["own"] = timer_slack_ns()
        child = threading.Thread(target=lambda: seen.update(child=timer_slack_ns()))
        child.start()
        child.join()

    thread = threading.Thread(target=worker_thread)
    thread.start()
    thread.join()
    assert seen == {"set": 1, "own": 1, "child": 1}
    assert timer_slack_ns() == before


def test_tasks_of_the_in_process_worker_run_with_precise_timers(
    make_app: type[Afterward], tmp_path: Path
) -> None:
    before = timer_slack_ns()
    app = make_app(f"sqlite:///{tmp_path / 'jobs.db'}")
    ids = [
        app.enqueue(timer_tasks.slack_on_the_loop).id,
        app.enqueue(timer_tasks.slack_in_the_pool).id,
    ]
    app._ensure_worker()  # what a web app's first stored task does: start the worker thread
    wait_for(lambda: all_completed(app, ids), timeout=30, what="both jobs completed")
    assert [app.result(i) for i in ids] == [1, 1]
    assert timer_slack_ns() == before  # the application's own thread keeps its slack


def test_tasks_of_a_worker_process_run_with_precise_timers(
    make_app: type[Afterward], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    client = make_app(url, worker="off")
    ids = [
        client.enqueue(timer_tasks.slack_on_the_loop).id,
        client.enqueue(timer_tasks.slack_in_the_pool).id,
    ]
    with processes(tmp_path / "logs", {"AFTERWARD_URL": url}) as procs:
        worker = procs.start(afterward_command("worker", "tests.apps.timer_tasks:tasks"), "worker")
        wait_for(lambda: all_completed(client, ids), timeout=60, what="both jobs completed")
        assert worker.alive()
    assert [client.result(i) for i in ids] == [1, 1]
