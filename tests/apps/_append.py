"""Append one line to a file that several processes write at once."""

from __future__ import annotations

import os


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """One ``write()`` with ``O_APPEND``: lines of concurrent processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)
