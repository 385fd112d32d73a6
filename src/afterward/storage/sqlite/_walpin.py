"""Keep the ``-wal`` file mapped, so that commits writing over it never wait on the disk.

A WAL frame is a page plus a 24-byte header, so every frame SQLite writes covers parts of two
pages of the file, and the kernel must read a page back from disk before writing part of it
once that page has left the page cache (64-68 µs a write on the benchmark VM, against 4 µs).
After a checkpoint the WAL starts over at the file's head, writing over pages written seconds
or minutes earlier. Reclaim can drop those pages meanwhile: the benchmark VMs run DAMON with a
scheme that pages out file pages no process maps after a few idle seconds. After a
1,000,000-job bulk insert, up to a tenth of the following single enqueues read the disk, and
their p99 doubled (bench/RESULTS.md section 1).

Pages a process maps are spared by that scheme, and the kernel's ordinary reclaim keeps them
longer. So the I/O thread maps the file read-only, up to ``limit`` bytes, with
``MAP_POPULATE`` so that every page is mapped at once: one piece more each time the file has
grown by 4 MiB, and all of it afresh when the file was replaced or cut back. Nothing is read
through the mappings, and ``MAP_POPULATE`` skips a page that a truncation cut off meanwhile,
so there is no ``SIGBUS`` to fear. As in ``_walsize``, SQLite puts no locks on this file, so
opening and closing it here cannot drop one of SQLite's locks. Linux only
(``MAP_POPULATE``); elsewhere nothing is mapped. The mapped pages count in the process's RSS
as shared file pages, up to ``limit`` bytes.
"""

from __future__ import annotations

import logging
import mmap
import os
import sqlite3

__all__ = ["WalPin"]

log = logging.getLogger("afterward.storage.sqlite")

_POPULATE: int | None = getattr(mmap, "MAP_POPULATE", None)
#: Map more once the file has grown this much past what is mapped, as often as it is
#: checkpointed: each step populates 1,024 pages on the I/O thread (0.15-0.38 ms a MiB).
_STEP = 4 * 1024 * 1024


class WalPin:
    """The mappings of one ``-wal`` file, up to ``limit`` bytes, made on the I/O thread."""

    def __init__(self, path: str, limit: int) -> None:
        self.path = path
        self.limit = limit
        #: A refresh is queued; the committing thread does not queue another meanwhile.
        self.pending = False
        self._enabled = _POPULATE is not None
        self._maps: list[mmap.mmap] = []
        self._inode: int | None = None
        self._length = 0

    def stale(self, st: os.stat_result) -> bool:
        """Whether the file, as ``st`` found it, needs mapping again or further."""
        if not self._enabled or self.pending:
            return False
        if st.st_ino != self._inode:
            return st.st_size >= _STEP  # a short WAL was written moments ago
        if st.st_size < self._length:  # cut back: the cut pages left the mapping
            return True
        end = min(st.st_size, self.limit)
        return end >= self._length + _STEP or (end == self.limit > self._length)

    def refresh(self, _conn: sqlite3.Connection | None = None) -> None:
        """Map the part of the file not mapped yet (an op for the I/O thread, outside
        transactions). Only the new part is mapped and populated: mapping all of it again at
        each step (2-4 ms, and the unmap of the old mapping) made single enqueues on the
        committing thread wait, p99 0.2 -> 1.0 ms while the WAL grew."""
        self.pending = False
        if _POPULATE is None:  # pragma: no cover - Linux has MAP_POPULATE
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            st = os.fstat(fd)
            if st.st_ino != self._inode or st.st_size < self._length:
                self.close()  # another file, or cut back: start again from its head
                self._inode = st.st_ino
            end = min(st.st_size, self.limit) // mmap.PAGESIZE * mmap.PAGESIZE
            if end > self._length:
                self._maps.append(
                    mmap.mmap(
                        fd,
                        end - self._length,
                        flags=mmap.MAP_SHARED | _POPULATE,
                        prot=mmap.PROT_READ,
                        offset=self._length,
                    )
                )
                self._length = end
        except (OSError, ValueError) as e:  # ValueError: cut back below ``end`` meanwhile
            log.debug("could not map %s: %s", self.path, e, extra={"action": "wal_map"})
            self._enabled = not isinstance(e, OSError)  # mmap refused: do not keep asking
        finally:
            os.close(fd)

    def close(self) -> None:
        """Unmap everything (the storage closed; a deleted file's pages go with it)."""
        maps, self._maps = self._maps, []
        self._inode, self._length = None, 0
        for m in maps:
            m.close()
