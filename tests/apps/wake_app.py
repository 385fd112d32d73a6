"""Tasks for ``tests/test_wakeup.py``: each run appends its start time to ``WAKE_APP_OUT``."""

from __future__ import annotations

import os
import time

from afterward import Afterward

tasks = Afterward(os.environ.get("AFTERWARD_URL", "memory://"), worker="off")


def stamp(sent_at: float) -> None:
    """Record how long after ``sent_at`` (the enqueue) this run started."""
    started = time.time()
    fd = os.open(os.environ["WAKE_APP_OUT"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{sent_at} {started}\n".encode())
    finally:
        os.close(fd)
