"""The handle ``add_task`` and ``enqueue`` return."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskHandle"]


@dataclass(frozen=True, slots=True)
class TaskHandle:
    """Names one added task.

    ``id`` is the job id to look up with ``Afterward.get_job``. ``durable`` is False for a
    task that could not be stored (a lambda, a closure, an argument that is not data) and
    runs in-process only, exactly as Starlette would run it.
    """

    id: str
    task: str
    durable: bool = True
