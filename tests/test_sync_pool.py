"""afterward's own thread pool for sync tasks: results, errors, context, bounds, shutdown."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from afterward.engine.threads import SyncPool

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def test_results_errors_and_the_callers_context() -> None:
    pool = SyncPool(4, "t")

    def boom() -> None:
        raise ValueError("bad input 7")

    async def main() -> None:
        REQUEST_ID.set("req-1")
        assert await pool.run(lambda: 6 * 7) == 42
        assert await pool.run(REQUEST_ID.get) == "req-1"
        with pytest.raises(ValueError, match="bad input 7"):
            await pool.run(boom)
        name = await pool.run(lambda: threading.current_thread().name)
        assert name.startswith("t-")

    asyncio.run(main())
    pool.shutdown()


def test_slow_calls_run_side_by_side_up_to_the_bound() -> None:
    pool = SyncPool(3, "t")
    lock = threading.Lock()
    running = peak = 0
    release = threading.Event()
    all_three = threading.Barrier(3, timeout=10)

    def slow() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        all_three.wait()  # only passes if three calls run at once
        release.wait(10)
        with lock:
            running -= 1

    async def main() -> None:
        calls = [pool.run(slow) for _ in range(6)]
        deadline = asyncio.get_running_loop().time() + 10
        while pool.busy() < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.001)
        assert pool.busy() == 3
        release.set()
        await asyncio.wait_for(asyncio.gather(*calls), 10)

    asyncio.run(main())
    assert peak == 3
    assert pool.busy() == 0
    pool.shutdown()


def test_a_cancelled_caller_does_not_break_the_pool() -> None:
    pool = SyncPool(1, "t")
    gate = threading.Event()

    async def main() -> None:
        waiting = asyncio.ensure_future(pool.run(lambda: gate.wait(10)))
        await asyncio.sleep(0)
        waiting.cancel()
        gate.set()
        assert await asyncio.wait_for(pool.run(lambda: "still works"), 10) == "still works"

    asyncio.run(main())
    pool.shutdown()


def test_shutdown_cancels_calls_not_started_and_refuses_new_ones() -> None:
    pool = SyncPool(1, "t")
    gate = threading.Event()
    started = threading.Event()

    def first() -> str:
        started.set()
        gate.wait(10)
        return "first"

    async def main() -> None:
        running = pool.run(first)
        queued = pool.run(lambda: "never")
        await asyncio.to_thread(started.wait, 10)
        pool.shutdown()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(queued, 10)
        gate.set()
        assert await asyncio.wait_for(running, 10) == "first"
        with pytest.raises(RuntimeError, match="shut down"):
            pool.run(lambda: None)

    asyncio.run(main())


def test_max_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_threads=0"):
        SyncPool(0, "t")
