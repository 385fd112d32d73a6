"""Tasks for ``tests/test_timers.py``: each returns the timer slack of the thread it ran on."""

from __future__ import annotations

import os

from afterward import Afterward
from afterward.engine.timers import timer_slack_ns

tasks = Afterward(os.environ.get("AFTERWARD_URL", "memory://"), worker="off")


async def slack_on_the_loop() -> int | None:
    """An async task runs on the worker's event-loop thread."""
    return timer_slack_ns()


def slack_in_the_pool() -> int | None:
    """A sync task runs in the worker's thread pool."""
    return timer_slack_ns()
