"""afterward's own bounded thread pool for sync tasks, cheap per call.

``loop.run_in_executor`` costs a concurrent future, its chaining to an asyncio future and
one self-pipe write per finished call: about 15 µs a call under load, more than many tasks
take. Here a call is one queue item; the threads hand finished calls back to each event
loop in batches, with one thread-safe wake-up per batch rather than one per call.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["SyncPool"]

_Item = tuple[contextvars.Context, Callable[[], Any], "asyncio.Future[Any]", "_Mailbox"]
_STOP = None


class _Mailbox:
    """Outcomes waiting to be handed to one event loop."""

    __slots__ = ("items", "lock", "loop", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: list[tuple[asyncio.Future[Any], bool, Any]] = []
        self.lock = threading.Lock()
        self.scheduled = False

    def post(self, fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
        with self.lock:
            self.items.append((fut, ok, value))
            if self.scheduled:
                return
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self.settle)
        except RuntimeError:  # the loop closed; nobody waits any more
            pass

    def settle(self) -> None:
        with self.lock:
            items, self.items = self.items, []
            self.scheduled = False
        for fut, ok, value in items:
            if fut.done():  # the caller was cancelled meanwhile
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)


class SyncPool:
    """Runs sync callables on at most ``max_threads`` threads, started as needed."""

    def __init__(self, max_threads: int, name: str) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads={max_threads!r} must be >= 1")
        self.max_threads = max_threads
        self.name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._queued = 0
        self._busy = 0
        self._closed = False
        self._boxes: dict[asyncio.AbstractEventLoop, _Mailbox] = {}

    def busy(self) -> int:
        """How many calls are running now (a running thread cannot be stopped)."""
        with self._lock:
            return self._busy

    def run(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``fn()`` on a pool thread, in a copy of the caller's context; await the result."""
        loop = asyncio.get_running_loop()
        box = self._boxes.get(loop)
        if box is None:
            for old in [lp for lp in self._boxes if lp.is_closed()]:
                del self._boxes[old]
            box = self._boxes[loop] = _Mailbox(loop)
        fut: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the sync task pool was shut down")
            self._queued += 1
            # Start a thread when the queued calls outnumber the idle threads, so a slow
            # call never keeps another from starting while the pool has room.
            start = self._queued > self._idle and self._threads < self.max_threads
            if start:
                self._threads += 1
        self._queue.put((contextvars.copy_context(), fn, fut, box))
        if start:
            n = self._threads
            threading.Thread(target=self._main, name=f"{self.name}-{n}", daemon=True).start()
        return fut

    def _main(self) -> None:
        get, lock = self._queue.get, self._lock
        while True:
            with lock:
                self._idle += 1
            item = get()
            with lock:
                self._idle -= 1
                if item is None:
                    self._threads -= 1
                    return
                self._queued -= 1
                self._busy += 1
            ctx, fn, fut, box = item
            try:
                value, ok = ctx.run(fn), True
            except BaseException as e:  # handed to the awaiting caller, as an executor does
                value, ok = e, False
            with lock:
                self._busy -= 1
            box.post(fut, ok, value)
            del item, ctx, fn, fut, box, value

    def shutdown(self) -> None:
        """Cancel calls not started yet and let the threads end (running calls finish)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = self._threads
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                with self._lock:
                    self._queued -= 1
                fut, box = item[2], item[3]
                try:
                    box.loop.call_soon_threadsafe(fut.cancel)
                except RuntimeError:  # the loop closed
                    pass
        for _ in range(threads):
            self._queue.put(_STOP)
