"""afterward adapter for the shared peer harness (/work/shared/bench/peers).

Usage, from that harness's folder:
    BENCH_EXTRA_PEERS=/work/main/bench/peers PEERS=afterward,huey ./run.sh

Storage is afterward's default durable SQLite, in one file
($AFTERWARD_BENCH_DB, default /tmp/afterward_peer_bench.db). Workers are
``afterward worker p_afterward:tasks --poll 0.01 --concurrency 32`` (2 processes).
Workload 5 uses the drop-in: the endpoint takes ``afterward.BackgroundTasks``.
"""

import glob
import os

import probe

from afterward import Afterward, Call

try:  # the harness's own settings, when run inside it
    from peers_impl import BIN, CONC, PROCS
except ImportError:  # pragma: no cover - imported on its own
    import sys

    BIN, CONC, PROCS = os.path.dirname(sys.executable), 32, 2

DB = os.environ.get("AFTERWARD_BENCH_DB", "/tmp/afterward_peer_bench.db")
os.environ.setdefault("AFTERWARD_URL", f"sqlite:///{DB}")

NAME = "afterward"
ASYNC = False
BACKEND = "sqlite"
SETTINGS = (
    f"SQLite file (default durability: WAL, synchronous=NORMAL), {PROCS} x "
    f"`afterward worker p_afterward:tasks --poll 0.01 --concurrency {CONC}`"
)

tasks = Afterward(f"sqlite:///{DB}", worker="off")


def noop(ts):
    probe.noop_body(ts)


async def sleeper(ts):
    await probe.sleep_body_async(ts)


TASKS = {"noop": noop, "sleeper": sleeper}


def worker_cmds():
    cmd = [f"{BIN}/afterward", "worker", "p_afterward:tasks", "--poll", "0.01"]
    return [[*cmd, "--concurrency", str(CONC)] for _ in range(PROCS)]


def reset():
    """Delete the SQLite file (and its WAL/SHM) so each phase starts empty."""
    for path in glob.glob(DB + "*"):
        os.unlink(path)


class Producer:
    def start(self):
        self.aw = Afterward(f"sqlite:///{DB}", worker="off")

    def enqueue(self, fn, ts):
        self.aw.enqueue(TASKS[fn], ts)

    def enqueue_batch(self, fn, tss):
        f = TASKS[fn]
        self.aw.enqueue_many([Call(f, ts) for ts in tss])

    def close(self):
        self.aw.close()


def install_routes(app):
    """GET /enqueue: the drop-in; the endpoint adds a no-op to afterward.BackgroundTasks."""
    from afterward import BackgroundTasks

    @app.get("/enqueue")
    async def enqueue(background_tasks: BackgroundTasks):
        background_tasks.add_task(noop, 0.0)
        return {"ok": True}
