"""Errors raised by afterward, and the signals task code may raise.

The error tree::

    AfterwardError
    ├── ConfigurationError      bad settings or URL, found at start-up
    ├── PayloadError            an argument or result that cannot be stored (names the value)
    │   └── NotStorableError    a callable or argument that only runs in-process (strict mode)
    ├── StorageError            the backend failed to store or read jobs
    └── LeaseLostError          a state change was rejected: another worker holds the job now

``Retry`` is a signal, not an error: task code raises it to ask for another attempt.
"""

from __future__ import annotations

__all__ = [
    "AfterwardError",
    "ConfigurationError",
    "LeaseLostError",
    "NotStorableError",
    "PayloadError",
    "Retry",
    "StorageError",
]


class AfterwardError(Exception):
    """Base class of every error afterward raises."""


class ConfigurationError(AfterwardError):
    """A setting, URL or option is invalid; the message names it and the fix."""


class PayloadError(AfterwardError, ValueError):
    """An argument or result cannot be stored as JSON; the message names the argument."""


class NotStorableError(PayloadError):
    """A callable or argument can only run in-process, and strict mode refuses that."""


class StorageError(AfterwardError):
    """The storage backend failed; nothing was acknowledged as stored."""


class LeaseLostError(AfterwardError):
    """A job's lease moved to another worker, so this worker's outcome was not recorded."""


class Retry(Exception):
    """Raise from a task to ask for another attempt after ``delay`` seconds.

    The attempt still counts towards the task's ``max_attempts``.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason
