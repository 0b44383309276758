"""`voipprobe analyze` as a user runs it: exit codes, messages, outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from corpus_oracle import corpus_dir


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_not_a_capture_exits_2_with_a_message(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello, this is not a pcap\n" * 10)
    proc = run("analyze", str(f))
    assert proc.returncode == 2
    assert proc.stderr == (f"voipprobe: error: {f}: file is not a pcap or pcapng capture "
                           "(starts with 68 65 6c 6c)\n")  # the name once
    assert proc.stdout == ""  # no "0 packets, 0 calls" after the error


def test_missing_file_exits_2(tmp_path: Path) -> None:
    proc = run("analyze", str(tmp_path / "nope.pcap"))
    assert proc.returncode == 2
    assert proc.stderr == f"voipprobe: error: {tmp_path}/nope.pcap: no such file or directory\n"
    assert proc.stdout == ""
    streams = run("analyze", "--streams", str(tmp_path / "nope.pcap"))
    assert streams.returncode == 2 and streams.stdout == ""


def test_one_bad_file_of_several_keeps_the_summary(tmp_path: Path) -> None:
    from agent.cli import bundled_sample

    proc = run("analyze", str(tmp_path / "nope.pcap"), str(bundled_sample()))
    assert proc.returncode == 2
    assert "1,994 packets, 1 calls" in proc.stdout


def test_truncated_capture_warns_and_keeps_the_packets_before_the_cut(tmp_path: Path) -> None:
    src = corpus_dir() / "pcaps" / "rtpproxy_G723_1.a.pcap"
    data = src.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) * 2 // 3 + 7])  # mid-record
    full_out = run("analyze", "--json", "--streams", str(src)).stdout
    full = [o for o in map(json.loads, full_out.splitlines()) if o["kind"] == "stream"]
    proc = run("analyze", "--json", "--streams", str(cut))
    assert proc.returncode == 0
    assert "warning" in proc.stderr and "trunc" in proc.stderr.lower()
    part = [o for o in map(json.loads, proc.stdout.splitlines()) if o["kind"] == "stream"]
    assert len(full) == len(part) == 1
    # about two thirds of the packets, all of them before the cut and none lost
    assert 0.6 * full[0]["packets"] < part[0]["packets"] < 0.7 * full[0]["packets"]
    assert part[0]["lost"] == 0 and part[0]["first_ts"] == full[0]["first_ts"]


def test_table_output_names_the_streams() -> None:
    src = corpus_dir() / "pcaps" / "rtpproxy_dups.a.pcap"
    proc = run("analyze", "--streams", str(src))
    assert proc.returncode == 0, proc.stderr
    assert "123.87.99.93:30716" in proc.stdout and "97.93.61.248:60710" in proc.stdout
    assert "0xAE9DD7AF" in proc.stdout
    assert "1 RTP streams" in proc.stdout


def test_json_contract_keys() -> None:
    src = corpus_dir() / "pcaps" / "rtpproxy_dups.a.pcap"
    proc = run("analyze", "--json", "--streams", str(src))
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    streams = [o for o in lines if o["kind"] == "stream"]
    assert len(streams) == 1
    s = streams[0]
    for key in ("src", "dst", "ssrc", "payload_types", "codec", "clock_rate", "packets",
                "expected", "lost", "duplicates", "reordered", "loss_ratio", "jitter_ms",
                "jitter_mean_ms", "jitter_max_ms", "max_delta_ms", "dscp", "vlan",
                "first_ts", "last_ts"):
        assert key in s, key
    assert s["ssrc"] == 0xAE9DD7AF and s["payload_types"] == [18] and s["codec"] == "G729"
    assert s["clock_rate"] == 8000
    # tshark says -1 lost here: one duplicate, nothing lost.
    assert (s["packets"], s["duplicates"], s["lost"]) == (384, 1, 0)
    assert s["expected"] == 383 and s["dscp"] == {"0": 384}
    summary = lines[-1]
    assert summary["kind"] == "summary" and summary["packets"] == 384 and summary["streams"] == 1


def test_bundled_sample_runs_without_arguments() -> None:
    proc = run("analyze", "--json", "--streams")
    assert proc.returncode == 0, proc.stderr
    objs = [json.loads(x) for x in proc.stdout.splitlines()]
    streams = [o for o in objs if o["kind"] == "stream"]
    (call,) = [o for o in objs if o["kind"] == "call"]
    assert len(streams) == 2 and all(s["codec"] == "PCMA" for s in streams)
    assert (call["call_id"], call["final_status"], call["end_reason"]) == (
        "5f1c7e2a9b@198.18.7.10", 200, "normal")
    assert abs(call["setup_delay_s"] - 0.180) < 1e-6
    verdicts = {d["direction"]: d["sla"]["verdict"] for d in call["directions"]}
    assert verdicts == {"a_to_b": "met", "b_to_a": "violated"}


def test_bundled_sample_table() -> None:
    proc = run("analyze")
    assert proc.returncode == 0, proc.stderr
    assert "5f1c7e2a9b@198.18.7.10" in proc.stdout and "1 calls" in proc.stdout
    assert ("violated: loss_ratio: 0.015 (max 0.01), media_dscp_compliance: 0.91 (min 0.95)"
            in proc.stdout)
