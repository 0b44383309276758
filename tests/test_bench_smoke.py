"""The benchmark scripts work end to end on a tiny workload (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


SIP_CALLS = 40
SIP_STATUSES = {200, 486, 503, 487}


def _gen_sip(tmp_path: Path, calls: int, rate: float) -> tuple[Path, dict[str, Any]]:
    cap, truth_path = tmp_path / "sip.pcap", tmp_path / "sip.json"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "gen_workload.py"), "--sip", "--calls", str(calls),
         "--rate", str(rate), "--out", str(cap), "--truth", str(truth_path)],
        check=True, cwd=REPO,
    )  # fmt: skip
    truth: dict[str, Any] = json.loads(truth_path.read_text())
    return cap, truth


def _analyze_calls(cap: Path) -> dict[str, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", str(cap)],
        capture_output=True, text=True, check=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    objs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    calls = [o for o in objs if o["kind"] == "call"]
    assert all(o["call_id"] is not None for o in calls), "a stream was left unsignalled"
    by_id = {o["call_id"]: o for o in calls}
    assert len(by_id) == len(calls), "a Call-ID was reported twice"
    return by_id


def _check_calls(got: dict[str, dict[str, Any]], truth: dict[str, Any]) -> None:
    """Every generated call, once, with its status, setup delay and media."""
    assert set(got) == {t["call_id"] for t in truth["call_list"]}
    for t in truth["call_list"]:
        c = got[t["call_id"]]
        assert c["final_status"] == t["final_status"], t["call_id"]
        assert abs(c["setup_delay_s"] - t["setup_delay_s"]) <= 0.001, t["call_id"]
        assert c["from"] == t["from"] and c["to"] == t["to"]
        if t["final_status"] == 200:
            assert c["end_reason"] == "normal"
            assert abs(c["answer_delay_s"] - t["answer_delay_s"]) <= 0.001
            assert abs(c["duration_s"] - t["duration_s"]) <= 0.001
            assert c["codec"] == "PCMA"
            ends = sorted((d["stream"]["src"], d["stream"]["dst"]) for d in c["directions"])
            caller, callee = t["media"]["caller"], t["media"]["callee"]
            assert ends == sorted([(caller, callee), (callee, caller)]), t["call_id"]
            for d in c["directions"]:
                assert d["stream"]["packets"] == 25 and d["stream"]["lost"] == 0
                assert d["quality"]["mos_cq"] > 4.0
        else:
            assert c["end_reason"] == ("cancelled" if t["final_status"] == 487 else "failed")
            assert c["directions"] == [] and c["answer_ts"] is None


def test_sip_workload_calls_and_run_bench(tmp_path: Path) -> None:
    cap, truth = _gen_sip(tmp_path, SIP_CALLS, 200.0)
    assert truth["calls"] == SIP_CALLS == len(truth["call_list"])
    assert {t["final_status"] for t in truth["call_list"]} == SIP_STATUSES
    assert truth["statuses"] == {"200": 37, "486": 1, "503": 1, "487": 1}
    assert len({t["call_id"] for t in truth["call_list"]}) == SIP_CALLS
    assert cap.stat().st_size > 24 + truth["packets"] * (16 + 42)
    assert truth["sip_packets"] == 37 * 7 + 2 * 4 + 1 * 7  # answered / rejected / cancelled
    assert truth["rtp_packets"] == 37 * 2 * 25
    assert truth["packets"] == truth["sip_packets"] + truth["rtp_packets"]
    _check_calls(_analyze_calls(cap), truth)

    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run_bench.py"), "--workload", "sip", "--repeat",
         "1", "--truth", str(tmp_path / "sip.json"), "--json", str(cap)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any("calls/s" in line for line in lines), proc.stdout
    result = json.loads(lines[-1])
    ours = next(r for r in result["results"] if r["tool"] == "voipprobe")
    assert ours["workload"] == "sip" and ours["packets"] == truth["packets"]
    assert ours["calls"] == ours["calls_expected"] == ours["calls_matching"] == SIP_CALLS
    assert ours["streams"] == 2 * 37 and ours["rtp_packets"] == truth["rtp_packets"]
    assert ours["calls_per_s"] > 0
    tshark = [r for r in result["results"] if r["tool"] == "tshark"]
    if tshark:  # the reference counts one INVITE per call, none resent
        assert tshark[0]["calls"] == SIP_CALLS and tshark[0]["invites_resent"] == 0


def test_sip_workload_calls_taken_before_the_end_keep_their_streams(tmp_path: Path) -> None:
    """2000 calls at 200/s: 106700 packets over 12.6 s, two 65536-packet batches, so the
    engine sweeps once (at 12.6 s) and takes the calls ended 5 s before, as on any long
    capture; only calls still lingering at the end of input get their streams today."""
    cap, truth = _gen_sip(tmp_path, 2000, 200.0)
    assert truth["packets"] > 65536
    _check_calls(_analyze_calls(cap), truth)
