"""The benchmark scripts work end to end on a tiny workload (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CALLS = 5
PACKETS = 2000


def test_gen_workload_and_run_bench(tmp_path: Path) -> None:
    cap, truth_path = tmp_path / "w.pcap", tmp_path / "w.json"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "gen_workload.py"), "--calls", str(CALLS),
         "--packets", str(PACKETS), "--out", str(cap), "--truth", str(truth_path)],
        check=True, cwd=REPO,
    )  # fmt: skip
    truth = json.loads(truth_path.read_text())
    assert truth["packets"] == PACKETS
    assert len(truth["streams"]) == 2 * CALLS
    assert cap.stat().st_size == 24 + PACKETS * (16 + 214)

    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run_bench.py"), "--repeat", "1", "--json",
         str(cap)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert any("packets/s" in line for line in lines), proc.stdout
    result = json.loads(lines[-1])
    ours = next(r for r in result["results"] if r["tool"] == "voipprobe")
    assert ours["packets"] == PACKETS
    assert ours["runs"][0]["returncode"] == 0, proc.stdout
    assert ours["streams"] == 2 * CALLS
    assert ours["rtp_packets"] == PACKETS
    assert ours["packets_per_s"] > 0
    tshark = [r for r in result["results"] if r["tool"] == "tshark"]
    if tshark:  # the same file, read by the reference, must agree on the basics
        assert tshark[0]["streams"] == 2 * CALLS
        assert tshark[0]["rtp_packets"] == PACKETS
    assert proc.returncode == 0
