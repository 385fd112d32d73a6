"""Who holds a lease: ``host/pid/process-start-time/nonce``, and whether that process lives.

The start time (from ``/proc``) keeps a recycled pid from passing for the dead owner.
"""

from __future__ import annotations

import os
import socket

__all__ = ["is_dead", "new_owner"]

_HOST = socket.gethostname()


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22 is the start time; the command name (field 2) may contain spaces, so count
    # from the closing parenthesis.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # exited, not yet reaped: as good as gone
        return None
    return fields[19].decode()


def new_owner() -> str:
    """A lease-owner id for this process."""
    pid = os.getpid()
    return f"{_HOST}/{pid}/{_start_time(pid) or '0'}/{os.urandom(3).hex()}"


def is_dead(owner: str) -> bool:
    """True only when ``owner`` ran on this host and its process is gone."""
    parts = owner.split("/")
    if len(parts) != 4 or parts[0] != _HOST or not parts[1].isdigit():
        return False
    pid, started = int(parts[1]), parts[2]
    if started == "0":  # no /proc here: cannot tell, leave it to the lease
        return False
    return _start_time(pid) != started
