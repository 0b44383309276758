#!/usr/bin/env python3
"""Start-up wall time of `voipprobe version` and `voipprobe analyze` (bundled sample).

    python3 bench/startup.py            # median of 7 runs each
    python3 bench/startup.py --runs 15 --json

Each run is a fresh child process (`python -m agent.cli ...`, the interpreter running
this script), so the figure includes interpreter start, imports and the work itself;
peak RSS is the child's (os.wait4). One unmeasured run first warms the page cache and
writes the bytecode. Issue 11's target: both under 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# An installed package has its bytecode compiled (pip does it); a child told not to
# write .pyc files would recompile every module on every run and measure that instead.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

COMMANDS = {
    "version": ["version"],
    "analyze-sample": ["analyze", "--no-progress"],
}


def run_once(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=CHILD_ENV)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"voipprobe {' '.join(argv)} exited {proc.returncode}")
    return wall, usage.ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per command (median)")
    ap.add_argument("--json", action="store_true", help="also print JSON")
    args = ap.parse_args()
    res = {}
    print(f"{'command':<16} {'median wall s':>13} {'min s':>7} {'peak RSS MB':>12}")
    for name, argv in COMMANDS.items():
        run_once(argv)  # warm: the page cache, and .pyc files written once
        runs = [run_once(argv) for _ in range(args.runs)]
        walls = [w for w, _ in runs]
        res[name] = {"median_wall_s": round(statistics.median(walls), 4),
                     "min_wall_s": round(min(walls), 4),
                     "peak_rss_mb": round(max(r for _, r in runs), 1), "runs": args.runs}
        r = res[name]
        print(f"{name:<16} {r['median_wall_s']:>13.3f} {r['min_wall_s']:>7.3f} "
              f"{r['peak_rss_mb']:>12.1f}")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
