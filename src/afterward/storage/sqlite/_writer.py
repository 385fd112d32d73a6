"""One thread owns the SQLite connection and commits whatever is queued as one transaction.

Concurrent requests, claims and completions that arrive while a transaction runs are
committed together by the next one (group commit), so the per-call cost of a commit is
shared. One failing call does not undo the others in its batch (see ``run_ops``). A
caller learns its result only after COMMIT returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from afterward.errors import StorageError

__all__ = ["Op", "Writer", "execute_while_locked", "is_busy", "run_ops"]

log = logging.getLogger("afterward.storage.sqlite")

Op = Callable[[sqlite3.Connection], Any]
T = TypeVar("T")
_STOP = object()
_MAX_BATCH = 1024
#: How long a batch keeps retrying when other processes hold the write lock.
_LOCKED_DEADLINE = 60.0


class _LoopFuture:
    """An asyncio future settled from the I/O thread: outcomes of one batch are handed to
    each event loop in a single thread-safe call rather than one wake-up per call."""

    __slots__ = ("fut", "loop", "outcome")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any] | None = None
    ) -> None:
        self.loop = loop
        self.fut: asyncio.Future[Any] = fut if fut is not None else loop.create_future()
        self.outcome: tuple[bool, Any] | None = None

    def set_running_or_notify_cancel(self) -> bool:
        return True

    def running(self) -> bool:
        return self.outcome is None

    def set_result(self, value: Any) -> None:
        self.outcome = (True, value)

    def set_exception(self, error: BaseException) -> None:
        self.outcome = (False, error)


def _settle(items: list[_LoopFuture]) -> None:
    for item in items:
        if item.fut.done() or item.outcome is None:
            continue
        ok, value = item.outcome
        if ok:
            item.fut.set_result(value)
        else:
            item.fut.set_exception(value)


def _hand_over(batch: list[Any]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_LoopFuture]] = {}
    for _, _, target in batch:
        if type(target) is _LoopFuture:
            by_loop.setdefault(target.loop, []).append(target)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # that loop closed; nobody is waiting any more
            pass


def is_busy(e: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock."""
    text = str(e)
    return "locked" in text or "busy" in text


def execute_while_locked(conn: sqlite3.Connection, sql: str, seconds: float, failure: str) -> None:
    """Run ``sql``, trying again while other connections hold the lock, for ``seconds``;
    then raise ``StorageError(failure)``."""
    deadline = time.monotonic() + seconds
    # Another process's transaction usually holds the lock for 0.1-1 ms: look again soon,
    # then less and less often. Between two busy workers a waiter that slept 5 ms at a time
    # (or 1 ms and more, as SQLite's own handler does) seldom found the lock free.
    pause = 0.00002
    while True:
        try:
            conn.execute(sql)
            return
        except sqlite3.OperationalError as e:
            if not is_busy(e):
                raise
            if time.monotonic() > deadline:
                raise StorageError(failure) from e
            time.sleep(pause)
            pause = min(pause * 2, 0.0005)


def run_ops(conn: sqlite3.Connection, ops: list[tuple[Op, T]]) -> list[tuple[T, bool, Any]]:
    """Run each op inside the open transaction; returns (target, succeeded, value or error).

    With several ops, one that fails must leave the others' changes in place. Ops only
    touch the database, so the batch first runs in a single savepoint; only if an op raises
    is it rolled back and run again with a savepoint per op (one per op costs a statement
    pair per call on the common path). A lone op's exception propagates, failing the whole
    transaction.
    """
    if len(ops) == 1:
        op, target = ops[0]
        return [(target, True, op(conn))]
    conn.execute("SAVEPOINT batch")
    try:
        results: list[tuple[T, bool, Any]] = [(target, True, op(conn)) for op, target in ops]
    except Exception:
        conn.execute("ROLLBACK TO batch")
        conn.execute("RELEASE batch")
        return _run_ops_one_by_one(conn, ops)
    conn.execute("RELEASE batch")
    return results


def _run_ops_one_by_one(
    conn: sqlite3.Connection, ops: list[tuple[Op, T]]
) -> list[tuple[T, bool, Any]]:
    results: list[tuple[T, bool, Any]] = []
    for op, target in ops:
        conn.execute("SAVEPOINT op")
        try:
            value = op(conn)
        except Exception as e:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            results.append((target, False, _wrap(e)))  # the caller sees a StorageError
        else:
            conn.execute("RELEASE op")
            results.append((target, True, value))
    return results


class Writer:
    """The I/O thread of one SQLite database file."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ready = concurrent.futures.Future[None]()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.result()

    def submit(self, op: Op, *, write: bool | None = True) -> concurrent.futures.Future[Any]:
        """Queue ``op``; its future resolves after the transaction holding it committed.

        ``write=None`` runs ``op`` outside any transaction (a checkpoint, say).
        """
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((op, write, fut))
        return fut

    def submit_async(
        self, op: Op, *, write: bool = True, into: asyncio.Future[Any] | None = None
    ) -> asyncio.Future[Any]:
        """Queue ``op`` from a running event loop; await the returned future (``into``, when
        the caller already holds the future to settle)."""
        target = _LoopFuture(asyncio.get_running_loop(), into)
        self._queue.put((op, write, target))
        return target.fut

    def close(self) -> None:
        """Finish queued calls, then close the connection and the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as e:
            self._ready.set_exception(e)
            return
        self._ready.set_result(None)
        try:
            while True:
                item = self._queue.get()
                stop = item is _STOP
                batch = [] if stop else [item]
                while len(batch) < _MAX_BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    batch.append(nxt)
                raw = [i for i in batch if i[1] is None]
                if raw:
                    batch = [i for i in batch if i[1] is not None]
                    for op, _, fut in raw:  # outside any transaction (e.g. a checkpoint)
                        try:
                            fut.set_result(op(conn))
                        except Exception as e:
                            fut.set_exception(e)
                if batch:
                    self._execute(conn, batch)
                    _hand_over(batch)
                if stop:
                    return
        finally:
            conn.close()

    def _begin(self, conn: sqlite3.Connection, write: bool) -> None:
        # busy_timeout already waited; other processes keep the lock. Keep trying until the
        # deadline rather than handing "database is locked" to a user.
        execute_while_locked(
            conn,
            "BEGIN IMMEDIATE" if write else "BEGIN",
            _LOCKED_DEADLINE,
            "the SQLite database stayed locked by other processes for "
            f"{_LOCKED_DEADLINE:.0f}s; check for a stuck process holding it",
        )

    def _execute(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        write = any(w for _, w, _ in batch)
        results: list[tuple[concurrent.futures.Future[Any], bool, Any]] = []
        try:
            self._begin(conn, write)
            live = [(op, fut) for op, _, fut in batch if fut.set_running_or_notify_cancel()]
            results = run_ops(conn, live)
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # pragma: no cover - the connection is already broken
                    log.exception("rollback failed", extra={"action": "rollback"})
            err = e if isinstance(e, StorageError) else _wrap(e)
            done = {id(f) for f, _, _ in results}
            for fut, ok, value in results:
                fut.set_exception(value if not ok else err)
            for _, _, fut in batch:
                if id(fut) not in done and fut.running():
                    fut.set_exception(err)
            if not isinstance(e, Exception):
                raise
            return
        for fut, ok, value in results:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)


def _wrap(e: BaseException) -> BaseException:
    if isinstance(e, sqlite3.Error):
        err = StorageError(f"SQLite failed: {e}")
        err.__cause__ = e
        return err
    return e
