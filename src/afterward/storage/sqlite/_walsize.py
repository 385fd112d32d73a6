"""How much the WAL holds since it last started over, read from the ``-wal`` file itself.

The file's size cannot say. When the WAL starts over, SQLite writes the file again from its
start and only cuts it back to ``journal_size_limit`` (32 MiB here: cutting it back on every
restart would put an ``ftruncate`` of megabytes inside a commit). So once a burst had grown
the file past the checkpoint threshold, its size stayed past it, and a checkpoint, with its
two ``fsync``s, ran every few commits to copy back a few frames each time.

The file's layout is part of SQLite's documented file format
(https://www.sqlite.org/fileformat2.html#walformat): a 32-byte header holding the page size
and two salts, then frames of a 24-byte header and one page. The frames written since the WAL
last started over come first and carry the header's salts; frames further on are left from
an earlier round, whose salts differ. A binary search over those salts finds the boundary in
a dozen reads. SQLite puts no locks on this file (only on the database and ``-shm`` files),
so opening and closing it here cannot drop a lock SQLite holds. A file caught mid-write gives
a figure off by a few frames, and the next look corrects it.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

__all__ = ["WalRound", "wal_round"]

_HEADER = struct.Struct(">4I8s")  # magic, format version, page size, checkpoint count, salts
_HEADER_SIZE = 32  # the above, then the header's checksum
_MAGIC = (0x377F0682, 0x377F0683)
_FRAME_HEADER = 24
_SALTS_AT = 8  # within a frame header


class WalRound(NamedTuple):
    """The frames written since the WAL last started over."""

    #: The header's salts: SQLite draws new ones each time the WAL starts over.
    salts: bytes
    #: Bytes of those frames, whether or not a checkpoint copied them back yet.
    held: int


def wal_round(wal_path: str, file_size: int) -> WalRound | None:
    """What the WAL holds since it last started over; ``None`` if the file is missing or
    not a WAL.

    ``file_size`` is the file's size as the caller just found it (frames past it are not
    searched)."""
    try:
        fd = os.open(wal_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        head = os.pread(fd, _HEADER.size, 0)
        if len(head) < _HEADER.size:
            return None
        magic, _, page_size, _, salts = _HEADER.unpack(head)
        if magic not in _MAGIC or page_size < 512 or page_size & (page_size - 1):
            return None
        frame: int = _FRAME_HEADER + page_size
        lo, hi = 0, (file_size - _HEADER_SIZE) // frame
        # Frames before lo carry this round's salts; frames from hi on do not (or are missing).
        while lo < hi:
            mid = (lo + hi) // 2
            if os.pread(fd, len(salts), _HEADER_SIZE + mid * frame + _SALTS_AT) == salts:
                lo = mid + 1
            else:
                hi = mid
        return WalRound(salts, lo * frame)
    except OSError:
        return None
    finally:
        os.close(fd)
