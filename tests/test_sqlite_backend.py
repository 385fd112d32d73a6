"""SQLite specifics: WAL and the synchronous level on the real file, several processes
enqueueing into one file at once, migrations applied once across processes, and URL
errors that name the URL and the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from afterward import Afterward, Call
from afterward.config import EnvSettings
from afterward.errors import ConfigurationError, StorageError
from afterward.jobs import JobState, NewJob
from afterward.storage import storage_from_url
from afterward.storage.base import JobsList
from afterward.storage.sqlite import SQLiteStorage
from afterward.storage.sqlite._multirow import insert_rows

REPO = Path(__file__).resolve().parents[1]


def _open(url: str) -> Iterator[SQLiteStorage]:
    storage = storage_from_url(url)
    assert isinstance(storage, SQLiteStorage)
    asyncio.run(storage.open())
    try:
        yield storage
    finally:
        storage.close_sync()


def _own_pragma(storage: SQLiteStorage, name: str) -> object:
    """A PRAGMA as the backend's own connection sees it (synchronous is per connection)."""
    fut = storage._w().submit(
        lambda conn: conn.execute(f"PRAGMA {name}").fetchone()[0], write=False
    )
    return fut.result(timeout=10)


@pytest.mark.parametrize(
    ("query", "level"), [("", 1), ("?durability=normal", 1), ("?durability=full", 2)]
)
def test_wal_mode_and_synchronous_level_on_the_file(tmp_path: Path, query: str, level: int) -> None:
    path = tmp_path / "jobs.db"
    for storage in _open(f"sqlite:///{path}{query}"):
        assert _own_pragma(storage, "synchronous") == level  # 1 = NORMAL, 2 = FULL
        assert _own_pragma(storage, "busy_timeout") == 5000
        with sqlite3.connect(path) as other:
            # WAL is a property of the file: any other connection sees it.
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / "jobs.db-wal").exists() or path.exists()


def test_busy_timeout_option_is_applied(tmp_path: Path) -> None:
    for storage in _open(f"sqlite:///{tmp_path / 'b.db'}?busy_timeout=0.25"):
        assert _own_pragma(storage, "busy_timeout") == 250


def _python(code: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFTERWARD_")}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _start_together(procs: list[subprocess.Popen[str]], gate: Path, timeout: float = 60) -> None:
    """Wait until every process reported ready (one file each), then open the gate."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = sum(1 for _ in gate.parent.glob("ready-*"))
        if ready == len(procs) or any(p.poll() is not None for p in procs):
            break
        time.sleep(0.01)
    gate.write_text("go")


def _run_together(
    code: str, gate: Path, timeout: float
) -> tuple[list[subprocess.Popen[str]], list[tuple[str, str]]]:
    """Run ``code`` in 4 processes released at once; their (stdout, stderr)."""
    procs = [_python(code) for _ in range(4)]
    try:
        _start_together(procs, gate)
        return procs, [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


GATE = """
    import os, time
    from pathlib import Path
    gate = Path({gate!r})
    Path(str(gate.parent / "ready-") + str(os.getpid())).write_text("ready")
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
"""


def test_four_processes_enqueue_into_one_file_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    gate = tmp_path / "go"
    code = (
        GATE.format(gate=str(gate))
        + f"""
    from afterward import Afterward

    def deliver(n: int, who: str) -> None:
        pass

    app = Afterward({url!r}, worker="off")
    for n in range(500):
        app.enqueue(deliver, n, who=str(os.getpid()))
    app.close()
    print("ok", os.getpid())
    """
    )
    procs, outputs = _run_together(code, gate, timeout=120)
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.startswith("ok"), (out, err)
        assert "locked" not in err, err
        assert "Traceback" not in err, err
    with sqlite3.connect(tmp_path / "shared.db") as db:
        rows = db.execute(
            "SELECT count(*), count(DISTINCT id), count(DISTINCT payload) FROM afterward_jobs"
        ).fetchone()
        per_process = db.execute(
            "SELECT count(*) FROM afterward_jobs GROUP BY json_extract(payload, '$.kwargs.who')"
        ).fetchall()
        states = {s for (s,) in db.execute("SELECT DISTINCT state FROM afterward_jobs")}
    assert rows == (2000, 2000, 2000)
    assert sorted(n for (n,) in per_process) == [500] * 4
    assert states == {JobState.AVAILABLE.value}


def test_migrations_apply_once_when_processes_open_a_new_file_together(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    gate = tmp_path / "go"
    code = (
        GATE.format(gate=str(gate))
        + f"""
    import asyncio
    from afterward.storage import storage_from_url

    storage = storage_from_url({"sqlite:///" + str(db)!r})
    asyncio.run(storage.open())
    storage.close_sync()
    print("ok")
    """
    )
    procs, outputs = _run_together(code, gate, timeout=60)
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "ok", err
    with sqlite3.connect(db) as conn:
        applied = conn.execute(
            "SELECT version, name, applied_at FROM afterward_migrations"
        ).fetchall()
    assert [v for v, _, _ in applied] == [1, 2, 3]
    # Opening again, in this process, applies nothing new and keeps the table usable.
    for storage in _open(f"sqlite:///{db}"):
        assert asyncio.run(storage.jobs_list(JobsList())) == []
    with sqlite3.connect(db) as conn:
        assert (
            conn.execute("SELECT version, name, applied_at FROM afterward_migrations").fetchall()
            == applied
        )


def test_a_file_made_by_an_earlier_version_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    first = (REPO / "src/afterward/storage/sqlite/migrations/0001_jobs.sql").read_text()
    with sqlite3.connect(db) as conn:
        conn.executescript(first)
        conn.execute(
            "CREATE TABLE afterward_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        conn.execute("INSERT INTO afterward_migrations VALUES (1, 'jobs', 0)")
        conn.execute(
            "INSERT INTO afterward_jobs (id, queue, task, payload, state, max_attempts, "
            "run_at, created_at) VALUES ('kept', 'default', 'm:f', '{}', 'available', 5, 1, 1)"
        )
    for storage in _open(f"sqlite:///{db}"):
        job = asyncio.run(storage.job_get("kept"))
        assert job is not None
        assert job.state is JobState.AVAILABLE
    with sqlite3.connect(db) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM afterward_migrations")]
        indexes = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type='index'"))
        # INDEXED BY makes SQLite read the rebuilt index itself (or refuse the query).
        in_due_index = conn.execute(
            "SELECT id FROM afterward_jobs INDEXED BY afterward_jobs_due "
            "WHERE state = 'available' OR state = 'scheduled' OR state = 'retryable'"
        ).fetchall()
    assert versions == [1, 2, 3]
    # 0002 dropped the index no query used, which every completion paid to keep up to date.
    assert "afterward_jobs_finished" not in indexes
    assert {"afterward_jobs_due", "afterward_jobs_leases"} <= set(indexes)
    # 0003 rebuilt the due index with its condition as ORs; the job stayed in it.
    assert " IN " not in indexes["afterward_jobs_due"]
    assert in_due_index == [("kept",)]


def test_the_claim_walks_the_due_index(tmp_path: Path) -> None:
    # Should the claim's state test stop matching the index's condition word for word, the
    # planner would scan the whole table on every claim: a million-job queue would crawl.
    from afterward.storage.sqlite._backend import Q

    for _ in _open(f"sqlite:///{tmp_path / 'plan.db'}"):
        with sqlite3.connect(tmp_path / "plan.db") as conn:
            args = {"now": 1.0, "owner": "o", "expires": 2.0, "limit": 5, "queues": None}
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + Q["job_claim"], args)]
    assert any("USING INDEX afterward_jobs_due" in step for step in plan), plan
    assert not any(step.startswith("SCAN afterward_jobs") and "INDEX" not in step for step in plan)


def burst_task(i: int) -> None:
    """Stored, never run."""


@pytest.fixture
def small_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Afterward, Path]]:
    """An app on a fresh file whose WAL bounds are scaled down, so a few thousand jobs pass
    them: checkpoints past 256 KiB, RESTART past 1 MiB."""
    from afterward.storage.sqlite import _backend

    monkeypatch.setattr(_backend, "_CHECKPOINT_WAL_BYTES", 256 * 1024)
    monkeypatch.setattr(_backend, "_RESTART_WAL_BYTES", 1024 * 1024)
    db = tmp_path / "burst.db"
    app = Afterward(f"sqlite:///{db}", worker="off", env=EnvSettings())
    try:
        yield app, db
    finally:
        app.close()


def test_the_wal_stays_bounded_while_commits_never_pause(small_wal: tuple[Afterward, Path]) -> None:
    # Passive checkpoints alone never catch up with back-to-back commits, so the WAL (which
    # every read searches) grew with each one: 297 MiB after a burst of 1,000,000 jobs.
    app, db = small_wal
    for _ in range(100):
        app.enqueue_many([Call(burst_task, i) for i in range(500)])
    assert app.storage.call_sync("jobs_count")[JobState.AVAILABLE] == 50_000
    assert os.path.getsize(db) > 8 * 1024 * 1024  # the burst wrote far more than the bound
    assert os.path.getsize(f"{db}-wal") <= 4 * 1024 * 1024


def test_a_few_bulk_enqueues_do_not_pile_up_wal(small_wal: tuple[Afterward, Path]) -> None:
    # Each call below writes about 0.5 MiB of WAL. Looking at the WAL only every 16th commit
    # let 15 of them pile up 8 MiB, which a RESTART checkpoint then copied back while every
    # enqueue waited (the p99 of enqueues right after a 1,000,000-job fill).
    app, db = small_wal
    for _ in range(15):
        app.enqueue_many([Call(burst_task, i) for i in range(2_000)])
    assert app.storage.call_sync("jobs_count")[JobState.AVAILABLE] == 30_000
    # Here it ends at 0.5-1.5 MiB (2 MiB with both CPUs busy elsewhere); the old code, 8 MiB.
    assert os.path.getsize(f"{db}-wal") <= 4 * 1024 * 1024


def test_the_wal_file_says_how_much_was_written_since_it_started_over(tmp_path: Path) -> None:
    from afterward.storage.sqlite._walsize import wal_round

    db = tmp_path / "held.db"
    wal = f"{db}-wal"
    assert wal_round(wal, 0) is None  # no WAL yet
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("CREATE TABLE t (x TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,) for _ in range(2_000)])
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        first = wal_round(wal, os.path.getsize(wal))
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert (busy, copied) == (0, frames)
        assert first is not None
        assert first.held == frames * (24 + page) > 1024 * 1024
        conn.execute("INSERT INTO t VALUES ('y')")  # all copied back: the WAL starts over
        again = wal_round(wal, os.path.getsize(wal))
        assert again is not None
        assert 0 < again.held < 64 * 1024
        assert again.salts != first.salts  # a new round of the WAL, told apart from the last
        assert os.path.getsize(wal) > 1024 * 1024  # while the file stays as big
    finally:
        conn.close()
    other = tmp_path / "other-wal"
    other.write_bytes(b"not a WAL file at all, " * 10)
    assert wal_round(str(other), os.path.getsize(other)) is None


def count_checkpoints(
    monkeypatch: pytest.MonkeyPatch, checkpoint_bytes: int, restart_bytes: int
) -> list[int]:
    """Scale the WAL's bounds down; the returned list gets an item for each checkpoint run."""
    from afterward.storage.sqlite import _backend

    monkeypatch.setattr(_backend, "_CHECKPOINT_WAL_BYTES", checkpoint_bytes)
    monkeypatch.setattr(_backend, "_RESTART_WAL_BYTES", restart_bytes)
    real = _backend._checkpoint
    runs: list[int] = []

    def counted(conn: sqlite3.Connection) -> None:
        runs.append(1)
        real(conn)

    monkeypatch.setattr(_backend, "_checkpoint", counted)
    return runs


def test_once_the_wal_started_over_small_commits_do_not_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After the WAL starts over, SQLite writes the file again from its start without shrinking
    # it. Going by the file's size, one burst had every 16th commit afterwards run a
    # checkpoint, two fsyncs for a few frames, where SQLite would wait for 4 MiB.
    runs = count_checkpoints(monkeypatch, 1024 * 1024, 8 * 1024 * 1024)
    db = tmp_path / "grown.db"
    app = Afterward(f"sqlite:///{db}", worker="off", env=EnvSettings())
    storage = app.storage
    assert isinstance(storage, SQLiteStorage)
    try:
        app.enqueue_many([Call(burst_task, 0)])
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM afterward_jobs").fetchone()
        for _ in range(20):  # the open read keeps all of this in the WAL
            app.enqueue_many([Call(burst_task, i) for i in range(500)])
        reader.close()
        assert os.path.getsize(f"{db}-wal") > 2 * 1024 * 1024
        deadline = time.monotonic() + 10
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
            while time.monotonic() < deadline:  # copy everything back, as a quiet moment would
                busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if not busy and copied == frames and not storage._checkpointing:
                    break
                time.sleep(0.01)
        runs.clear()
        for i in range(32):  # well under 1 MiB of WAL; the old rule checked twice here
            app.enqueue(burst_task, i)
        assert os.path.getsize(f"{db}-wal") > 2 * 1024 * 1024  # the file never shrank
    finally:
        app.close()  # runs any checkpoint still queued on the I/O thread
    assert runs == []


def test_commits_that_never_pause_checkpoint_once_per_checkpoint_size_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Back-to-back commits never let the WAL start over before the RESTART bound (an open
    # read holds it here, as a long burst does), so it keeps growing. A checkpoint at every
    # look past the checkpoint size, each 16th commit, copied the same few pages back with
    # two fsyncs each time: one-at-a-time enqueue ran at 7,600/s against 9,700/s.
    from afterward.storage.sqlite._walsize import wal_round

    size = 1024 * 1024
    runs = count_checkpoints(monkeypatch, size, 64 * size)
    db = tmp_path / "steady.db"
    app = Afterward(f"sqlite:///{db}", worker="off", env=EnvSettings())
    try:
        app.enqueue(burst_task, 0)
        reader = sqlite3.connect(db, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM afterward_jobs").fetchone()
            for i in range(400):
                app.enqueue(burst_task, i)
        finally:
            reader.close()
        wal = f"{db}-wal"
        written = wal_round(wal, os.path.getsize(wal))
    finally:
        app.close()  # runs any checkpoint still queued on the I/O thread
    assert written is not None
    assert written.held > 3 * size  # the commits wrote several checkpoint sizes of WAL
    # The old rule asked about 20 times here.
    assert 1 <= len(runs) <= written.held // size


def test_a_reader_on_an_old_snapshot_does_not_hold_enqueues_back_for_long(
    small_wal: tuple[Afterward, Path],
) -> None:
    # The RESTART checkpoint waits for readers with writers held; with the connection's usual
    # 5 s busy timeout, one long read (a dashboard listing a big table, say) stalled every
    # enqueue behind it for 5 s.
    app, db = small_wal
    app.enqueue_many([Call(burst_task, i) for i in range(10)])
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM afterward_jobs").fetchone() == (10,)
        slowest = 0.0
        for _ in range(60):
            started = time.monotonic()
            app.enqueue_many([Call(burst_task, i) for i in range(500)])
            slowest = max(slowest, time.monotonic() - started)
    finally:
        reader.close()
    assert app.storage.call_sync("jobs_count")[JobState.AVAILABLE] == 30_010
    assert slowest < 1.0


def test_jobs_survive_closing_and_reopening_the_file(tmp_path: Path) -> None:
    from afterward.jobs import NewJob

    url = f"sqlite:///{tmp_path / 'keep.db'}"
    for storage in _open(url):
        asyncio.run(storage.job_insert_many([NewJob("a", "m:f", "{}", run_at=1.0)], 1.0))
    for storage in _open(url):
        job = asyncio.run(storage.job_get("a"))
        assert job is not None
        assert job.state is JobState.AVAILABLE


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("sqlite://", "sqlite:///relative/path.db"),
        ("sqlite://host/jobs.db", "sqlite:////absolute/path.db"),
        ("postgres://localhost/jobs", "use sqlite:///path.db or memory://"),
        ("jobs.db", "use sqlite:///path.db"),
        ("sqlite:///jobs.db?durability=fast", "use 'normal'"),
        ("sqlite:///jobs.db?busy_timeout=soon", "must be seconds"),
        ("sqlite:///jobs.db?journal=off", "known: durability, busy_timeout"),
    ],
)
def test_a_bad_url_names_the_url_and_the_fix(url: str, fix: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        storage_from_url(url)
    message = str(info.value)
    assert repr(url) in message, message
    assert fix in message, message


@pytest.mark.parametrize("query", ["", "?durability=full"])
def test_a_failing_call_in_a_shared_transaction_keeps_the_others(
    tmp_path: Path, query: str
) -> None:
    """Calls made together share one commit; one that fails must not undo the rest."""

    def job(i: str) -> NewJob:
        return NewJob(id=i, task="m:f", payload="[]", run_at=0.0)

    for storage in _open(f"sqlite:///{tmp_path / 'b.db'}{query}"):

        async def main(storage: SQLiteStorage = storage) -> tuple[object, ...]:
            await storage.job_insert_many([job("dup")], 0.0)
            return await asyncio.gather(
                storage.job_insert_many([job("a")], 0.0),
                storage.job_insert_many([job("dup")], 0.0),  # the id exists: fails
                storage.job_insert_many([job("b"), job("c")], 0.0),
                return_exceptions=True,
            )

        outcomes = asyncio.run(main())
        assert outcomes[0] is None
        assert outcomes[2] is None
        assert isinstance(outcomes[1], StorageError)
        assert "UNIQUE" in str(outcomes[1])
        ids = {j.id for j in storage.call_sync("jobs_list", JobsList((), None, 10))}
        assert ids == {"dup", "a", "b", "c"}


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t (a, b) SELECT 1, 2",  # no VALUES
        "INSERT INTO t (a, b) VALUES (?, ?)",  # unnumbered
        "INSERT INTO t (a, b) VALUES (?1, ?3)",  # a gap: rows would not line up
        "INSERT INTO t (a, b) VALUES (1, 2)",  # nothing to bind
    ],
)
def test_multirow_inserts_refuse_a_statement_they_cannot_repeat(tmp_path: Path, sql: str) -> None:
    conn = sqlite3.connect(tmp_path / "t.db")
    conn.execute("CREATE TABLE t (a, b)")
    with pytest.raises(ValueError, match="one-row INSERT with numbered parameters"):
        insert_rows(conn, sql, [(1, 2)] * 150)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    conn.close()


def test_multirow_inserts_keep_every_row_in_order(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db")
    conn.execute("CREATE TABLE t (a, b, c)")
    rows = [(i, f"b{i}", i * 0.5) for i in range(1, 232)]
    insert_rows(conn, "INSERT INTO t (a, b, c) VALUES (?1, ?2, ?3 + 0.0)", rows)
    assert conn.execute("SELECT a, b, c FROM t ORDER BY rowid").fetchall() == rows
    conn.close()
