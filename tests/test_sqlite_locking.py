"""Another process holding SQLite's write lock never blocks the event loop and never
reaches the caller as "database is locked": the call waits, then commits. Reads do not wait."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from afterward import Afterward
from afterward.jobs import NewJob, new_job_id
from afterward.storage import storage_from_url


def hold_write_lock(db: Path, seconds: float, held: threading.Event) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    held.set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # holds the lock for a bounded, known time
        time.sleep(0.01)
    conn.execute("COMMIT")
    conn.close()


def test_an_async_insert_waits_out_a_held_lock_without_blocking_the_loop(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    storage = storage_from_url(f"sqlite:///{db}")

    async def scenario() -> tuple[int, float]:
        await storage.open()
        held = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(db, 0.5, held))
        holder.start()
        assert held.wait(10)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        now = time.time()
        await storage.job_insert_many([NewJob(new_job_id(), "m:f", "{}", run_at=now)], now)
        waited = time.monotonic() - started
        ticking.cancel()
        holder.join(10)
        await storage.close()
        return ticks, waited

    ticks, waited = asyncio.run(scenario())
    assert waited >= 0.3  # it really waited for the other connection's lock
    assert ticks >= 15  # and the loop kept running meanwhile (about 50 ticks of 10 ms)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM afterward_jobs").fetchone() == (1,)


def test_a_blocking_enqueue_waits_out_a_held_lock_and_reads_do_not_wait(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    app = Afterward(f"sqlite:///{db}", worker="off")
    first = app.enqueue(stored_task, 1)
    held = threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(db, 0.5, held))
    holder.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        job = app.get_job(first.id)  # a reader never waits for a writer in WAL mode
        assert job is not None
        assert holder.is_alive()  # the lock was still held when the read returned
        app.enqueue(stored_task, 2)  # waits for the lock, then commits
        waited = time.monotonic() - started
    finally:
        holder.join(10)
        app.close()
    assert waited >= 0.3  # it really waited for the other connection's lock
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM afterward_jobs").fetchone() == (2,)


def stored_task(n: int) -> None:
    """Never runs here: the test only stores it."""
