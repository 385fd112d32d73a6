"""afterward: durable background tasks for FastAPI and Starlette.

Change one import line::

    from afterward import BackgroundTasks   # was: from fastapi import BackgroundTasks

and every ``add_task`` is stored before the response starts, retried on failure, and
visible by id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from afterward.app import Afterward, AfterwardWarning, Call, default_afterward
from afterward.errors import (
    AfterwardError,
    ConfigurationError,
    LeaseLostError,
    NotStorableError,
    PayloadError,
    Retry,
    StorageError,
)
from afterward.integrations.starlette import (
    AfterwardMiddleware,
    BackgroundTask,
    install,
)
from afterward.jobs import Job, JobState
from afterward.registry import task
from afterward.retry import RetryPolicy
from afterward.tasks import TaskHandle

if TYPE_CHECKING:
    from afterward.integrations.starlette import BackgroundTasks
else:

    def __getattr__(name: str) -> object:
        # FastAPI (and pydantic) load only when the drop-in is used, not in every worker
        # or script that imports afterward.
        if name != "BackgroundTasks":
            raise AttributeError(f"module 'afterward' has no attribute {name!r}")
        try:
            from afterward.integrations.fastapi import BackgroundTasks
        except ImportError:  # Starlette without FastAPI: the plain class
            from afterward.integrations.starlette import BackgroundTasks
        globals()["BackgroundTasks"] = BackgroundTasks
        return BackgroundTasks


__version__ = "0.1.0"

__all__ = [
    "Afterward",
    "AfterwardError",
    "AfterwardMiddleware",
    "AfterwardWarning",
    "BackgroundTask",
    "BackgroundTasks",
    "Call",
    "ConfigurationError",
    "Job",
    "JobState",
    "LeaseLostError",
    "NotStorableError",
    "PayloadError",
    "Retry",
    "RetryPolicy",
    "StorageError",
    "TaskHandle",
    "__version__",
    "default_afterward",
    "install",
    "task",
]
