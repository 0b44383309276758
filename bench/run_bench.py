#!/usr/bin/env python3
"""Throughput of `voipprobe analyze` against tshark on the same capture.

    python3 bench/run_bench.py [--packets 1000000] [--repeat 3] [--json] [FILE]

Without FILE, a workload of ``--packets`` packets (``--calls`` G.711 calls) is
generated into bench/out/ by gen_workload.py, reused if already there. Each
tool runs ``--repeat`` times as a child process; wall time is taken around the
child, CPU (user+sys) and peak RSS come from that child's own rusage via
os.wait4, so nothing else on the machine -- and not this script -- is
counted. Figures are medians over the repeats. The output of the last run of
each tool is kept and checked (streams found, RTP packets counted) so that a
fast-but-wrong run is visible in the same table.

tshark runs as ``tshark -r FILE -q -o rtp.heuristic_rtp:TRUE -z rtp,streams``:
the workload has no SIP, so without heuristics tshark would find no RTP and
do far less work than a fair comparison needs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))  # synth.py holds the tshark table parser
sys.path.insert(0, str(HERE))

import gen_workload  # noqa: E402
from synth import parse_tshark_rtp_streams  # noqa: E402


@dataclass(frozen=True, slots=True)
class Run:
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    returncode: int


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool: str
    command: list[str]
    packets: int
    runs: list[Run]
    wall_s: float  # median
    packets_per_s: float
    cpu_s_per_mpkt: float
    max_rss_mb: float  # median of the runs' peaks
    streams: int  # RTP streams the tool reported (last run)
    rtp_packets: int  # sum of those streams' packet counts


def run_once(cmd: list[str], stdout_path: Path) -> Run:
    """Run ``cmd`` with stdout to a file; rusage of exactly that child."""
    with open(stdout_path, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, cwd=REPO)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait() again
    # ru_maxrss is in KiB on Linux.
    return Run(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, proc.returncode)


def count_packets(path: Path) -> int:
    """Records in a pcap or pcapng file (gzip allowed), independent of both tools.

    Streams the file: this process must stay small, because a child forked from it
    starts with its resident size, and Linux reports the larger of that and the
    child's own peak as the child's ru_maxrss.
    """
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        magic = f.read(4)
        if magic == b"\x0a\x0d\x0d\x0a":
            return _count_pcapng(f)
        bo = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        f.seek(24)
        rec = struct.Struct(bo + "IIII")
        n = 0
        while len(hdr := f.read(16)) == 16:
            f.seek(rec.unpack(hdr)[2], 1)
            n += 1
        return n


def _count_pcapng(f: BinaryIO) -> int:
    """Packet blocks of a pcapng stream positioned after the first block type."""
    f.seek(0)
    n, bo = 0, "<"
    while len(hdr := f.read(12)) == 12:
        if hdr[:4] == b"\x0a\x0d\x0d\x0a":  # each section may switch byte order
            bo = "<" if hdr[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        btype, blen = struct.unpack(bo + "II", hdr[:8])
        if blen < 12:
            break
        n += btype in (2, 3, 6)  # packet, simple packet, enhanced packet blocks
        f.seek(blen - 12, 1)
    return n


def summarise(tool: str, cmd: list[str], packets: int, runs: list[Run], out: str) -> ToolResult:
    if tool == "voipprobe":
        objs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        streams = [o for o in objs if o.get("kind") == "stream"]
        n_streams, rtp_pkts = len(streams), sum(int(o["packets"]) for o in streams)
    else:
        rows = parse_tshark_rtp_streams(out)
        n_streams, rtp_pkts = len(rows), sum(r.packets for r in rows)
    wall = statistics.median(r.wall_s for r in runs)
    cpu = statistics.median(r.cpu_s for r in runs)
    return ToolResult(
        tool=tool,
        command=cmd,
        packets=packets,
        runs=runs,
        wall_s=wall,
        packets_per_s=packets / wall if wall > 0 else 0.0,
        cpu_s_per_mpkt=cpu / packets * 1e6 if packets else 0.0,
        max_rss_mb=statistics.median(r.max_rss_mb for r in runs),
        streams=n_streams,
        rtp_packets=rtp_pkts,
    )


def bench_tool(tool: str, cmd: list[str], packets: int, repeat: int) -> ToolResult:
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "out.txt"
        runs = [run_once(cmd, out_path) for _ in range(repeat)]
        out = out_path.read_text(errors="replace")
    return summarise(tool, cmd, packets, runs, out)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    tshark = shutil.which("tshark")
    tshark_version = "not installed"
    if tshark:
        first = subprocess.run([tshark, "--version"], capture_output=True, text=True).stdout
        tshark_version = first.splitlines()[0] if first else "unknown"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tshark": tshark_version,
    }


def table(results: list[ToolResult], mach: dict[str, str], path: Path) -> str:
    lines = [
        f"machine: nproc {mach['nproc']}, {mach['cpu']}, Python {mach['python']}",
        f"tshark: {mach['tshark']}",
        f"file: {path} ({results[0].packets} packets, {path.stat().st_size / 1e6:.1f} MB)",
        "",
        f"{'tool':<10} {'packets':>9} {'wall s':>8} {'packets/s':>11} {'CPU s/Mpkt':>11} "
        f"{'peak RSS MB':>12} {'streams':>8} {'RTP pkts':>9} {'exit':>5}",
    ]
    for r in results:
        codes = ",".join(sorted({str(x.returncode) for x in r.runs}))
        lines.append(
            f"{r.tool:<10} {r.packets:>9} {r.wall_s:>8.3f} {r.packets_per_s:>11.0f} "
            f"{r.cpu_s_per_mpkt:>11.2f} {r.max_rss_mb:>12.1f} {r.streams:>8} "
            f"{r.rtp_packets:>9} {codes:>5}"
        )
    failed = [r.tool for r in results if any(x.returncode != 0 for x in r.runs)]
    if failed:
        lines.append(f"FAILED (non-zero exit): {', '.join(failed)} -- its figures mean nothing")
    elif len(results) == 2 and results[1].packets_per_s > 0:
        ratio = results[0].packets_per_s / results[1].packets_per_s
        lines.append(f"ratio voipprobe/tshark packets/s: {ratio:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", type=Path, help="capture to analyse (default: generate)")
    ap.add_argument("--packets", type=int, default=1_000_000, help="workload size to generate")
    ap.add_argument("--calls", type=int, default=100, help="calls in a generated workload")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool (median reported)")
    ap.add_argument("--no-tshark", action="store_true", help="skip the tshark comparison")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args(argv)

    path: Path = args.file
    if path is None:
        path = HERE / "out" / f"workload-{args.calls}c-{args.packets}.pcap"
        if not path.exists():
            gen_workload.generate(path, calls=args.calls, packets=args.packets)
    packets = count_packets(path)

    results = [
        bench_tool(
            "voipprobe",
            [sys.executable, "-m", "agent.cli", "analyze", "--json", "--streams", str(path)],
            packets,
            args.repeat,
        )
    ]
    tshark = shutil.which("tshark")
    if tshark and not args.no_tshark:
        cmd = [tshark, "-r", str(path), "-q", "-o", "rtp.heuristic_rtp:TRUE", "-z", "rtp,streams"]
        results.append(bench_tool("tshark", cmd, packets, args.repeat))

    mach = machine()
    print(table(results, mach, path))
    if args.json:
        print(
            json.dumps(
                {"machine": mach, "file": str(path), "results": [asdict(r) for r in results]}
            )
        )
    return 0 if all(x.returncode == 0 for r in results for x in r.runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
