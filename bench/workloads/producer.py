"""Producer process for the queue workloads; prints one JSON line.

usage: producer.py MODE N [--fn noop|anoop|sleeper] [--chunk K] [--interval S] [--samples K]
  seq    N one at a time with ``Afterward.enqueue`` (blocking, committed on return)
  bulk   N with ``Afterward.enqueue_many([Call(...)...])`` in chunks of K
  paced  N one at a time, one every --interval s, each carrying time.time() (latency)
  cost   enqueue and claim latency (p50/p99 of --samples calls) on an empty table, then
         with N jobs already in the table (available), then with N finished jobs
Timing covers the enqueue calls only, not interpreter start-up or opening the database.
"""

import argparse
import json
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qtasks
from stats import pct

from afterward import Call
from afterward.storage.base import JobClaim, JobComplete

DEADLINE = time.monotonic() + 600  # hard bound on every loop below


def bulk(fn, n: int, chunk: int) -> float:
    aw = qtasks.tasks
    t0 = time.perf_counter()
    for i in range(0, n, chunk):
        aw.enqueue_many([Call(fn, 0.0) for _ in range(min(chunk, n - i))])
        if time.monotonic() > DEADLINE:
            raise SystemExit("deadline")
    return time.perf_counter() - t0


def latencies(samples: int) -> dict[str, float | None]:
    """p50/p99 of single enqueues, then of single claims (each followed by its completion)."""
    aw = qtasks.tasks
    st = aw.storage
    enq: list[float] = []
    for _ in range(samples):
        t = time.perf_counter()
        aw.enqueue(qtasks.noop, 0.0)
        enq.append((time.perf_counter() - t) * 1000)
    claim: list[float] = []
    for _ in range(samples):
        now = time.time()
        t = time.perf_counter()
        jobs = st.call_sync("job_claim", JobClaim("bench-producer", now, now + 30, limit=1))
        claim.append((time.perf_counter() - t) * 1000)
        for j in jobs:
            st.call_sync("job_complete", JobComplete(j.id, j.lease_token, time.time()))
    return {
        "enqueue_p50_ms": pct(enq, 0.5),
        "enqueue_p99_ms": pct(enq, 0.99),
        "claim_p50_ms": pct(claim, 0.5),
        "claim_p99_ms": pct(claim, 0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["seq", "bulk", "paced", "cost"])
    ap.add_argument("n", type=int)
    ap.add_argument("--fn", default="noop")
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--samples", type=int, default=2000)
    a = ap.parse_args()
    aw = qtasks.tasks
    fn = qtasks.FUNCS[a.fn]
    aw.enqueue(fn, -1.0)  # open the database and warm up; ts < 0 marks it for the analysis
    out: dict[str, object] = {"n": a.n}
    if a.mode == "seq":
        t0 = time.perf_counter()
        for i in range(a.n):
            aw.enqueue(fn, 0.0)
            if i % 1000 == 0 and time.monotonic() > DEADLINE:
                break
        el = time.perf_counter() - t0
        out.update(elapsed=el, rate=a.n / el)
    elif a.mode == "bulk":
        el = bulk(fn, a.n, a.chunk)
        out.update(elapsed=el, rate=a.n / el)
    elif a.mode == "paced":
        start = time.monotonic()
        for i in range(a.n):
            delay = start + i * a.interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            aw.enqueue(fn, time.time())
        out.update(elapsed=time.monotonic() - start)
    else:
        st = aw.storage
        now = time.time()  # claim the warm-up job so the table starts empty of due work
        st.call_sync("job_claim", JobClaim("bench-producer", now, now + 30, limit=10))
        latencies(300)  # warm-up (WAL file growth, page cache), not reported
        out["empty"] = latencies(a.samples)
        el = bulk(qtasks.noop, a.n, 10_000)
        out["fill"] = {"n": a.n, "elapsed": el, "rate": a.n / el}
        out["available"] = latencies(a.samples)
        path = aw.url.split("sqlite:///", 1)[1]
        t = time.perf_counter()
        conn = sqlite3.connect(path, timeout=30)
        with conn:
            conn.execute(
                "UPDATE afterward_jobs SET state = 'completed', finished_at = ?, "
                "lease_owner = NULL, lease_expires_at = NULL "
                "WHERE state IN ('available', 'running')",
                (time.time(),),
            )
        # That one-statement shortcut leaves a WAL of hundreds of MiB, which jobs finished
        # one by one never would (they are checkpointed as they go): fold it in first.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        out["finish_all_s"] = time.perf_counter() - t
        out["finished"] = latencies(a.samples)
    aw.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
