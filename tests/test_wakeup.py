"""Idle workers in another process start new work at once, without polling for it.

The worker polls only every 30 s here, so a start within a second can only come from the
wake-up a producer sends after it stored the job.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from afterward import Afterward
from afterward.config import EnvSettings
from afterward.storage._wakeup import WakeChannel
from tests.apps import wake_app
from tests.processes import afterward_command, processes, wait_for


def starts(path: Path) -> list[tuple[float, float]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(float(a), float(b)) for a, b in rows]


def runs_reach(path: Path, n: int) -> Callable[[], bool]:
    return lambda: len(starts(path)) >= n


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_idle_worker_in_another_process_is_woken_by_each_enqueue(
    tmp_path: Path, loop: str
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    out = tmp_path / "starts.txt"
    env = {"AFTERWARD_URL": url, "WAKE_APP_OUT": str(out)}
    producer = Afterward(url, worker="off", env=EnvSettings())
    with processes(tmp_path / "logs", env) as procs:
        worker = procs.start(
            afterward_command(
                "worker", "tests.apps.wake_app:tasks", "--poll", "30", "--loop", loop
            ),
            "worker",
        )
        # The worker is listening once its first maintenance pass ran; a first job shows it.
        producer.enqueue(wake_app.stamp, time.time())
        wait_for(lambda: len(starts(out)) >= 1, timeout=60, what="the worker's first run")
        for i in range(5):
            producer.enqueue(wake_app.stamp, time.time())
            wait_for(runs_reach(out, i + 2), timeout=5, what=f"wake-up {i + 1}")
        assert worker.alive()
    producer.close()
    delays = [started - sent for sent, started in starts(out)[1:]]
    assert len(delays) == 5
    assert max(delays) < 1.0, delays


def test_the_wake_directory_goes_away_with_its_last_listener(tmp_path: Path) -> None:
    # One directory per database: a test suite making a database per test left one empty
    # directory in /tmp per test, forever.
    db = str(tmp_path / "jobs.db")
    first, second = WakeChannel(db), WakeChannel(db)
    sender = WakeChannel(db)

    async def scenario() -> None:
        woken = asyncio.Event()
        stop_first = first.listen(lambda: None)
        stop_second = second.listen(woken.set)
        stop_first()
        assert os.path.isdir(second.directory)  # the other listener still needs it
        sender.notify()
        await asyncio.wait_for(woken.wait(), timeout=5)
        stop_second()

    asyncio.run(scenario())
    sender.close()
    assert not os.path.exists(first.directory)


def leave_dead_socket(directory: str) -> None:
    """What a listener killed with kill -9 leaves: its bound socket file, with nobody reading."""
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(os.path.join(directory, "1-dead.sock"))
    dead.close()


def test_a_producer_clears_what_a_killed_worker_left(tmp_path: Path) -> None:
    # A worker killed with kill -9 never stops listening properly: its socket file stays.
    sender = WakeChannel(str(tmp_path / "jobs.db"))
    os.makedirs(sender.directory, mode=0o700)
    leave_dead_socket(sender.directory)
    sender.notify()
    sender.close()
    assert not os.path.exists(sender.directory)


def test_a_new_listener_clears_killed_workers_sockets_and_keeps_live_ones(tmp_path: Path) -> None:
    # A process that stores only work it runs itself (the drop-in) never sends a wake-up, so
    # nobody else would notice the sockets its killed predecessors left.
    db = str(tmp_path / "jobs.db")
    live, newcomer = WakeChannel(db), WakeChannel(db)

    async def scenario() -> list[str]:
        stop_live = live.listen(lambda: None)
        leave_dead_socket(live.directory)
        stop_new = newcomer.listen(lambda: None)
        left = sorted(os.listdir(live.directory))
        stop_new()
        stop_live()
        return left

    left = asyncio.run(scenario())
    assert len(left) == 2  # the live listener's socket and the newcomer's own
    assert "1-dead.sock" not in left


def listen_in_a_process(db: Path, then: str) -> str:
    """Run a process that starts listening on ``db``'s channel, never stops, then runs
    ``then`` and exits normally; returns what it printed."""
    script = (
        "import asyncio, os, sys\n"
        "from afterward.storage._wakeup import WakeChannel\n"
        "channel = WakeChannel(sys.argv[1])\n"
        "async def main() -> None:\n"
        "    channel.listen(lambda: None)\n"
        "asyncio.new_event_loop().run_until_complete(main())\n"
    ) + then
    out = subprocess.run(
        [sys.executable, "-c", script, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_a_listener_never_stopped_is_cleared_when_its_process_exits(tmp_path: Path) -> None:
    # The zero-config drop-in's worker runs in a daemon thread that nobody stops when the
    # server exits: uvicorn on SIGTERM, with no lifespan, left its socket file in /tmp.
    then = "print(len(os.listdir(channel.directory)))\n"
    assert listen_in_a_process(tmp_path / "jobs.db", then) == "1"  # its socket, while it ran
    assert not os.path.exists(WakeChannel(str(tmp_path / "jobs.db")).directory)


def test_a_forked_child_exiting_leaves_its_parents_listener_alone(tmp_path: Path) -> None:
    then = (
        "child = os.fork()\n"
        "if child == 0:\n"
        "    sys.exit(0)  # runs the exit hooks it inherited\n"
        "os.waitpid(child, 0)\n"
        "print(len(os.listdir(channel.directory)))\n"
    )
    # The parent's socket, still there for its wake-ups after the child exited.
    assert listen_in_a_process(tmp_path / "jobs.db", then) == "1"
    assert not os.path.exists(WakeChannel(str(tmp_path / "jobs.db")).directory)
