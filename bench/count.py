"""Instructions per job and per request, counted by valgrind: an A/B of source trees that
the machine's noise cannot blur.

    .venv/bin/python bench/count.py --src /tmp/a/src --src /tmp/b/src [--cases worker,asgi_aw]

Wall-clock runs on these shared 2-vCPU VMs move by 5-20 % between repeats; callgrind counts
user-space instructions and repeats within about 1 %. Each case runs twice under
``valgrind --tool=callgrind`` with a small and a large N; the difference divided by the
difference in N is the cost of one more job or request, with start-up and imports taken out.
It counts instructions, not time (cache misses and system calls are not in it), so confirm a
change that matters with ``run.py``. Needs valgrind (``apt-get install -y valgrind``).

Cases:
  worker      an in-process worker (uvloop, 32 at a time) drains 10 ms sleepers from SQLite
  bulk        ``enqueue_many`` of no-op jobs in calls of 1,000 (run.py's bulk phase)
  asgi_plain  GET /bg_async: FastAPI's own BackgroundTasks with an async no-op, via ASGI
  asgi_aw     GET /aw_async: the afterward drop-in with an async no-op, via ASGI
  asgi_aw_sync  GET /aw_sync: the drop-in with a sync no-op (afterward's thread pool)
  asgi_dep    GET /dep_async: asgi_plain with its tasks received through one plain dependency
  asgi_none   GET /plain: no task (the sync rows' reference)
  asgi_none_dep  GET /dep_plain: asgi_none with one plain dependency
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "workloads"
PY = str(ROOT / ".venv" / "bin" / "python")

#: case -> (script, extra arguments, small N, large N, unit)
CASES: dict[str, tuple[str, list[str], int, int, str]] = {
    "worker": ("count_worker.py", [], 320, 960, "job"),
    "bulk": ("count_bulk.py", [], 5_000, 15_000, "job"),
    "asgi_plain": ("count_asgi.py", ["/bg_async"], 800, 2400, "request"),
    "asgi_aw": ("count_asgi.py", ["/aw_async"], 800, 2400, "request"),
    "asgi_aw_sync": ("count_asgi.py", ["/aw_sync"], 800, 2400, "request"),
    "asgi_dep": ("count_asgi.py", ["/dep_async"], 800, 2400, "request"),
    "asgi_none": ("count_asgi.py", ["/plain"], 800, 2400, "request"),
    "asgi_none_dep": ("count_asgi.py", ["/dep_plain"], 800, 2400, "request"),
}


def instructions(src: str, script: str, args: list[str], n: int) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(WORK)]), PYTHONHASHSEED="0")
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        PY,
        str(WORK / script),
        str(n),
        *args,
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0 or "ok" not in r.stdout:
        raise SystemExit(f"{script} {n} failed under valgrind:\n{r.stderr[-2000:]}")
    found = re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{r.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_unit(src: str, case: str) -> float:
    script, args, small, large, _ = CASES[case]
    a = instructions(src, script, args, small)
    b = instructions(src, script, args, large)
    return (b - a) / (large - small)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", action="append", required=True, help="a source tree (repeatable)")
    ap.add_argument("--cases", default="worker,asgi_plain,asgi_dep,asgi_aw", help=",".join(CASES))
    a = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install -y valgrind")
    cases = a.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    print("| case | " + " | ".join(a.src) + " |")
    print("|---|" + "---|" * len(a.src))
    for case in cases:
        counts = []
        for src in a.src:
            counts.append(per_unit(src, case))
            print(f"{case} {src}: {counts[-1]:,.0f}", file=sys.stderr, flush=True)
        cells = [
            f"{c:,.0f}" + (f" ({c / counts[0]:.3f}×)" if i else "") for i, c in enumerate(counts)
        ]
        print(f"| {case}: instructions per {CASES[case][4]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
