"""One command for the performance targets: afterward (default durable SQLite) beside plain
FastAPI ``BackgroundTasks``, measured side by side in one run; prints a markdown table.

    .venv/bin/python bench/run.py [--quick] [--reps 3] [--only http,queue,cost,rss]

HTTP workloads: uvicorn (1 worker, uvloop + httptools, no access log) on 127.0.0.1 and a
free port, one server per configuration, wrk -t1 -c32 (warm-up, then the measured run),
configurations in rotated order between repeats; ratios are taken within one repeat.
Queue workloads: a fresh SQLite file per phase; 2 ``afterward worker`` processes started
after the queue is filled; rates from per-task probe lines in /dev/shm.
Every wait is bounded; only processes started here are signalled (by their own group).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "workloads"
sys.path.insert(0, str(WORK))
from stats import pct  # noqa: E402 - the workloads folder, shared with producer.py

BIN = ROOT / ".venv" / "bin"
PY = str(BIN / "python")
PROBE = f"/dev/shm/afterward_bench_{os.getpid()}"
# Made on first use (new_db, the logs), so that importing this module (ab.py, a scratch
# script) leaves nothing behind; named by pid like PROBE.
TMP = Path(tempfile.gettempdir()) / f"afterward_bench_{os.getpid()}"
LOG_DIR = TMP / "logs"
#: ``--src``: an afterward source tree (e.g. a ``git archive`` snapshot) put ahead of the install.
SRC: list[str] = []


LOADS: list[float] = []  # 1-minute load average before each phase: how shared the machine was


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def env_for(db: Path) -> dict[str, str]:
    return dict(
        os.environ,
        AFTERWARD_URL=f"sqlite:///{db}",
        BENCH_PROBE=PROBE,
        PYTHONPATH=os.pathsep.join([*SRC, str(WORK)]),
        PYTHONUNBUFFERED="1",
    )


def new_db(tag: str) -> Path:
    d = TMP / f"{tag}_{time.monotonic_ns()}"
    d.mkdir(parents=True)
    return d / "afterward.db"


def stop_group(p: subprocess.Popen[Any], grace: float = 8.0) -> None:
    """SIGTERM the process group we started, SIGKILL what is left after ``grace``."""
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        log("process", p.pid, "did not exit after SIGKILL")


# -- queue workloads ---------------------------------------------------------------------


def produce(db: Path, *args: str, timeout: float = 900) -> dict[str, Any]:
    cmd = [PY, str(WORK / "producer.py"), *args]
    r = subprocess.run(cmd, env=env_for(db), capture_output=True, text=True, timeout=timeout)
    try:
        out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
        return out
    except (IndexError, ValueError):
        return {"error": (r.stderr or r.stdout)[-800:]}


def start_workers(db: Path, tag: str, n: int = 2) -> list[subprocess.Popen[Any]]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(BIN / "afterward"),
        "worker",
        "qtasks:tasks",
        "--poll",
        "0.01",
        "--concurrency",
        "32",
    ]
    procs = []
    for i in range(n):
        f = open(LOG_DIR / f"{tag}_{i}.log", "w")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=WORK,
                env=env_for(db),
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


@contextlib.contextmanager
def workers(db: Path, tag: str) -> Iterator[list[subprocess.Popen[Any]]]:
    """Two worker processes on ``db`` for the block; stopped (their groups) after it."""
    procs = start_workers(db, tag)
    try:
        yield procs
    finally:
        for p in procs:
            stop_group(p)


def probe_count() -> int:
    with open(PROBE, "rb") as f:
        return f.read().count(b"\n")


def wait_lines(
    n: int, cap: float, procs: list[subprocess.Popen[Any]], tick: Callable[[], None] | None = None
) -> tuple[int, bool]:
    end = time.monotonic() + cap
    while time.monotonic() < end:
        c = probe_count()
        if c >= n:
            return c, False
        if all(p.poll() is not None for p in procs):
            break
        if tick is not None:
            tick()
        time.sleep(0.05)
    return probe_count(), True


def read_probe() -> list[tuple[float, float, float, int]]:
    rows = []
    with open(PROBE) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                rows.append((float(parts[0]), float(parts[1]), float(parts[2]), int(parts[3])))
    return rows


def skew(rows: list[tuple[float, float, float, int]]) -> dict[str, float]:
    """How far apart the worker processes got going, and the rate had they started together.

    The rate of a phase runs from the first task's start to the last one's end, as the
    shared peer harness counts it, so a process that comes up later than the other (its
    imports, on a busy VM) leaves that one working alone meanwhile. Counting each process
    from its own first start and adding the rates takes that out.
    """
    spans: dict[int, list[float]] = {}
    for _, start, end, pid in rows:
        s = spans.setdefault(pid, [start, end, 0])
        s[0], s[1], s[2] = min(s[0], start), max(s[1], end), s[2] + 1
    firsts = [s[0] for s in spans.values()]
    return {
        "workers": len(spans),
        "stagger_ms": (max(firsts) - min(firsts)) * 1000,
        "rate_each_from_own_start": sum(n / max(b - a, 1e-9) for a, b, n in spans.values()),
    }


def reset_probe() -> None:
    open(PROBE, "w").close()


def drain_phase(n: int, fn: str, cap: float, tag: str) -> dict[str, Any]:
    """Fill a fresh queue with ``n`` jobs, then start 2 workers and time the drain."""
    db = new_db(tag)
    reset_probe()
    fill = produce(db, "bulk", str(n), "--fn", fn)
    if "error" in fill:
        return fill
    t_launch = time.time()
    with workers(db, tag) as procs:
        _, capped = wait_lines(n + 1, cap, procs)  # +1: the producer's warm-up job
    rows = read_probe()
    if not rows:
        return {"error": "no task completed", "capped": True}
    first, last = min(r[1] for r in rows), max(r[2] for r in rows)
    return {
        "done": len(rows) - 1,
        "capped": capped,
        "rate": len(rows) / max(last - first, 1e-9),
        "startup_s": first - t_launch,
        **skew(rows),
    }


def latency_phase(n: int, interval: float, tag: str) -> dict[str, Any]:
    db = new_db(tag)
    reset_probe()
    warm = produce(db, "seq", "10")  # creates the schema, gives the workers something to do
    if "error" in warm:
        return warm
    with workers(db, tag) as procs:
        c, capped = wait_lines(11, 60, procs)
        if capped:
            return {"error": f"workers not ready ({c}/11 warm-up tasks ran)"}
        time.sleep(0.5)  # let both workers settle into their idle poll
        r = produce(db, "paced", str(n), "--interval", str(interval))
        wait_lines(11 + n + 1, 30, procs)
    lat = [(r_[1] - r_[0]) * 1000 for r_ in read_probe() if r_[0] > 0]
    return {"count": len(lat), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "producer": r}


def busy_enqueue_phase(n_fill: int, n: int, tag: str) -> dict[str, Any]:
    """Enqueue ``n`` jobs one at a time while two workers drain ``n_fill``: the workers hold
    SQLite's write lock most of the time, so this is what a script that stores work meets
    while the queue is busy. ``draining`` tells whether the workers were still at it when
    the last enqueue returned."""
    db = new_db(tag)
    reset_probe()
    fill = produce(db, "bulk", str(n_fill))
    if "error" in fill:
        return fill
    with workers(db, tag) as procs:
        _, capped = wait_lines(1000, 60, procs)  # both at work before the producer starts
        if capped:
            return {"error": "workers did not start"}
        r = produce(db, "seq", str(n))
        r["draining"] = probe_count() < n_fill + 1
    return r


def queue_rep(a: argparse.Namespace, rep: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    phases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("enqueue_seq", lambda: produce(new_db("seq"), "seq", str(a.n_seq))),
        ("enqueue_bulk", lambda: produce(new_db("bulk"), "bulk", str(a.n_bulk))),
        ("drain", lambda: drain_phase(a.n_drain, "noop", a.cap, f"drain{rep}")),
        ("drain_async", lambda: drain_phase(a.n_drain, "anoop", a.cap, f"adrain{rep}")),
        ("sleep", lambda: drain_phase(a.n_sleep, "sleeper", a.cap, f"sleep{rep}")),
        ("latency", lambda: latency_phase(a.lat_n, 0.02, f"lat{rep}")),
        ("enqueue_busy", lambda: busy_enqueue_phase(a.n_busy_fill, a.n_busy, f"busy{rep}")),
    ]
    k = rep % len(phases)
    for name, fn in phases[k:] + phases[:k]:
        LOADS.append(os.getloadavg()[0])
        try:
            res[name] = fn()
        except Exception as e:  # keep going; the failure shows in the table
            res[name] = {"error": repr(e)}
        log(f"rep {rep + 1} {name}: {json.dumps(res[name])[:300]}")
    return res


# -- HTTP workloads ----------------------------------------------------------------------

HTTP_CONFIGS = [
    ("plain", "/plain", {}),
    ("fastapi_async", "/bg_async", {}),
    ("fastapi_sync", "/bg_sync", {}),
    ("fastapi_async_dep", "/dep_async", {}),
    ("plain_dep", "/dep_plain", {}),
    ("aw_async", "/aw_async", {}),
    ("aw_sync", "/aw_sync", {}),
    ("aw_async_lifespan", "/aw_async", {"BENCH_AW_LIFESPAN": "1"}),
    ("aw_sync_lifespan", "/aw_sync", {"BENCH_AW_LIFESPAN": "1"}),
]
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def wrk(url: str, seconds: int) -> dict[str, Any]:
    cmd = ["wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", "--timeout", "5s", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    res: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        res[f"p{q}_ms"] = float(m.group(1)) * UNIT[m.group(2)] if m else None
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:(.*)", out)
    res["socket_errors"] = m.group(1).strip() if m else ""
    return res


def job_states(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(db, timeout=30)
    try:
        rows = conn.execute("SELECT state, count(*) FROM afterward_jobs GROUP BY state").fetchall()
    except sqlite3.Error:
        rows = []
    finally:
        conn.close()
    return dict(rows)


def http_one(label: str, path: str, extra: dict[str, str], a: argparse.Namespace) -> dict[str, Any]:
    db = new_db(f"http_{label}")
    port = free_port()
    env = dict(env_for(db), BENCH_PROBE="", **extra)
    cmd = [
        str(BIN / "uvicorn"),
        "webapp:app",
        "--app-dir",
        str(WORK),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / f"http_{label}.log", "a") as lf:
        p = subprocess.Popen(
            cmd, cwd=WORK, env=env, stdout=lf, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            if not wait_port(port, time.monotonic() + 30):
                return {"error": "uvicorn did not start"}
            url = f"http://127.0.0.1:{port}{path}"
            wrk(url, a.warmup)
            r = wrk(url, a.duration)
        finally:
            stop_group(p, grace=15)
    if label.startswith("aw_"):
        r["jobs"] = job_states(db)
    return r


def http_rep(a: argparse.Namespace, rep: int) -> dict[str, Any]:
    k = rep % len(HTTP_CONFIGS)
    res = {}
    for label, path, extra in HTTP_CONFIGS[k:] + HTTP_CONFIGS[:k]:
        LOADS.append(os.getloadavg()[0])
        try:
            res[label] = http_one(label, path, extra, a)
        except Exception as e:
            res[label] = {"error": repr(e)}
        r = res[label]
        log(
            f"rep {rep + 1} http {label}: {r.get('rps')} req/s p99 {r.get('p99_ms')} ms",
            r.get("jobs", ""),
        )
    return res


# -- cost as work grows ------------------------------------------------------------------


def rss_kib(pid: int) -> tuple[int, int]:
    """A process's resident memory in KiB, read once: all of it (``VmRSS``) and its pages
    of mapped files (``RssFile``, such as the ``-wal`` file afterward keeps mapped, shared
    with every process that maps it); 0 for a process that is gone."""
    found = {"VmRSS": 0, "RssFile": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in found:
                    found[name] = int(line.split()[1])
    except OSError:
        pass
    return found["VmRSS"], found["RssFile"]


def rss_phase(n: int, cap: float) -> dict[str, Any]:
    db = new_db("rss")
    reset_probe()
    t = time.monotonic()
    fill = produce(db, "bulk", str(n), "--chunk", "10000", timeout=1200)
    if "error" in fill:
        return fill
    fill_s = time.monotonic() - t
    samples: list[tuple[float, int, int]] = []  # (t, done, summed RSS KiB of both workers)
    files: list[int] = []  # summed RssFile KiB, at each sample
    with workers(db, "rss") as procs:
        t0 = time.monotonic()
        last = [0.0]

        def tick() -> None:
            now = time.monotonic()
            if now - last[0] >= 1.0:
                last[0] = now
                rs = [rss_kib(p.pid) for p in procs]
                samples.append((now - t0, probe_count(), sum(r for r, _ in rs)))
                files.append(sum(f for _, f in rs))

        _, capped = wait_lines(n + 1, cap, procs, tick)
        tick()
    rows = read_probe()
    first, lastend = min(r[1] for r in rows), max(r[2] for r in rows)
    early = [s for s in samples if s[1] >= min(20_000, n // 10)]
    return {
        "n": n,
        "fill_s": fill_s,
        "done": len(rows) - 1,
        "capped": capped,
        "rate": len(rows) / max(lastend - first, 1e-9),
        "rss_first_kib": early[0][2] if early else None,
        "rss_max_kib": max(s[2] for s in samples) if samples else None,
        "rss_last_kib": samples[-1][2] if samples else None,
        "rss_file_max_kib": max(files) if files else None,
        "samples": samples[:: max(1, len(samples) // 20)],
        "db_mib": sum(f.stat().st_size for f in db.parent.iterdir()) / 2**20,
    }


# -- report ------------------------------------------------------------------------------


def stat(xs: list[float]) -> tuple[float, float, float, int] | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return statistics.median(xs), min(xs), max(xs), len(xs)


def fmt(s: tuple[float, float, float, int] | None, d: int = 0, unit: str = "") -> str:
    if s is None:
        return "n/a"
    return f"**{s[0]:,.{d}f}**{unit} ({s[1]:,.{d}f}–{s[2]:,.{d}f}, n={s[3]})"


def verdict(s: tuple[float, float, float, int] | None, ok: Callable[[float], bool]) -> str:
    return "n/a" if s is None else ("PASS" if ok(s[0]) else "FAIL")


def ratio_rows(http: list[dict[str, Any]], num: str, den: str) -> tuple[list[float], list[float]]:
    rps, p99 = [], []
    for rep in http:
        a, b = rep.get(num, {}), rep.get(den, {})
        if a.get("rps") and b.get("rps"):
            rps.append(a["rps"] / b["rps"])
        if a.get("p99_ms") and b.get("p99_ms"):
            p99.append(a["p99_ms"] / b["p99_ms"])
    return rps, p99


def report(
    a: argparse.Namespace,
    http: list[dict[str, Any]],
    queue: list[dict[str, Any]],
    costs: list[dict[str, Any]],
    rss: dict[str, Any],
) -> str:
    out = [
        "| workload | afterward | reference | ratio or value | target | result |",
        "|---|---|---|---|---|---|",
    ]

    def hv(label: str, key: str) -> tuple[float, float, float, int] | None:
        return stat([r.get(label, {}).get(key) for r in http])

    http_pairs = [
        (
            "endpoint + async no-op task (drop-in import)",
            "aw_async",
            "fastapi_async",
            0.85,
            "FastAPI BackgroundTasks async",
        ),
        (
            "endpoint + async no-op task (lifespan)",
            "aw_async_lifespan",
            "fastapi_async",
            0.85,
            "FastAPI BackgroundTasks async",
        ),
        (
            "endpoint + SYNC no-op task (drop-in import)",
            "aw_sync",
            "plain",
            0.80,
            "endpoint with no task",
        ),
        (
            "endpoint + SYNC no-op task (lifespan)",
            "aw_sync_lifespan",
            "plain",
            0.80,
            "endpoint with no task",
        ),
    ]

    def row(*cells: object) -> None:
        out.append("| " + " | ".join(str(c) for c in cells) + " |")

    if http:
        for title, num, den, target, ref in http_pairs:
            rps, p99 = ratio_rows(http, num, den)
            rs, ps = stat(rps), stat(p99)
            ok_rps = verdict(rs, lambda v, t=target: v >= t)
            row(f"{title}: req/s", fmt(hv(num, "rps")), f"{ref}: {fmt(hv(den, 'rps'))}")
            out[-1] += f" {fmt(rs, 2, '×')} | ≥ {target}× | {ok_rps} |"
            ok_p99 = verdict(ps, lambda v: v <= 1.5)
            row(f"{title}: p99 ms", fmt(hv(num, "p99_ms"), 1), fmt(hv(den, "p99_ms"), 1))
            out[-1] += f" {fmt(ps, 2, '×')} | ≤ 1.5× | {ok_p99} |"
        # Rows without a target. The ceiling of any drop-in: FastAPI hands an endpoint a class
        # of ours only through Depends, so the last two put one plain dependency, and nothing
        # else, on the references.
        for title, num, den in [
            ("(for reference) FastAPI BackgroundTasks SYNC no-op vs no task", "fastapi_sync",
             "plain"),
            ("(ceiling of a drop-in) async ×, FastAPI's own tasks through one plain dependency",
             "fastapi_async_dep", "fastapi_async"),
            ("(ceiling of a drop-in) SYNC ×, an endpoint with one plain dependency and no task",
             "plain_dep", "plain"),
        ]:  # fmt: skip
            rps, p99 = ratio_rows(http, num, den)
            row(
                title,
                fmt(hv(num, "rps")) + " req/s",
                fmt(hv(den, "rps")) + " req/s",
                f"{fmt(stat(rps), 2, '×')} rps, {fmt(stat(p99), 2, '×')} p99",
                "—",
                "—",
            )
    if queue:

        def qv(name: str, key: str) -> tuple[float, float, float, int] | None:
            return stat([r.get(name, {}).get(key) for r in queue])

        rows = [
            (f"drain {a.n_drain:,} queued no-ops, 2 worker processes", "drain", 15000),
            (f"{a.n_sleep:,} tasks sleeping 10 ms, 2 processes × 32", "sleep", 5800),
            (f"enqueue one at a time (`Afterward.enqueue`, N={a.n_seq:,})", "enqueue_seq", 10000),
            (
                f"enqueue in bulk (`enqueue_many`, 1,000 a call, N={a.n_bulk:,})",
                "enqueue_bulk",
                100000,
            ),
        ]
        for title, name, target in rows:
            s = qv(name, "rate")
            done = [r[name]["done"] for r in queue if "done" in r.get(name, {})]
            extra = f" (worst done {min(done):,})" if done else ""
            ok = verdict(s, lambda v, t=target: v >= t)
            value = f"{fmt(s)}/s{extra}" if s is not None else "n/a"
            row(title, value, "—", "—", f"≥ {target:,}/s", ok)
        s50, s99 = qv("latency", "p50_ms"), qv("latency", "p99_ms")
        title = f"enqueue-to-start latency p50 ({a.lat_n} paced, idle workers)"
        row(title, fmt(s50, 2, " ms"), "—", "—", "≤ 1 ms", verdict(s50, lambda v: v <= 1))
        title = "enqueue-to-start latency p99"
        row(title, fmt(s99, 2, " ms"), "—", "—", "≤ 3 ms", verdict(s99, lambda v: v <= 3))
        s = qv("drain_async", "rate")
        title = f"(info) drain {a.n_drain:,} queued *async* no-ops (no thread-pool hop)"
        row(title, f"{fmt(s)}/s" if s is not None else "n/a", "—", "—", "—", "—")
        s = qv("enqueue_busy", "rate")
        busy = [r["enqueue_busy"] for r in queue if "rate" in r.get("enqueue_busy", {})]
        note = "" if all(b.get("draining") for b in busy) else " (a drain ended first)"
        title = (
            f"(info) enqueue one at a time (N={a.n_busy:,}) while 2 workers drain "
            f"{a.n_busy_fill:,} queued no-ops"
        )
        row(title, f"{fmt(s)}/s{note}" if s is not None else "n/a", "—", "—", "—", "—")
        st = qv("drain", "startup_s")
        row("(info) worker start-up to first task", fmt(st, 2, " s"), "—", "—", "—", "—")
        for name in ("drain", "sleep"):
            apart, each = qv(name, "stagger_ms"), qv(name, "rate_each_from_own_start")
            title = (
                f"(info) {name}: how far apart the 2 workers' first tasks started; the rate "
                "with each worker counted from its own first task"
            )
            row(title, fmt(apart, 1, " ms"), "—", f"{fmt(each)}/s", "—", "—")
    good = [c for c in costs if "error" not in c]
    if good:
        n = good[0]["fill"]["n"]
        fill = fmt(stat([c["fill"]["rate"] for c in good]))
        title = f"**cost as work grows** ({n:,} jobs inserted by `enqueue_many` at {fill}/s)"
        row(title, "empty table", f"{n:,} available", f"{n:,} finished", "", "")
        for key, label in [
            ("enqueue_p50_ms", "enqueue p50"),
            ("enqueue_p99_ms", "enqueue p99"),
            ("claim_p50_ms", "claim p50 (limit 1)"),
            ("claim_p99_ms", "claim p99 (limit 1)"),
        ]:
            # Each ratio is taken within one run (the same file, seconds apart), then the
            # median of the runs' ratios is shown, as for the HTTP rows.
            cells, ratios = [], []
            for table in ("available", "finished"):
                r = stat([c[table][key] / c["empty"][key] for c in good])
                ratios.append(r)
                cells.append(
                    f"{fmt(stat([c[table][key] for c in good]), 3, ' ms')}, ratio {fmt(r, 2, '×')}"
                )
            # The performance issue's bar: p99 within 1.5x of the empty table; p50 shown only.
            if key.endswith("p99_ms"):
                ok = "PASS" if all(r is not None and r[0] <= 1.5 for r in ratios) else "FAIL"
                target = "≤ 1.5× empty"
            else:
                ok, target = "—", "—"
            row(label, fmt(stat([c["empty"][key] for c in good]), 3, " ms"), *cells, target, ok)
    for c in costs:
        if "error" in c:
            row("cost as work grows (a failed run)", f"error: {c['error'][:200]}", "", "", "", "")
    if rss and "error" not in rss:
        a_, m_, l_ = rss["rss_first_kib"] or 0, rss["rss_max_kib"] or 0, rss["rss_last_kib"] or 0
        flat = bool(a_ and m_ and m_ <= a_ * 1.25 + 10240)
        capped = " CAPPED" if rss["capped"] else ""
        title = (
            f"worker RSS during a long drain ({rss['done']:,}/{rss['n']:,} done{capped}, "
            f"{rss['rate']:,.0f}/s), both workers summed"
        )
        files = rss.get("rss_file_max_kib") or 0
        row(title, f"at 10%: {a_ / 1024:.1f} MiB", f"max {m_ / 1024:.1f} MiB")
        out[-1] += (
            f" last {l_ / 1024:.1f} MiB (mapped files at most {files / 1024:.1f} MiB) | flat | "
            f"{'PASS' if flat else 'FAIL'} |"
        )
    elif rss:
        row("worker RSS during a long drain", f"error: {rss['error'][:200]}", "", "", "", "")
    return "\n".join(out)


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    vers = subprocess.run(
        [
            PY,
            "-c",
            "import importlib.metadata as m;print(', '.join(f'{p} {m.version(p)}' for p in "
            "['afterward','fastapi','starlette','uvicorn','uvloop','httptools']))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    # Without wrk a run of the queue, cost and rss phases is still asked for (see main).
    wv = (
        subprocess.run(
            ["wrk", "-v"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()
        if shutil.which("wrk")
        else ["wrk not installed"]
    )
    sqlite_v = subprocess.run(
        [PY, "-c", "import sqlite3;print(sqlite3.sqlite_version)"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    return (
        f"- nproc {os.cpu_count()}, CPU: {cpu}; kernel {platform.release()}; "
        f"Python {platform.python_version()}; SQLite {sqlite_v}\n"
        f"- {vers}\n- {wv[0] if wv else 'wrk ?'}"
    )


def source_info(src: str | None) -> str:
    """Which afterward code ran: the snapshot given, or the checkout at its commit (+ dirty)."""
    if src:
        stamp = Path(src).parent / "COMMIT"  # written next to src/ when the snapshot was made
        return f"snapshot {src}" + (
            f" of commit {stamp.read_text().strip()}" if stamp.exists() else ""
        )

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        return r.stdout.strip()

    dirty = git("status", "--short", "src")
    return f"checkout at {git('rev-parse', '--short', 'HEAD')}" + (
        f" with uncommitted changes in {len(dirty.splitlines())} src file(s)" if dirty else ""
    )


def precompile() -> None:
    """Byte-compile afterward and the workloads once, as an installed package comes.

    Where ``PYTHONDONTWRITEBYTECODE`` is set (it is on these VMs) and afterward runs from a
    source tree, every worker and server process compiled it anew, 13-46 ms more to import
    (worker start-up to first task: median 0.201 s against 0.182 s compiled, 8 sleep phases
    each; how far apart the two workers started did not change measurably).
    """
    where = SRC or [
        subprocess.run(
            [PY, "-c", "import afterward, os; print(os.path.dirname(afterward.__file__))"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    ]
    subprocess.run(
        [PY, "-m", "compileall", "-q", *[w for w in where if w], str(WORK)],
        capture_output=True,
        timeout=300,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs and smaller N (a smoke run)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="http,queue,cost,rss")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument(
        "--src",
        default=None,
        help="run this afterward source tree (its src/ dir) instead of the installed one, "
        "e.g. a snapshot: git archive HEAD src | tar -x -C /tmp/snap",
    )
    a = ap.parse_args()
    if a.src:
        SRC.append(os.path.abspath(a.src))
    only = set(a.only.split(","))
    if "http" in only and shutil.which("wrk") is None:
        print(
            "wrk is not installed: run `apt-get install -y wrk` (or pass --only queue,cost,rss)",
            file=sys.stderr,
        )
        return 2
    precompile()
    q = a.quick
    a.warmup, a.duration = (1, 3) if q else (2, 10)
    a.n_seq, a.n_bulk, a.n_drain, a.n_sleep, a.lat_n = (
        (5000, 20000, 20000, 2000, 100) if q else (20000, 100000, 20000, 2000, 200)
    )
    a.n_busy_fill, a.n_busy = (100_000, 500) if q else (300_000, 2000)
    a.cap = 45.0
    n_cost = 200_000 if q else 1_000_000
    n_rss = 200_000 if q else 1_000_000
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    http: list[dict[str, Any]] = []
    queue: list[dict[str, Any]] = []
    costs: list[dict[str, Any]] = []
    rss: dict[str, Any] = {}
    try:
        for rep in range(a.reps):
            if "http" in only:
                http.append(http_rep(a, rep))
            if "queue" in only:
                queue.append(queue_rep(a, rep))
        # Repeated like every other row: one run's p99 of 2,000 calls of about 0.05 ms is
        # moved by a single stall of the VM.
        if "cost" in only:
            for rep in range(a.reps):
                cost = produce(
                    new_db(f"cost{rep}"),
                    "cost",
                    str(n_cost),
                    "--samples",
                    "1000" if q else "2000",
                    timeout=1800,
                )
                costs.append(cost)
                log(f"rep {rep + 1} cost:", json.dumps(cost))
        if "rss" in only:
            rss = rss_phase(n_rss, 150.0 if q else 420.0)
            log("rss:", json.dumps({k: v for k, v in rss.items() if k != "samples"}))
    finally:
        if os.path.exists(PROBE):
            os.unlink(PROBE)
        if a.json:
            Path(a.json).write_text(
                json.dumps({"http": http, "queue": queue, "cost": costs, "rss": rss}, indent=1)
            )
        shutil.rmtree(TMP, ignore_errors=True)
    cmd = " ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]])
    print(f"## afterward performance targets ({'quick' if q else 'full'} run)\n")
    print(f"- Date: {started}; command: `{cmd}`; {a.reps} repeat(s), median (min–max, n)")
    print(machine())
    print(f"- afterward source: {source_info(a.src)}")
    if LOADS:
        print(
            f"- 1-min load average before each phase: median {statistics.median(LOADS):.1f}, "
            f"max {max(LOADS):.1f} (2 vCPUs; above ~2 means other processes competed)"
        )
    print(
        "- HTTP: uvicorn 1 worker (uvloop, httptools, no access log), wrk -t1 -c32, "
        f"{a.warmup} s warm-up + {a.duration} s, configurations rotated per repeat; "
        "ratios taken within each repeat\n"
    )
    print(report(a, http, queue, costs, rss))
    if http:
        print("\nJobs left in each HTTP run's SQLite file (state: count), last repeat:")
        for label in HTTP_CONFIGS:
            j = http[-1].get(label[0], {})
            if "jobs" in j:
                print(
                    f"- {label[0]}: {j['jobs']} vs {j.get('requests')} measured requests "
                    f"(+ warm-up); non-2xx {j.get('non2xx')}, "
                    f"socket errors '{j.get('socket_errors')}'"
                )
    if rss.get("samples"):
        print(
            "\nRSS samples during the long drain "
            "(s since start, tasks done, RSS of both workers MiB): "
            + ", ".join(f"{t:.0f}s/{d:,}/{r / 1024:.0f}" for t, d, r in rss["samples"])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
