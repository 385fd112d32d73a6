"""The FastAPI drop-in: ``BackgroundTasks`` as an injectable dependency.

FastAPI injects its *own* ``fastapi.BackgroundTasks`` for any parameter annotated with a
subclass of Starlette's class, so a plain subclass would silently run in memory. Here
``BackgroundTasks`` is ``Annotated[<afterward class>, Depends(...)]``: FastAPI calls our
provider instead (one instance per request, shared by the endpoint and its dependencies),
the name still constructs the class when called, and nothing is added to OpenAPI.

The provider is a plain dependency that puts two callbacks on FastAPI's per-request exit
stacks. The function-scoped one sees whether the endpoint raised: then its tasks are
dropped (FastAPI parity); else they are stored before FastAPI builds and sends the response
(under the middleware, as the response starts). Without the middleware, the request-scoped
one runs them after the response.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Annotated, TypeAlias

from fastapi import Depends, Request

from afterward.integrations.starlette import (
    SCOPE_KEY,
    RequestTasks,
    _current,
    afterward_for,
)
from afterward.integrations.starlette import BackgroundTasks as _Tasks

__all__ = ["BackgroundTasks"]


async def _background_tasks(request: Request) -> _Tasks:
    scope = request.scope
    function_stack = scope.get(_FUNCTION_STACK)
    request_stack = scope.get(_REQUEST_STACK)
    if function_stack is None or request_stack is None:
        raise RuntimeError(
            "afterward needs FastAPI >= 0.121 (its per-request exit stacks); upgrade FastAPI"
        )
    rt = scope.get(SCOPE_KEY)
    if not isinstance(rt, RequestTasks):  # no middleware: this dependency looks after them
        rt = RequestTasks(afterward_for(request.app))
        scope[SCOPE_KEY] = rt
        _current.set(rt)
        # FastAPI closes its request-scoped exit stack after the response was sent; there
        # RequestTasks.__aexit__ runs what the response carried.
        request_stack.push_async_exit(rt)
    tasks = _Tasks(afterward=rt.afterward)
    tasks._group.carried = True  # FastAPI hands injected tasks to the response it builds
    if tasks._group.request is None:
        tasks._group.request = rt
        rt.groups.append(tasks._group)
    function_stack.push_async_exit(_EndpointDone(rt, tasks))
    return tasks


class _EndpointDone:
    """FastAPI closes its function-scoped exit stack when the endpoint returned or raised,
    before it builds the response: an exit callback there sees which, for the price of a
    plain dependency (a yield dependency costs several times more per request). An object
    with ``__aexit__`` rather than a closure: the stack takes it without a wrapper and without
    raising and catching an AttributeError for each request."""

    __slots__ = ("rt", "tasks")

    def __init__(self, rt: RequestTasks, tasks: _Tasks) -> None:
        self.rt = rt
        self.tasks = tasks

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc_type is not None:
            self.tasks._abandon()  # the endpoint raised: FastAPI parity, nothing is enqueued
        elif not self.rt.guarded:
            # Stored before the response is built and sent. Under the middleware the
            # response start stores them instead, so a storage failure is answered with its
            # clean 500 rather than an exception the server must log and answer by closing
            # the connection.
            await self.rt.store()
        return False


_REQUEST_STACK = "fastapi_inner_astack"
_FUNCTION_STACK = "fastapi_function_astack"


if TYPE_CHECKING:
    BackgroundTasks: TypeAlias = _Tasks
else:
    BackgroundTasks = Annotated[_Tasks, Depends(_background_tasks)]
