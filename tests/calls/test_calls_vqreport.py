"""RFC 6035 reports joined to generated calls (issue 9 item 3), end to end.

A capture from `callgen`: three answered PCMA calls, and the phones' PUBLISH
(``application/vq-rtcpxr``, each its own Call-ID, to a collector 198.18.9.9):

- call A: the callee sends an interval report mid-call (what it received, a_to_b);
  the caller sends its session report (CallTerm) 300 ms after the BYE, with
  LocalMetrics (what it received, b_to_a) and RemoteMetrics (what the callee told
  it about a_to_b), and retransmits it once;
- call B: its caller's report comes 20 s after the BYE, after the record (late);
- a report about a Call-ID the capture never shows (unknown call), and a PUBLISH
  whose vq-rtcpxr body is not a report (malformed).

Expected values are the report's own figures and the generator's (no loss, so the
probe's PCMA MOS-CQ is the E-model's G.711 figure at the assumed delay).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import json
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import callgen
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from synth import BASE_EPOCH_NS, LINKTYPE_ETHERNET, Flow, link_frame
from test_time_true import _canon, _check, _read

from agent.calls.events import CallEnded
from agent.capture.batch import Batch
from agent.config import Config
from agent.counters import CounterSnapshot
from agent.engine import Engine, EngineConfig
from agent.export.calllog import format_line
from agent.export.metrics import MOS_DIFFERENCE_BUCKETS, ProbeMetrics

REPO = Path(__file__).resolve().parents[2]
MS, S = callgen.MS, callgen.S
COLLECTOR = "198.18.9.9"
SSRC_A, SSRC_B = 0x1A2B3C4D, 0x0BADCAFE  # call A: caller's, callee's
CALLER, CALLEE = "198.18.1.1", "198.18.2.1"


def _publish(call_id: str, src_ip: str, body: bytes, *, cseq: int = 1) -> bytes:
    lines = [
        f"PUBLISH sip:collector@{COLLECTOR} SIP/2.0",
        f"Via: SIP/2.0/UDP {src_ip}:5060;branch=z9hG4bK-{call_id[:10]}-{cseq}",
        "Max-Forwards: 70",
        f"From: <sip:phone@{src_ip}>;tag=p{cseq}",
        f"To: <sip:collector@{COLLECTOR}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} PUBLISH",
        "Event: vq-rtcpxr",
        "Content-Type: application/vq-rtcpxr",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _report(kind: str, call_id: str, local: tuple[str, int, int], remote: tuple[str, int, int],
            local_metrics: str, remote_metrics: str | None = None) -> bytes:
    text = (f"{kind}\r\nCallID: {call_id}\r\nLocalID: <sip:me@example.test>\r\n"
            f"RemoteID: <sip:you@example.test>\r\nOrigID: <sip:me@example.test>\r\n"
            f"LocalAddr: IP={local[0]} PORT={local[1]} SSRC=0x{local[2]:08x}\r\n"
            f"RemoteAddr: IP={remote[0]} PORT={remote[1]} SSRC=0x{remote[2]:08x}\r\n"
            f"LocalMetrics:\r\n{local_metrics}")
    if remote_metrics is not None:
        text += f"RemoteMetrics:\r\n{remote_metrics}"
    return text.encode()


CALLER_LOCAL = ("Timestamps: START=2020-01-01T00:00:00Z STOP=2020-01-01T00:00:06Z\r\n"
                "SessionDesc: PT=8 PD=PCMA SR=8000 FD=20 FPP=1 PPS=50 PLC=3 SSUP=off\r\n"
                "JitterBuffer: JBA=3 JBR=2 JBN=40 JBM=60 JBX=200\r\n"
                "PacketLoss: NLR=1.5 JDR=0.5\r\n"
                "BurstGapLoss: BLD=10.0 BD=60 GLD=0.5 GD=2000 GMIN=16\r\n"
                "Delay: RTD=42 ESD=65 SOWD=86 IAJ=3 MAJ=2\r\n"
                "QualityEst: RLQ=85 RCQ=80 MOSLQ=4.0 MOSCQ=3.9\r\n")
CALLER_REMOTE = ("JitterBuffer: JBA=3 JBN=30 JBM=50 JBX=150\r\n"
                 "PacketLoss: NLR=0.0 JDR=0.2\r\n"
                 "Delay: RTD=42 ESD=60\r\n"
                 "QualityEst: MOSLQ=4.2 MOSCQ=4.1\r\n")
CALLEE_LOCAL = ("PacketLoss: NLR=0.0 JDR=0.0\r\n"
                "Delay: RTD=40 IAJ=1\r\n"
                "QualityEst: RCQ=90 MOSLQ=4.3 MOSCQ=4.25\r\n")


def scenario() -> list[callgen.CapturedPacket]:
    rng = random.Random(19)
    cap = callgen._Capture()
    plans = [
        callgen.CallPlan(call_id="vq-a@198.18.1.1", start_ns=BASE_EPOCH_NS,
                         caller_ip=CALLER, callee_ip=CALLEE, caller_media=20000,
                         callee_media=30000, codec=callgen.PCMA, outcome="answered",
                         setup_ns=1 * S, talk_ns=6 * S, ssrcs=(SSRC_A, SSRC_B)),
        callgen.CallPlan(call_id="vq-b@198.18.1.2", start_ns=BASE_EPOCH_NS + 2 * S,
                         caller_ip="198.18.1.2", callee_ip=CALLEE, caller_media=20002,
                         callee_media=30002, codec=callgen.PCMA, outcome="answered",
                         setup_ns=1 * S, talk_ns=4 * S, ssrcs=(0x33333333, 0x44444444)),
    ]
    pending = [callgen.emit_call(cap, rng, p) for p in plans]
    bye_a, bye_b = (p.bye_ns for p in pending)
    assert bye_a is not None and bye_b is not None

    def send(t_ns: int, src: str, data: bytes) -> None:
        cap.add(t_ns, Flow(src, COLLECTOR, 5060, 5060), data, dscp=callgen.DSCP_SIP)

    a_caller = (CALLER, 20000, SSRC_A)
    a_callee = (CALLEE, 30000, SSRC_B)
    mid = BASE_EPOCH_NS + 1 * S + 3 * S
    send(mid, CALLEE, _publish("rep-callee-1", CALLEE, _report(
        "VQIntervalReport", "vq-a@198.18.1.1", a_callee, a_caller, CALLEE_LOCAL)))
    final = _publish("rep-caller-1", CALLER, _report(
        "VQSessionReport: CallTerm", "vq-a@198.18.1.1", a_caller, a_callee,
        CALLER_LOCAL, CALLER_REMOTE))
    send(bye_a + 300 * MS, CALLER, final)
    send(bye_a + 800 * MS, CALLER, final)  # a retransmission: one report
    send(bye_b + 20 * S, "198.18.1.2", _publish("rep-b-late", "198.18.1.2", _report(
        "VQSessionReport: CallTerm", "vq-b@198.18.1.2", ("198.18.1.2", 20002, 0x33333333),
        (CALLEE, 30002, 0x44444444), CALLER_LOCAL)))
    send(bye_b + 21 * S, CALLER, _publish("rep-unknown", CALLER, _report(
        "VQSessionReport", "never-seen@198.18.1.1", a_caller, a_callee, CALLER_LOCAL)))
    send(bye_b + 22 * S, CALLER, _publish("rep-bad", CALLER, b"hello, not a report\r\n"))
    return callgen._Capture.packets(cap.finish())


@functools.cache
def _pcap(folder: str) -> Path:
    return callgen.write(Path(folder) / "vqreport.pcap", scenario())


@pytest.fixture(scope="module")
def pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pcap(str(tmp_path_factory.mktemp("vq")))


def _analyze(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", "--no-progress", str(path)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _directions(rec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["direction"]: d for d in rec["directions"]}


def test_reports_join_their_call_and_direction(pcap: Path) -> None:
    calls = {o["call_id"]: o for o in _analyze(pcap) if o.get("kind") == "call"}
    assert set(calls) == {"vq-a@198.18.1.1", "vq-b@198.18.1.2"}  # PUBLISH is no call
    d = _directions(calls["vq-a@198.18.1.1"])
    b_to_a, a_to_b = d["b_to_a"], d["a_to_b"]
    assert b_to_a["stream"]["ssrc"] in (SSRC_B, f"0x{SSRC_B:08x}")
    # b_to_a: the caller received it and measured it itself (its LocalMetrics)
    rep = b_to_a["endpoint_report"]
    probe = b_to_a["quality"]["mos_cq"]
    assert rep == {
        "kind": "session", "call_term": True, "reporter": "receiver",
        "reporter_side": "caller", "reported_ts": pytest.approx(rep["reported_ts"]),
        "codec": "PCMA", "mos_lq": 4.0, "mos_cq": 3.9, "r_lq": 85.0, "r_cq": 80.0,
        "mos_cq_difference": round(3.9 - probe, 3),
        "network_loss_ratio": 0.015, "jb_discard_ratio": 0.005,
        "burst_density_ratio": 0.1, "burst_duration_ms": 60,
        "gap_density_ratio": 0.005, "gap_duration_ms": 2000,
        "round_trip_ms": 42, "end_system_delay_ms": 65, "symm_one_way_delay_ms": 86,
        "interarrival_jitter_ms": 3, "mean_abs_jitter_ms": 2,
        "jitter_buffer_adaptive": 3, "jitter_buffer_nominal_ms": 40,
        "jitter_buffer_max_ms": 60, "jitter_buffer_abs_max_ms": 200,
    }
    # beside the probe's own figures for the same direction: no loss on the wire
    assert b_to_a["stream"]["lost"] == 0 and probe > 4.0
    # a_to_b: the callee's own interval report beats what the caller was told about it
    rep = a_to_b["endpoint_report"]
    assert (rep["kind"], rep["reporter"], rep["reporter_side"]) == \
        ("interval", "receiver", "callee")
    assert (rep["mos_cq"], rep["r_cq"], rep["round_trip_ms"]) == (4.25, 90.0, 40)
    assert rep["mos_cq_difference"] == round(4.25 - a_to_b["quality"]["mos_cq"], 3)
    # call B's report came after its record: the record has none
    assert all(x["endpoint_report"] is None for x in calls["vq-b@198.18.1.2"]["directions"])


def _engine_run(path: Path) -> tuple[list[object], CounterSnapshot]:
    p = _read(path)
    engine = Engine(EngineConfig(config=Config()))
    events: list[object] = list(engine.feed(Batch.from_packets(p.data, p.ts, p.linktype)))
    events.extend(engine.finish())
    return events, engine.snapshot()


def test_counters_and_metrics_move(pcap: Path) -> None:
    events, counters = _engine_run(pcap)
    assert (counters.totals["sip_vq_reports"], counters.totals["sip_vq_report_errors"]) == (4, 1)
    assert counters.totals["sip_requests_publish"] == 6  # the retransmission, the bad one
    t = counters.totals
    assert (t["calls_reports_joined"], t["calls_reports_late"], t["calls_reports_unjoined"],
            t["calls_reports_unmatched"]) == (2, 1, 1, 0)
    reg = CollectorRegistry()
    m = ProbeMetrics(reg, site="hq")
    for e in events:
        if isinstance(e, CallEnded):
            m.observe(e)
    m.update(counters)
    v = reg.get_sample_value
    lab = {"site": "hq", "peer": "other"}
    assert v("voipprobe_endpoint_mos_difference_count", {**lab, "direction": "a_to_b"}) == 1
    assert v("voipprobe_endpoint_mos_difference_count", {**lab, "direction": "b_to_a"}) == 1
    rec = next(e.record for e in events
               if isinstance(e, CallEnded) and e.record.call_id == "vq-a@198.18.1.1")
    # client_python writes no _sum for a histogram with negative buckets (OpenMetrics);
    # the buckets hold each direction's difference
    for d in rec.directions:
        assert d.endpoint_report is not None
        diff = d.endpoint_report.mos_cq_difference
        assert diff is not None and -1.0 < diff < 0.0
        for le in MOS_DIFFERENCE_BUCKETS:
            assert v("voipprobe_endpoint_mos_difference_bucket",
                     {**lab, "direction": d.direction, "le": str(le)}) == (diff <= le)
    for outcome, n in (("received", 4), ("malformed", 1), ("joined", 2), ("late", 1),
                       ("unknown_call", 1), ("unmatched", 0)):
        assert v("voipprobe_endpoint_reports_total", {"site": "hq", "outcome": outcome}) == n
    assert v("voipprobe_parse_errors_total", {"site": "hq", "protocol": "vq-rtcpxr"}) == 1


@pytest.mark.parametrize("size", [1, 3, 7, 64, 1000])
def test_batching_invariance(pcap: Path, size: int) -> None:
    n = len(_read(pcap))
    _check(pcap, n, list(range(size, n, size)), f"batches of {size}")


def test_call_log_line_shows_the_endpoint_mos(pcap: Path) -> None:
    events, _ = _engine_run(pcap)
    rec = next(e.record for e in events
               if isinstance(e, CallEnded) and e.record.call_id == "vq-a@198.18.1.1")
    line = format_line(rec.to_json())
    assert "endpoint_mos=4.25]" in line and "endpoint_mos=3.90]" in line
    other = next(e.record for e in events
                 if isinstance(e, CallEnded) and e.record.call_id == "vq-b@198.18.1.2")
    assert "endpoint_mos" not in format_line(other.to_json())


def _ipv4_tcp(src: str, dst: str, seq: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 5060, 5060, seq, 0, 5 << 4, 0x18, 65535, 0, 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0,
                       ipaddress.IPv4Address(src).packed,
                       ipaddress.IPv4Address(dst).packed) + tcp


def test_report_over_tcp_in_two_segments_joins(tmp_path: Path) -> None:
    """The caller's CallTerm report over SIP/TCP (RFC 3261 §18.3 framing), split across
    two segments, instead of UDP: the same record."""
    packets = scenario()
    udp = [p for p in packets if b"rep-caller-1" in p.frame]
    assert len(udp) == 2  # the report and its retransmission
    message = udp[0].frame[udp[0].frame.index(b"PUBLISH "):]
    half = len(message) // 2
    tcp = [callgen.CapturedPacket(udp[0].ts_ns + k * MS, link_frame(
        LINKTYPE_ETHERNET, _ipv4_tcp(CALLER, COLLECTOR, 1000 + off, part)))
        for k, (off, part) in enumerate([(0, message[:half]), (half, message[half:])])]
    rest = [p for p in packets if b"rep-caller-1" not in p.frame]
    path = callgen.write(tmp_path / "tcp.pcap", sorted(rest + tcp, key=lambda p: p.ts_ns))
    events, counters = _engine_run(path)
    assert counters.totals["sip_vq_reports"] == 4 and counters.totals["sip_messages"] > 0
    rec = next(e.record for e in events
               if isinstance(e, CallEnded) and e.record.call_id == "vq-a@198.18.1.1")
    d = {x.direction: x for x in rec.directions}
    rep = d["b_to_a"].endpoint_report
    assert rep is not None and (rep.kind, rep.call_term, rep.mos_cq) == ("session", True, 3.9)


def test_promtool_accepts_the_new_families(pcap: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool not installed (scripts/test.sh installs it)")
        pytest.skip("promtool not installed")
    events, counters = _engine_run(pcap)
    reg = CollectorRegistry()
    m = ProbeMetrics(reg, site="hq")
    m.observe_all(e for e in events if isinstance(e, CallEnded))
    m.update(counters)
    text = generate_latest(reg)
    assert b"voipprobe_endpoint_mos_difference_bucket" in text
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.strip() == b"" and proc.stderr.strip() == b""


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_cuts_equal_whole_file(tmp_path_factory: pytest.TempPathFactory,
                                      data: st.DataObject) -> None:
    path = _pcap(str(tmp_path_factory.getbasetemp()))
    n = len(_read(path))
    cuts = data.draw(st.lists(st.integers(1, n - 1), max_size=40, unique=True).map(sorted),
                     label="cuts")
    _check(path, n, cuts, f"cut at {cuts}")


# -- a phone that publishes late: calls.report_linger_s ----------------------------------

LATE_CALLER = "198.18.1.3"
LATE_CALL = "vq-c@198.18.1.3"
LATE_AFTER_BYE_S = 10  # some phones send their session report up to 30 s after the BYE


def _late_scenario() -> tuple[list[callgen.CapturedPacket], float]:
    """One answered call; its caller's CallTerm report 10 s after the BYE; an OPTIONS to
    the collector 30 s after the BYE, so packet time passes every linger. Returns the
    packets and the BYE's packet time (s)."""
    rng = random.Random(29)
    cap = callgen._Capture()
    pending = callgen.emit_call(cap, rng, callgen.CallPlan(
        call_id=LATE_CALL, start_ns=BASE_EPOCH_NS, caller_ip=LATE_CALLER, callee_ip=CALLEE,
        caller_media=20004, callee_media=30004, codec=callgen.PCMA, outcome="answered",
        setup_ns=1 * S, talk_ns=4 * S, ssrcs=(0x55555555, 0x66666666)))
    assert pending.bye_ns is not None
    flow = Flow(LATE_CALLER, COLLECTOR, 5060, 5060)
    report = _report("VQSessionReport: CallTerm", LATE_CALL, (LATE_CALLER, 20004, 0x55555555),
                     (CALLEE, 30004, 0x66666666), CALLER_LOCAL)
    cap.add(pending.bye_ns + LATE_AFTER_BYE_S * S, flow,
            _publish("rep-c-late", LATE_CALLER, report), dscp=callgen.DSCP_SIP)
    options = _publish("opt-c", LATE_CALLER, b"").replace(b"PUBLISH", b"OPTIONS")
    cap.add(pending.bye_ns + 30 * S, flow, options, dscp=callgen.DSCP_SIP)
    emissions = cap.finish()
    bye = next(e.ts_ns for e in emissions if e.frame.find(b"BYE sip:") >= 0) / S
    return callgen._Capture.packets(emissions), bye


def _late_engine(linger_s: float | None) -> Engine:
    calls: dict[str, float] = {"interval_s": 5.0}
    if linger_s is not None:
        calls["report_linger_s"] = linger_s
    return Engine(EngineConfig(config=Config.model_validate({"calls": calls})))


def _late_run(linger_s: float | None, bounds: tuple[int, ...] = ()
              ) -> tuple[list[object], dict[str, int]]:
    packets, _ = _late_scenario()
    engine = _late_engine(linger_s)
    events: list[object] = []
    edges = [0, *bounds, len(packets)]
    for lo, hi in itertools.pairwise(edges):
        part = packets[lo:hi]
        if part:
            events += engine.feed(Batch.from_packets([p.frame for p in part],
                                                     [p.ts_ns / S for p in part], 1))
    events += engine.finish()
    return events, engine.counters()


def _late_record(events: list[object]) -> dict[str, Any]:
    (rec,) = [e.record.to_json() for e in events
              if isinstance(e, CallEnded) and e.record.call_id == LATE_CALL]
    return rec


def test_report_after_the_default_linger_is_late() -> None:
    """5 s by default: the record was emitted before the report came (10 s after BYE)."""
    events, counters = _late_run(None)
    assert (counters["sip_vq_reports"], counters["calls_reports_joined"],
            counters["calls_reports_late"]) == (1, 0, 1)
    assert all(d["endpoint_report"] is None for d in _late_record(events)["directions"])


def test_report_within_a_longer_linger_joins() -> None:
    """``calls.report_linger_s: 15``: the same report joins the caller's direction; the
    record is otherwise the one of the default linger (the call still ended at its BYE)."""
    events, counters = _late_run(15.0)
    assert (counters["calls_reports_joined"], counters["calls_reports_late"]) == (1, 0)
    rec = _late_record(events)
    rep = _directions(rec)["b_to_a"]["endpoint_report"]
    assert (rep["kind"], rep["call_term"], rep["reporter"], rep["reporter_side"]) == \
        ("session", True, "receiver", "caller")
    assert (rep["mos_cq"], rep["network_loss_ratio"], rep["round_trip_ms"]) == \
        (3.9, 0.015, 42)
    default = _late_record(_late_run(None)[0])
    for r in (rec, default):
        for d in r["directions"]:
            d.pop("endpoint_report")
    assert rec == default


@pytest.mark.parametrize(("linger_s", "after_bye_s"), [(None, 5.0), (15.0, 15.0), (0.0, 0.0)])
def test_record_is_due_at_bye_plus_linger_in_packet_time(linger_s: float | None,
                                                         after_bye_s: float) -> None:
    """The record comes when packet time reaches BYE + linger (`tick`, no packet), not
    earlier, and never waits for a later packet; with 0 s, as soon as the dialog ended
    (the BYE's 200 OK: already due at the driver's next tick)."""
    packets, bye = _late_scenario()
    upto = [p for p in packets if p.ts_ns / S <= bye + 0.5]  # the BYE and its 200 OK
    assert upto[-1].frame.find(b"SIP/2.0 200 OK") >= 0
    engine = _late_engine(linger_s)
    events = engine.feed(Batch.from_packets([p.frame for p in upto],
                                            [p.ts_ns / S for p in upto], 1))
    events += engine.tick(upto[-1].ts_ns / S)  # packet time has not moved on
    if after_bye_s > 0:
        assert not [e for e in events if isinstance(e, CallEnded)]
        assert not [e for e in engine.tick(bye + after_bye_s - 0.001)
                    if isinstance(e, CallEnded)]
        events = engine.tick(bye + after_bye_s)
    (ended,) = [e.record for e in events if isinstance(e, CallEnded)]
    assert (ended.call_id, ended.end_ts) == (LATE_CALL, bye)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_longer_linger_is_batching_invariant(size: int) -> None:
    packets, _ = _late_scenario()
    want = _canon(_late_run(15.0)[0])
    assert want["calls"] and _canon(_late_run(15.0, tuple(range(size, len(packets), size)))[0]) \
        == want


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_longer_linger_random_cuts(data: st.DataObject) -> None:
    packets, _ = _late_scenario()
    cuts = data.draw(st.lists(st.integers(1, len(packets) - 1), max_size=30, unique=True)
                     .map(sorted), label="cuts")
    assert _canon(_late_run(15.0, tuple(cuts))[0]) == _canon(_late_run(15.0)[0])
