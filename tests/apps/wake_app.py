"""Tasks for ``tests/test_wakeup.py``: each run appends its start time to ``WAKE_APP_OUT``."""

from __future__ import annotations

import os
import time

from afterward import Afterward
from tests.apps._append import append_line

tasks = Afterward(os.environ.get("AFTERWARD_URL", "memory://"), worker="off")


def stamp(sent_at: float) -> None:
    """Record how long after ``sent_at`` (the enqueue) this run started."""
    append_line(os.environ["WAKE_APP_OUT"], f"{sent_at} {time.time()}")
