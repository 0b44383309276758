"""HEP v1/v2/v3: the parser against an independent chunk dump of the corpus captures
(tshark's UDP payload bytes, chunks walked by shared/corpus/tools/hep3_dump.py), analyze
of HEP captures, real captures re-encoded into HEP giving the same call records, and
garbage that never raises anything but `HepError`."""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from corpus_oracle import corpus_dir
from hepbuild import EXPORTER, close, comparable, fields, hep_capture, records_of
from hypothesis import given, settings
from hypothesis import strategies as st
from records import points_of
from synth import LINKTYPE_RAW, CapturedPacket, write_pcap

from agent.calls.events import StreamEnded
from agent.capture.batch import Batch, LinkType
from agent.capture.pcapfile import open_capture
from agent.decode import Decoder
from agent.decode.frames import IPPROTO_TCP, IPPROTO_UDP
from agent.decode.hep import (
    MAX_PAYLOAD,
    PROTO_SIP,
    HepError,
    HepRecord,
    encode_hep2,
    encode_hep3,
    parse_hep,
)
from agent.decode.hep_unwrap import HepUnwrapper, build_packet
from agent.engine import Engine

PTYPES = {1: "SIP", 5: "RTCP/JSON", 100: "LOG"}


def _udp_payloads(path: Path) -> list[tuple[int, bytes]]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "udp", "-T", "fields",
                          "-e", "frame.number", "-e", "udp.payload"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
    return [(int(n), bytes.fromhex(h.replace(":", ""))) for n, h in rows]


def _oracle(name: str) -> list[dict[str, str]]:
    lines = (corpus_dir() / "oracle" / f"{name}.hep3_chunks.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"), strict=False)) for line in lines[1:]]


def _addr(raw: bytes) -> str:
    import ipaddress
    return str(ipaddress.ip_address(raw))


@pytest.mark.needs_tshark
@pytest.mark.parametrize(("name", "capture_id"), [("hep3_sip.pcap", 2001),
                                                   ("hep3_compressed.pcapng", 228)])
def test_corpus_records_match_the_independent_chunk_dump(name: str, capture_id: int) -> None:
    payloads = _udp_payloads(corpus_dir() / "pcaps" / name)
    want = _oracle(name)
    assert [n for n, _ in payloads] == [int(w["frame"]) for w in want]
    for (_, raw), w in zip(payloads, want, strict=True):
        rec = parse_hep(raw)
        assert rec.version == 3
        assert f"{rec.ts_sec}.{rec.ts_usec:06d}" == w["ts"]
        assert rec.ip_proto == int(w["ip_proto"])
        assert f"{_addr(rec.src)}:{rec.sport}" == w["src"]
        assert f"{_addr(rec.dst)}:{rec.dport}" == w["dst"]
        assert PTYPES[rec.proto_type] == w["proto_type"]
        assert rec.correlation_id.decode() == w["correlation_id"]
        assert rec.capture_id == capture_id  # chunk 12 (0x7d1, 0xe4) in tshark -x
        assert len(rec.payload) == int(w["payload_len"])
        assert rec.payload.replace(b"\r\n", b"\n").split(b"\n")[0].decode()[:100] == \
            w["payload_first_line"]
        assert rec.compressed == (name == "hep3_compressed.pcapng")
        if not rec.compressed:  # the payload chunk's bytes, as they are on the wire
            assert raw.endswith(rec.payload)
        # what we write back parses to the same record
        assert parse_hep(encode_hep3(rec, compress=rec.compressed)) == rec


def _analyze(*paths: Path) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "--json",
                          "--no-progress", *map(str, paths)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_analyze_hep3_sip_reports_its_sip() -> None:
    *calls, summary = _analyze(corpus_dir() / "pcaps" / "hep3_sip.pcap")
    assert summary["hep_records_v3"] == 8
    # the RTCP-as-JSON report: its NTP fraction (13217348104192) fits no 32-bit field, so
    # it is malformed (tests/decode/test_hep_rtcp_json.py), counted, dropped
    assert (summary["hep_rtcp_json"], summary["hep_rtcp_json_errors"]) == (0, 1)
    assert summary["hep_skipped_json"] == 0
    assert summary["hep_skipped_other"] == 1  # the LOG record
    assert summary["hep_packets_rebuilt"] == 6
    assert summary["route_sip_udp"] == 6
    # The INVITE and PUBLISH of this synthetic capture end their lines with LF but
    # count CRLF in Content-Length. The INVITE's body is short by exactly its 11 bare
    # LFs (287 declared, 276 sent): accepted and counted. The PUBLISH's is short by 21
    # with 13 bare LFs (450 declared, 429 sent): a body shorter than Content-Length
    # over UDP, still an error (RFC 3261 §18.3)
    assert summary["route_sip_messages"] == 5
    assert summary["route_sip_body_length_lenient"] == 1
    assert summary["route_sip_parse_errors"] == 1
    assert summary["sip_requests_invite"] == 1
    assert summary["sip_responses_1xx"] == 1
    assert summary["sip_responses_4xx"] == 1
    assert summary["sip_requests_options"] == 1
    assert summary["sip_responses_2xx"] == 1
    assert summary["sip_orphan_responses"] == 0  # the 100 and 407 answer the INVITE
    # the call: the Call-ID the HEP correlation id and the chunk dump name, answered 407
    # (corpus README: "1 (407)")
    invite = next(r for r in _oracle("hep3_sip.pcap") if r["sip_cseq"] == "1 INVITE")
    (call,) = calls
    assert call["call_id"] == invite["correlation_id"] == "qgf3dm9rudi@127.0.0.1"
    assert (call["final_status"], call["end_reason"]) == (407, "failed")
    assert call["invite_ts"] == pytest.approx(float(invite["ts"]), abs=1e-6)
    assert call["directions"] == []  # the capture has no RTP


@pytest.mark.needs_tshark
def test_hep3_sip_call_parties_as_tshark_reads_them(tmp_path: Path) -> None:
    """From/To/Call-ID/status of the hepgen call as tshark's SIP dissector reads the SIP
    that the HEP packets carry (rewrapped as plain UDP: tshark 4.0 has no HEP dissector)."""
    recs = [parse_hep(raw) for _, raw in _udp_payloads(corpus_dir() / "pcaps" / "hep3_sip.pcap")]
    sip = [r for r in recs if r.proto_type == PROTO_SIP]
    write_pcap(tmp_path / "sip.pcap", [CapturedPacket(r.ts_sec * 10**9 + r.ts_usec * 1000,
                                                      build_packet(r)) for r in sip],
               LINKTYPE_RAW)
    out = subprocess.run(["tshark", "-n", "-r", str(tmp_path / "sip.pcap"), "-Y",
                          'sip.CSeq.method == "INVITE"', "-T", "fields", "-E", "separator=|",
                          "-e", "sip.Call-ID", "-e", "sip.from.addr", "-e", "sip.to.addr",
                          "-e", "sip.Method", "-e", "sip.Status-Code"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split("|") for line in out.splitlines()]
    assert [r[3] or r[4] for r in rows] == ["INVITE", "100", "407"]
    call_id, from_uri, to_uri = rows[0][:3]
    (call,) = [c for c in _analyze(corpus_dir() / "pcaps" / "hep3_sip.pcap")
               if c["kind"] == "call"]
    assert (call["call_id"], call["from"], call["to"]) == (call_id, from_uri, to_uri)
    assert call["final_status"] == int(rows[-1][4])


def test_analyze_hep3_compressed_counts_each_copy_once() -> None:
    *calls, summary = _analyze(corpus_dir() / "pcaps" / "hep3_compressed.pcapng")
    assert summary["packets"] == 21
    assert summary["hep_records_v3"] == 21
    assert summary["hep_duplicates"] == 14  # each HEP packet is in the capture 3 times
    assert summary["hep_packets_rebuilt"] == 7
    # SIP over TCP, rebuilt as TCP segments: REGISTER x4 (client->proxy->registrar,
    # twice), 401 x2, 200 x1 -- each message once
    assert summary["sip_tcp_messages"] == 7
    assert summary["sip_requests_register"] == 4
    assert summary["sip_responses_4xx"] == 2
    assert summary["sip_responses_2xx"] == 1
    assert summary["sip_retransmissions"] == 0
    assert calls == []


# -- real captures re-encoded into HEP ---------------------------------------------------

@pytest.mark.parametrize("mode", ["v3", "zlib", "v2", "tcp", "tcp_zlib"])
@pytest.mark.parametrize("capture", ["wiki_SIP_CALL_RTP_G711.pcap",
                                     "sipp_sip-tcp_pcma_dtmf.pcap"])
def test_reencoded_capture_gives_the_same_calls(capture: str, mode: str,
                                                tmp_path: Path) -> None:
    original = corpus_dir() / "pcaps" / capture
    hep = hep_capture(original, tmp_path / "hep.pcap", mode)
    *want, _ = _analyze(original)
    *got, summary = _analyze(hep)
    assert summary[f"hep_records_{'v2' if mode == 'v2' else 'v3'}"] == \
        summary["hep_packets_rebuilt"] > 0
    assert summary["hep_errors_v2"] == summary["hep_errors_v3"] == 0
    if mode.startswith("tcp"):  # one segment twice, none missing, framing never lost
        assert (summary["hep_tcp_retransmitted"], summary["hep_tcp_gaps"],
                summary["hep_tcp_desynced"]) == (1, 0, 0)
        assert summary["hep_packets_rebuilt"] == len(records_of(original))
    assert want and len(got) == len(want)
    assert [c["final_status"] for c in got] == [c["final_status"] for c in want]
    for g, w in zip(got, want, strict=True):
        assert [d["stream"]["lost"] for d in g["directions"]] == \
            [d["stream"]["lost"] for d in w["directions"]]
        assert points_of(g) <= {"hep/7"} and points_of(w) <= {None}, (g, w)
        diffs = close(comparable(g, mode != "v2"), comparable(w, mode != "v2"))
        assert not diffs, diffs


def _engine_records(path: Path, cut: int) -> list[dict[str, Any]]:
    with open_capture(path) as reader:
        batches = list(reader)
    packets = [(b.packet(i), float(b.ts[i]), int(b.linktype[i]))
               for b in batches for i in range(len(b))]
    eng = Engine()
    events = []
    for k in range(0, len(packets), cut):
        part = packets[k : k + cut]
        events += eng.feed(Batch.from_packets([p for p, _, _ in part], [t for _, t, _ in part],
                                              [lt for _, _, lt in part]))
    events += eng.finish()
    return [e.record.to_json() for e in events if hasattr(e, "record")]


def test_hep_time_is_the_packet_time_and_batching_does_not_matter(tmp_path: Path) -> None:
    """Captured 3 s after the HEP time, with the order kept: the records carry the HEP
    times, and batches of 1, 7 and 1000 packets give the whole-file records."""
    original = corpus_dir() / "pcaps" / "wiki_SIP_CALL_RTP_G711.pcap"
    hep = hep_capture(original, tmp_path / "late.pcap", "v3", delay_s=3.0)
    *want, _ = _analyze(original)
    whole = _engine_records(hep, 1 << 30)
    assert [c["invite_ts"] for c in whole] == [c["invite_ts"] for c in want]
    for cut in (1, 7, 1000):
        assert _engine_records(hep, cut) == whole


def test_reordered_hep_times_take_effect_at_their_own_time() -> None:
    """Two RTP packets whose HEP times are swapped relative to arrival: the stream
    sees both at their HEP times (reordered counted by sequence, no crash, no stall)."""
    def rtp(seq: int, ts_us: int) -> bytes:
        payload = struct.pack("!BBHII", 0x80, 8, seq, seq * 160, 0x1234) + bytes(160)
        rec = HepRecord(version=3, ip_version=4, ip_proto=IPPROTO_UDP,
                        src=bytes([198, 18, 1, 1]), dst=bytes([198, 18, 1, 2]), sport=4000,
                        dport=4002, ts_sec=1000, ts_usec=ts_us, proto_type=4,
                        capture_id=1, payload=payload)
        return build_packet(HepRecord(**{**fields(EXPORTER), "payload": encode_hep3(rec)}))
    order = [(s, s * 20_000) for s in range(20)]
    order[5], order[6] = order[6], order[5]
    unwrap = HepUnwrapper()
    out = unwrap.unwrap(Batch.from_packets([rtp(s, t) for s, t in order],
                                           [2000.0 + k for k in range(20)], LinkType.RAW))
    assert out.ts.tolist() == [1000 + t * 1e-6 for _, t in order]
    assert set(out.linktype.tolist()) == {LinkType.RAW}
    eng = Engine()
    events = eng.feed(Batch.from_packets([rtp(s, t) for s, t in order],
                                         [2000.0 + k for k in range(20)], LinkType.RAW))
    events += eng.finish()
    (stats,) = [e.stats for e in events if isinstance(e, StreamEnded)]
    assert (stats.packets, stats.lost, stats.duplicates) == (20, 0, 0)
    assert stats.reordered == 1
    assert (stats.first_ts, stats.last_ts) == (1000.0, 1000.38)
    # arrival at equal spacing in HEP time but for the swap: transit differences are
    # 0 except around it, so the jitter is tiny and not the 1 s spacing of capture time
    assert stats.jitter_max_ms < 5.0


# -- robustness ----------------------------------------------------------------------------

SAMPLE = HepRecord(version=3, ip_version=6, ip_proto=IPPROTO_TCP, src=bytes(range(16)),
                   dst=bytes(range(16, 32)), sport=5060, dport=5061, ts_sec=1_700_000_000,
                   ts_usec=123456, proto_type=PROTO_SIP, capture_id=42,
                   payload=b"OPTIONS sip:a SIP/2.0\r\n\r\n", correlation_id=b"abc",
                   tos=0xB8)


def test_v2_and_v1_round_trip() -> None:
    assert parse_hep(encode_hep2(SAMPLE)) == HepRecord(
        **{**fields(SAMPLE), "version": 2, "proto_type": 0, "correlation_id": b"",
           "tos": None})
    v1 = parse_hep(encode_hep2(SAMPLE, version=1))
    assert (v1.version, v1.ts_sec, v1.ts_usec, v1.capture_id) == (1, 0, 0, 0)
    assert v1.payload == SAMPLE.payload


def test_v3_round_trip_and_rebuilt_packet() -> None:
    assert parse_hep(encode_hep3(SAMPLE)) == SAMPLE
    assert parse_hep(encode_hep3(SAMPLE, compress=True)) == HepRecord(
        **{**fields(SAMPLE), "compressed": True})
    f = Decoder().decode(Batch.from_packets([build_packet(SAMPLE, tcp_seq=77)], [1.0],
                                            LinkType.RAW))
    assert len(f) == 1
    assert (int(f.ip_version[0]), int(f.proto[0]), int(f.sport[0]), int(f.dport[0])) == \
        (6, IPPROTO_TCP, 5060, 5061)
    assert (int(f.dscp[0]), int(f.tcp_seq[0])) == (46, 77)  # TOS 0xB8 = EF
    assert f.payload(0) == SAMPLE.payload
    assert int(f.src_lo[0]) == int.from_bytes(SAMPLE.src[8:], "big")


def test_decompression_bomb_is_an_error() -> None:
    bomb = zlib.compress(bytes(50 << 20))  # 50 MB of zeros in ~50 kB
    rec = encode_hep3(HepRecord(**{**fields(SAMPLE), "payload": b""}))
    body = rec[6:-6]  # without the empty payload chunk
    chunk = struct.pack("!HHH", 0, 16, 6 + len(bomb[:60000])) + bomb[:60000]
    packet = b"HEP3" + struct.pack("!H", 6 + len(body) + len(chunk)) + body + chunk
    with pytest.raises(HepError):
        parse_hep(packet)
    ok = zlib.compress(bytes(MAX_PAYLOAD))
    chunk = struct.pack("!HHH", 0, 16, 6 + len(ok)) + ok
    packet = b"HEP3" + struct.pack("!H", 6 + len(body) + len(chunk)) + body + chunk
    assert len(parse_hep(packet).payload) == MAX_PAYLOAD


VALID = [encode_hep3(SAMPLE), encode_hep3(SAMPLE, compress=True), encode_hep2(SAMPLE),
         encode_hep2(SAMPLE, version=1)]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"", b"HEP3", b"\x01", b"\x02"]))
def test_garbage_raises_only_hep_error(data: bytes, prefix: bytes) -> None:
    with contextlib.suppress(HepError):
        parse_hep(prefix + data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                        max_size=6), st.integers(0, 400))
def test_mutated_packets_raise_only_hep_error(base: bytes, flips: list[tuple[int, int]],
                                              cut: int) -> None:
    data = bytearray(base)
    for pos, value in flips:
        data[pos % len(data)] = value
    with contextlib.suppress(HepError):
        parse_hep(bytes(data[: len(data) - cut % len(data)]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=120), st.sampled_from(VALID)), max_size=8))
def test_unwrapper_never_raises_and_counts_every_hep_packet(payloads: list[bytes]) -> None:
    packets = [build_packet(HepRecord(**{**fields(EXPORTER), "payload": p})) for p in payloads]
    unwrap = HepUnwrapper()
    out = unwrap.unwrap(Batch.from_packets(packets, np.arange(len(packets), dtype=float),
                                           LinkType.RAW))
    c = unwrap.counters
    looked = sum(1 for p in payloads if len(p) >= 8 and (p[:4] == b"HEP3" or p[0] in (1, 2)))
    assert c.packets == looked
    assert looked == (c.records_v1 + c.records_v2 + c.records_v3 + c.errors_v1 + c.errors_v2
                      + c.errors_v3)
    assert len(out) == len(packets) - looked + c.packets_rebuilt


def test_sngrep_v2_header_as_sent() -> None:
    """sngrep 1.6's HEP v2, byte for byte: header length written as 2 (ignored), time
    header little-endian, capture id 2002, two bytes of uninitialised struct padding."""
    raw = bytes.fromhex("02020211 13c413c5 c83907c3 c83907cc 2a08e841 38bd0e00 d207c0f2"
                        .replace(" ", "")) + b"INVITE sip:x SIP/2.0\r\n\r\n"
    rec = parse_hep(raw)
    assert (rec.version, rec.ip_version, rec.ip_proto) == (2, 4, IPPROTO_UDP)
    assert (_addr(rec.src), rec.sport, _addr(rec.dst), rec.dport) == \
        ("200.57.7.195", 5060, "200.57.7.204", 5061)
    assert (rec.ts_sec, rec.ts_usec, rec.capture_id) == (1105725482, 965944, 2002)
    assert rec.payload == b"INVITE sip:x SIP/2.0\r\n\r\n"


def test_hep_mirrored_inside_vxlan_is_unwrapped() -> None:
    """A HEP datagram that a switch mirrored over VXLAN: peeled, then unwrapped."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN
    from scapy.packet import Raw

    options = (b"OPTIONS sip:b@198.18.8.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.7.1\r\n"
               b"Call-ID: x\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:a>;tag=1\r\nTo: <sip:b>\r\n\r\n")
    sip = HepRecord(**{**fields(SAMPLE), "ip_version": 4, "ip_proto": IPPROTO_UDP,
                       "src": bytes([198, 18, 7, 1]), "dst": bytes([198, 18, 8, 2]),
                       "payload": options})
    inner = Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=40000, dport=9060) \
        / Raw(encode_hep3(sip))
    frame = bytes(Ether() / IP(src="198.18.0.3", dst="198.18.0.4") / UDP(sport=1, dport=4789)
                  / VXLAN(vni=7) / inner)
    eng = Engine()
    eng.feed(Batch.from_packets([frame], [5.0], LinkType.ETHERNET))
    c = eng.counters()
    assert (c["hep_records_v3"], c["hep_packets_rebuilt"]) == (1, 1)
    assert c["route_sip_messages"] == 1 and c["sip_requests_options"] == 1
