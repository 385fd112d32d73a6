"""Run one queue phase of ``run.py`` for several afterward source trees, in turns.

    .venv/bin/python bench/ab.py --src /tmp/a/src --src /tmp/b/src --phase sleep --turns 10

A change worth a few per cent drowns in these VMs' noise when each tree gets its own full
run an hour apart; taken in turns, each tree meets the same noise. Every turn runs each tree
once (the order reversed every other turn), exactly as ``run.py`` runs the phase: a fresh
SQLite file filled first, then two worker processes. Prints every phase, then per tree the
median (min-max) of the judged rate and of the rate with each worker counted from its own
first task, which leaves out how far apart the two processes started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import run

#: phase -> (jobs, task function), as run.py sizes them
PHASES = {"sleep": (2_000, "sleeper"), "drain": (20_000, "noop"), "drain_async": (20_000, "anoop")}
CAP = 45.0  # seconds a phase may take, as in run.py


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", action="append", required=True, help="an afterward src/ tree")
    ap.add_argument("--phase", choices=sorted(PHASES), default="sleep")
    ap.add_argument("--turns", type=int, default=10)
    a = ap.parse_args()
    trees = [os.path.abspath(t) for t in a.src]
    n, fn = PHASES[a.phase]
    rates: dict[str, list[float]] = {t: [] for t in trees}
    own: dict[str, list[float]] = {t: [] for t in trees}
    try:
        run.SRC[:] = trees
        run.precompile()  # every tree and the workloads, in one compileall
        for turn in range(a.turns):
            for t in trees if turn % 2 == 0 else trees[::-1]:
                run.SRC[:] = [t]
                r = run.drain_phase(n, fn, CAP, f"ab{turn}")
                if "error" in r:
                    print(t, "error:", r["error"], file=sys.stderr)
                    continue
                rates[t].append(r["rate"])
                own[t].append(r["rate_each_from_own_start"])
                print(
                    f"turn {turn + 1} {t}: {r['rate']:,.0f}/s, each from its own start "
                    f"{r['rate_each_from_own_start']:,.0f}/s, workers {r['stagger_ms']:.1f} ms "
                    "apart",
                    flush=True,
                )
    finally:
        shutil.rmtree(run.TMP, ignore_errors=True)
        if os.path.exists(run.PROBE):
            os.unlink(run.PROBE)
    print(f"\n| tree | {a.phase} rate, tasks/s | each worker from its own first task |")
    print("|---|---|---|")
    for t in trees:
        if rates[t]:
            print(f"| {t} | {run.fmt(run.stat(rates[t]))} | {run.fmt(run.stat(own[t]))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
