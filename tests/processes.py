"""Helpers for tests that run real processes: start, signal and reap them, free ports, and
wait on a condition with a deadline (never a bare sleep standing in for synchronisation).

Only processes started through ``Processes`` are ever signalled, always by their own pid.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO, TypeVar

__all__ = [
    "REPO",
    "Proc",
    "Processes",
    "afterward_command",
    "free_port",
    "port_open",
    "processes",
    "python_command",
    "read_db",
    "wait_for",
    "wait_for_port",
]

T = TypeVar("T")

#: The checkout, so ``tests.apps.*`` imports in child processes.
REPO = Path(__file__).resolve().parent.parent


def python_command(*args: str) -> list[str]:
    """The virtualenv's Python (the one running pytest) with ``args``."""
    return [sys.executable, *args]


def uvicorn_command(app: str, port: int) -> list[str]:
    """uvicorn serving ``app`` (MODULE:ATTR) on 127.0.0.1:``port``, logging warnings only."""
    return python_command(
        "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"
    )


def afterward_command(*args: str) -> list[str]:
    """The ``afterward`` console script installed next to this Python, with ``args``."""
    script = Path(sys.executable).parent / "afterward"
    if script.exists():
        return [str(script), *args]
    return python_command("-m", "afterward", *args)


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:g}s")


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this test process
    has not handed out before.

    The port is free only until someone binds it. Two threads that started servers at once
    (the kill test's lanes) could get the same one: one server then failed to bind, but the
    other's was already listening there, so waiting for the port let the loser's request go
    to the winner's server, which its own lane killed mid-request. Never handing a port out
    twice rules that out.
    """
    for _ in range(1_000):
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        with _handed_out_lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("1,000 free ports in a row had been handed out before")


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Proc:
    """One child process with its output captured in a log file."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, log: IO[bytes]) -> None:
        self.popen = popen
        self.log_path = log_path
        self._log = log

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.popen.pid

    def alive(self) -> bool:
        """True until the child exited (and reaps it once it has)."""
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this child only, if it has not been reaped yet."""
        if self.popen.returncode is None:
            self.popen.send_signal(sig)

    def kill9(self) -> None:
        """SIGKILL this child and reap it, so its pid is gone from ``/proc``."""
        self.signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a graceful stop), SIGKILL if it does not exit within ``timeout``."""
        if self.popen.returncode is None:
            self.signal(signal.SIGCONT)  # a paused child could not handle SIGTERM
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._log.close()
        return self.popen.returncode

    def output(self) -> str:
        """Everything the child wrote so far."""
        return self.log_path.read_text(errors="replace")


class Processes:
    """Starts children and makes sure every one of them is gone at the end."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.started: list[Proc] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, args: Sequence[str], name: str, env: Mapping[str, str] | None = None) -> Proc:
        """Start ``args`` in the checkout, output to ``<log_dir>/<name>.log``."""
        full_env = {**os.environ, **self.env, **(env or {})}
        full_env.pop("COVERAGE_PROCESS_START", None)
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(
            list(args),
            cwd=REPO,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc = Proc(popen, log_path, log)
        self.started.append(proc)
        return proc

    def close(self) -> None:
        """Stop every child still running (SIGKILL: the test is over)."""
        for proc in self.started:
            if proc.popen.returncode is None:
                proc.signal(signal.SIGCONT)
                proc.kill9()
            proc.stop()


@contextmanager
def processes(log_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[Processes]:
    """``Processes`` that are all gone when the block ends, however it ends."""
    procs = Processes(log_dir, env)
    try:
        yield procs
    finally:
        procs.close()


def wait_for_port(port: int, proc: Proc, timeout: float = 30.0) -> None:
    """Wait until ``proc`` listens on ``port``; fail at once if it exited instead."""

    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(
                f"process {proc.pid} exited ({proc.popen.returncode}) before listening on "
                f"{port}:\n{proc.output()[-2000:]}"
            )
        return port_open(port)

    wait_for(ready, timeout=timeout, interval=0.01, what=f"port {port} listening")


def read_db(path: Path, sql: str, args: Sequence[object] = ()) -> list[sqlite3.Row]:
    """Run one read query on the SQLite file the processes share."""
    with closing(sqlite3.connect(path, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(sql, args))
