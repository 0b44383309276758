"""agent/decode/hep_rtcp_json.py and the HEP stage around it: RTCP-as-JSON as its senders
write it (rtpengine's daemon/rtcp.c homer handlers, heplify's protos/rtcp.go, hepipe.js
for FreeSWITCH, hepgen's sample in the corpus) read back into the SR/RR it describes; a
real capture whose RTCP is re-sent as JSON gives the records the binary RTCP gives;
JSON reports with chosen figures show in the call's ``rtcp`` blocks; and garbage raises
nothing but `RtcpJsonError` (and is a counted drop in the unwrapper)."""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from corpus_oracle import corpus_dir
from hepbuild import EXPORTER, close, comparable, fields, records_of
from hypothesis import given, settings
from hypothesis import strategies as st
from synth import LINKTYPE_RAW, CapturedPacket, write_pcap
from test_hep import _analyze

from agent.capture.batch import Batch, LinkType
from agent.capture.pcapfile import open_capture
from agent.decode import Decoder
from agent.decode.hep import PROTO_RTCP, HepRecord, encode_hep3, parse_hep
from agent.decode.hep_rtcp_json import RtcpJsonError, report_from_json
from agent.decode.hep_unwrap import HepUnwrapper, build_packet
from agent.rtcp.packets import (
    MAX_REPORT_BLOCKS,
    ReceiverReport,
    ReportBlock,
    SenderReport,
    encode_report,
    parse_compound,
)

WIKI = "wiki_SIP_CALL_RTP_G711.pcap"
SSRC_X, SSRC_Y = 3535621694, 1492336106  # the answered call's two RTP sources (PCMA)

# rtpengine 'homer_sr', 'homer_rr_list_start', 'homer_rr' and 'homer_sdes_*' print this
# shape (printf, a space before "packets", the SDES list after the report blocks)
RTPENGINE_SR = (
    '{ "sender_information":{"ntp_timestamp_sec":3900000000,"ntp_timestamp_usec":2147483648,'
    '"octets":16000,"rtp_timestamp":160000, "packets":100},"ssrc":305419896,"type":200,'
    '"report_count":1,"report_blocks":[{"source_ssrc":2882400001,"highest_seq_no":70000,'
    '"fraction_lost":64,"ia_jitter":80,"packets_lost":17,"lsr":1234567,"dlsr":65536}],'
    '"sdes_report_count":1,"sdes_information": [ {"sdes_chunk_ssrc":305419896,"type":1,'
    '"text":"probe@example.test"} ] }')
# heplify's RTCP_Packet: every field always present, "type" is the compound's *last*
# packet's (202 after SR + SDES), an RR's sender_information zeros, no blocks = null
HEPLIFY_SR_SDES = (
    '{"sender_information":{"ntp_timestamp_sec":3719322562,"ntp_timestamp_usec":3758534470,'
    '"rtp_timestamp":360902880,"packets":4017,"octets":642720},"ssrc":2543003035,"type":202,'
    '"report_count":1,"report_blocks":[{"source_ssrc":1393754395,"fraction_lost":0,'
    '"packets_lost":16777215,"highest_seq_no":29662,"ia_jitter":159,"lsr":0,"dlsr":0}],'
    '"report_blocks_xr":{"type":0,"id":0,"fraction_lost":0,"fraction_discard":0,'
    '"burst_density":0,"gap_density":0,"burst_duration":0,"gap_duration":0,'
    '"round_trip_delay":0,"end_system_delay":0},"sdes_ssrc":2543003035}')
HEPLIFY_EMPTY_RR = (
    '{"sender_information":{"ntp_timestamp_sec":0,"ntp_timestamp_usec":0,"rtp_timestamp":0,'
    '"packets":0,"octets":0},"ssrc":99,"type":202,"report_count":0,"report_blocks":null,'
    '"report_blocks_xr":{"type":0},"sdes_ssrc":99}')
# hepipe.js getRTCPMessage: FreeSWITCH's event headers, SSRCs as strings, jitter a float
HEPIPE = (
    '{"type":200,"ssrc":"3535621694","report_count":12,"report_blocks":[{"source_ssrc":'
    '"1492336106","fraction_lost":3,"packets_lost":5,"highest_seq_no":1000,"lsr":0,'
    '"ia_jitter":12.6,"dlsr":0}],"sender_information":{"packets":400,"ntp_timestamp_sec":'
    '3900000001,"ntp_timestamp_usec":0,"rtp_timestamp":64000,"octets":64000}}')


def test_rtpengine_sender_report() -> None:
    sr = report_from_json(RTPENGINE_SR.encode())
    assert sr == SenderReport(305419896, (3900000000 << 32) | 2147483648, 160000, 100, 16000,
                              (ReportBlock(2882400001, 64, 17, 70000, 80, 1234567, 65536),))
    assert sr.reports[0].fraction_lost == 0.25 and sr.reports[0].dlsr_s == 1.0
    assert parse_compound(encode_report(sr)) == (sr,)


def test_heplify_type_is_the_last_packet_type() -> None:
    """202 with sender information is the SR it came with; 202 with zeros an RR; the
    24-bit 0xFFFFFF cumulative loss is -1 (one duplicate, RFC 3550 §6.4.1)."""
    sr = report_from_json(HEPLIFY_SR_SDES.encode())
    assert isinstance(sr, SenderReport) and sr.ssrc == 2543003035
    assert sr.ntp_timestamp == (3719322562 << 32) | 3758534470
    (block,) = sr.reports
    assert (block.ssrc, block.cumulative_lost, block.jitter_ts_units) == (1393754395, -1, 159)
    assert report_from_json(HEPLIFY_EMPTY_RR.encode()) == ReceiverReport(99, ())
    rr = json.loads(HEPLIFY_SR_SDES)
    rr["type"] = 201  # an RR says so, whatever else is there
    assert isinstance(report_from_json(json.dumps(rr).encode()), ReceiverReport)


def test_hepipe_strings_and_float_jitter() -> None:
    sr = report_from_json(HEPIPE.encode())
    assert isinstance(sr, SenderReport) and sr.ssrc == SSRC_X
    assert sr.reports == (ReportBlock(SSRC_Y, 3, 5, 1000, 13, 0, 0),)  # 12.6 rounded


def _corpus_json() -> bytes:
    """The RTCP-as-JSON record of hep3_sip.pcap (hepgen), as the capture carries it."""
    dec = Decoder()
    with open_capture(corpus_dir() / "pcaps" / "hep3_sip.pcap") as reader:
        for batch in reader:
            f = dec.decode(batch)
            for i in range(len(f)):
                rec = parse_hep(f.payload(i))
                if rec.proto_type == PROTO_RTCP:
                    return rec.payload
    raise AssertionError("no type 5 record")


def test_hepgen_corpus_report() -> None:
    """hepgen prints lsr as a signed 32-bit number (taken), and an NTP fraction of
    13217348104192, which no 32-bit field holds: the report is malformed."""
    raw = _corpus_json()
    assert b'"lsr":-1097006646' in raw and b'"ntp_timestamp_usec":13217348104192' in raw
    with pytest.raises(RtcpJsonError, match="ntp_timestamp_usec"):
        report_from_json(raw)
    sr = report_from_json(raw.replace(b"13217348104192", b"3217348104"))
    assert isinstance(sr, SenderReport) and (sr.ssrc, sr.packet_count) == (451916597, 106)
    (block,) = sr.reports  # "report_count": 0 beside one block: the list counts
    assert (block.ssrc, block.extended_highest_seq, block.lsr, block.dlsr) == \
        (898343773, 20881, (1 << 32) - 1097006646, 7733)


def _with(base: str, path: tuple[str | int, ...], value: Any) -> bytes:
    obj = json.loads(base)
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize(("payload", "why"), [
    (b"", "empty"),
    (b"\xff\xfe{", "not UTF"),
    (b"{\"ssrc\": 1", "cut short"),
    (b"[1, 2]", "an array"),
    (b'"text"', "a string"),
    (b'{"media":"audio","base":48000,"rtt":11,"lost":3}', "janus stats: no ssrc"),
    (_with(RTPENGINE_SR, ("ssrc",), "abc"), "ssrc not a number"),
    (_with(RTPENGINE_SR, ("ssrc",), True), "ssrc a boolean"),
    (_with(RTPENGINE_SR, ("ssrc",), 1 << 32), "ssrc beyond 32 bits"),
    (_with(RTPENGINE_SR, ("type",), 199), "not an RTCP type"),
    (_with(RTPENGINE_SR, ("type",), "SR"), "type not a number"),
    (_with(RTPENGINE_SR, ("report_blocks",), {"a": 1}), "blocks not a list"),
    (_with(RTPENGINE_SR, ("report_blocks", 0), 7), "block not an object"),
    (_with(RTPENGINE_SR, ("report_blocks", 0, "fraction_lost"), 256), "fraction > 8 bits"),
    (_with(RTPENGINE_SR, ("report_blocks", 0, "fraction_lost"), 0.5), "fraction a ratio"),
    (_with(RTPENGINE_SR, ("report_blocks", 0, "packets_lost"), 1 << 24), "lost > 24 bits"),
    (_with(RTPENGINE_SR, ("report_blocks", 0, "ia_jitter"), -1), "negative jitter"),
    (_with(RTPENGINE_SR, ("report_blocks", 0, "source_ssrc"), None), "no source ssrc"),
    (_with(RTPENGINE_SR, ("sender_information",), [1]), "sender info not an object"),
    (_with(RTPENGINE_SR, ("report_blocks",), [json.loads(RTPENGINE_SR)["report_blocks"][0]]
           * (MAX_REPORT_BLOCKS + 1)), "32 blocks"),
    (RTPENGINE_SR.replace('"ia_jitter":80', '"ia_jitter":NaN').encode(), "NaN"),
    (RTPENGINE_SR.replace('"dlsr":65536', '"dlsr":1e400').encode(), "infinity"),
    (b"[" * 100_000 + b"]" * 100_000, "nested past the recursion limit"),
])
def test_malformed_or_unknown_raise_rtcp_json_error(payload: bytes, why: str) -> None:
    with pytest.raises(RtcpJsonError):
        report_from_json(payload)


_KEYS = ["ssrc", "type", "report_count", "report_blocks", "sender_information",
         "source_ssrc", "fraction_lost", "packets_lost", "highest_seq_no", "ia_jitter", "lsr",
         "dlsr", "ntp_timestamp_sec", "ntp_timestamp_usec", "rtp_timestamp", "packets",
         "octets"]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 40), 1 << 40) | st.floats()
    | st.sampled_from(["0", "-5", "4294967295", " 7", "x", "1e3", "٣"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4), inner, max_size=6),
    max_leaves=30)


@settings(max_examples=500, deadline=None)
@given(_JSON)
def test_any_json_is_a_report_or_rtcp_json_error(value: Any) -> None:
    """Whatever JSON comes: a report that encodes and parses back to itself, or the one
    error type."""
    try:
        text = json.dumps(value).encode()
    except ValueError:
        return
    with contextlib.suppress(RtcpJsonError):
        report = report_from_json(text)
        assert parse_compound(encode_report(report)) == (report,)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", b"{", b'{"ssrc":1,', b"\xef\xbb\xbf"]))
def test_any_bytes_raise_only_rtcp_json_error(data: bytes, prefix: bytes) -> None:
    with contextlib.suppress(RtcpJsonError):
        report_from_json(prefix + data)


def _hep_rtcp(payload: bytes, ts: float = 10.0, sport: int = 0) -> bytes:
    rec = HepRecord(version=3, ip_version=4, ip_proto=17, src=bytes([198, 18, 5, 1]),
                    dst=bytes([198, 18, 5, 2]), sport=sport, dport=sport, ts_sec=int(ts),
                    ts_usec=round(ts % 1 * 1e6), proto_type=PROTO_RTCP, capture_id=9,
                    payload=payload)
    return build_packet(HepRecord(**{**fields(EXPORTER), "payload": encode_hep3(rec)}))


def test_unwrapper_rebuilds_json_as_binary_rtcp_and_counts_the_rest() -> None:
    """JSON becomes the UDP datagram of its SR/RR at the HEP time (port 0 as hepgen
    sends it); malformed JSON is dropped and counted; binary RTCP passes as before."""
    binary = encode_report(ReceiverReport(5, ()))
    payloads = [RTPENGINE_SR.encode(), b'{"lost": 3}', binary, HEPIPE.encode()]
    unwrap = HepUnwrapper()
    out = unwrap.unwrap(Batch.from_packets([_hep_rtcp(p, 10.0 + k) for k, p in
                                            enumerate(payloads)], [20.0, 21.0, 22.0, 23.0],
                                           LinkType.RAW))
    c = unwrap.counters
    assert (c.rtcp_json, c.rtcp_json_errors, c.skipped_json, c.packets_rebuilt) == (2, 1, 0, 3)
    assert out.ts.tolist() == [10.0, 12.0, 13.0]
    f = Decoder().decode(out)
    assert [int(f.proto[i]) for i in range(len(f))] == [17, 17, 17]
    assert int(f.sport[0]) == int(f.dport[0]) == 0
    assert parse_compound(f.payload(0)) == (report_from_json(RTPENGINE_SR.encode()),)
    assert f.payload(1) == binary
    assert parse_compound(f.payload(2)) == (report_from_json(HEPIPE.encode()),)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80), _JSON.map(lambda v: json.dumps(v).encode()),
                          st.sampled_from([RTPENGINE_SR, HEPIPE, HEPLIFY_SR_SDES])
                          .map(str.encode)), max_size=6))
def test_unwrapper_never_raises_on_type_5(payloads: list[bytes]) -> None:
    unwrap = HepUnwrapper()
    out = unwrap.unwrap(Batch.from_packets([_hep_rtcp(p) for p in payloads],
                                           np.arange(len(payloads), dtype=float), LinkType.RAW))
    c = unwrap.counters
    assert c.records_v3 + c.errors_v3 == len(payloads)
    # each record: rebuilt (binary RTCP, or JSON that reads as a report), or dropped
    assert c.packets_rebuilt + c.rtcp_json_errors + c.duplicates == c.records_v3
    assert c.rtcp_json <= c.packets_rebuilt == len(out)


# -- end to end: a real call's RTCP, re-sent as JSON ------------------------------------


def _rtpengine_objects(rtcp: bytes) -> Iterator[dict[str, Any]]:
    """Each SR/RR of a binary compound in rtpengine's JSON shape (read here with struct,
    not with the probe's parser)."""
    pos = 0
    while pos + 4 <= len(rtcp):
        first, pt, words = struct.unpack_from("!BBH", rtcp, pos)
        if pt in (200, 201):
            count = first & 0x1F
            (ssrc,) = struct.unpack_from("!I", rtcp, pos + 4)
            at, obj = pos + 8, {}
            if pt == 200:
                msw, lsw, rtp_ts, packets, octets = struct.unpack_from("!IIIII", rtcp, at)
                obj["sender_information"] = {"ntp_timestamp_sec": msw, "ntp_timestamp_usec": lsw,
                                             "octets": octets, "rtp_timestamp": rtp_ts,
                                             "packets": packets}
                at += 20
            obj.update(ssrc=ssrc, type=pt, report_count=count, report_blocks=[])
            for k in range(count):
                src, lost, seq, jitter, lsr, dlsr = struct.unpack_from("!IIIIII", rtcp,
                                                                       at + 24 * k)
                obj["report_blocks"].append({
                    "source_ssrc": src, "highest_seq_no": seq, "fraction_lost": lost >> 24,
                    "ia_jitter": jitter, "packets_lost": lost & 0xFFFFFF, "lsr": lsr,
                    "dlsr": dlsr})
            yield obj
        pos += (words + 1) * 4


def _is_rtcp(rec: HepRecord) -> bool:
    p = rec.payload
    return rec.ip_proto == 17 and len(p) >= 8 and p[0] >> 6 == 2 and 200 <= p[1] <= 207


def hep_capture(dst: Path, transform: Callable[[HepRecord], list[HepRecord]]) -> Path:
    """The corpus call, each packet one HEP3 datagram (2 ms after it was captured), the
    RTCP records replaced by what ``transform`` makes of them."""
    packets = []
    for rec in records_of(corpus_dir() / "pcaps" / WIKI):
        for r in transform(rec) if _is_rtcp(rec) else [rec]:
            outer = build_packet(HepRecord(**{**fields(EXPORTER), "payload": encode_hep3(r)}))
            packets.append(CapturedPacket((r.ts_sec * 10**6 + r.ts_usec) * 1000 + 2_000_000,
                                          outer))
    return write_pcap(dst, packets, LINKTYPE_RAW)


def test_rtcp_resent_as_rtpengine_json_gives_the_binary_rtcp_records(tmp_path: Path) -> None:
    """Every SR/RR of the Wireshark sample call as one rtpengine JSON report (type 5):
    the records, ``rtcp`` blocks and round trip included, equal those of the capture."""
    def as_json(rec: HepRecord) -> list[HepRecord]:
        return [HepRecord(**{**fields(rec), "proto_type": PROTO_RTCP,
                             "payload": json.dumps(o).encode()})
                for o in _rtpengine_objects(rec.payload)]

    *want, _ = _analyze(corpus_dir() / "pcaps" / WIKI)
    *got, summary = _analyze(hep_capture(tmp_path / "json.pcap", as_json))
    assert summary["hep_rtcp_json"] == 44  # 28 SR + 16 RR in 28 compounds (SDES dropped)
    assert summary["hep_rtcp_json_errors"] == 0
    assert summary["rtcp_sender_reports"] == 28 and summary["rtcp_receiver_reports"] == 16
    assert len(got) == len(want)
    assert any(d["rtcp"] is not None for c in want for d in c["directions"])
    assert any(c["rtt_source"] is not None for c in want)
    for g, w in zip(got, want, strict=True):
        assert [d["rtcp"] for d in g["directions"]] == [d["rtcp"] for d in w["directions"]]
        assert (g["rtt_ms"], g["rtt_source"]) == (w["rtt_ms"], w["rtt_source"])
        diffs = close(comparable(g, True), comparable(w, True))
        assert not diffs, diffs


def test_json_reports_show_in_the_rtcp_block_of_their_direction(tmp_path: Path) -> None:
    """The binary RTCP dropped; two JSON reports in its place at the first RTCP's time:
    hepipe.js's (FreeSWITCH) from Y about X and heplify's (type 202, port 0) from X about
    Y. Each direction's ``rtcp`` block shows the figures reported about its SSRC."""
    first: list[HepRecord] = []

    def replace(rec: HepRecord) -> list[HepRecord]:
        if first:
            return []
        first.append(rec)
        about_x = json.dumps({
            "type": 200, "ssrc": str(SSRC_Y), "report_count": 1,
            "report_blocks": [{"source_ssrc": str(SSRC_X), "fraction_lost": 64,
                               "packets_lost": 17, "highest_seq_no": 1000, "lsr": 0,
                               "ia_jitter": 80.4, "dlsr": 0}],
            "sender_information": {"packets": 10, "ntp_timestamp_sec": 3900000000,
                                   "ntp_timestamp_usec": 0, "rtp_timestamp": 1600,
                                   "octets": 1600}})
        about_y = json.loads(HEPLIFY_SR_SDES)
        about_y["ssrc"] = about_y["sdes_ssrc"] = SSRC_X
        about_y["report_blocks"][0].update(source_ssrc=SSRC_Y, fraction_lost=32,
                                           packets_lost=(1 << 24) - 2, ia_jitter=160)
        return [HepRecord(**{**fields(rec), "proto_type": PROTO_RTCP, "payload": p.encode(),
                             "sport": port, "dport": port})
                for p, port in ((about_x, rec.sport), (json.dumps(about_y), 0))]

    *calls, summary = _analyze(hep_capture(tmp_path / "two.pcap", replace))
    assert (summary["hep_rtcp_json"], summary["rtcp_packets"]) == (2, 2)
    seen = {d["stream"]["ssrc"]: d["rtcp"] for c in calls for d in c["directions"]}
    assert {k: seen[k] for k in (SSRC_X, SSRC_Y)} == {
        SSRC_X: {"reports": 1, "fraction_lost": 0.25, "cumulative_lost": 17, "jitter_ms": 10.0,
                 "xr_mos_lq": None, "xr_mos_cq": None, "xr_r_factor": None,
                 "xr_round_trip_ms": None, "xr_discard_ratio": None},
        SSRC_Y: {"reports": 1, "fraction_lost": 0.125, "cumulative_lost": -2, "jitter_ms": 20.0,
                 "xr_mos_lq": None, "xr_mos_cq": None, "xr_r_factor": None,
                 "xr_round_trip_ms": None, "xr_discard_ratio": None},
    }
