"""Evidence pcaps (issue 10 item 5): the core's per-call buffers (agent/calls/evidence.py)
and the sink that writes them (agent/export/evidence.py).

Calls are built here from raw IPv4/UDP bytes (tests/packetbuild.py): SIP with SDP, RTP
with two CSRCs, a header extension and the padding bit (so the header is 12 + 8 + 8
bytes and a cut packet could be misread), RTCP sender reports on port + 1. The audio
payload is a run of 0xAA: the written files are read back with a plain pcap parser
written here, and no record may hold a byte past its RTP header.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packetbuild import sdp, sip, udp
from synth import CapturedPacket, write_pcap

from agent import cli
from agent.calls.events import CallEnded, Event
from agent.calls.evidence import EvidenceKeeper, rtp_header_len
from agent.capture.batch import Batch, LinkType
from agent.config import Config, EvidenceConfig
from agent.engine import Engine, EngineConfig
from agent.export.evidence import EvidenceWriter, file_stem, pcap_bytes
from agent.export.privacy import Pseudonymiser, read_key

A, B = "198.18.7.10", "198.19.8.20"
A_PORT, B_PORT = 16384, 20000
AUDIO = b"\xaa" * 160
CSRCS = (0x01020304, 0x05060708)
EXT = struct.pack("!HH", 0xBEDE, 1) + b"\x10\x01\x00\x00"  # one-byte header ext, 1 word
RTP_HEADER = 12 + 4 * len(CSRCS) + len(EXT)  # 28: what may be kept, nothing after
PADDING = b"\x00\x00\x00\x04"  # P bit: the last byte counts the padding
SIP_DSCP, RTP_DSCP = 24, 46


def rtp(seq: int, ts: int, ssrc: int) -> bytes:
    first = 0x80 | 0x20 | 0x10 | len(CSRCS)  # V=2, P, X, CC=2
    head = struct.pack("!BBHII", first, 8, seq, ts, ssrc) + b"".join(
        struct.pack("!I", c) for c in CSRCS)
    return head + EXT + AUDIO + PADDING


def sender_report(ssrc: int, packets: int) -> bytes:
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 0, 0, 0, packets, packets * 160)


@dataclass(frozen=True)
class Sent:
    packets: list[tuple[float, bytes]]
    sip: list[bytes]  # the SIP payloads, in order
    rtp: dict[int, list[int]]  # ssrc -> the sequence numbers sent


def call(call_id: str, t0: float = 1000.0, n: int = 150, lose_every: int = 0,
         a_port: int = A_PORT, b_port: int = B_PORT) -> Sent:
    """One answered PCMA call A -> B, ``n`` packets a direction, every ``lose_every``-th
    B -> A packet not sent (0: none), RTCP SR every 50 packets, BYE at the end."""
    kw = {"call_id": call_id}
    msgs: list[tuple[float, str, str, bytes]] = [
        (t0, A, B, sip(f"INVITE sip:bob@{B} SIP/2.0", "1 INVITE", body=sdp(A, a_port), **kw)),
        (t0 + 0.01, B, A, sip("SIP/2.0 100 Trying", "1 INVITE", **kw)),
        (t0 + 0.10, B, A, sip("SIP/2.0 180 Ringing", "1 INVITE", ";tag=b2", **kw)),
        (t0 + 0.50, B, A, sip("SIP/2.0 200 OK", "1 INVITE", ";tag=b2", sdp(B, b_port), **kw)),
        (t0 + 0.51, A, B, sip(f"ACK sip:bob@{B} SIP/2.0", "1 ACK", ";tag=b2", **kw)),
    ]
    out: list[tuple[float, bytes]] = [(t, udp(s, 5060, d, 5060, m, SIP_DSCP))
                                      for t, s, d, m in msgs]
    sent: dict[int, list[int]] = {0xA1: [], 0xB2: []}
    start = t0 + 0.6
    for k in range(n):
        t = start + 0.02 * k
        out.append((t, udp(A, a_port, B, b_port, rtp(100 + k, 160 * k, 0xA1), RTP_DSCP)))
        sent[0xA1].append(100 + k)
        if not (lose_every and k % lose_every == lose_every - 1):
            out.append((t + 0.005, udp(B, b_port, A, a_port, rtp(7000 + k, 160 * k, 0xB2),
                                       RTP_DSCP)))
            sent[0xB2].append(7000 + k)
        if k % 50 == 49:
            out.append((t + 0.006, udp(A, a_port + 1, B, b_port + 1,
                                       sender_report(0xA1, k + 1), RTP_DSCP)))
    end = start + 0.02 * n + 0.1
    bye = [(end, A, B, sip(f"BYE sip:bob@{B} SIP/2.0", "2 BYE", ";tag=b2", **kw)),
           (end + 0.02, B, A, sip("SIP/2.0 200 OK", "2 BYE", ";tag=b2", **kw))]
    out += [(t, udp(s, 5060, d, 5060, m, SIP_DSCP)) for t, s, d, m in bye]
    out.sort(key=lambda p: p[0])
    return Sent(out, [m for *_, m in msgs] + [m for *_, m in bye], sent)


def evidence_config(**kw: object) -> Config:
    return Config(evidence=EvidenceConfig(enabled=True, **kw))  # type: ignore[arg-type]


def run(packets: list[tuple[float, bytes]], config: Config, batch: int = 64
        ) -> tuple[Engine, list[CallEnded]]:
    engine = Engine(EngineConfig(config=config))
    events: list[Event] = []
    for i in range(0, len(packets), batch):
        part = packets[i:i + batch]
        events += engine.feed(Batch.from_packets([p for _, p in part], [t for t, _ in part],
                                                 LinkType.RAW))
    events += engine.finish()
    return engine, [e for e in events if isinstance(e, CallEnded)]


@dataclass(frozen=True)
class Record:
    ts: float
    data: bytes
    orig_len: int

    @property
    def udp(self) -> tuple[int, int, int, bytes]:
        """(sport, dport, UDP length field, payload kept) of a raw IPv4/UDP record."""
        ihl = (self.data[0] & 0x0F) * 4
        sport, dport, length = struct.unpack_from("!HHH", self.data, ihl)
        return sport, dport, length, self.data[ihl + 8:]


def read_pcap(path: Path) -> Iterator[Record]:
    """A plain classic-pcap reader (ns or µs magic, little-endian), raw IP link type."""
    data = path.read_bytes()
    magic, _, _, _, _, _, link = struct.unpack_from("<IHHiIII", data)
    assert magic in (0xA1B23C4D, 0xA1B2C3D4) and link == 101
    scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
    pos = 24
    while pos < len(data):
        sec, frac, incl, orig = struct.unpack_from("<IIII", data, pos)
        pos += 16
        yield Record(sec + frac * scale, data[pos:pos + incl], orig)
        pos += incl


def test_rtp_header_len_follows_cc_and_extension() -> None:
    assert rtp_header_len(rtp(1, 2, 3)) == RTP_HEADER
    assert rtp_header_len(b"\x80\x08" + bytes(10) + AUDIO) == 12
    assert rtp_header_len(b"\x83\x08" + bytes(10)) == 12  # CC says more than there is
    assert rtp_header_len(b"\x80\x08") == 2


def test_disabled_keeps_nothing() -> None:
    engine, ended = run(call("off@test", lose_every=10).packets, Config())
    assert engine.evidence is None and engine.calls.evidence is None
    assert len(ended) == 1 and ended[0].evidence is None
    assert not any(k.startswith("evidence_") and v for k, v in engine.counters().items())


def test_violated_call_pcap_has_sip_whole_and_rtp_headers_only(tmp_path: Path) -> None:
    sent = call("bad@test", lose_every=10)
    engine, ended = run(sent.packets, evidence_config())
    (ev,) = ended
    assert ev.record.sla.verdict == "violated"
    assert ev.evidence is not None and ev.evidence.dropped == 0
    names = Pseudonymiser("hash", b"k" * 32)
    writer = EvidenceWriter(engine.config.config.evidence, tmp_path / "ev", names.call_id)
    out = writer.process(ev)
    expected = file_stem(names.call_id("bad@test") or "") + ".pcap"
    assert out.record.evidence == expected and expected.startswith("h_")
    path = tmp_path / "ev" / expected
    assert path.stat().st_mode & 0o777 == 0o600
    records = list(read_pcap(path))
    assert [r.ts for r in records] == sorted(r.ts for r in records)
    sip_payloads = [r.udp[3] for r in records if r.udp[0] == 5060]
    assert sip_payloads == sent.sip  # every message, whole, in order
    seqs: dict[int, list[int]] = {0xA1: [], 0xB2: []}
    rtcp = 0
    for r in records:
        sport, _, length, kept = r.udp
        if sport in (A_PORT, B_PORT):
            assert len(kept) == RTP_HEADER  # not one byte of audio, nor of padding
            assert length == 8 + RTP_HEADER + len(AUDIO) + len(PADDING)  # as sent
            assert r.orig_len == 20 + length and len(r.data) == 20 + 8 + RTP_HEADER
            seq, _, ssrc = struct.unpack_from("!HII", kept, 2)
            seqs[ssrc].append(seq)
            assert struct.unpack_from("!II", kept, 12) == CSRCS and kept[20:] == EXT
        elif sport in (A_PORT + 1, B_PORT + 1):
            rtcp += 1
            assert kept[1] == 200 and len(kept) == 28  # RTCP kept whole
    assert seqs == sent.rtp and rtcp == 3
    assert b"\xaa" * 8 not in path.read_bytes()
    assert engine.counters()["evidence_buffered_bytes"] == 0  # handed out with the record


def test_met_call_leaves_no_file_unless_every_call(tmp_path: Path) -> None:
    engine, ended = run(call("good@test").packets, evidence_config())
    assert ended[0].record.sla.verdict == "met", ended[0].record.sla
    writer = EvidenceWriter(engine.config.config.evidence, tmp_path, lambda c: c)
    assert writer.process(ended[0]).record.evidence is None
    assert not list(tmp_path.iterdir())
    every = EvidenceWriter(EvidenceConfig(enabled=True, every_call=True), tmp_path,
                           lambda c: c)
    assert every.process(ended[0]).record.evidence == "good_test.pcap"
    assert (tmp_path / "good_test.pcap").exists()


def test_output_does_not_depend_on_batch_size() -> None:
    packets = call("batch@test", lose_every=7).packets + call(
        "two@test", t0=1001.3, a_port=30000, b_port=40000, lose_every=5).packets
    packets.sort(key=lambda p: p[0])
    files = set()
    for size in (1, 5, 64, len(packets)):
        _, ended = run(packets, evidence_config(max_bytes_per_call=8192), size)
        files.add(tuple(pcap_bytes(e.evidence.packets) if e.evidence else b"" for e in ended))
    assert len(files) == 1


def test_per_call_cap_keeps_sip_to_the_bye() -> None:
    cap = 8192
    sent = call("cap@test", n=400, lose_every=10)
    engine, (ev,) = run(sent.packets, evidence_config(max_bytes_per_call=cap))
    assert ev.evidence is not None
    assert ev.evidence.size <= cap and ev.evidence.dropped > 0
    assert engine.counters()["evidence_packets_over_call_cap"] == ev.evidence.dropped
    kept_sip = [p.data[28:] for p in ev.evidence.packets if p.data[20:22] == b"\x13\xc4"]
    assert kept_sip == sent.sip  # media stopped at 3/4 of the cap: the BYE fits
    media = [p for p in ev.evidence.packets if p.data[20:22] != b"\x13\xc4"]
    assert cap * 3 // 4 - 100 < sum(len(p.data) for p in media) <= cap * 3 // 4


def test_buffer_cap_over_all_calls_bounds_memory() -> None:
    cfg = EvidenceConfig(enabled=True, max_buffer_bytes=64 * 1024)
    packets: list[tuple[float, bytes]] = []
    for k in range(8):  # 8 concurrent calls, ~23 KiB of headers each
        packets += call(f"many{k}@test", t0=1000 + k * 0.01, n=300, a_port=10000 + 10 * k,
                        b_port=20000 + 10 * k).packets
    packets.sort(key=lambda p: p[0])
    engine = Engine(EngineConfig(config=Config(evidence=cfg)))
    assert isinstance(engine.evidence, EvidenceKeeper)
    high = 0
    ended: list[CallEnded] = []
    for i in range(0, len(packets), 50):
        part = packets[i:i + 50]
        ended += [e for e in engine.feed(Batch.from_packets(
            [p for _, p in part], [t for t, _ in part], LinkType.RAW)) if isinstance(e, CallEnded)]
        high = max(high, engine.evidence.counters.buffered_bytes)
    ended += [e for e in engine.finish() if isinstance(e, CallEnded)]
    assert 0.9 * cfg.max_buffer_bytes < high <= cfg.max_buffer_bytes
    c = engine.counters()
    assert c["evidence_packets_over_buffer_cap"] > 0 and c["evidence_buffered_bytes"] == 0
    assert sum(e.evidence.dropped for e in ended if e.evidence) == \
        c["evidence_packets_over_buffer_cap"]
    assert len(engine.evidence) == 0


def _events(n: int) -> list[CallEnded]:
    packets: list[tuple[float, bytes]] = []
    for k in range(n):
        packets += call(f"rot{k}@test", t0=1000 + 10 * k, n=60, lose_every=5).packets
    return run(packets, evidence_config())[1]


def test_rotation_removes_the_oldest_files(tmp_path: Path) -> None:
    ended = _events(5)
    (tmp_path / "old.pcap").write_bytes(b"x" * 10)  # found at start: the oldest
    writer = EvidenceWriter(EvidenceConfig(enabled=True, max_files=3), tmp_path, lambda c: c)
    names = [writer.process(e).record.evidence for e in ended]
    assert names == [f"rot{k}_test.pcap" for k in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == names[2:]
    assert writer.stats.removed == 3 and writer.stats.files == 3
    size = (tmp_path / names[4]).stat().st_size
    total = EvidenceWriter(EvidenceConfig(enabled=True, max_total_bytes=max(2 * size, 65536)),
                           tmp_path / "t", lambda c: c)
    for e in ended:
        total.process(e)
    kept = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert sum((tmp_path / "t" / k).stat().st_size for k in kept) <= max(2 * size, 65536)
    assert kept == names[5 - len(kept):] and total.stats.removed == 5 - len(kept)


def test_write_error_is_counted_not_raised(tmp_path: Path) -> None:
    (ev,) = _events(1)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    writer = EvidenceWriter(EvidenceConfig(enabled=True), blocker / "ev", lambda c: c)
    out = writer.process(ev)
    assert out.record.evidence is None and writer.stats.write_errors == 1
    assert writer.process(ev).record.evidence is None and writer.stats.write_errors == 2


def test_file_stem_is_safe() -> None:
    assert file_stem("h:0123456789ab") == "h_0123456789ab"
    assert file_stem("../../etc/passwd") == "_.._etc_passwd"
    assert file_stem("") == "call" and len(file_stem("x" * 500)) == 120


def test_analyze_evidence_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    packets = call("cli@test", lose_every=10).packets + call(
        "clean@test", t0=1010, a_port=30000, b_port=40000).packets
    cap = write_pcap(tmp_path / "in.pcap",
                     [CapturedPacket(round(t * 1e9), p) for t, p in sorted(packets)], 101,
                     nanosecond=True)
    out_dir = tmp_path / "ev"
    assert cli.main(["analyze", "--json", "--no-progress", "--evidence", str(out_dir),
                     str(cap)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    recs = {r["call_id"]: r for r in lines if r.get("kind") == "call"}
    assert recs["cli@test"]["evidence"] == "cli_test.pcap"
    assert recs["clean@test"]["evidence"] is None
    assert [p.name for p in out_dir.iterdir()] == ["cli_test.pcap"]


def ip6_udp(src: str, sport: int, dst: str, dport: int, payload: bytes, tc: int = 0) -> bytes:
    import ipaddress
    head = struct.pack("!IHBB", (6 << 28) | (tc << 20), 8 + len(payload), 17, 64)
    return (head + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def test_ipv6_call_keeps_its_addresses_and_lengths() -> None:
    a6, b6 = "2001:db8::10", "2001:db8:1::20"
    body_a = sdp(A, A_PORT).replace(f"IN IP4 {A}".encode(), f"IN IP6 {a6}".encode())
    body_b = sdp(B, B_PORT).replace(f"IN IP4 {B}".encode(), f"IN IP6 {b6}".encode())
    kw = {"call_id": "v6@test"}
    msgs = [sip(f"INVITE sip:bob@[{b6}] SIP/2.0", "1 INVITE", body=body_a, **kw),
            sip("SIP/2.0 200 OK", "1 INVITE", ";tag=b2", body_b, **kw)]
    packets = [(1000.0, ip6_udp(a6, 5060, b6, 5060, msgs[0])),
               (1000.5, ip6_udp(b6, 5060, a6, 5060, msgs[1]))]
    packets += [(1001 + 0.02 * k, ip6_udp(a6, A_PORT, b6, B_PORT, rtp(k, 160 * k, 9), 46 << 2))
                for k in range(20)]
    _, (ev,) = run(packets, Config(evidence=EvidenceConfig(enabled=True)))
    assert ev.evidence is not None
    sips = [p for p in ev.evidence.packets if p.data[40:42] == b"\x13\xc4"]
    media = [p for p in ev.evidence.packets if p not in sips]
    assert [p.data[48:] for p in sips] == msgs
    assert len(media) == 20
    for k, p in enumerate(media):
        first, plen, nxt = struct.unpack_from("!IHB", p.data)
        assert first >> 28 == 6 and (first >> 22) & 0x3F == 46 and nxt == 17
        assert plen == 8 + len(rtp(0, 0, 0)) and p.orig_len == 40 + plen
        assert p.data[8:24] == bytes.fromhex("20010db8" + "0" * 22 + "10")
        assert len(p.data) == 40 + 8 + RTP_HEADER
        assert struct.unpack_from("!H", p.data, 50)[0] == k


def test_sip_over_tcp_becomes_one_segment_per_message() -> None:
    invite = sip(f"INVITE sip:bob@{B} SIP/2.0", "1 INVITE", body=sdp(A, A_PORT),
                 call_id="tcp@test")
    half = len(invite) // 2

    def segment(seq: int, data: bytes) -> bytes:
        tcp = struct.pack("!HHIIBBHHH", 40000, 5060, seq, 1, 5 << 4, 0x18, 65535, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(data), 0, 0, 64, 6, 0,
                         bytes(map(int, A.split("."))), bytes(map(int, B.split("."))))
        return ip + tcp + data

    packets = [(1000.0, segment(5000, invite[:half])),
               (1000.1, segment(5000 + half, invite[half:]))]
    _, (ev,) = run(packets, evidence_config())
    assert ev.evidence is not None
    (pkt,) = ev.evidence.packets
    sport, dport, seq, _, off, flags = struct.unpack_from("!HHIIBB", pkt.data, 20)
    assert (sport, dport, seq, off >> 4, flags) == (40000, 5060, 1, 5, 0x18)
    assert pkt.data[9] == 6 and pkt.data[40:] == invite and pkt.orig_len == len(pkt.data)
    assert struct.unpack_from("!H", pkt.data, 2)[0] == len(pkt.data)


@pytest.mark.parametrize("blocked", [False, True])
def test_daemon_writes_evidence_or_counts_the_error(tmp_path: Path, blocked: bool) -> None:
    from test_daemon import FakeSource, MemoryLog, make_daemon, sample_batches

    state = tmp_path / "state"
    state.mkdir()
    if blocked:  # the evidence directory cannot be made: a file is in the way
        (state / "evidence").write_text("in the way")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"exporter:\n  site: lab\nstate_dir: {state}\nprivacy: hash\n"
                   "evidence:\n  enabled: true\n")
    source = FakeSource(sample_batches())
    log = MemoryLog()
    d, registry = make_daemon(source, cfg, call_log=log)
    for _ in range(len(source.batches) + 30):
        d.step()
    (rec,) = log.records  # the sample's call: b_to_a loss 1.5 %, SLA violated
    assert rec.sla.verdict == "violated"
    d._update_metrics()

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name, {"site": "lab"})

    if blocked:
        assert rec.evidence is None
        assert sample("voipprobe_evidence_write_errors_total") == 1
        assert sample("voipprobe_evidence_files_written_total") == 0
    else:
        pseudonym = Pseudonymiser("hash", read_key(state))
        assert rec.evidence == file_stem(pseudonym.call_id(rec.call_id or "") or "") + ".pcap"
        assert (state / "evidence" / rec.evidence).stat().st_size > 24
        assert sample("voipprobe_evidence_files_written_total") == 1
        assert sample("voipprobe_evidence_write_errors_total") == 0
    d.shutdown()


def test_reconfigure_keeps_running_buffers_and_turns_off() -> None:
    packets = call("reload@test", lose_every=10).packets
    engine = Engine(EngineConfig(config=evidence_config()))
    head = [p for p in packets if p[0] < 1002]
    engine.feed(Batch.from_packets([p for _, p in head], [t for t, _ in head], LinkType.RAW))
    keeper = engine.evidence
    assert keeper is not None and len(keeper) == 1
    assert engine.reconfigure(evidence_config(max_bytes_per_call=8192)) == []
    assert engine.evidence is keeper and keeper.config.max_bytes_per_call == 8192
    engine.reconfigure(Config())
    assert engine.evidence is None and engine.calls.evidence is None


def test_many_calls_evidence_does_not_depend_on_batch_size() -> None:
    """callgen's concurrent calls (re-INVITEs moving a port, in-dialog requests, failed
    and cancelled calls, delay and duplicates): the same evidence, packet for packet,
    whatever the batch size."""
    from callgen import many_calls

    packets, _ = many_calls(n=6)
    frames = [p.frame for p in packets]
    ts = [p.ts_ns / 1e9 for p in packets]
    seen = set()
    for size in (3, 64, len(frames)):
        engine = Engine(EngineConfig(config=evidence_config()))
        events: list[Event] = []
        for i in range(0, len(frames), size):
            events += engine.feed(Batch.from_packets(frames[i:i + size], ts[i:i + size]))
        events += engine.finish()
        got = tuple(sorted((e.record.call_id or "", pcap_bytes(e.evidence.packets))
                           for e in events if isinstance(e, CallEnded) and e.evidence))
        assert len(got) >= 6 and all(len(b) > 24 for _, b in got)
        seen.add(got)
    assert len(seen) == 1
