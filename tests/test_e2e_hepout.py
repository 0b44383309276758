"""HEP out to real receivers and through the live daemon.

- sngrep (Debian's) as a HEP collector (``-L udp:... -N -O out.pcap``, headless save
  mode): the SIP it saves, dissected by tshark, is the SIP of the capture the probe
  saw: the same messages, Call-IDs, methods, status codes, times, addresses and ports.
- the daemon with its collector down: capture and metrics go on, drops are counted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hepbuild import comparable
from hepoutbuild import G711, run_probe
from needtool import need_tool
from packetbuild import udp
from synth import LINKTYPE_RAW, CapturedPacket, write_pcap

from agent.calls.events import CallEnded
from agent.capture.hep_listener import HepListener, HepTcpListener
from agent.capture.pcapfile import open_capture
from agent.config import Config, HepCollectorConfig, HepOutConfig
from agent.daemon import Daemon
from agent.engine import Engine, EngineConfig
from agent.export.calllog import CallLogStats
from agent.export.hepout import HepOut
from agent.export.metrics import ProbeMetrics
from agent.sip.events import EndReason

SIP_FIELDS = ("frame.time_epoch", "ip.src", "udp.srcport", "ip.dst", "udp.dstport",
              "sip.Call-ID", "sip.Method", "sip.Status-Code", "sip.CSeq")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sip_of(pcap: Path) -> list[tuple[str, ...]]:
    out = subprocess.run([need_tool("tshark"), "-r", str(pcap), "-Y", "sip", "-T", "fields",
                          *(a for f in SIP_FIELDS for a in ("-e", f))],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return sorted(tuple(line.split("\t")) for line in out.splitlines() if line)


def test_sngrep_receives_the_calls(tmp_path: Path) -> None:
    if not G711.exists():
        pytest.skip("corpus capture missing")
    port = _free_udp_port()
    out = tmp_path / "out.pcap"
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "TERM": "dumb"}
    proc = subprocess.Popen([need_tool("sngrep"), "-N", "-q", "-L", f"udp:127.0.0.1:{port}",
                             "-O", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # its socket is bound
        hep = HepOut([HepCollectorConfig(address="127.0.0.1", port=port, agent_id=7,
                                         rtcp=False, reports=False)])
        hep.start()
        run_probe(G711, hep)
        deadline = time.monotonic() + 10
        while hep.stats()[0].queued and time.monotonic() < deadline:
            time.sleep(0.05)
        hep.close()
        time.sleep(1.0)  # sngrep writes what it received
    finally:
        proc.terminate()
        proc.wait(10)
    sent = hep.stats()[0].sent
    want = _sip_of(G711)
    got = _sip_of(out)
    assert sent == len(want) > 0
    assert got == want  # every message, with its time, addresses, ports, Call-ID
    assert {g[6] for g in got} >= {"INVITE", "ACK", "REGISTER"}
    assert "200" in {g[7] for g in got}


class _Source:
    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches
        self.polled = 0

    def poll(self, timeout_s: float) -> list[Any]:
        if not self.batches:
            time.sleep(min(timeout_s, 0.01))
            return []
        self.polled += 1
        return [self.batches.pop(0)]

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class _Log:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def public(self, record: Any) -> dict[str, Any]:
        return {"call_id": record.call_id}

    def write(self, record: Any, public: object = None) -> None:
        self.records.append(record)

    def retry(self) -> None: ...

    def reopen(self) -> None: ...

    def take_over(self, old: object) -> None: ...

    def stats(self) -> CallLogStats:
        return CallLogStats()

    def close(self) -> None: ...


def test_daemon_goes_on_while_the_collector_is_down() -> None:
    if not G711.exists():
        pytest.skip("corpus capture missing")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])  # nobody listens there
    with open_capture(G711) as reader:
        batches = list(reader)
    total = sum(len(b) for b in batches)
    cfg = Config(privacy="clear", hep_out=HepOutConfig(collectors=[HepCollectorConfig(
        address="127.0.0.1", port=port, transport="tcp", queue_size=8)]))
    metrics = ProbeMetrics(site="a")
    log = _Log()
    d = Daemon(cfg, source=_Source(batches), metrics=metrics, call_log=log,
               load=lambda: cfg, notify=lambda _m: None)
    while d.source.batches:  # type: ignore[attr-defined]
        d.step(0.01)
    d.shutdown()
    assert d.engine.packets == total  # every packet was measured
    assert any(r.call_id for r in log.records)
    st = d.hep_out.stats()[0]  # type: ignore[union-attr]
    reg = metrics.registry
    labels = {"site": "a", "collector": st.name}
    assert reg.get_sample_value("voipprobe_hep_out_sent_total", labels) == 0
    assert reg.get_sample_value("voipprobe_hep_out_up", labels) == 0
    dropped = sum(reg.get_sample_value("voipprobe_hep_out_dropped_total",
                                       {**labels, "reason": r}) or 0
                  for r in ("queue_full", "not_connected", "send_error"))
    assert dropped > 0 and dropped == sum(st.dropped.values())


def test_hep_out_to_a_second_probes_hep_listener() -> None:
    """HEP out over UDP to a second probe's `HepListener` (capture.hep_listeners): the
    second probe's engine sees the same SIP messages and RTCP packets and makes the same
    calls (signalling figures: HEP out sends no RTP)."""
    if not G711.exists():
        pytest.skip("corpus capture missing")
    listener = HepListener("127.0.0.1", 0, ["127.0.0.1/32"])
    second = Engine(EngineConfig(config=Config(privacy="clear")))
    got: list[Any] = []
    hep = HepOut([HepCollectorConfig(address="127.0.0.1", port=listener.port, agent_id=9,
                                     rtcp=True, reports=True)])
    hep.start()
    first: list[Any] = []
    try:
        a = Engine(EngineConfig(config=Config(privacy="clear")))
        first = run_probe(G711, hep, a)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
                hep.stats()[0].queued or listener.counters.datagrams < hep.stats()[0].sent):
            for b in listener.poll(0.1):
                got += second.feed(b)
        for b in listener.poll(0.2):
            got += second.feed(b)
    finally:
        hep.close()
        listener.close()
    got += second.finish(EndReason.CAPTURE_END)
    st = hep.stats()[0]
    assert sum(st.dropped.values()) == 0 and listener.counters.datagrams == st.sent
    assert second.route.sip_messages == a.route.sip_messages
    assert second.route.rtcp_packets == a.route.rtcp_packets
    assert listener.hep.skipped_json == sum(
        len(e.record.directions) for e in first
        if isinstance(e, CallEnded) and e.record.call_id)
    keys = ("call_id", "from_", "to", "final_status", "invite_ts", "first_provisional_ts",
            "answer_ts", "setup_delay_s", "answer_delay_s", "end_reason", "transport")

    def sig(evs: list[Any]) -> list[tuple[Any, ...]]:
        return sorted((tuple(getattr(e.record, k) for k in keys) for e in evs
                       if isinstance(e, CallEnded) and e.record.call_id), key=repr)

    assert sig(got) == sig(first) and len(sig(first)) == 2


def test_hep_out_with_rtp_gives_a_second_probe_the_same_call_records() -> None:
    """HEP out over TCP with RTP (`hep_out.collectors[].rtp`) to a second probe's
    `HepTcpListener`: its engine, fed only what arrived, makes the very records of the
    first probe (every figure but the observation point: ``hep/<agent id>`` there, none
    in a classic pcap), DSCP included (HEP3 chunk 24 carries the TOS byte)."""
    if not G711.exists():
        pytest.skip("corpus capture missing")
    listener = HepTcpListener("127.0.0.1", 0, ["127.0.0.1/32"])
    second = Engine(EngineConfig(config=Config(privacy="clear")))
    got: list[Any] = []
    stop = threading.Event()

    def receive() -> None:  # the second probe's capture loop
        while not stop.is_set():
            for b in listener.poll(0.05):
                got.extend(second.feed(b))

    hep = HepOut([HepCollectorConfig(address="127.0.0.1", port=listener.port, agent_id=9,
                                     transport="tcp", rtp=True, reports=False,
                                     queue_size=100_000)])
    hep.start()
    loop = threading.Thread(target=receive)
    loop.start()
    try:
        first = run_probe(G711, hep, Engine(EngineConfig(config=Config(privacy="clear"))))
        sent_all = time.monotonic() + 30
        while time.monotonic() < sent_all and (
                hep.stats()[0].queued or listener.hep.records_v3 < hep.stats()[0].sent):
            time.sleep(0.05)
    finally:
        stop.set()
        loop.join(10)
        hep.close()
        listener.close()
    got += second.finish(EndReason.CAPTURE_END)
    st = hep.stats()[0]
    assert sum(st.dropped.values()) == 0 and st.sent > 3000, st  # RTP: most of it

    def calls(events: list[Any]) -> list[dict[str, Any]]:
        return sorted((comparable(e.record.to_json(), dscp=True) for e in events
                       if isinstance(e, CallEnded)), key=lambda r: json.dumps(r, default=str))

    mine, theirs = calls(first), calls(got)
    assert sum(r["call_id"] is not None for r in mine) == 2  # and its unsignalled media
    assert sum(len(r["directions"]) for r in mine) >= 4
    assert theirs == mine


HEP3_DUMP = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "tools" / \
    "hep3_dump.py"


def test_a_capture_of_the_hep_stream_read_by_tshark_and_an_independent_hep_walker(
        tmp_path: Path) -> None:
    """The HEP stream as a capture of it shows it: tshark takes the UDP payloads and the
    corpus's own HEP3 walker (shared/corpus/tools/hep3_dump.py, not our decoder: Debian's
    tshark 4.0 has no HEP dissector) reads their chunks: each SIP message's time, IP
    protocol, addresses and ports, type, first line, length and CSeq are the original's."""
    if not G711.exists() or not HEP3_DUMP.exists():
        msg = "corpus capture or shared/corpus/tools/hep3_dump.py missing"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    need_tool("tshark")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(5.0)
    port = sink.getsockname()[1]
    hep = HepOut([HepCollectorConfig(address="127.0.0.1", port=port, agent_id=7,
                                     rtcp=False, reports=False)])
    hep.start()
    try:
        run_probe(G711, hep)
        datagrams: list[tuple[float, bytes]] = []
        while len(datagrams) < 1 or hep.stats()[0].queued or len(datagrams) < hep.stats()[0].sent:
            data = sink.recv(65535)
            datagrams.append((time.time(), data))
    finally:
        hep.close()
        sink.close()
    frames = [CapturedPacket(round(t * 1e9), udp("198.18.9.1", 40000, "198.18.9.2", 9060, d))
              for t, d in datagrams]
    pcap = write_pcap(tmp_path / "hep-stream.pcap", frames, LINKTYPE_RAW)
    out = subprocess.run([sys.executable, str(HEP3_DUMP), str(pcap)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    rows = [r.split("\t") for r in out.splitlines()[1:] if r]
    want = subprocess.run(
        [need_tool("tshark"), "-r", str(G711), "-Y", "sip", "-T", "fields", "-e",
         "frame.time_epoch", "-e", "ip.proto", "-e", "ip.src", "-e", "udp.srcport", "-e",
         "ip.dst", "-e", "udp.dstport", "-e", "udp.length", "-e", "sip.CSeq"],
        capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    assert len(rows) == len(want) == hep.stats()[0].sent > 0
    for row, line in zip(rows, want, strict=True):
        _num, ts, proto, src, dst, ptype, _corr, first, plen, cseq = row
        t, w_proto, w_src, w_sport, w_dst, w_dport, w_len, w_cseq = line.split("\t")
        assert abs(float(ts) - float(t)) < 1e-6, (ts, t)
        assert (proto, src, dst) == (w_proto, f"{w_src}:{w_sport}", f"{w_dst}:{w_dport}")
        assert ptype == "SIP" and int(plen) == int(w_len) - 8 and cseq == w_cseq
        assert first.startswith(("SIP/2.0 ", "INVITE ", "ACK ", "BYE ", "REGISTER ",
                                 "OPTIONS ", "CANCEL ", "SUBSCRIBE ", "NOTIFY ", "PUBLISH "))
