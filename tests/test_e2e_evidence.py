"""End to end: evidence pcaps of the live agent (issue 10 item 5) on the sipp lab.

The agent runs in the gateway R of tests/netlab.py (as tests/test_e2e_agent.py runs it)
with ``evidence: {enabled: true}`` and the hash privacy mode. One clean call leaves no
evidence file and its record names none; then nftables in R's forward chain drops 10 %
of the A->B media, and that call (SLA violated: loss) leaves one file in
``state_dir/evidence``, named by the call's pseudonym as the call log shows it. The file
is read by ``tshark -r``: its SIP messages carry the call's Call-ID (whose keyed hash is
the record's ``call_id``), the RTP packets it holds are, by source, destination, SSRC
and sequence number, exactly those tcpdump captured on the same interface, and no RTP
record holds a byte past its RTP header (``frame.cap_len`` against the header length
tshark decodes; the payload length as sent stays in ``frame.len``).

Skipped (with the reason) when not root or a tool is missing; fails instead with ``CI``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import netlab
import pytest
from test_e2e_agent import (
    _http,
    _log_tail,
    _records,
    _samples,
    _start_agent,
    _total,
    _wait_for,
)

from agent.export.evidence import file_stem
from agent.export.privacy import Pseudonymiser, load_or_create_key

pytestmark = [pytest.mark.slow]

IFACE = "rb"
RTP_FIXED = 12


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[netlab.Lab]:
    netlab.require_lab()
    with netlab.Lab("ev", tmp_path / "lab") as built:
        yield built


def _tshark(path: Path, *args: str) -> list[list[str]]:
    proc = subprocess.run(["tshark", "-r", str(path), "-o", "rtp.heuristic_rtp:TRUE",
                           "-T", "fields", "-E", "separator=/t", *args],
                          capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\t") for line in proc.stdout.splitlines() if line.strip()]


RTP_FIELDS = ("-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst", "-e", "udp.dstport",
              "-e", "rtp.ssrc", "-e", "rtp.seq", "-e", "rtp.cc", "-e", "rtp.ext",
              "-e", "rtp.ext.len", "-e", "frame.cap_len", "-e", "frame.len",
              "-e", "udp.length")


def _rtp(path: Path) -> list[list[str]]:
    return _tshark(path, "-Y", "rtp && !rtcp", *RTP_FIELDS)


def test_violated_call_leaves_an_evidence_pcap(lab: netlab.Lab, tmp_path: Path) -> None:
    ns = lab.ns_r
    state = tmp_path / "state"
    state.mkdir()
    call_log = tmp_path / "calls.jsonl"
    config = tmp_path / "voipprobe.yaml"
    config.write_text(
        f"state_dir: {state}\nprivacy: hash\n"
        "calls:\n  media_idle_timeout_s: 3.0\n"
        "evidence:\n  enabled: true\n", encoding="utf-8")
    agent_log = tmp_path / "agent.log"
    agent, base = _start_agent(lab, config, IFACE, call_log, agent_log)
    evidence_dir = state / "evidence"

    def ended(n: int) -> bool:
        assert agent.poll() is None, _log_tail(agent_log)
        return len(_records(call_log)) >= n

    clean = lab.run_calls(1)
    assert clean.uac_returncode == 0, _log_tail(clean.uac_log)
    _wait_for("the clean call's record", lambda: ended(1), 20.0, interval=0.5)
    (rec,) = _records(call_log)
    assert rec["sla"]["verdict"] == "met", rec["sla"]
    assert rec["evidence"] is None
    assert not evidence_dir.exists() or not list(evidence_dir.iterdir())

    netlab._run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                input_text=netlab.nft_ruleset("vpdrop", "impair", "forward",
                                              (f"{netlab.MEDIA} numgen random mod 100 < 10 drop",)))
    lossy = lab.run_calls(1)
    assert lossy.uac_returncode == 0, _log_tail(lossy.uac_log)
    netlab._run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "vpdrop"])
    _wait_for("the lossy call's record", lambda: ended(2), 20.0, interval=0.5)
    rec = _records(call_log)[-1]
    assert rec["sla"]["verdict"] == "violated", rec["sla"]
    assert "max_loss_ratio" in {v["threshold"] for v in rec["sla"]["violations"]}
    name = rec["evidence"]
    assert name == file_stem(rec["call_id"]) + ".pcap", (name, rec["call_id"])
    assert [p.name for p in evidence_dir.iterdir()] == [name]
    path = evidence_dir / name

    # SIP: the whole dialog, with the Call-ID the record's pseudonym stands for
    sip = _tshark(path, "-Y", "sip", "-e", "sip.Call-ID", "-e", "sip.CSeq.method")
    hasher = Pseudonymiser("hash", load_or_create_key(state))
    assert {row[0] for row in sip} and all(
        hasher.call_id(row[0]) == rec["call_id"] for row in sip), sip
    methods = [row[1] for row in sip]
    for method in ("INVITE", "ACK", "BYE"):
        assert method in methods, methods
    assert methods.count("BYE") == 2  # the BYE and its 200 OK
    captured = _tshark(lossy.capture, "-Y", "sip", "-e", "sip.Call-ID")
    assert len(sip) == len(captured)

    # RTP: exactly tcpdump's packets, by 5-tuple, SSRC and sequence number
    ours, theirs = _rtp(path), _rtp(lossy.capture)
    assert ours and {tuple(r[:6]) for r in ours} == {tuple(r[:6]) for r in theirs}
    assert len(ours) == len(theirs)
    lost = [d["stream"]["lost"] for d in rec["directions"] if d["direction"] == "a_to_b"]
    assert lost and lost[0] > 0
    # ... and never a payload byte: each record ends where its RTP header ends
    for r in ours:
        cc, ext = int(r[6]), r[7] in ("1", "True")
        header = RTP_FIXED + 4 * cc + (4 + 4 * int(r[8]) if ext else 0)
        cap_len, wire_len, udp_len = int(r[9]), int(r[10]), int(r[11])
        assert cap_len == 20 + 8 + header, r
        assert wire_len == 20 + udp_len > cap_len, r  # the length as sent, kept
    status, _ = _http(ns, f"{base}/health")
    assert status == 200

    # the exporter counts it: one file, no write error, nothing over a cap
    def counted() -> bool:
        status, body = _http(ns, f"{base}/metrics")
        scrape["text"] = body
        return status == 200 and _total(_samples(body),
                                         "voipprobe_evidence_files_written_total") >= 1

    scrape: dict[str, str] = {}
    _wait_for("voipprobe_evidence_files_written_total", counted, 10.0, interval=0.5)
    s = _samples(scrape["text"])
    assert _total(s, "voipprobe_evidence_files_written_total") == 1
    assert _total(s, "voipprobe_evidence_write_errors_total") == 0
    assert _total(s, "voipprobe_evidence_packets_dropped_total") == 0
