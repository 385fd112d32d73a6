"""The handle ``add_task`` and ``enqueue`` return."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["TaskHandle"]


class TaskHandle(NamedTuple):
    """Names one added task.

    ``id`` is the job id to look up with ``Afterward.get_job``. ``durable`` is False for a
    task that could not be stored (a lambda, a closure, an argument that is not data) and
    runs in-process only, exactly as Starlette would run it. An immutable named tuple: one
    is made per task, and it is the cheapest immutable record Python has.
    """

    id: str
    task: str
    durable: bool = True
