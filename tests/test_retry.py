"""Retry backoff: exponential growth, the cap, and jitter kept within its bounds."""

from __future__ import annotations

import random

import pytest

from afterward.retry import DEFAULT_RETRY, RetryPolicy


def test_delays_double_after_each_failed_attempt_without_jitter() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=1_000, jitter=0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 8, 16]


def test_delays_are_capped_at_max_delay() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=10, jitter=0)
    assert [policy.delay(n) for n in (4, 5, 6, 60, 5_000)] == [8, 10, 10, 10, 10]


def test_attempt_zero_or_below_waits_the_base_delay() -> None:
    assert RetryPolicy(base_delay=2, jitter=0).delay(0) == 2


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_jitter_stays_within_its_bounds_and_spreads_retries(seed: int) -> None:
    policy = RetryPolicy(base_delay=1, max_delay=30, jitter=0.25)
    rng = random.Random(seed)
    for attempt in range(1, 12):
        raw = min(30.0, 2.0 ** (attempt - 1))
        waits = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(raw * 0.75 <= w <= raw * 1.25 for w in waits), (attempt, min(waits), max(waits))
        assert len(set(waits)) > 150  # many jobs failing together do not retry in lock-step
        assert min(waits) < raw < max(waits)


def test_a_seeded_random_makes_delays_reproducible() -> None:
    policy = RetryPolicy()
    first = [policy.delay(n, random.Random(7)) for n in range(1, 6)]
    again = [policy.delay(n, random.Random(7)) for n in range(1, 6)]
    assert first == again


def test_the_default_policy_waits_about_1_2_4_8_seconds() -> None:
    rng = random.Random(3)
    assert DEFAULT_RETRY.max_attempts == 5
    for attempt, raw in zip(range(1, 5), (1, 2, 4, 8), strict=True):
        assert raw * 0.75 <= DEFAULT_RETRY.delay(attempt, rng) <= raw * 1.25
    assert DEFAULT_RETRY.delay(100, rng) <= 600 * 1.25
