"""Run SQLite calls on the caller's own thread: no hand-off to the I/O thread.

With ``synchronous=NORMAL`` a commit is a ``write()`` to the WAL, tens of microseconds, so
handing each call to another thread (two wake-ups, GIL hand-offs) costs more than doing it.
Each thread gets its own connection. Async calls made during one event-loop iteration are
committed together in one transaction at the end of it (group commit on the loop thread).
When another process holds the write lock, the loop is not blocked: the batch retries on
later iterations, and after a short while goes to the I/O thread, which waits properly.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from afterward.errors import StorageError
from afterward.storage.sqlite._writer import Op, Writer, execute_while_locked, is_busy, run_ops

__all__ = ["LocalRunner"]

# Another process's write transaction lasts about a millisecond at most (a worker's round of
# 32 completions and a claim: 0.5-1 ms), and a timer cannot wait less than one (the loop's
# timeouts are whole milliseconds): so retry on the next loop iterations for that long, then
# every millisecond, then hand over. Spinning for only 0.5 ms left a waiter asleep on its
# timer, often for 1-2 ms, after the lock had come free: two workers draining one file
# waited 180-390 ms a second for each other that way, against 30-150 ms with 2 ms.
_SPIN_SECONDS = 0.002
_RETRY_DELAY = 0.001
_ON_LOOP_SECONDS = 0.010  # then the batch moves to the I/O thread, which waits properly
_LOCKED_DEADLINE = 60.0

_Item = tuple[Op, bool, "asyncio.Future[Any]"]


class _LoopState:
    __slots__ = ("busy_since", "items", "loop", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: list[_Item] = []
        self.scheduled = False
        self.busy_since: float | None = None


class LocalRunner:
    """Per-thread connections and per-loop batches for one database file."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        writer: Callable[[], Writer],
        after_commit: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._writer = writer
        self._after_commit = after_commit
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self, busy_timeout_ms: int) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            # Checkpoints (with their fsyncs) run on the I/O thread, never on a caller's.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            with self._lock:
                self._all.append(conn)
            self._local.conn = conn
            self._local.timeout = None
        if self._local.timeout != busy_timeout_ms:
            conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            self._local.timeout = busy_timeout_ms
        return conn

    # -- synchronous callers: run here, waiting for the lock like any blocking call --------

    def run_sync(self, op: Op, write: bool) -> Any:
        # A write waits for the lock in execute_while_locked, not in SQLite's busy handler,
        # which sleeps a whole millisecond first, then 2, 5 and 10: a script enqueueing one
        # job at a time while two workers drained stored 398/s that way, 1,825/s this way.
        # Reads never wait for writers in WAL mode; they keep the handler for the rare
        # moments (recovery, a last connection closing) when they must. Switching between
        # the two costs one PRAGMA.
        conn = self._conn(0 if write else 5000)
        try:
            execute_while_locked(
                conn,
                "BEGIN IMMEDIATE" if write else "BEGIN",
                _LOCKED_DEADLINE,
                f"the SQLite database stayed locked for {_LOCKED_DEADLINE:.0f}s",
            )
        except sqlite3.Error as e:
            raise StorageError(f"SQLite failed: {e}") from e
        try:
            value = op(conn)
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise StorageError(f"SQLite failed: {e}") from e
            raise
        if write:
            self._after_commit()
        return value

    # -- async callers: one transaction per loop iteration ---------------------------------

    def run_async(self, op: Op, write: bool) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        state: _LoopState | None = getattr(self._local, "state", None)
        if state is None or state.loop is not loop:  # a thread may run several loops in turn
            state = self._local.state = _LoopState(loop)
        fut: asyncio.Future[Any] = loop.create_future()
        state.items.append((op, write, fut))
        if not state.scheduled:
            state.scheduled = True
            loop.call_soon(self._flush, state, loop)
        return fut

    def _flush(self, state: _LoopState, loop: asyncio.AbstractEventLoop) -> None:
        items = [i for i in state.items if not i[2].done()]
        state.items = []
        state.scheduled = False
        if not items:
            return
        write = any(w for _, w, _ in items)
        conn = self._conn(0)
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.OperationalError as e:
            if not is_busy(e):
                _fail_all(items, StorageError(f"SQLite failed: {e}"))
                return
            # Another process holds the write lock: keep the loop free and try again soon,
            # together with whatever arrives meanwhile; then let the I/O thread wait for it.
            now = time.monotonic()
            if state.busy_since is None:
                state.busy_since = now
            waited = now - state.busy_since
            if waited > _ON_LOOP_SECONDS:
                state.busy_since = None
                self._hand_to_writer(items)
                return
            state.items = items + state.items
            state.scheduled = True
            if waited < _SPIN_SECONDS:
                loop.call_soon(self._flush, state, loop)
            else:
                loop.call_later(_RETRY_DELAY, self._flush, state, loop)
            return
        state.busy_since = None
        try:
            results = run_ops(conn, [(op, fut) for op, _, fut in items])
            conn.execute("COMMIT")
        except Exception as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            err = StorageError(f"SQLite failed: {e}") if isinstance(e, sqlite3.Error) else e
            _fail_all(items, err)
            return
        for fut, ok, value in results:
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if write:
            self._after_commit()

    def _hand_to_writer(self, items: list[_Item]) -> None:
        # The writer hands outcomes back to this loop in batches (``submit_async``).
        writer = self._writer()
        for op, write, fut in items:
            writer.submit_async(op, write=write, into=fut)
        self._after_commit()

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing a broken connection
                pass
        self._local = threading.local()


def _fail_all(items: list[_Item], error: Exception) -> None:
    for _, _, fut in items:
        if not fut.done():
            fut.set_exception(error)
