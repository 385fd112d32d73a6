"""Time sources: the system clock and the seam tests replace with a fake clock."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """What afterward reads the time from: unix seconds as a float."""

    def now(self) -> float:
        """Return the current time in unix seconds."""
        ...


class SystemClock:
    """The wall clock (``time.time``)."""

    __slots__ = ()

    def now(self) -> float:
        """Return the current time in unix seconds."""
        return time.time()
