"""kill -9 of uvicorn right after each 2xx loses no acknowledged task.

200 times (4 servers at a time, one SQLite file): start uvicorn on ``tests.apps.kill_app``,
POST once, and SIGKILL that server the moment the 2xx arrives, usually while the task it
started after the response is still running. Every acknowledged job must then be in the
file, and ``afterward worker`` must bring every one of them to ``completed`` with its
effect written, rescuing at once the jobs the dead servers held (their pids are gone).
"""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import (
    Processes,
    afterward_command,
    free_port,
    processes,
    read_db,
    uvicorn_command,
    wait_for,
    wait_for_port,
)

KILLS = 200
LANES = 4
TASK_SECONDS = 0.05


@dataclass(frozen=True)
class Ack:
    job: str
    key: str
    pid: int


def _post_then_kill(procs: Processes, name: str) -> Ack:
    """One server life: start, wait for its port, POST, SIGKILL as soon as the 2xx is in."""
    for attempt in range(5):  # another process may grab the free port first
        port = free_port()
        proc = procs.start(
            uvicorn_command("tests.apps.kill_app:app", port),
            f"{name}-{attempt}",
        )
        try:
            wait_for_port(port, proc)
        except RuntimeError:
            if "address already in use" in proc.output().lower():
                proc.stop()
                continue
            raise
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/orders")
            response = conn.getresponse()
            body = response.read()
        finally:
            proc.kill9()
            conn.close()
            proc.stop()
        assert 200 <= response.status < 300, (response.status, body)
        data = json.loads(body)
        return Ack(job=data["job"], key=data["key"], pid=proc.pid)
    raise AssertionError("no free port found in 5 tries")


def effect_lines(path: Path) -> set[tuple[str, str, int]]:
    """The task runs logged so far: ("start" | "done", key, pid)."""
    if not path.exists():
        return set()
    return {(w, k, int(p)) for w, k, p in (line.split() for line in path.read_text().splitlines())}


@pytest.mark.slow
def test_kill9_after_each_2xx_loses_no_acknowledged_task(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    effects = tmp_path / "effects.log"
    env = {
        "AFTERWARD_URL": f"sqlite:///{db}",
        "KILL_APP_EFFECTS": str(effects),
        "KILL_APP_TASK_SECONDS": str(TASK_SECONDS),
    }
    started = time.monotonic()
    with processes(tmp_path / "logs", env) as procs:

        def lane(n: int) -> list[Ack]:
            return [_post_then_kill(procs, f"uvicorn-{n}-{i}") for i in range(KILLS // LANES)]

        with ThreadPoolExecutor(LANES) as pool:
            acks = [a for part in pool.map(lane, range(LANES)) for a in part]
        kills_done = time.monotonic()

        assert len(acks) == KILLS
        assert len({a.job for a in acks}) == KILLS
        stored = {r["id"] for r in read_db(db, "SELECT id FROM afterward_jobs")}
        missing = [a.job for a in acks if a.job not in stored]
        assert missing == [], f"{len(missing)} acknowledged job(s) not in the SQLite file"

        left = read_db(db, "SELECT count(*) FROM afterward_jobs WHERE state != 'completed'")
        left_for_worker = int(left[0][0])
        runs = effect_lines(effects)
        killed_mid_run = sum(
            ("start", a.key, a.pid) in runs and ("done", a.key, a.pid) not in runs for a in acks
        )

        worker = procs.start(
            afterward_command("worker", "tests.apps.kill_app:tasks", "--poll", "0.05"), "worker"
        )

        def all_completed() -> bool:
            assert worker.alive(), worker.output()[-3000:]
            if " running (" not in worker.output():
                return False
            rows = read_db(db, "SELECT count(*) FROM afterward_jobs WHERE state = 'completed'")
            return int(rows[0][0]) == KILLS

        wait_for(all_completed, timeout=60, interval=0.05, what="all jobs completed")
        drained = time.monotonic()
        assert worker.stop() == 0, worker.output()[-3000:]

    rows = {r["id"]: r for r in read_db(db, "SELECT * FROM afterward_jobs")}
    done = {k for what, k, _ in effect_lines(effects) if what == "done"}
    for a in acks:
        row = rows[a.job]
        assert row["state"] == "completed"
        assert json.loads(row["result"]) == a.key
        assert row["attempt"] <= row["max_attempts"]
        assert a.key in done, f"job {a.job} completed but its effect is missing"
        # Every lost attempt was spotted by its dead pid, none waited out its 30s lease.
        for error in json.loads(row["errors"]):
            assert error["error"].startswith("worker died: owner "), error
    attempts = Counter(int(r["attempt"]) for r in rows.values())
    print(
        f"\n{KILLS} kills in {kills_done - started:.1f}s, drained in {drained - kills_done:.1f}s; "
        f"{killed_mid_run} killed mid-run, {left_for_worker} left for the worker; "
        f"attempts {dict(sorted(attempts.items()))}"
    )
