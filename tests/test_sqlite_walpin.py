"""The ``-wal`` file stays mapped, so that commits writing over it never read the disk.

Each WAL frame covers parts of two pages of the file, and writing part of a page the page
cache let go of makes the kernel read it back first. ``posix_fadvise(DONTNEED)`` drops a
file's clean pages as reclaim would, except the ones a process maps.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from afterward import Afterward, Call
from afterward.config import EnvSettings
from afterward.jobs import JobState
from tests.processes import wait_for

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the WAL is mapped on Linux only"
)

MiB = 1024 * 1024


def stored(i: int) -> None:
    """Stored, never run."""


def mapped_bytes(path: str) -> int:
    """How much of ``path`` this process maps, from ``/proc/self/maps``; a deleted file's
    mappings count too."""
    total = 0
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip().removesuffix(" (deleted)") == path:
                low, high = (int(x, 16) for x in fields[0].split("-"))
                total += high - low
    return total


def disk_reads() -> int:
    """Bytes this process has made the kernel read from the disk so far."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    raise AssertionError("no read_bytes in /proc/self/io")


def mapped_soon(app: Afterward, wal: str, size: int) -> int:
    """Commit one job at a time until ``size`` bytes of the WAL are mapped; returns how many
    jobs that took. The WAL is looked at every 16 commits and after each bulk insert, and
    the I/O thread maps it meanwhile, so the last look may have come before it grew."""
    deadline = time.monotonic() + 10
    jobs = 0
    while mapped_bytes(wal) < size:
        if time.monotonic() > deadline:
            raise AssertionError(f"{mapped_bytes(wal)} bytes of the WAL mapped, not {size}")
        app.enqueue(stored, -2)
        jobs += 1
    return jobs


@contextlib.contextmanager
def app_on(db: Path) -> Iterator[Afterward]:
    app = Afterward(f"sqlite:///{db}", worker="off", env=EnvSettings())
    try:
        yield app
    finally:
        app.close()


def grow_wal(app: Afterward, db: Path, batches: int) -> None:
    """Bulk inserts with a read held open, so the WAL cannot start over meanwhile."""
    app.enqueue(stored, -1)  # creates the table
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM afterward_jobs").fetchone()
        for _ in range(batches):
            app.enqueue_many([Call(stored, i) for i in range(2_000)])


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "not-mapped"])
def test_writing_over_the_wal_after_the_page_cache_let_go_of_it_reads_no_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapped: bool
) -> None:
    # The p99 of single enqueues after a 1,000,000-job bulk insert doubled on the benchmark
    # VM, whose reclaim drops unmapped file pages seconds after they were last written.
    # Without the mapping (the second case) the same commits read the disk: the first case
    # passes because of the mapping, not because nothing was dropped.
    from afterward.storage.sqlite import _backend

    if not mapped:
        monkeypatch.setattr(_backend, "_PINNED_WAL_BYTES", 0)
    db = tmp_path / "jobs.db"
    wal = os.path.realpath(f"{db}-wal")
    with app_on(db) as app:
        grow_wal(app, db, 16)
        assert os.path.getsize(wal) > 8 * MiB
        extra = mapped_soon(app, wal, 8 * MiB) if mapped else 0
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as other:
            # Everything copied back and synced: the next commit starts the WAL over at the
            # file's head, and every page of the file is clean, so it can be dropped.
            wait_for(
                lambda: other.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0] == 0,
                timeout=10,
                what="a full checkpoint",
            )
        fd = os.open(wal, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        before = disk_reads()
        for i in range(200):  # about 3 MiB of frames over the file's head
            app.enqueue(stored, i)
        read = disk_reads() - before
        assert app.storage.call_sync("jobs_count")[JobState.AVAILABLE] == 16 * 2_000 + 201 + extra
    if mapped:
        assert read == 0
    else:
        assert read > 0


def test_the_mapping_follows_the_wal_when_it_is_cut_back_and_when_it_is_removed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    wal = os.path.realpath(f"{db}-wal")
    with app_on(db) as app:
        grow_wal(app, db, 16)
        extra = mapped_soon(app, wal, 8 * MiB)
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as other:
            wait_for(
                lambda: other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0,
                timeout=10,
                what="the WAL to be cut back",
            )
        assert os.path.getsize(wal) == 0
        for i in range(16):  # the WAL is looked at every 16 commits
            app.enqueue(stored, i)
        # Pages past the end of a file are gone from its mappings; they are unmapped rather
        # than left to fault (nothing reads through them, but nothing should hold them).
        wait_for(lambda: mapped_bytes(wal) < MiB, timeout=10, what="the cut mapping to go")
        grow_wal(app, db, 8)
        extra += mapped_soon(app, wal, 4 * MiB)
        assert app.storage.call_sync("jobs_count")[JobState.AVAILABLE] == 24 * 2_000 + 18 + extra
    # Closing unmaps, so the deleted file's pages are not held by this process.
    assert mapped_bytes(wal) == 0
