"""SQLite storage: WAL mode, one I/O thread per database, group commit.

Durability: ``synchronous=NORMAL`` (the default) survives the process being killed at
any point, ``kill -9`` included; a power loss or OS crash may lose the last transactions.
``durability=full`` (``synchronous=FULL``) also survives power loss, at the cost of an
fsync per commit.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from types import EllipsisType
from typing import Any

from afterward.jobs import Job, JobState, NewJob
from afterward.serialization import json_text
from afterward.storage._named_sql import load_migrations, load_queries
from afterward.storage._wakeup import WakeChannel
from afterward.storage.base import (
    JobCancel,
    JobClaim,
    JobComplete,
    JobFail,
    JobHeartbeat,
    JobRelease,
    JobsList,
    JobsPrune,
    JobsRescue,
    RescueResult,
    Storage,
)
from afterward.storage.sqlite._local import LocalRunner
from afterward.storage.sqlite._multirow import insert_rows
from afterward.storage.sqlite._walpin import WalPin
from afterward.storage.sqlite._walsize import WalRound, wal_round
from afterward.storage.sqlite._writer import Op, Writer, execute_while_locked

__all__ = ["SQLiteStorage"]

Q = load_queries("afterward.storage.sqlite", "queries.sql")
_MIGRATIONS = load_migrations("afterward.storage.sqlite.migrations")
_S = JobState
_CHECK_WAL_EVERY = 16
_CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024
#: An insert of this many jobs or more looks at the WAL's size at once (see ``_inserted``).
_BULK_ROWS = 100
#: Past this much WAL, checkpoints stop being polite (see ``_checkpoint``); after the WAL
#: restarts, its file is cut back to this size.
_RESTART_WAL_BYTES = 32 * 1024 * 1024
_RESTART_WAIT_MS = 50
#: How much of the WAL file stays mapped (``_walpin``): all of it up to the size it is cut
#: back to. A WAL that starts over writes at the head, but commits go on where the last round
#: stopped until it does, anywhere in the file: with only its first 8 MiB mapped, single
#: enqueues after a 1,000,000-job bulk insert still read the disk in 4 runs of 4.
_PINNED_WAL_BYTES = _RESTART_WAL_BYTES
#: Rows deleted per write transaction when pruning: short, so enqueues barely wait.
_PRUNE_CHUNK = 1_000


_STATES = {s.value: s for s in JobState}
_new_tuple = tuple.__new__


def _checkpoint(conn: sqlite3.Connection) -> None:
    # A passive checkpoint never makes anyone wait, but while commits keep coming it never
    # catches up either: the WAL restarts from its beginning only once every frame in it was
    # copied back, so under a sustained burst it grew to hundreds of MiB, and every read then
    # searched that many frames (enqueue p50 0.05 -> 0.09 ms after a 1,000,000-job burst).
    # Past a bound, a RESTART checkpoint holds writers back until it has caught up. It also
    # waits for readers still on an older snapshot, with writers held meanwhile, so it gives
    # up after a short wait (busy: the next check tries again) rather than the usual 5 s.
    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if frames * _pragma(conn, "page_size") < _RESTART_WAL_BYTES:
        return
    usual = _pragma(conn, "busy_timeout")
    conn.execute(f"PRAGMA busy_timeout = {_RESTART_WAIT_MS}")
    try:
        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
    finally:
        conn.execute(f"PRAGMA busy_timeout = {usual}")


def _pragma(conn: sqlite3.Connection, name: str) -> int:
    value: int = conn.execute(f"PRAGMA {name}").fetchone()[0]
    return value


def _prunable(conn: sqlite3.Connection, args: dict[str, Any]) -> list[int]:
    return [r[0] for r in conn.execute(Q["jobs_prunable"], args)]


def _prune(conn: sqlite3.Connection, args: dict[str, Any]) -> int:
    return conn.execute(Q["jobs_prune"], args).rowcount


def _row_to_job(row: sqlite3.Row) -> Job:
    # Unpacked by position (the table's column order, which ``SELECT *``/``RETURNING *``
    # keep): a claim turns every returned row into a Job, and by-name lookups, the enum
    # call and parsing an empty error list cost about a third of the claim.
    (
        id_, queue, task, payload, state, priority, attempt, max_attempts, timeout, run_at,
        created_at, attempted_at, finished_at, lease_owner, lease_token, lease_expires_at,
        chain_next, errors, result,
    ) = row  # fmt: skip
    return Job(
        id_, task, payload, _STATES[state], queue, priority, attempt, max_attempts, timeout,
        run_at, created_at, attempted_at, finished_at, lease_owner, lease_token,
        lease_expires_at, chain_next, tuple(json.loads(errors)) if errors != "[]" else (), result,
    )  # fmt: skip


def _claimed(row: sqlite3.Row, now: float, owner: str, expires: float) -> Job:
    # job_claim returns only what the claim did not set itself: a claim of 32 converts 400
    # values rather than 600 (a claimable job has no finish time or result yet).
    (
        id_, task, payload, queue, priority, attempt, max_attempts, timeout, run_at,
        created_at, token, chain_next, errors,
    ) = row  # fmt: skip
    # tuple.__new__ with every field in order: Job's own __new__ is a Python function call.
    return _new_tuple(
        Job,
        (
            id_, task, payload, _S.RUNNING, queue, priority, attempt, max_attempts, timeout,
            run_at, created_at, now, None, owner, token, expires, chain_next,
            tuple(json.loads(errors)) if errors != "[]" else (), None,
        ),
    )  # fmt: skip


class _Completions:
    """``job_complete`` calls of one loop iteration, stored by one statement."""

    __slots__ = ("lock", "params", "taken", "waiters")

    def __init__(self, first: JobComplete, fut: asyncio.Future[Any]) -> None:
        # The op may run on the I/O thread (after a long lock wait): the lock keeps a call
        # from joining a batch whose statement already ran.
        self.lock = threading.Lock()
        self.params = [first]
        self.waiters = [fut]
        self.taken = False

    def join(self, params: JobComplete, fut: asyncio.Future[Any]) -> bool:
        with self.lock:
            if self.taken:
                return False
            self.params.append(params)
            self.waiters.append(fut)
            return True

    def settle(self, shared: asyncio.Future[list[Any]]) -> None:
        for i, fut in enumerate(self.waiters):
            if fut.done():  # that caller was cancelled meanwhile
                continue
            if shared.cancelled():
                fut.cancel()
            elif (error := shared.exception()) is not None:
                fut.set_exception(error)
            else:
                fut.set_result(shared.result()[i])


def _dumps(error: dict[str, Any]) -> str:
    return json.dumps(error, ensure_ascii=False, default=str)


class SQLiteStorage(Storage):
    """Jobs in one SQLite file shared by any number of processes on this host."""

    scheme = "sqlite"

    def __init__(self, path: str, *, durability: str = "normal", busy_timeout: float = 5.0) -> None:
        self.path = path
        self.durability = durability
        self.busy_timeout = busy_timeout
        self._writer: Writer | None = None
        self._wake = WakeChannel(os.path.realpath(path))
        self._commits = 0
        self._completing: dict[asyncio.AbstractEventLoop, _Completions] = {}
        self._checkpointing = False
        #: The WAL's round and how much it held when the last checkpoint was asked for.
        self._checkpointed_at = WalRound(b"", 0)
        self._wal_path = os.path.abspath(path) + "-wal"
        self._pin = WalPin(self._wal_path, _PINNED_WAL_BYTES)
        self._local: LocalRunner | None = (
            None if durability == "full" else LocalRunner(self._connect, self._w, self._committed)
        )

    # -- plumbing -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        self._use_wal(conn)
        conn.execute(f"PRAGMA synchronous = {'FULL' if self.durability == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute(f"PRAGMA journal_size_limit = {_RESTART_WAL_BYTES}")
        self._migrate(conn)
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs an exclusive lock, and SQLite may answer "locked"
        # at once, without its busy handler, while other processes open the same new file.
        seconds = max(self.busy_timeout, 1.0)
        execute_while_locked(
            conn,
            "PRAGMA journal_mode = WAL",
            seconds,
            f"could not switch {self.path} to WAL mode: another process kept it locked for "
            f"{seconds:g}s",
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS afterward_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM afterward_migrations")}
        pending = [m for m in _MIGRATIONS if m[0] not in done]
        if not pending:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while this one waited for the lock.
            done = {r[0] for r in conn.execute("SELECT version FROM afterward_migrations")}
            for version, name, sql in pending:
                if version in done:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO afterward_migrations VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _w(self) -> Writer:
        if self._writer is None:
            self._writer = Writer(self._connect, f"afterward-sqlite:{os.path.basename(self.path)}")
        return self._writer

    def _committed(self) -> None:
        # Callers' connections never checkpoint (it may fsync): the I/O thread does, without
        # a transaction and without anyone waiting, once the WAL holds as much as SQLite
        # itself would let it (about 4 MiB), and again for each 4 MiB more while it cannot
        # start over, whether it got there by many small commits or by a few bulk ones.
        # That is looked at every few commits (one stat(), and a dozen reads of the file
        # once it is that big), and after every bulk insert.
        self._commits += 1
        if self._commits % _CHECK_WAL_EVERY == 0:
            self._check_wal()

    def _check_wal(self) -> None:
        try:
            st = os.stat(self._wal_path)
        except FileNotFoundError:
            return
        if self._pin.stale(st):
            self._pin.pending = True
            self._w().submit(self._pin.refresh, write=None)
        if self._checkpointing:
            return
        size = st.st_size
        if size < _CHECKPOINT_WAL_BYTES:
            return
        # A file this big may hold only a few frames since the WAL started over (_walsize).
        # Past the RESTART bound the file only grows when the WAL does, so it is trusted,
        # and every look tries again until a RESTART checkpoint gets through.
        last = self._checkpointed_at
        now = WalRound(last.salts, size)
        if size <= _RESTART_WAL_BYTES:
            found = wal_round(self._wal_path, size)
            if found is not None:
                now = found
            # The WAL starts over only when a commit begins with every frame copied back,
            # which back-to-back commits never allow, so from the first checkpoint to the
            # RESTART bound it keeps growing. A checkpoint at each look meanwhile copied the
            # same few pages back, with two fsyncs, every 16 commits: one per 4 MiB written
            # in this round of the WAL is enough (one-at-a-time enqueue 7,600 -> 9,700/s).
            since = last.held if now.salts == last.salts else 0
            if now.held < since + _CHECKPOINT_WAL_BYTES:
                return
        self._checkpointed_at = now
        self._checkpointing = True
        done = self._w().submit(_checkpoint, write=None)
        done.add_done_callback(self._checkpointed)

    def _checkpointed(self, _: object) -> None:
        self._checkpointing = False

    async def _run(self, op: Op, *, write: bool = True) -> Any:
        if self._local is None:  # durability=full: every commit fsyncs, so off the loop
            return await self._w().submit_async(op, write=write)
        return await self._local.run_async(op, write)

    def call_sync(self, method: str, *args: Any) -> Any:
        """Run a contract method on the calling thread, without an event loop."""
        op, write = getattr(self, "_op_" + method)(*args)
        if self._local is None:
            result = self._w().submit(op, write=write).result()
        else:
            result = self._local.run_sync(op, write)
        if method == "job_insert_many":
            self._inserted(*args)
        return result

    async def _call(self, method: str, *args: Any) -> Any:
        op, write = getattr(self, "_op_" + method)(*args)
        return await self._run(op, write=write)

    async def open(self) -> None:
        """Start the I/O thread and migrate the file."""
        await asyncio.to_thread(self._w)

    async def close(self) -> None:
        """Commit what is queued and stop the I/O thread."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.to_thread(writer.close)
        if self._local is not None:
            self._local.close()
        self._wake.close()
        self._pin.close()

    def close_sync(self) -> None:
        """``close`` for synchronous callers."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
        if self._local is not None:
            self._local.close()
        self._wake.close()
        self._pin.close()

    # -- operations: each returns (function run on the I/O thread, whether it writes) -----

    def _op_job_insert_many(self, jobs: Sequence[NewJob], now: float) -> tuple[Op, bool]:
        # The statements work out the initial state themselves (from run_at and now).
        if all(n.timeout is None and n.chain_next is None for n in jobs):
            # No None to bind for those two columns (see job_insert_plain).
            free_sql, held_sql = Q["job_insert_unclaimed_plain"], Q["job_insert_plain"]
            free: list[tuple[Any, ...]] = [(*n[:6], n.run_at, now) for n in jobs if n.owner is None]
            held: list[tuple[Any, ...]] = [
                (*n[:6], n.run_at, n.owner, n.lease_expires_at, now)
                for n in jobs
                if n.owner is not None
            ]
        else:
            free_sql, held_sql = Q["job_insert_unclaimed"], Q["job_insert"]
            free = [(*n[:9], now) for n in jobs if n.owner is None]
            held = [(*n, now) for n in jobs if n.owner is not None]

        def op(conn: sqlite3.Connection) -> None:
            if free:
                insert_rows(conn, free_sql, free)
            if held:
                insert_rows(conn, held_sql, held)

        return op, True

    def _op_job_claim(self, p: JobClaim) -> tuple[Op, bool]:
        args = {
            "now": p.now,
            "owner": p.owner,
            "expires": p.lease_expires_at,
            "limit": p.limit,
            "queues": json.dumps(list(p.queues)) if p.queues is not None else None,
        }

        now, owner, expires = p.now, p.owner, p.lease_expires_at

        def op(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(Q["job_claim"], args)
            jobs = [_claimed(row, now, owner, expires) for row in rows]
            jobs.sort(key=lambda j: (-j.priority, j.run_at or 0, j.id))
            return jobs

        return op, True

    def _op_job_complete(self, p: JobComplete) -> tuple[Op, bool]:
        return (lambda conn: self._complete(conn, [p])[0]), True

    def _complete_batch(self, batch: _Completions, conn: sqlite3.Connection) -> list[Any]:
        with batch.lock:
            batch.taken = True
            params = list(batch.params)
        return self._complete(conn, params)

    def _complete(
        self, conn: sqlite3.Connection, params: list[JobComplete]
    ) -> list[tuple[bool, Job | None]]:
        # No RETURNING (which SQLite carries out by storing the rows in a temporary table
        # first): a worker's job costs 4 % fewer instructions (bench/count.py: 266,872 ->
        # 255,948). The count of changed rows tells whether every caller still held its lease,
        # and the executor passes each job's chain_next, so it need not be read back.
        if len(params) == 1:
            p = params[0]
            args = {"id": p.id, "token": p.token, "now": p.now, "result": p.result}
            done = {p.id} if conn.execute(Q["job_complete"], args).rowcount else set()
        else:
            items = json_text([[p.id, p.token, p.now, p.result] for p in params])
            changed = conn.execute(Q["jobs_complete_many"], {"items": items}).rowcount
            if changed == len(params):
                done = {p.id for p in params}
            else:  # some lease moved on meanwhile
                done = {r[0] for r in conn.execute(Q["jobs_completed_as"], {"items": items})}
        outcomes: list[tuple[bool, Job | None]] = []
        for p in params:
            if p.id not in done:
                outcomes.append((False, None))
                continue
            nxt = p.chain_next
            if isinstance(nxt, EllipsisType):  # a caller other than the executor
                nxt = conn.execute(Q["job_chain_next"], {"id": p.id}).fetchone()[0]
            outcomes.append((True, None if nxt is None else self._chain_next(conn, p, nxt)))
        return outcomes

    @staticmethod
    def _chain_next(conn: sqlite3.Connection, p: JobComplete, nxt: str) -> Job | None:
        if p.next_owner is None:
            conn.execute(Q["chain_release"], {"id": nxt, "now": p.now})
            return None
        claimed = conn.execute(
            Q["chain_claim"],
            {
                "id": nxt,
                "now": p.now,
                "owner": p.next_owner,
                "expires": p.next_lease_expires_at or p.now,
            },
        ).fetchone()
        return _row_to_job(claimed) if claimed is not None else None

    @staticmethod
    def _cancel_chain(conn: sqlite3.Connection, nxt: str | None, now: float, reason: str) -> None:
        while nxt:
            row = conn.execute(
                Q["chain_cancel_step"],
                {"id": nxt, "now": now, "error": _dumps({"error": reason, "at": now})},
            ).fetchone()
            nxt = row[0] if row is not None else None

    def _fail(self, conn: sqlite3.Connection, p: JobFail) -> bool:
        args = {"id": p.id, "token": p.token, "now": p.now, "error": _dumps(p.error)}
        if p.retry_at is not None:
            cur = conn.execute(Q["job_retry"], {**args, "retry_at": p.retry_at})
            return cur.rowcount == 1
        row = conn.execute(Q["job_end_failed"], {**args, "state": p.final_state.value}).fetchone()
        if row is None:
            return False
        reason = f"cancelled: chain step {p.id} ended {p.final_state.value}"
        self._cancel_chain(conn, row[0], p.now, reason)
        return True

    def _op_job_fail(self, p: JobFail) -> tuple[Op, bool]:
        return (lambda conn: self._fail(conn, p)), True

    def _op_job_release(self, p: JobRelease) -> tuple[Op, bool]:
        def op(conn: sqlite3.Connection) -> bool:
            args = {"id": p.id, "token": p.token, "now": p.now}
            return conn.execute(Q["job_release"], args).rowcount == 1

        return op, True

    def _op_job_heartbeat(self, p: JobHeartbeat) -> tuple[Op, bool]:
        def op(conn: sqlite3.Connection) -> set[str]:
            held = set()
            for job_id, token in p.leases:
                row = conn.execute(
                    Q["job_heartbeat"],
                    {"id": job_id, "token": token, "owner": p.owner, "expires": p.lease_expires_at},
                ).fetchone()
                if row is not None:
                    held.add(job_id)
            return held

        return op, True

    def _op_jobs_rescue(self, p: JobsRescue) -> tuple[Op, bool]:
        dead = json.dumps(list(p.dead_owners))

        def op(conn: sqlite3.Connection) -> RescueResult:
            out = RescueResult()
            lost = conn.execute(
                Q["jobs_lost"], {"now": p.now, "dead": dead, "limit": p.limit}
            ).fetchall()
            for row in lost:
                why = "worker died" if row["owner_dead"] else "lease expired"
                error = {
                    "error": f"{why}: owner {row['lease_owner']} stopped while running "
                    f"attempt {row['attempt']}",
                    "at": p.now,
                    "attempt": row["attempt"],
                }
                retry = row["attempt"] < row["max_attempts"]
                fail = JobFail(
                    row["id"], row["lease_token"], p.now, error, retry_at=p.now if retry else None
                )
                if self._fail(conn, fail):
                    (out.retried if retry else out.discarded).append(row["id"])
            return out

        return op, True

    def _op_job_cancel(self, p: JobCancel) -> tuple[Op, bool]:
        def op(conn: sqlite3.Connection) -> bool:
            error = _dumps({"error": p.reason, "at": p.now})
            row = conn.execute(
                Q["job_cancel"], {"id": p.id, "now": p.now, "error": error}
            ).fetchone()
            if row is None:
                return False
            self._cancel_chain(conn, row[0], p.now, f"cancelled: chain step {p.id} was cancelled")
            return True

        return op, True

    def _op_job_get(self, job_id: str) -> tuple[Op, bool]:
        def op(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(Q["job_get"], {"id": job_id}).fetchone()
            return _row_to_job(row) if row is not None else None

        return op, False

    def _op_jobs_list(self, p: JobsList) -> tuple[Op, bool]:
        args = {
            "states": json.dumps([s.value for s in p.states]) if p.states else None,
            "queue": p.queue,
            "limit": p.limit,
        }
        return (lambda conn: [_row_to_job(r) for r in conn.execute(Q["jobs_list"], args)]), False

    def _op_jobs_count(self) -> tuple[Op, bool]:
        def op(conn: sqlite3.Connection) -> dict[JobState, int]:
            counts = dict.fromkeys(JobState, 0)
            for state, n in conn.execute(Q["jobs_count"]):
                counts[_S(state)] = n
            return counts

        return op, False

    def _op_job_delete(self, job_id: str) -> tuple[Op, bool]:
        return (lambda conn: conn.execute(Q["job_delete"], {"id": job_id}).rowcount == 1), True

    def _op_owners_running(self) -> tuple[Op, bool]:
        return (lambda conn: [r[0] for r in conn.execute(Q["owners_running"])]), False

    # -- the contract ---------------------------------------------------------------------

    async def job_insert_many(self, jobs: Sequence[NewJob], now: float) -> None:
        """See ``Storage.job_insert_many``; wakes idle workers of other processes."""
        await self._call("job_insert_many", jobs, now)
        self._inserted(jobs, now)

    def _inserted(self, jobs: Sequence[NewJob], now: float) -> None:
        # A bulk insert writes as much WAL as hundreds of single commits: counting it as one
        # let a fill of 10,000-job calls pile up 16 of them (68 MiB) before anyone looked,
        # and the RESTART checkpoint that then copied it back held every enqueue meanwhile.
        if len(jobs) >= _BULK_ROWS:
            self._check_wal()
        # Jobs this process claimed at insert need nobody else; wake workers only for the rest.
        if any(j.owner is None and j.run_at is not None and j.run_at <= now for j in jobs):
            self._wake.notify()

    def listen(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Wake-ups from other processes that stored work in this file."""
        return self._wake.listen(callback)

    async def job_claim(self, params: JobClaim) -> list[Job]:
        """See ``Storage.job_claim``."""
        return await self._call("job_claim", params)  # type: ignore[no-any-return]

    async def job_complete(self, params: JobComplete) -> tuple[bool, Job | None]:
        """See ``Storage.job_complete``."""
        if self._local is None:
            return await self._call("job_complete", params)  # type: ignore[no-any-return]
        # Completions made during one loop iteration share one UPDATE, not one each.
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[bool, Job | None]] = loop.create_future()
        batch = self._completing.get(loop)
        if batch is None or not batch.join(params, fut):
            if batch is None:  # a loop seen for the first time: forget the closed ones
                for old in [lp for lp in self._completing if lp.is_closed()]:
                    del self._completing[old]
            batch = self._completing[loop] = _Completions(params, fut)
            shared = self._local.run_async(functools.partial(self._complete_batch, batch), True)
            shared.add_done_callback(batch.settle)
        return await fut

    async def job_fail(self, params: JobFail) -> bool:
        """See ``Storage.job_fail``."""
        return await self._call("job_fail", params)  # type: ignore[no-any-return]

    async def job_release(self, params: JobRelease) -> bool:
        """See ``Storage.job_release``."""
        return await self._call("job_release", params)  # type: ignore[no-any-return]

    async def job_heartbeat(self, params: JobHeartbeat) -> set[str]:
        """See ``Storage.job_heartbeat``."""
        return await self._call("job_heartbeat", params)  # type: ignore[no-any-return]

    async def jobs_rescue(self, params: JobsRescue) -> RescueResult:
        """See ``Storage.jobs_rescue``."""
        return await self._call("jobs_rescue", params)  # type: ignore[no-any-return]

    async def job_cancel(self, params: JobCancel) -> bool:
        """See ``Storage.job_cancel``."""
        return await self._call("job_cancel", params)  # type: ignore[no-any-return]

    async def job_get(self, job_id: str) -> Job | None:
        """See ``Storage.job_get``."""
        return await self._call("job_get", job_id)  # type: ignore[no-any-return]

    async def jobs_list(self, params: JobsList) -> list[Job]:
        """See ``Storage.jobs_list``."""
        return await self._call("jobs_list", params)  # type: ignore[no-any-return]

    async def jobs_count(self) -> dict[JobState, int]:
        """See ``Storage.jobs_count``."""
        return await self._call("jobs_count")  # type: ignore[no-any-return]

    async def jobs_prune(self, params: JobsPrune) -> int:
        """See ``Storage.jobs_prune``.

        Both steps run on the I/O thread, never on the loop: finding old rows scans the
        table, outside any transaction so writers do not wait for it; they are then deleted
        a chunk per short write transaction, picking up the scan where the chunk ended.
        """
        states = ["completed", "cancelled"] + (["discarded"] if params.include_discarded else [])
        args: dict[str, Any] = {"states": json.dumps(states), "before": params.finished_before}
        writer = self._w()
        deleted, after = 0, 0
        while deleted < params.limit:
            find = {**args, "after": after, "limit": min(_PRUNE_CHUNK, params.limit - deleted)}
            rowids: list[int] = await asyncio.wrap_future(
                writer.submit(functools.partial(_prunable, args=find), write=None)
            )
            if not rowids:
                break
            drop = {**args, "rowids": json.dumps(rowids)}
            deleted += await asyncio.wrap_future(
                writer.submit(functools.partial(_prune, args=drop))
            )
            if len(rowids) < find["limit"]:
                break  # the scan reached the end of the table
            after = rowids[-1]
        return deleted

    async def job_delete(self, job_id: str) -> bool:
        """See ``Storage.job_delete``."""
        return await self._call("job_delete", job_id)  # type: ignore[no-any-return]

    async def owners_running(self) -> list[str]:
        """See ``Storage.owners_running``."""
        return await self._call("owners_running")  # type: ignore[no-any-return]
