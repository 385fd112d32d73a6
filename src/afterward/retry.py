"""Retry policy: how many attempts, and how long to wait between them."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["DEFAULT_RETRY", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    The wait after failed attempt ``n`` is ``min(max_delay, base_delay * 2 ** (n - 1))``,
    scaled by a random factor in ``[1 - jitter, 1 + jitter]`` so that many jobs failing
    together do not retry in lock-step. Defaults: 5 attempts, waits of about 1, 2, 4 and
    8 seconds, never more than 10 minutes.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 600.0
    jitter: float = 0.25

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        try:
            raw = float(min(self.max_delay, self.base_delay * 2.0 ** max(0, attempt - 1)))
        except OverflowError:  # attempt ~1025 and beyond: 2.0 ** n no longer fits a float
            raw = float(self.max_delay)
        if self.jitter <= 0:
            return raw
        r = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return max(0.0, raw * float(r))


DEFAULT_RETRY = RetryPolicy()
