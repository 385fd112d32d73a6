"""The FastAPI drop-in: ``BackgroundTasks`` as an injectable dependency.

FastAPI injects its *own* ``fastapi.BackgroundTasks`` for any parameter annotated with a
subclass of Starlette's class, so a plain subclass would silently run in memory. Here
``BackgroundTasks`` is ``Annotated[<afterward class>, Depends(...)]``: FastAPI calls our
provider instead (one instance per request, shared by the endpoint and its dependencies),
the name still constructs the class when called, and nothing is added to OpenAPI.

The provider is a function-scoped yield dependency: when the endpoint raises, its tasks
are dropped (FastAPI parity); when it returns, they are stored before FastAPI builds and
sends the response (under the middleware, as the response starts). Without the
middleware, a callback on FastAPI's request-scoped exit stack runs them after the response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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


async def _background_tasks(request: Request) -> AsyncIterator[_Tasks]:
    rt = request.scope.get(SCOPE_KEY)
    if not isinstance(rt, RequestTasks):  # no middleware: this dependency looks after them
        rt = RequestTasks(afterward_for(request.app))
        request.scope[SCOPE_KEY] = rt
        _current.set(rt)
        # FastAPI's request-scoped exit stack closes after the response was sent; one
        # dependency with a callback there costs half of two yield dependencies.
        stack = request.scope.get(_REQUEST_STACK)
        if stack is None:
            raise RuntimeError(
                "afterward needs FastAPI >= 0.121 (request-scoped dependencies); upgrade "
                "FastAPI, or install afterward on the app: FastAPI(lifespan=tasks.lifespan)"
            )
        stack.push_async_callback(rt.finish)
    tasks = _Tasks(afterward=rt.afterward)
    tasks._group.carried = True  # FastAPI hands injected tasks to the response it builds
    if tasks._group.request is None:
        tasks._group.request = rt
        rt.groups.append(tasks._group)
    try:
        yield tasks
    except BaseException:
        tasks._abandon()
        raise
    if not rt.guarded:
        # Function scope: stored before the response is built and sent. Under the
        # middleware the response start stores them instead, so a storage failure is
        # answered with its clean 500 rather than an exception the server must log and
        # answer by closing the connection.
        await rt.store()


_REQUEST_STACK = "fastapi_inner_astack"


if TYPE_CHECKING:
    BackgroundTasks: TypeAlias = _Tasks
else:
    BackgroundTasks = Annotated[_Tasks, Depends(_background_tasks, scope="function")]
