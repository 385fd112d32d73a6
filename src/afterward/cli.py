"""The ``afterward`` command: run a worker, read a job.

    afterward worker myapp.main:app      run a worker for the app's tasks until SIGTERM
    afterward job JOB_ID --app myapp.main:app
    afterward jobs --app myapp.main:app [--state discarded]

``MODULE:ATTR`` names an ``Afterward`` object or a Starlette/FastAPI app. The module is
imported because you named it here, never because storage did; functions of its
top-level package may then run from storage.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from afterward._heap import freeze_startup_heap
from afterward.app import Afterward, default_afterward
from afterward.engine.timers import precise_timers
from afterward.errors import ConfigurationError
from afterward.jobs import Job, JobState

__all__ = ["load_target", "main"]


def load_target(target: str) -> Afterward:
    """Import ``MODULE:ATTR`` and return the ``Afterward`` it names or carries."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"{target!r} is not MODULE:ATTR, e.g. myapp.main:app")
    if "" not in sys.path:
        sys.path.insert(0, "")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigurationError(f"{module_name} has no attribute {attr!r}")
    if isinstance(obj, Afterward):
        aw = obj
    else:
        state = getattr(obj, "state", None)
        found = getattr(state, "afterward", None) if state is not None else None
        aw = found if isinstance(found, Afterward) else default_afterward()
    top = module_name.split(".")[0]
    if top not in aw.registry.allow:
        aw.registry.allow = (*aw.registry.allow, top)
    return aw


async def _run_worker(aw: Afterward, args: argparse.Namespace) -> None:
    from dataclasses import replace

    settings = aw.worker_settings
    if args.concurrency:
        settings = replace(settings, concurrency=args.concurrency)
    if args.poll is not None:
        settings = replace(settings, poll_interval=args.poll)
    if args.queues:
        settings = replace(settings, queues=tuple(args.queues.split(",")))
    settings = replace(settings, shutdown_grace=args.grace)
    precise_timers()  # this thread runs the worker's loop
    await aw.storage.open()
    if aw.gc_freeze:
        freeze_startup_heap()
    worker = aw.new_worker(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.start()
    logging.getLogger("afterward.cli").info(
        "worker %s running (concurrency %d)", aw.executor.owner, settings.concurrency
    )
    await stop.wait()
    await worker.stop(args.grace)
    await aw.storage.close()


def _leave_stuck_threads(aw: Afterward, grace: float) -> None:
    """Exit now even if sync tasks still run in threads past the grace period.

    Their attempts are already recorded as interrupted and handed back, so another worker
    may run them; waiting for the threads (as interpreter exit would) keeps a stopped
    worker alive for as long as the task takes, perhaps forever.
    """
    busy = aw.executor.threads_busy()
    if not busy:
        return
    logging.getLogger("afterward.cli").warning(
        "%d sync task(s) still running %gs after the stop; exiting without them "
        "(their attempts were recorded as interrupted)",
        busy,
        grace,
        extra={"action": "stop"},
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _loop_runner(choice: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    # asyncio's epoll loop rounds every timeout up to a whole millisecond, twice, so a task
    # sleeping 10 ms wakes about 1 ms late whenever the loop was busy; uvloop wakes on time.
    if choice == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigurationError(
                "--loop uvloop: uvloop is not installed; pip install 'afterward[fast]' "
                "or use --loop asyncio"
            ) from None
        return asyncio.run
    run: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    return run


def _job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "task": job.task,
        "state": job.state.value,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "created_at": job.created_at,
        "attempted_at": job.attempted_at,
        "finished_at": job.finished_at,
        "errors": list(job.errors),
        "result": json.loads(job.result) if job.result is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``afterward`` command."""
    parser = argparse.ArgumentParser(prog="afterward", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run a worker until SIGTERM/SIGINT")
    w.add_argument("target", help="MODULE:ATTR of an Afterward or a web app")
    w.add_argument("--concurrency", type=int, default=None)
    w.add_argument("--poll", type=float, default=None, help="seconds between idle polls")
    w.add_argument("--queues", default=None, help="comma-separated queues (default: all)")
    w.add_argument("--grace", type=float, default=10.0, help="seconds running jobs get at stop")
    w.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop (auto: uvloop if installed; its timers fire on time under load)",
    )
    j = sub.add_parser("job", help="print one job as JSON")
    j.add_argument("job_id")
    j.add_argument("--app", default=None, help="MODULE:ATTR (default: AFTERWARD_URL)")
    ls = sub.add_parser("jobs", help="list jobs as JSON lines, newest first")
    ls.add_argument("--app", default=None)
    ls.add_argument("--state", action="append", default=[], choices=[s.value for s in JobState])
    ls.add_argument("--limit", type=int, default=50)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.command == "worker":
            aw = load_target(args.target)
            _loop_runner(args.loop)(_run_worker(aw, args))
            _leave_stuck_threads(aw, args.grace)
            return 0
        aw = load_target(args.app) if args.app else default_afterward()
        if args.command == "job":
            job = aw.get_job(args.job_id)
            if job is None:
                print(f"no job {args.job_id!r} in {aw.url}", file=sys.stderr)
                return 1
            print(json.dumps(_job_dict(job), indent=2))
            return 0
        for job in aw.list_jobs(*(JobState(s) for s in args.state), limit=args.limit):
            print(json.dumps(_job_dict(job)))
        return 0
    except ConfigurationError as e:
        print(f"afterward: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
