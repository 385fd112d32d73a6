"""Run one claimed job and record its outcome, fenced by the lease it was claimed with.

Async tasks run on the calling event loop; sync tasks run in afterward's own bounded
thread pool, never the web server's. Every outcome is stored: success with its JSON
result, a failure with its traceback (retried with backoff while attempts remain, then
discarded as a dead letter), a timeout, or an unknown task name.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

from afterward._clock import Clock
from afterward.engine.threads import SyncPool
from afterward.errors import PayloadError, Retry
from afterward.jobs import Job
from afterward.registry import Registry, options_of
from afterward.retry import RetryPolicy
from afterward.serialization import Unstorable, coerce_arguments, decode_payload, dumps_value
from afterward.storage.base import JobComplete, JobFail, Storage

__all__ = ["Executor"]

log = logging.getLogger("afterward.engine.executor")


class _Timeout(Exception):
    pass


class Executor:
    """Runs jobs for one lease owner and keeps the set of leases it holds."""

    def __init__(
        self,
        storage: Storage,
        registry: Registry,
        clock: Clock,
        *,
        owner: str,
        retry: RetryPolicy,
        lease_seconds: float,
        sync_threads: int,
    ) -> None:
        self.storage = storage
        self.registry = registry
        self.clock = clock
        self.owner = owner
        self.retry = retry
        self.lease_seconds = lease_seconds
        self._pool = SyncPool(sync_threads, "afterward-task")
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- leases held by this owner --------------------------------------------------------

    def hold(self, job: Job) -> None:
        """Track ``job``'s lease so heartbeats keep it alive."""
        with self._lock:
            self._held[job.id] = job.lease_token

    def drop(self, job_id: str) -> None:
        """Stop tracking a lease."""
        with self._lock:
            self._held.pop(job_id, None)

    def held(self) -> list[tuple[str, int]]:
        """The (job id, lease token) pairs this owner holds."""
        with self._lock:
            return list(self._held.items())

    def threads_busy(self) -> int:
        """How many sync calls are still running in the pool (a thread cannot be stopped)."""
        return self._pool.busy()

    def shutdown(self) -> None:
        """Stop the sync thread pool (running sync tasks finish in the background)."""
        self._pool.shutdown()

    async def in_pool(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in afterward's own thread pool (never the web server's)."""
        return await self._pool.run(fn)

    # -- running ----------------------------------------------------------------------------

    async def run(
        self,
        job: Job,
        *,
        continue_chain: bool = True,
        ran: Callable[[], None] | None = None,
    ) -> Job | None:
        """Run ``job`` (already claimed by this owner) and store the outcome.

        Returns the next step of its chain when it succeeded and ``continue_chain`` asked
        to claim that step for this owner. ``ran`` is called as soon as the function
        returned or raised, before the outcome is stored (a worker frees its slot then).
        """
        self.hold(job)
        try:
            return await self._run(job, continue_chain, ran)
        finally:
            self.drop(job.id)

    async def _run(
        self, job: Job, continue_chain: bool, ran: Callable[[], None] | None = None
    ) -> Job | None:
        func = self.registry.resolve(job.task)
        policy = self.retry
        if func is None:
            error = _error(
                job,
                f"unknown task {job.task!r}: this worker has no such function registered; "
                "import its module in the worker's application or decorate it with @task",
                None,
            )
            return await self._failed(job, error, policy, None)
        opts = options_of(func)
        if opts is not None and opts.retry is not None:
            policy = opts.retry
        try:
            try:
                args, kwargs = decode_payload(job.payload)
                args, kwargs = coerce_arguments(func, args, kwargs)
                result = await self._call(func, args, kwargs, job.timeout)
            finally:
                if ran is not None:
                    ran()
        except Retry as signal:
            return await self._failed(job, _error(job, signal.reason, None), policy, signal.delay)
        except _Timeout:
            error = _error(job, f"timed out after {job.timeout:g}s", None)
            return await self._failed(job, error, policy, None)
        except asyncio.CancelledError:
            # Shutdown ran out of grace: the attempt counts. It is retried at once if it was
            # not the last one; otherwise it is discarded, as a rescued job would be, rather
            # than run again past max_attempts.
            error = _error(job, "interrupted: the worker shut down while it ran", None)
            now = self.clock.now()
            retry_at = now if job.attempt < job.max_attempts else None
            await self._record_fail(job, error, retry_at=retry_at)
            raise
        except Exception as e:
            return await self._failed(job, _error(job, repr(e), e), policy, None)
        return await self._completed(job, result, continue_chain)

    async def _call(
        self, func: Any, args: list[Any], kwargs: dict[str, Any], timeout: float | None
    ) -> Any:
        if _is_async(func):
            coro = func(*args, **kwargs)
            if timeout is None:
                return await coro
            try:
                return await asyncio.wait_for(coro, timeout)
            except TimeoutError:
                raise _Timeout from None
        fut = self._pool.run(functools.partial(func, *args, **kwargs))
        if timeout is None:
            return await fut
        try:
            # A thread cannot be stopped: the attempt is recorded as timed out and the
            # function's own thread finishes whenever it does.
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise _Timeout from None

    async def _completed(self, job: Job, result: Any, continue_chain: bool) -> Job | None:
        try:
            stored = (
                dumps_value(result, where=f"the result of {job.task}")
                if result is not None
                else None
            )
        except (PayloadError, Unstorable) as e:
            log.warning(
                "job %s: result not stored (%s)",
                job.id,
                e,
                extra={"action": "result", "job_id": job.id},
            )
            stored = None
        now = self.clock.now()
        # Every field of JobComplete in order, built with tuple.__new__ (one per job; the
        # named tuple's own __new__ is a Python function call).
        params: JobComplete = tuple.__new__(
            JobComplete,
            (
                job.id,
                job.lease_token,
                now,
                stored,
                self.owner if continue_chain else None,
                now + self.lease_seconds,
                job.chain_next,
            ),
        )
        ok, nxt = await self.storage.job_complete(params)
        if not ok:
            _lost(job, "completed")
        return nxt

    async def _failed(
        self, job: Job, error: dict[str, Any], policy: RetryPolicy, delay: float | None
    ) -> Job | None:
        now = self.clock.now()
        retry_at = None
        if job.attempt < job.max_attempts:
            retry_at = now + (delay if delay is not None else policy.delay(job.attempt))
        level = logging.INFO if retry_at is not None else logging.ERROR
        log.log(
            level,
            "job %s (%s) attempt %d/%d failed: %s%s",
            job.id,
            job.task,
            job.attempt,
            job.max_attempts,
            error["error"],
            f"; retry in {retry_at - now:.1f}s" if retry_at is not None else "; discarded",
            extra={"action": "retry" if retry_at else "discard", "job_id": job.id},
        )
        await self._record_fail(job, error, retry_at)
        return None

    async def _record_fail(self, job: Job, error: dict[str, Any], retry_at: float | None) -> None:
        now = self.clock.now()
        ok = await self.storage.job_fail(
            JobFail(job.id, job.lease_token, now, {**error, "at": now}, retry_at=retry_at)
        )
        if not ok:
            _lost(job, "failed")


_async_cache: dict[Any, bool] = {}


def _is_async(func: Any) -> bool:
    try:
        return _async_cache[func]
    except (KeyError, TypeError):
        pass
    found = _check_async(func)
    try:
        _async_cache[func] = found
    except TypeError:  # unhashable callable object
        pass
    return found


def _check_async(func: Any) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


def _error(job: Job, message: str, exc: BaseException | None) -> dict[str, Any]:
    err: dict[str, Any] = {"error": message, "attempt": job.attempt}
    if exc is not None:
        err["type"] = type(exc).__qualname__
        err["traceback"] = "".join(traceback.format_exception(exc))
    return err


def _lost(job: Job, outcome: str) -> None:
    log.warning(
        "job %s %s, but its lease moved to another worker; that worker's outcome stands",
        job.id,
        outcome,
        extra={"action": "lease_lost", "job_id": job.id},
    )
