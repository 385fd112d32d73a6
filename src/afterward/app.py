"""The ``Afterward`` application object: where tasks are stored, how they run, and status.

One ``Afterward`` owns a storage backend, the registry of functions it may run, an
executor (its own thread pool for sync tasks) and at most one worker per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar

from afterward._clock import Clock, SystemClock
from afterward._heap import freeze_startup_heap
from afterward.config import EnvSettings
from afterward.engine.executor import Executor
from afterward.engine.owner import new_owner
from afterward.engine.timers import precise_timers
from afterward.engine.worker import Worker, WorkerSettings
from afterward.errors import ConfigurationError, NotStorableError
from afterward.jobs import Job, JobState, NewJob, new_job_id
from afterward.registry import Registry, TaskOptions, options_of, storable_name
from afterward.retry import RetryPolicy
from afterward.serialization import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Unstorable,
    decode_value,
    encode_payload,
)
from afterward.storage import DEFAULT_URL, storage_from_url
from afterward.storage.base import JobCancel, JobFail, JobsList, Storage
from afterward.tasks import TaskHandle

__all__ = ["Afterward", "AfterwardWarning", "Call", "PreparedCall", "default_afterward"]

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("afterward.app")


class AfterwardWarning(UserWarning):
    """A task will run in-process only: it cannot be stored (see the message for why)."""


class _CallFields(NamedTuple):
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Call(_CallFields, Generic[P]):
    """One call to enqueue in bulk: ``Call(func, *args, **kwargs)``.

    Immutable (a named tuple underneath: bulk enqueues build one per job).
    """

    __slots__ = ()

    def __new__(cls, func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> Call[P]:
        return tuple.__new__(cls, (func, args, kwargs))


@dataclass(slots=True)
class PreparedCall:
    """A call checked and encoded at ``add_task`` time, waiting to be stored."""

    handle: TaskHandle
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    payload: str | None
    """The stored arguments, or None for a call that can only run in-process."""
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 5
    timeout: float | None = None


class _Spec(NamedTuple):
    name: str
    queue: str
    priority: int
    max_attempts: int
    timeout: float | None


# Adapters (Starlette, FastAPI) register what ``running(app)`` must do to a web app.
_APP_HOOKS: list[Callable[[Any, Afterward], None]] = []


def register_app_hook(hook: Callable[[Any, Afterward], None]) -> None:
    """Let an adapter prepare a web app when ``Afterward.running(app)`` starts."""
    if hook not in _APP_HOOKS:
        _APP_HOOKS.append(hook)


class Afterward:
    """Durable background tasks for one application.

    ``url`` chooses the storage (``AFTERWARD_URL``, else ``sqlite:///afterward.db``).
    ``allow`` names packages whose functions a worker may run when it sees them in storage;
    the package of the module that imports a worker target is always allowed.
    ``max_attempts``, ``retry`` and ``timeout`` are the defaults for tasks without ``@task``
    options. ``strict=True`` refuses calls that could only run in-process.
    ``run_after_response`` (default True) makes the process that served a request start its
    tasks right after the response, as Starlette does; ``worker`` is ``"auto"`` (a worker
    runs in this process, started with the app or on first use) or ``"off"``.
    ``gc_freeze`` (default True, ``AFTERWARD_GC_FREEZE``): when the worker or web app
    starts, collect once and ``gc.freeze()`` what is alive, so the cycle collector stops
    re-walking the start-up heap (full passes stalled the loop ~20 ms; see ``_heap``).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        allow: Sequence[str] = (),
        max_attempts: int = 5,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        strict: bool | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        run_after_response: bool = True,
        worker: str | None = None,
        concurrency: int | None = None,
        sync_threads: int = 32,
        lease_seconds: float | None = None,
        poll_interval: float = 0.5,
        rescue_interval: float = 2.0,
        retention: float = 86_400.0,
        gc_freeze: bool | None = None,
        clock: Clock | None = None,
        env: EnvSettings | None = None,
    ) -> None:
        env = env if env is not None else EnvSettings.read()
        self.url = url or env.url or DEFAULT_URL
        self.storage: Storage = storage_from_url(self.url)
        TaskOptions(max_attempts=max_attempts, timeout=timeout)  # validates both
        self.max_attempts = max_attempts
        self.retry = retry or RetryPolicy(max_attempts=max_attempts)
        self.timeout = timeout
        self.strict = bool(strict if strict is not None else env.strict)
        if max_payload_bytes <= 0:
            raise ConfigurationError(f"max_payload_bytes={max_payload_bytes!r} must be > 0")
        self.max_payload_bytes = max_payload_bytes
        mode = worker or env.worker or "auto"
        if mode not in ("auto", "off"):
            raise ConfigurationError(f"worker={mode!r}: use 'auto' or 'off'")
        self.worker_mode = mode
        self.run_after_response = run_after_response and mode == "auto"
        self.clock: Clock = clock or SystemClock()
        self.registry = Registry(tuple(allow) + env.allow)
        self.owner = new_owner()
        self.worker_settings = WorkerSettings(
            concurrency=concurrency or env.concurrency or 32,
            lease_seconds=lease_seconds or env.lease_seconds or 30.0,
            poll_interval=poll_interval,
            rescue_interval=rescue_interval,
            retention=retention,
        )
        self.sync_threads = sync_threads
        self.gc_freeze = gc_freeze if gc_freeze is not None else env.gc_freeze is not False
        self._executor: Executor | None = None
        self._worker: Worker | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.RLock()
        self._closed = False
        self._specs: dict[Callable[..., Any], _Spec] = {}
        #: Called after ``enqueue``/``enqueue_many`` stored jobs (``testing.inline`` uses it).
        self.after_enqueue: Callable[[], object] | None = None

    def __repr__(self) -> str:
        return f"Afterward(url={self.url!r})"

    # -- registration and preparing calls -------------------------------------------------

    def register(self, func: Callable[P, R]) -> Callable[P, R]:
        """Allow ``func`` to run from storage in this process; usable as a decorator."""
        self.registry.register(func)
        return func

    def prepare(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> PreparedCall:
        """Check and encode one call now, so bad input fails at ``add_task``.

        Raises ``PayloadError`` for arguments JSON cannot hold faithfully (naming them),
        ``TypeError`` for a non-callable, ``NotStorableError`` in strict mode for a call
        that could only run in-process; otherwise such a call gets one warning.
        """
        spec = self._spec(func)
        if spec is None:
            return self._unstorable(func, args, kwargs)
        name = spec.name
        call = PreparedCall(
            TaskHandle(new_job_id(), name), func, args, kwargs, None,
            spec.queue, spec.priority, spec.max_attempts, spec.timeout,
        )  # fmt: skip
        try:
            call.payload = encode_payload(name, args, kwargs, max_bytes=self.max_payload_bytes)
        except Unstorable as e:
            return self._in_process(
                call,
                f"{e.where} = {_short(e.value)} is not data and cannot be stored; pass "
                "the values the task needs (ids, strings, models) and open resources inside it",
            )
        return call

    def _spec(self, func: Callable[..., Any]) -> _Spec | None:
        """Name and options of a storable function, worked out once per function."""
        try:
            return self._specs[func]
        except KeyError:
            pass
        except TypeError:  # an unhashable callable object: never storable
            return None
        name = storable_name(func) if callable(func) else None
        if name is None:
            return None
        spec = _Spec(name, *self._options(func))
        self.registry.register(func)
        self._specs[func] = spec
        return spec

    def _options(self, func: Callable[..., Any]) -> tuple[str, int, int, float | None]:
        """Queue, priority, attempts and timeout: the function's ``@task`` options, else ours."""
        opts = options_of(func) or _NO_OPTIONS
        timeout = opts.timeout if opts.timeout is not None else self.timeout
        return (
            opts.queue or "default",
            opts.priority or 0,
            opts.max_attempts or self.max_attempts,
            timeout,
        )

    def _unstorable(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> PreparedCall:
        if not callable(func):
            raise TypeError(f"add_task needs a function to call later, got {func!r}")
        handle = TaskHandle(new_job_id(), _describe(func), durable=True)
        call = PreparedCall(handle, func, args, kwargs, None, *self._options(func))
        return self._in_process(
            call,
            f"{_describe(func)} has no import path a worker could find it by "
            "(a lambda, closure, method or partial); define it at module level",
            depth=1,
        )

    def _in_process(self, call: PreparedCall, why: str, depth: int = 0) -> PreparedCall:
        if self.strict:
            raise NotStorableError(f"strict mode: {why}.")
        warnings.warn(
            f"afterward will run {call.handle.task} in this process only, like Starlette, "
            f"and it is lost if the process stops: {why}.",
            AfterwardWarning,
            stacklevel=4 + depth,  # the caller of add_task/BackgroundTask/enqueue
        )
        call.handle = TaskHandle(call.handle.id, call.handle.task, durable=False)
        return call

    # -- storing ----------------------------------------------------------------------------

    def _new_jobs(self, chain: Sequence[PreparedCall], now: float, local: bool) -> list[NewJob]:
        stored = [c for c in chain if c.payload is not None]
        out: list[NewJob] = []
        for i, c in enumerate(stored):
            head = i == 0
            assert c.payload is not None
            out.append(
                NewJob(
                    id=c.handle.id,
                    task=c.handle.task,
                    payload=c.payload,
                    queue=c.queue,
                    priority=c.priority,
                    max_attempts=c.max_attempts,
                    timeout=c.timeout,
                    run_at=now if head else None,
                    chain_next=stored[i + 1].handle.id if i + 1 < len(stored) else None,
                    owner=self.owner if head and local else None,
                    lease_expires_at=now + self.worker_settings.lease_seconds
                    if head and local
                    else None,
                )
            )
        return out

    async def store_chains(self, chains: Sequence[Sequence[PreparedCall]]) -> list[Job | None]:
        """Store each chain atomically; returns, per chain, the head this process holds.

        With ``run_after_response`` the head of each chain is stored already claimed by this
        process, which runs it next; otherwise heads are stored ``available`` for a worker.
        """
        now = self.clock.now()
        local = self.run_after_response
        jobs: list[NewJob] = []
        heads: list[Job | None] = []
        for chain in chains:
            new = self._new_jobs(chain, now, local)
            jobs.extend(new)
            heads.append(_claimed(new[0], now) if new and local else None)
        if jobs:
            await self.storage.job_insert_many(jobs, now)
            self._ensure_worker()
            if not local:
                self._wake()
        return heads

    async def run_chain(self, chain: Sequence[PreparedCall], head: Job | None) -> None:
        """Run a stored chain here, in order, starting from ``head`` (held by this process).

        Calls that could not be stored run in-process in their place. The first failure
        stops the run here: a failed stored step is retried by a worker, or ends the chain.
        """
        job = head
        for call in chain:
            if call.payload is None:
                error = await self.run_in_process(call)
                if error is not None:
                    if job is not None:
                        await self._cancel_held(job, call, error)
                    return
                continue
            if job is None or job.id != call.handle.id:
                return
            job = await self.executor.run(job, continue_chain=True)
        if job is not None:  # pragma: no cover - a chain never outgrows its own steps
            await self.executor.run(job)

    async def cancel_stored(
        self, chain: Sequence[PreparedCall], head: Job | None, reason: str
    ) -> None:
        """Cancel a stored chain that must not run; the reason is kept on each step."""
        if head is not None:
            await self._cancel_claimed(head, reason)
            return
        first = next((c for c in chain if c.payload is not None), None)
        if first is not None:
            await self.acancel(first.handle.id, reason)

    async def run_in_process(self, call: PreparedCall) -> BaseException | None:
        """Run a call that could not be stored, here, as Starlette would; returns its error."""
        try:
            if inspect.iscoroutinefunction(call.func) or inspect.iscoroutinefunction(
                getattr(call.func, "__call__", None)  # noqa: B004
            ):
                await call.func(*call.args, **call.kwargs)
            else:
                await self.executor.in_pool(lambda: call.func(*call.args, **call.kwargs))
        except Exception as e:
            log.exception(
                "in-process task %s failed", call.handle.task, extra={"action": "in_process"}
            )
            return e
        return None

    async def _cancel_held(self, job: Job, call: PreparedCall, error: BaseException) -> None:
        reason = f"cancelled: the in-process step {call.handle.task} before it failed: {error!r}"
        await self._cancel_claimed(job, reason)

    async def _cancel_claimed(self, job: Job, reason: str) -> None:
        """End a job this process holds as cancelled (and the rest of its chain)."""
        now = self.clock.now()
        await self.storage.job_fail(
            JobFail(
                job.id,
                job.lease_token,
                now,
                {"error": reason, "at": now, "attempt": job.attempt},
                final_state=JobState.CANCELLED,
            )
        )

    # -- the enqueue API (scripts, other services) -----------------------------------------

    def _available(self, calls: Iterable[Call[Any]]) -> tuple[list[TaskHandle], list[NewJob]]:
        now = self.clock.now()
        handles: list[TaskHandle] = []
        jobs: list[NewJob] = []
        limit = self.max_payload_bytes
        # Bulk work: one function's calls in a row share its spec, and both records are built
        # with tuple.__new__, not through the named tuples' own __new__ (a Python function
        # each): together 6 % of enqueue_many's instructions per job.
        make = tuple.__new__
        last: Callable[..., Any] | None = None
        spec: _Spec | None = None
        for func, args, kwargs in calls:
            if func is not last:
                spec, last = self._spec(func), func
            try:
                if spec is None:
                    raise Unstorable("", None)
                payload = encode_payload(spec.name, args, kwargs, max_bytes=limit)
            except Unstorable:
                p = self.prepare(func, args, kwargs)  # warns, or raises in strict mode
                raise NotStorableError(
                    f"enqueue cannot run {p.handle.task} later: it cannot be stored "
                    "(see the warning above); pass stored values or call it directly"
                ) from None
            job_id = new_job_id()
            name = spec.name
            handles.append(make(TaskHandle, (job_id, name, True)))
            # Every field of NewJob, in order: nobody holds it, nothing comes after it.
            jobs.append(
                make(
                    NewJob,
                    (
                        job_id, name, payload, spec.queue, spec.priority, spec.max_attempts,
                        spec.timeout, now, None, None, None,
                    ),
                )
            )  # fmt: skip
        return handles, jobs

    def enqueue(self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> TaskHandle:
        """Store one job for a worker to run; blocking, returns once it is committed."""
        return self.enqueue_many([Call(func, *args, **kwargs)])[0]

    def enqueue_many(self, calls: Iterable[Call[Any]]) -> list[TaskHandle]:
        """Store many jobs in one transaction (all or none); blocking."""
        handles, jobs = self._available(calls)
        self.storage.call_sync("job_insert_many", jobs, self.clock.now())
        self._wake()
        if self.after_enqueue is not None:
            self.after_enqueue()
        return handles

    async def aenqueue(
        self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs
    ) -> TaskHandle:
        """Async ``enqueue``."""
        return (await self.aenqueue_many([Call(func, *args, **kwargs)]))[0]

    async def aenqueue_many(self, calls: Iterable[Call[Any]]) -> list[TaskHandle]:
        """Async ``enqueue_many``."""
        handles, jobs = self._available(calls)
        await self.storage.job_insert_many(jobs, self.clock.now())
        self._wake()
        return handles

    # -- status -----------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        """Read one job (state, attempts, timestamps, errors, result); blocking."""
        return self._report(self.storage.call_sync("job_get", job_id))

    async def aget_job(self, job_id: str) -> Job | None:
        """Async ``get_job``."""
        return self._report(await self.storage.job_get(job_id))

    def _report(self, job: Job | None) -> Job | None:
        if job is None:
            return None
        state = job.effective_state(self.clock.now())
        if state is job.state:
            return job
        return job._replace(state=state)

    def list_jobs(self, *states: JobState, queue: str | None = None, limit: int = 100) -> list[Job]:
        """Jobs newest first, optionally only some states; blocking."""
        jobs: list[Job] = self.storage.call_sync("jobs_list", JobsList(tuple(states), queue, limit))
        return [j for j in (self._report(j) for j in jobs) if j is not None]

    def cancel(self, job_id: str, reason: str = "cancelled by request") -> bool:
        """Cancel a job that has not started (and its later chain steps); blocking."""
        ok: bool = self.storage.call_sync("job_cancel", JobCancel(job_id, self.clock.now(), reason))
        return ok

    async def acancel(self, job_id: str, reason: str = "cancelled by request") -> bool:
        """Async ``cancel``."""
        return await self.storage.job_cancel(JobCancel(job_id, self.clock.now(), reason))

    def result(self, job_id: str) -> Any:
        """The decoded return value of a completed job (None otherwise)."""
        job = self.get_job(job_id)
        return decode_value(job.result) if job is not None and job.result is not None else None

    # -- running ----------------------------------------------------------------------------

    @property
    def executor(self) -> Executor:
        """The executor of this process (created on first use)."""
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = Executor(
                        self.storage,
                        self.registry,
                        self.clock,
                        owner=self.owner,
                        retry=self.retry,
                        lease_seconds=self.worker_settings.lease_seconds,
                        sync_threads=self.sync_threads,
                    )
        return self._executor

    def new_worker(self, settings: WorkerSettings | None = None) -> Worker:
        """A worker for this application (not started)."""
        return Worker(self.executor, settings or self.worker_settings)

    @contextlib.asynccontextmanager
    async def running(self, app: Any = None) -> AsyncIterator[Afterward]:
        """Run this application's worker on the current event loop for the block.

        Given a web app (FastAPI or Starlette), also installs afterward on it, so every
        response's tasks are stored before the response starts. Use as a lifespan:
        ``FastAPI(lifespan=tasks.lifespan)``, or inside your own lifespan.
        """
        if app is not None:
            for hook in _APP_HOOKS:
                hook(app, self)
        await self.storage.open()
        if self.gc_freeze:
            freeze_startup_heap()
        worker = None
        if self.worker_mode == "auto":
            worker = self.new_worker()
            with self._lock:
                self._worker = worker
            await worker.start()
        try:
            yield self
        finally:
            if worker is not None:
                await worker.stop()
                with self._lock:
                    if self._worker is worker:
                        self._worker = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """A Starlette/FastAPI lifespan: ``FastAPI(lifespan=tasks.lifespan)``."""
        async with self.running(app):
            yield

    def _ensure_worker(self) -> None:
        """Start a worker thread on first use when no worker runs in this process."""
        if self.worker_mode != "auto" or self._worker is not None or self._closed:
            return
        with self._lock:
            if self._worker is not None or self._thread is not None:
                return
            if self.gc_freeze:  # the app started without our lifespan: now is its start
                freeze_startup_heap()
            worker = self.new_worker()
            self._worker = worker
            ready = threading.Event()
            loop = asyncio.new_event_loop()
            self._thread_loop = loop

            def main() -> None:
                precise_timers()  # this thread runs the worker's loop and nothing else
                asyncio.set_event_loop(loop)
                try:
                    loop.run_until_complete(worker.start())
                finally:
                    ready.set()
                loop.run_forever()

            self._thread = threading.Thread(target=main, name="afterward-worker", daemon=True)
            self._thread.start()
        ready.wait(10)

    def _wake(self) -> None:
        if self._worker is not None:
            self._worker.wake()

    def close(self, grace: float = 5.0) -> None:
        """Stop this process's worker thread (if any) and close the storage; blocking."""
        self._closed = True
        with self._lock:
            thread, loop, worker = self._thread, self._thread_loop, self._worker
            self._thread = self._thread_loop = None
            if thread is not None:
                self._worker = None
        if thread is not None and loop is not None and worker is not None:
            asyncio.run_coroutine_threadsafe(worker.stop(grace), loop).result(grace + 5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
        if self._executor is not None:
            self._executor.shutdown()
        closer = getattr(self.storage, "close_sync", None)
        if closer is not None:
            closer()


_NO_OPTIONS = TaskOptions()


def _claimed(new: NewJob, now: float) -> Job:
    # Every field of Job in order, built with tuple.__new__: one per request's task, and
    # Job's own __new__ is a Python function call (with keywords, a slow one).
    return tuple.__new__(
        Job,
        (
            new.id, new.task, new.payload, JobState.RUNNING, new.queue, new.priority, 1,
            new.max_attempts, new.timeout, new.run_at, now, now, None, new.owner, 1,
            new.lease_expires_at, new.chain_next, (), None,
        ),
    )  # fmt: skip


def _describe(func: Any) -> str:
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    module = getattr(func, "__module__", None)
    return f"{module}:{name}" if module else str(name)


def _short(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


_default: Afterward | None = None
_default_lock = threading.Lock()


def default_afterward() -> Afterward:
    """The process-wide application used when none was configured (from ``AFTERWARD_*``)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Afterward()
    return _default


def set_default_afterward(app: Afterward | None) -> Afterward | None:
    """Replace the process-wide default (tests use this); returns the previous one."""
    global _default
    with _default_lock:
        previous, _default = _default, app
    return previous
