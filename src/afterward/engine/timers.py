"""Timers that fire when they are due, for the thread that runs a worker's event loop.

Linux lets every thread's timers fire up to its *timer slack* late (50 µs by default) so that
the kernel can wake the CPU once for several of them. A worker's throughput on tasks that
sleep is made of those timers: all of a round's sleeps end at one wake-up, and the next round
starts only after it, so each round paid the whole slack: about 0.5 % of the rate of 2,000
tasks sleeping 10 ms on 2 × 32 slots (bench/RESULTS.md). A slack of 1 ns asks the kernel for
the timer's own time. Threads started afterwards by this one (the sync task pool)
inherit it; other threads of the process, a web server's among them, keep theirs.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["precise_timers", "timer_slack_ns"]

_PR_SET_TIMERSLACK = 29
_PR_GET_TIMERSLACK = 30


def _prctl(option: int, value: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result: int = libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0)
    return result


def precise_timers() -> bool:
    """Give the calling thread a timer slack of 1 ns; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return _prctl(_PR_SET_TIMERSLACK, 1) == 0
    except (OSError, AttributeError):  # no libc with prctl (a static or unusual build)
        return False


def timer_slack_ns() -> int | None:
    """The calling thread's timer slack in nanoseconds, or None where it cannot be read."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        value = _prctl(_PR_GET_TIMERSLACK, 0)
    except (OSError, AttributeError):
        return None
    return value if value >= 0 else None
