#!/usr/bin/env python3
"""µs per packet of the engine on issue 12's crafted floods, against a clean capture's.

    .venv/bin/python bench/flood_tables.py                  # the issue's sizes
    .venv/bin/python bench/flood_tables.py --scale 0.1      # a tenth of each
    .venv/bin/python bench/flood_tables.py --only invites --json

Each scenario is built in memory from tests/floods.py (raw IPv4 packets), fed to a
fresh `Engine` in batches of 4096 (as `analyze` does) and finished; it runs in its own
process so peak RSS (ru_maxrss) is its own. Printed per scenario: packets, µs/packet
of feeding, seconds to finish, the ratios to the clean capture's µs/packet (mostly RTP)
and to clean signalling's (2,000 answered calls, SIP only: what a SIP message costs
with no flood), peak RSS, and the eviction/drop counters that moved. Timings are never
asserted in the suite (tests/test_tables.py counts operations instead).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import floods  # noqa: E402

from agent.capture.batch import Batch, LinkType  # noqa: E402
from agent.engine import Engine  # noqa: E402
from agent.gctune import tune_gc  # noqa: E402
from agent.sip.events import EndReason  # noqa: E402

SCENARIOS = {
    # name: (builder, issue-size argument)
    "clean": (lambda n: floods.active_calls(max(1, n // 1000), media_packets=500), 200_000),
    # clean signalling: answered calls well under the caps (INVITE, 200, ACK), for what
    # a SIP message costs when nothing floods (the SIP floods' own yardstick)
    "clean_sip": (lambda n: floods.active_calls(max(1, n // 3)), 6_000),
    "rtp_flows": (lambda n: floods.rtp_flows(n), 200_000),
    "invites": (lambda n: floods.invite_flood(n), 200_000),
    "big_sdp": (lambda n: floods.big_sdp_reinvites(n, 64, transport="tcp"), 5_000),
    "tcp_headers": (lambda n: floods.endless_headers(n, segments=62), 2_000),
    "finish_calls": (lambda n: floods.active_calls(n), 50_000),
    "finish_loose": (lambda n: floods.loose_streams(n, packets=5), 8_000),
    # every table at its default cap at once: that many answered calls with media up,
    # then twice the candidate cap of RTP-looking flows and twice the dialog cap of
    # scanner INVITEs on top (the bound the README states for the defaults)
    "full_tables": (lambda n: _full_tables(n), 1),
}


def _full_tables(_: int) -> tuple[list[bytes], list[float]]:
    from agent.config import Config
    cfg = Config()
    parts = [floods.active_calls(cfg.calls.max_calls, media_packets=20),
             floods.rtp_flows(2 * cfg.tables.rtp_candidates),
             floods.invite_flood(2 * cfg.tables.sip_dialogs)]
    data: list[bytes] = []
    ts: list[float] = []
    for frames, times in parts:  # one after the other in packet time
        shift = (ts[-1] + 0.001 - times[0]) if ts else 0.0
        data += frames
        ts += [t + shift for t in times]
    return data, ts


def _rss_mb() -> float:
    """The resident set now (Linux: /proc/self/statm), in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / (1024 * 1024)


def run(name: str, scale: float) -> dict[str, Any]:
    make, size = SCENARIOS[name]
    data, ts = make(max(1, int(size * scale)))
    input_mb = _rss_mb()  # the process with the input built, before the engine
    tune_gc()  # as `analyze` and the agent run the engine
    engine = Engine()
    t0 = time.perf_counter()
    for a in range(0, len(data), 4096):
        engine.feed(Batch.from_packets(data[a:a + 4096], ts[a:a + 4096], LinkType.RAW))
    t1 = time.perf_counter()
    events = engine.finish(EndReason.SHUTDOWN)
    t2 = time.perf_counter()
    moved = {k: v for k, v in engine.counters().items() if v and (
        k.endswith("_evicted") or "_over_" in k or k.endswith("parse_errors")
        or k.endswith("_expired") or k.endswith("oversize"))}
    return {"scenario": name, "packets": len(data), "us_per_packet": 1e6 * (t1 - t0) / len(data),
            "finish_s": t2 - t1, "records": sum(type(e).__name__ == "CallEnded" for e in events),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "input_rss_mb": input_mb,
            "counters": moved}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's sizes")
    p.add_argument("--only", action="append", choices=sorted(SCENARIOS))
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    names = ["clean", "clean_sip",
             *[n for n in (args.only or SCENARIOS) if n not in ("clean", "clean_sip")]]
    ctx = multiprocessing.get_context("spawn")  # each scenario's RSS is its own
    results = []
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for name in names:
            results.append(pool.apply(run, (name, args.scale)))
    clean, clean_sip = results[0]["us_per_packet"], results[1]["us_per_packet"]
    for r in results:
        r["vs_clean"] = r["us_per_packet"] / clean
        r["vs_clean_sip"] = r["us_per_packet"] / clean_sip
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['scenario']:13s} {r['packets']:>9,} pkts {r['us_per_packet']:8.1f} µs/pkt "
                  f"({r['vs_clean']:5.1f}x clean, {r['vs_clean_sip']:4.1f}x clean SIP)  "
                  f"finish {r['finish_s']:6.2f} s "
                  f"({r['records']:,} records)  peak RSS {r['peak_rss_mb']:6.0f} MB "
                  f"(input {r['input_rss_mb']:4.0f})  "
                  f"{r['counters']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
