"""Task names, per-task options, and the rule for which names a worker may run.

A task is stored by import path, ``"package.module:qualname"``. A worker turns a stored
name back into a function only if the function was registered in this process (passed to
``add_task``/``enqueue`` or decorated with ``@task``), or if it lives in an already-imported
module under one of the application's allowed packages and really is the function that
name describes. Nothing is ever imported because storage named it.
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, overload

from afterward.errors import ConfigurationError
from afterward.retry import RetryPolicy

__all__ = ["Registry", "TaskOptions", "options_of", "storable_name", "task"]

P = ParamSpec("P")
R = TypeVar("R")
_ATTR = "__afterward_options__"


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Options a task carries; ``None`` means "use the application default"."""

    max_attempts: int | None = None
    timeout: float | None = None
    queue: str | None = None
    priority: int | None = None
    retry: RetryPolicy | None = None

    def __post_init__(self) -> None:
        if self.max_attempts is not None and (
            not isinstance(self.max_attempts, int) or self.max_attempts < 1
        ):
            raise ConfigurationError(
                f"max_attempts={self.max_attempts!r} must be an integer >= 1 (1 means no retry)."
            )
        if self.timeout is not None and not (
            isinstance(self.timeout, int | float) and self.timeout > 0
        ):
            raise ConfigurationError(
                f"timeout={self.timeout!r} must be a positive number of seconds, or None."
            )


@overload
def task(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def task(
    *,
    max_attempts: int | None = None,
    timeout: float | None = None,
    queue: str | None = None,
    priority: int | None = None,
    retry: RetryPolicy | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def task(
    func: Callable[P, R] | None = None,
    /,
    *,
    max_attempts: int | None = None,
    timeout: float | None = None,
    queue: str | None = None,
    priority: int | None = None,
    retry: RetryPolicy | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a function as a task and give it options; the function itself is returned.

    ``@task`` marks the function as allowed to run from storage in any worker that imported
    its module. ``max_attempts`` counts every attempt (1 = never retry); ``timeout`` is in
    seconds per attempt.
    """
    opts = TaskOptions(max_attempts, timeout, queue, priority, retry)

    def mark(f: Callable[P, R]) -> Callable[P, R]:
        setattr(f, _ATTR, opts)
        return f

    return mark(func) if func is not None else mark


def options_of(func: Callable[..., Any]) -> TaskOptions | None:
    """The options ``@task`` attached to ``func``, if any."""
    return getattr(func, _ATTR, None)


_names: dict[Any, str | None] = {}


def storable_name(func: Callable[..., Any]) -> str | None:
    """The import path of ``func`` if a worker can find it again by that path, else None.

    Lambdas, closures, bound methods, partials and callable objects have no such path and
    can only run in the process that holds them.
    """
    try:
        return _names[func]
    except KeyError:
        pass
    except TypeError:  # unhashable callable object
        return None
    name = _compute_name(func)
    _names[func] = name
    return name


def _compute_name(func: Callable[..., Any]) -> str | None:
    if not inspect.isfunction(func):
        return None
    module, qualname = func.__module__, func.__qualname__
    if "<" in qualname or not module:
        return None
    obj = _lookup(module, qualname)
    return f"{module}:{qualname}" if obj is func else None


def _lookup(module: str, qualname: str) -> Any:
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class Registry:
    """The functions one application may run, by stored name."""

    def __init__(self, allow: tuple[str, ...] = ()) -> None:
        self._funcs: dict[str, Callable[..., Any]] = {}
        self._lock = threading.Lock()
        self.allow = allow

    def register(self, func: Callable[..., Any]) -> str:
        """Allow ``func`` to run from storage; return its stored name."""
        name = storable_name(func)
        if name is None:
            raise ConfigurationError(
                f"{func!r} has no import path a worker could find it by; register a function "
                "defined at module level (not a lambda, closure, method or partial)."
            )
        if self._funcs.get(name) is not func:
            with self._lock:
                self._funcs[name] = func
        return name

    def resolve(self, name: str) -> Callable[..., Any] | None:
        """The function stored as ``name``, if this application allows it; never imports."""
        func = self._funcs.get(name)
        if func is not None:
            return func
        module, sep, qualname = name.partition(":")
        if not sep or "<" in qualname:
            return None
        obj = _lookup(module, qualname)
        if not inspect.isfunction(obj) or obj.__module__ != module or obj.__qualname__ != qualname:
            return None
        if options_of(obj) is None and not self._allowed_module(module):
            return None
        with self._lock:
            self._funcs[name] = obj
        return obj

    def _allowed_module(self, module: str) -> bool:
        return any(module == p or module.startswith(p + ".") for p in self.allow)
