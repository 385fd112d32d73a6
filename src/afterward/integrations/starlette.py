"""The Starlette drop-in: ``BackgroundTask``, ``BackgroundTasks`` and the middleware.

Every ``add_task`` (and every ``BackgroundTask(...)``) is checked and encoded at once and
joins the request it happens in. When the response starts, the middleware stores all of
the request's tasks in one transaction before ``http.response.start`` goes out; if that
fails the client gets a 500 instead. After the response, the same process runs them,
each object's tasks in order, from the stored copy.

Without the middleware (an app that was never given ``tasks.lifespan`` or ``install``),
FastAPI's injected tasks are still stored before the response by their dependency; a
task object made by hand is stored when the response calls it, after the body went out.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec

from starlette.background import BackgroundTask as _StarletteTask
from starlette.background import BackgroundTasks as _StarletteTasks
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from afterward.app import Afterward, PreparedCall, default_afterward, register_app_hook
from afterward.jobs import Job
from afterward.tasks import TaskHandle

__all__ = ["AfterwardMiddleware", "BackgroundTask", "BackgroundTasks", "install"]

P = ParamSpec("P")
log = logging.getLogger("afterward.integrations.starlette")

SCOPE_KEY = "afterward.request"
_current: contextvars.ContextVar[RequestTasks | None] = contextvars.ContextVar(
    "afterward_request", default=None
)


def afterward_for(app: Any) -> Afterward:
    """The ``Afterward`` installed on a web app, else the process-wide default."""
    state = getattr(app, "state", None)
    # Starlette's State keeps its attributes in a dict; a missing one raises (and builds)
    # an AttributeError, which costs more than the rest of this lookup, once per request.
    values = getattr(state, "_state", None)
    if isinstance(values, dict):
        found = values.get("afterward")
    else:
        found = getattr(state, "afterward", None) if state is not None else None
    return found if isinstance(found, Afterward) else default_afterward()


class _Group:
    """The steps of one task object: stored together, run in order as one chain."""

    __slots__ = ("abandoned", "afterward", "carried", "pending", "request", "stored")

    def __init__(self, afterward: Afterward, request: RequestTasks | None) -> None:
        self.afterward = afterward
        self.pending: list[PreparedCall] = []
        self.stored: list[tuple[list[PreparedCall], Job | None]] = []
        self.abandoned = False
        #: Injected by FastAPI, or called by a response: Starlette would run these.
        self.carried = False
        self.request = request
        if request is not None:
            request.groups.append(self)

    def add(self, call: PreparedCall) -> None:
        self.pending.append(call)

    async def store(self) -> None:
        if self.pending and not self.abandoned:
            chain, self.pending = self.pending, []
            (head,) = await self.afterward.store_chains([chain])
            self.stored.append((chain, head))

    async def run(self) -> None:
        self.carried = True
        await self.store()
        while self.stored:
            chain, head = self.stored.pop(0)
            if self.afterward.run_after_response:
                await self.afterward.run_chain(chain, head)
            else:
                await _run_unstored(self.afterward, chain)

    async def drop(self) -> None:
        """Cancel, visibly, what no response carried: Starlette would never have run it."""
        self.pending.clear()
        while self.stored:
            chain, head = self.stored.pop(0)
            await self.afterward.cancel_stored(
                chain,
                head,
                "cancelled: no response carried this task object (its endpoint raised, or it "
                "was never returned), so, as with Starlette, it does not run",
            )


async def _run_unstored(afterward: Afterward, chain: list[PreparedCall]) -> None:
    for call in chain:
        if call.payload is None and await afterward.run_in_process(call) is not None:
            return


class RequestTasks:
    """Every task object created while one request was handled."""

    __slots__ = ("afterward", "failed", "groups", "guarded")

    def __init__(self, afterward: Afterward, *, guarded: bool = False) -> None:
        self.afterward = afterward
        self.groups: list[_Group] = []
        self.failed = False
        #: The middleware stores these tasks as the response starts (and answers 500 if it cannot).
        self.guarded = guarded

    def has_pending(self) -> bool:
        return any(g.pending and not g.abandoned for g in self.groups)

    async def store(self) -> None:
        """Store every pending task of the request in one transaction."""
        groups = [g for g in self.groups if g.pending and not g.abandoned]
        if not groups:
            return
        chains = [g.pending for g in groups]
        for g in groups:
            g.pending = []
        heads = await self.afterward.store_chains(chains)
        for g, chain, head in zip(groups, chains, heads, strict=True):
            g.stored.append((chain, head))

    async def __aexit__(self, *exc_info: object) -> bool:
        """As an exit callback (FastAPI's request-scoped stack): ``finish``, never suppressing."""
        await self.finish()
        return False

    async def finish(self) -> None:
        """After the response: run what it carried but did not run itself (FastAPI's
        injected tasks whose response carried other tasks); cancel what nothing carried."""
        groups, self.groups = self.groups, []
        if self.failed:
            return
        for g in groups:
            # Groups point back at their request: undone here so each request's objects
            # are freed as it ends instead of piling up for the cycle collector, whose
            # full passes then stall the event loop for milliseconds at a time.
            g.request = None
            if g.abandoned:
                continue
            if g.carried:
                await g.run()
            else:
                await g.drop()


def _group(owner: Any, afterward: Afterward | None) -> _Group:
    rt = _current.get()
    aw = afterward or (rt.afterward if rt is not None else default_afterward())
    return _Group(aw, rt if rt is not None and rt.afterward is aw else None)


class BackgroundTask(_StarletteTask):
    """One task to run after the response: ``BackgroundTask(func, *args, **kwargs)``.

    A drop-in for ``starlette.background.BackgroundTask``; the call is stored, retried on
    failure and visible by ``handle.id``.
    """

    def __init__(self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> None:
        super().__init__(func, *args, **kwargs)
        self._group = _group(self, None)
        self._call = self._group.afterward.prepare(func, args, kwargs)
        self._group.add(self._call)

    @property
    def handle(self) -> TaskHandle:
        """The id and task name of this call."""
        return self._call.handle

    async def __call__(self) -> None:
        """Store (if not yet stored) and run the task here, as the response does."""
        await self._group.run()


class BackgroundTasks(_StarletteTasks):
    """Tasks to run after the response, in order: a drop-in for Starlette's and FastAPI's.

    ``add_task`` checks and encodes the call at once (bad input raises here, naming the
    argument) and returns a handle whose ``id`` names the stored job.
    """

    def __init__(
        self, tasks: Sequence[_StarletteTask] | None = None, *, afterward: Afterward | None = None
    ) -> None:
        super().__init__()
        self._group = _group(self, afterward)
        for t in tasks or ():
            self._adopt(t)

    @property
    def afterward(self) -> Afterward:
        """The application these tasks are stored in."""
        return self._group.afterward

    def _adopt(self, t: _StarletteTask) -> None:
        if isinstance(t, BackgroundTask):
            call = t._call
            t._group.pending.remove(call)
        else:
            call = self._group.afterward.prepare(t.func, t.args, t.kwargs)
        self._group.add(call)
        self.tasks.append(t)

    def add_task(self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> TaskHandle:  # type: ignore[override]
        """Add ``func(*args, **kwargs)`` to run after the previous tasks succeeded."""
        call = self._group.afterward.prepare(func, args, kwargs)
        self._group.add(call)
        self.tasks.append(_StarletteTask(func, *args, **kwargs))
        return call.handle

    def _abandon(self) -> None:
        """Drop the tasks not stored yet: the endpoint that added them raised."""
        self._group.abandoned = True
        self._group.pending.clear()

    async def __call__(self) -> None:
        """Store (if not yet stored) and run the tasks here, in order."""
        await self._group.run()


_ERROR_BODY = b"Internal Server Error: the background tasks of this response could not be stored"


class AfterwardMiddleware:
    """Stores a request's tasks before its response starts, runs them after it ends.

    ``install(app)`` puts it outside every other middleware, so tasks added by middleware
    and exception handlers are covered too.
    """

    def __init__(self, app: ASGIApp, afterward: Afterward | None = None) -> None:
        self.app = app
        self.afterward = afterward

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rt = RequestTasks(self.afterward or default_afterward(), guarded=True)
        scope[SCOPE_KEY] = rt
        token = _current.set(rt)
        blocked = False

        async def guarded_send(message: Message) -> None:
            nonlocal blocked
            if blocked:
                return
            if message["type"] == "http.response.start" and rt.has_pending():
                try:
                    await rt.store()
                except Exception:
                    log.exception(
                        "could not store background tasks; answering 500",
                        extra={"action": "store_failed"},
                    )
                    rt.failed = blocked = True
                    await _send_500(send)
                    return
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        finally:
            _current.reset(token)
            await rt.finish()


async def _send_500(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(_ERROR_BODY)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _ERROR_BODY})


def install(app: Any, afterward: Afterward | None = None) -> None:
    """Install afterward on a Starlette or FastAPI app, outside all other middleware.

    Idempotent. ``Afterward.lifespan``/``running(app)`` call it for you.
    """
    aw = afterward or afterward_for(app)
    app.state.afterward = aw
    if getattr(app, "_afterward_installed", False):
        return
    app._afterward_installed = True
    build = app.build_middleware_stack

    def build_with_afterward() -> ASGIApp:
        return AfterwardMiddleware(build(), aw)

    app.build_middleware_stack = build_with_afterward
    if app.middleware_stack is not None:  # already serving: wrap the built stack as well
        app.middleware_stack = AfterwardMiddleware(app.middleware_stack, aw)


register_app_hook(install)
