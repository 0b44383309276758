"""HEP out (agent/export/hepout.py): what it sends reads back through our own decoder,
its queue drops and counts, TCP reconnects, and a second probe reading it agrees."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hepbuild import EXPORTER, fields, records_of
from hepoutbuild import G711, Recorder, collector, run_probe
from synth import LINKTYPE_RAW, CapturedPacket, write_pcap

from agent.calls.events import CallEnded, Event
from agent.capture.pcapfile import open_capture
from agent.config import Config, ConfigError, config_from_mapping
from agent.decode.hep import PROTO_RTCP, PROTO_SIP, HepRecord, encode_hep3, parse_hep
from agent.decode.hep_rtcp_json import report_from_json
from agent.decode.hep_unwrap import build_packet
from agent.engine import Engine, EngineConfig
from agent.export.hepout import PROTO_QOS_JSON, CollectorSender, HepOut
from agent.export.metrics import ProbeMetrics
from agent.rtcp.packets import ReceiverReport, SenderReport, parse_compound
from agent.sip.events import EndReason
from agent.sip.message import parse_message


def wait_for(cond: Any, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def g711_sent() -> tuple[list[HepRecord], list[Event]]:
    if not G711.exists():
        pytest.skip("corpus capture missing")
    rec = Recorder()
    hep = HepOut([collector(rtcp_json=True)], open_socket=lambda c: rec)  # type: ignore[arg-type, return-value]
    hep.start()
    events = run_probe(G711, hep)
    hep.close()
    assert hep.stats()[0].dropped["queue_full"] == 0
    return [parse_hep(d) for d in rec.sent], events


def test_sip_round_trip(g711_sent: tuple[list[HepRecord], list[Event]]) -> None:
    recs, _ = g711_sent
    sip = [r for r in recs if r.proto_type == PROTO_SIP]
    assert len(sip) >= 10
    for r in sip:
        assert (r.capture_id, r.node_name) == (4242, b"probe-a")
        parse_message(r.payload)  # the message as captured, whole
    # each is a packet of the capture, with its time, addresses and ports
    original = {(r.payload, r.ts_sec, r.ts_usec, r.src, r.dst, r.sport, r.dport, r.ip_proto)
                for r in records_of(G711)}
    for r in sip:
        assert (r.payload, r.ts_sec, r.ts_usec, r.src, r.dst, r.sport, r.dport,
                r.ip_proto) in original
    assert any(r.payload.startswith(b"INVITE") for r in sip)


def test_rtcp_raw_and_json_round_trip(g711_sent: tuple[list[HepRecord], list[Event]]) -> None:
    recs, _ = g711_sent
    rtcp = [r for r in recs if r.proto_type == PROTO_RTCP]
    raw = [r for r in rtcp if r.payload[:1] != b"{"]
    js = [r for r in rtcp if r.payload[:1] == b"{"]
    assert raw and len(raw) == len(js)
    for a, b in zip(raw, js, strict=True):
        first = next(p for p in parse_compound(a.payload)
                     if isinstance(p, SenderReport | ReceiverReport))
        assert report_from_json(b.payload) == first  # our decoder reads what we send
        assert (a.ts, a.src, a.sport) == (b.ts, b.src, b.sport)
        assert a.correlation_id == b.correlation_id
    assert any(r.correlation_id for r in raw), [(r.sport, r.dport) for r in raw][:6]


def test_quality_report_per_direction(g711_sent: tuple[list[HepRecord], list[Event]]) -> None:
    recs, events = g711_sent
    calls = [e.record for e in events if isinstance(e, CallEnded) and e.record.directions
             and e.record.call_id]
    reports = [r for r in recs if r.proto_type == PROTO_QOS_JSON]
    assert len(reports) == sum(len(c.directions) for c in calls) > 0
    by_dir = {(r.correlation_id, json.loads(r.payload)["DIR"]): json.loads(r.payload)
              for r in reports}
    for c in calls:
        for d in c.directions:
            doc = by_dir[(c.call_id.encode(), d.direction)]  # type: ignore[union-attr]
            assert doc["MOS"] == (d.quality.mos_cq if d.quality else None)
            assert doc["JITTER"] == d.stream.jitter_ms
            assert doc["PACKET_LOSS"] == d.stream.lost
            assert doc["PACKETS"] == d.stream.packets
    # the RTCP of a running call carries its Call-ID (RTCP of no call: none)
    assert {r.correlation_id for r in recs if r.proto_type == PROTO_RTCP} - {b""} == {
        c.call_id.encode() for c in calls if c.call_id}


def test_queue_drops_when_full_and_counts() -> None:
    s = CollectorSender(collector(queue_size=3), open_socket=lambda c: Recorder())  # type: ignore[arg-type, return-value]
    rec = HepRecord(**{**fields(EXPORTER), "payload": b"x"})
    for _ in range(8):  # the sender thread is not started: nothing drains
        s.put(rec)
    assert s.depth() == 3
    assert s.stats.dropped["queue_full"] == 5


def _server(port: int = 0) -> socket.socket:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4)
    return srv


def _read_hep(srv: socket.socket, want: int, out: list[HepRecord]) -> None:
    conn, _ = srv.accept()
    buf = b""
    conn.settimeout(10)
    while len(out) < want:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 6 and len(buf) >= int.from_bytes(buf[4:6], "big"):
            n = int.from_bytes(buf[4:6], "big")
            out.append(parse_hep(buf[:n]))
            buf = buf[n:]
    conn.close()


def test_tcp_reconnects_after_collector_restart_and_counts_drops() -> None:
    srv = _server()
    port = srv.getsockname()[1]
    got: list[HepRecord] = []
    t = threading.Thread(target=_read_hep, args=(srv, 3, got))
    t.start()
    hep = HepOut([collector(transport="tcp", port=port)])
    hep.start()
    rec = HepRecord(**{**fields(EXPORTER), "payload": b"INVITE sip:a@b SIP/2.0\r\n\r\n",
                       "proto_type": PROTO_SIP})
    s = hep.senders[0]
    for _ in range(3):
        s.put(rec)
    t.join(10)
    assert len(got) == 3 and got[0].capture_id == 4242
    wait_for(lambda: s.stats.sent == 3)
    srv.close()  # the collector goes away: what is sent meanwhile is dropped, counted
    for _ in range(20):
        s.put(rec)
        time.sleep(0.01)
    wait_for(lambda: s.depth() == 0)
    lost = s.stats.dropped["send_error"] + s.stats.dropped["not_connected"]
    assert lost > 0 and s.stats.sent + lost == 23
    srv = _server(port)  # it comes back: sending resumes after the backoff
    got2: list[HepRecord] = []
    t = threading.Thread(target=_read_hep, args=(srv, 1, got2))
    t.start()
    deadline = time.monotonic() + 15
    while not got2 and time.monotonic() < deadline:
        s.put(rec)
        time.sleep(0.1)
    t.join(10)
    hep.close()
    srv.close()
    assert got2 and s.stats.connects == 2
    reg = ProbeMetrics(site="a")
    reg.update_hep_out(hep.stats())
    name = s.stats.name
    assert reg.registry.get_sample_value(
        "voipprobe_hep_out_sent_total", {"site": "a", "collector": name}) == s.stats.sent
    assert reg.registry.get_sample_value(
        "voipprobe_hep_out_dropped_total",
        {"site": "a", "collector": name, "reason": "queue_full"}) == 0


def test_collector_down_capture_goes_on() -> None:
    """No collector listening (TCP refused): the engine still measures every packet,
    the drops are counted, nothing blocks."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nobody listens there
    hep = HepOut([collector(transport="tcp", port=port, queue_size=16)])
    hep.start()
    events = run_probe(G711, hep)
    hep.close()
    st = hep.stats()[0]
    assert any(isinstance(e, CallEnded) for e in events)
    assert st.sent == 0 and not st.up
    assert sum(st.dropped.values()) > 0


def test_second_probe_reads_the_same_calls(g711_sent: tuple[list[HepRecord], list[Event]],
                                           tmp_path: Path) -> None:
    """The HEP stream as a collector beside the second probe captures it (UDP to 9060,
    2 ms later) gives the second probe the same calls: signalling figures and RTCP.
    (HEP out sends no RTP, as heplify does not: media figures are not compared, nor the
    end time of calls still running at the end of the capture: its last packet differs.)"""
    recs, events = g711_sent
    packets = [CapturedPacket(round(r.ts * 1e9) + 2_000_000,
                              build_packet(HepRecord(**{**fields(EXPORTER),
                                                        "payload": encode_hep3(r)})))
               for r in recs]
    pcap = write_pcap(tmp_path / "hep.pcap", packets, LINKTYPE_RAW)
    eng = Engine(EngineConfig(config=Config(privacy="clear")))
    second: list[Event] = []
    with open_capture(pcap) as reader:
        for batch in reader:
            second += eng.feed(batch)
    second += eng.finish(EndReason.CAPTURE_END)
    keys = ("call_id", "from_", "to", "final_status", "invite_ts", "answer_ts",
            "setup_delay_s", "end_reason", "transport")

    def sig(evs: list[Event]) -> list[tuple[Any, ...]]:
        return sorted((tuple(getattr(e.record, k) for k in keys) for e in evs
                       if isinstance(e, CallEnded) and e.record.call_id), key=repr)

    assert sig(second) == sig(events) and sig(events)
    assert eng.hep.counters.skipped_json > 0  # the quality reports, recognised as such


def test_config_refuses_without_clear_privacy() -> None:
    doc = {"hep_out": {"collectors": [{"address": "198.18.0.9"}]}}
    with pytest.raises(ConfigError, match=r"hep_out\.collectors: .*privacy: clear"):
        config_from_mapping(doc)
    cfg = config_from_mapping({**doc, "privacy": "clear"})
    assert cfg.hep_out.collectors[0].port == 9060
    with pytest.raises(ConfigError, match=r"hep_out\.collectors\.0\.transport"):
        config_from_mapping({"privacy": "clear",
                             "hep_out": {"collectors": [{"address": "x", "transport": "sctp"}]}})


def test_tls_to_a_collector_with_a_self_signed_certificate(tmp_path: Path) -> None:
    """TLS: the collector's self-signed certificate verified against ``tls_ca_file``;
    one the probe was not told to trust is refused (nothing sent, counted)."""
    import ssl

    from tlscerts import make_certs

    certs = make_certs(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_crt, certs.server_key)
    srv = _server()
    port = srv.getsockname()[1]
    got: list[HepRecord] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            buf = b""
            tls.settimeout(10)
            while len(got) < 2:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 6 and len(buf) >= int.from_bytes(buf[4:6], "big"):
                    n = int.from_bytes(buf[4:6], "big")
                    got.append(parse_hep(buf[:n]))
                    buf = buf[n:]

    t = threading.Thread(target=serve)
    t.start()
    hep = HepOut([collector(transport="tls", port=port, tls_ca_file=certs.server_crt)])
    hep.start()
    rec = HepRecord(**{**fields(EXPORTER), "payload": b"BYE sip:a@b SIP/2.0\r\n\r\n",
                       "proto_type": PROTO_SIP})
    hep.senders[0].put(rec)
    hep.senders[0].put(rec)
    t.join(10)
    hep.close()
    srv.close()
    assert [g.payload for g in got] == [rec.payload] * 2 and got[0].node_name == b"probe-a"
    # not trusted (no CA file: the system store does not know it): refused, counted
    srv = _server()
    port = srv.getsockname()[1]

    def handshake_only() -> None:
        conn, _ = srv.accept()
        try:
            ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    t = threading.Thread(target=handshake_only)
    t.start()
    hep = HepOut([collector(transport="tls", port=port)])
    hep.start()
    hep.senders[0].put(rec)
    wait_for(lambda: hep.senders[0].stats.dropped["not_connected"] == 1)
    hep.close()
    t.join(10)
    srv.close()
    assert hep.stats()[0].sent == 0


def test_the_tap_changes_nothing_and_does_not_depend_on_batch_cuts() -> None:
    """The engine's records are the same with HEP out on or off, and what HEP out is
    handed is the same whatever the batch sizes (same records, same order per kind)."""

    def run(piece: int | None, tap: bool) -> tuple[list[Any], list[bytes]]:
        rec = Recorder()
        hep = HepOut([collector(rtcp_json=True)], open_socket=lambda c: rec)  # type: ignore[arg-type, return-value]
        eng = Engine(EngineConfig(config=Config(privacy="clear")))
        if tap:
            eng.tap = hep
        hep.start()
        events: list[Event] = []
        with open_capture(G711) as reader:
            for batch in reader:
                for p in (batch.pieces(piece) if piece else [batch]):
                    events += eng.feed(p)
        events += eng.finish(EndReason.CAPTURE_END)
        hep.close()
        return ([e.record.model_dump() for e in events if isinstance(e, CallEnded)],
                rec.sent)

    plain, none_sent = run(None, tap=False)
    whole, sent = run(None, tap=True)
    cut, sent_cut = run(7, tap=True)
    assert not none_sent and sent
    assert whole == plain and cut == plain
    def by_kind(sent: list[bytes]) -> dict[tuple[int, bool], list[bytes]]:
        out: dict[tuple[int, bool], list[bytes]] = {}
        for d in sent:
            r = parse_hep(d)
            out.setdefault((r.proto_type, r.payload[:1] == b"{"), []).append(d)
        return out

    # SIP and RTCP are handed over each in packet order; how RTCP interleaves with SIP
    # may follow the engine's cuts (RTCP touches no SIP state: agent/engine.py)
    assert {k: sorted(v) for k, v in by_kind(sent_cut).items()} == {
        k: sorted(v) for k, v in by_kind(sent).items()}
