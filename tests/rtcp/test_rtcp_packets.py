"""agent/rtcp/packets.py: compound RTCP parsing against independently built packets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rtcp_builders import (
    VOIP_FIELDS,
    bye,
    dlrr_block,
    header,
    receiver_report,
    report_block,
    rrt_block,
    sdes,
    sender_report,
    voip_metrics_block,
    xr,
    xr_block,
)

from agent.rtcp import (
    Dlrr,
    DlrrItem,
    ExtendedReport,
    Goodbye,
    ReceiverReferenceTime,
    ReceiverReport,
    ReportBlock,
    RtcpParseError,
    SenderReport,
    SourceDescription,
    UnknownPacket,
    UnknownXrBlock,
    VoipMetrics,
    looks_like_rtcp,
    parse_compound,
)
from agent.rtcp.packets import MAX_REPORT_BLOCKS, encode_report

NTP = 0xE7A1B2C3_80000000  # some second of 2023, + 0.5 s


def test_sr_with_block_and_sdes_compound() -> None:
    block = report_block(0xCAFE, 26, 1234, 0x0001_2345, 160, 0xB7052000, 0x00054000)
    data = sender_report(0x1234, NTP, 160_000, 500, 80_000, (block,)) + sdes(
        [(0x1234, [(1, b"alice@192.0.2.10"), (6, b"probe-test")])]
    )
    sr, desc = parse_compound(data)
    assert isinstance(sr, SenderReport) and isinstance(desc, SourceDescription)
    assert (sr.ssrc, sr.ntp_timestamp, sr.rtp_timestamp) == (0x1234, NTP, 160_000)
    assert (sr.packet_count, sr.octet_count) == (500, 80_000)
    assert sr.ntp_short == 0xB2C38000
    (rb,) = sr.reports
    assert rb.ssrc == 0xCAFE and rb.fraction_lost_raw == 26
    assert rb.fraction_lost == pytest.approx(26 / 256)
    assert rb.cumulative_lost == 1234 and rb.extended_highest_seq == 0x12345
    assert rb.jitter_ts_units == 160
    assert (rb.lsr, rb.dlsr) == (0xB7052000, 0x00054000)
    assert rb.dlsr_s == pytest.approx(5.25)
    (chunk,) = desc.chunks
    assert chunk.ssrc == 0x1234 and chunk.cname == "alice@192.0.2.10"
    assert chunk.items == ((1, "alice@192.0.2.10"), (6, "probe-test"))


def test_rr_with_two_blocks_and_negative_cumulative_loss() -> None:
    blocks = (
        report_block(0xA, 0, -3, 70_000, 12, 0, 0),
        report_block(0xB, 255, 0x7FFFFF, 65_535, 0xFFFFFFFF, 1, 2),
    )
    (rr,) = parse_compound(receiver_report(0x99, blocks))
    assert isinstance(rr, ReceiverReport) and rr.ssrc == 0x99
    first, second = rr.reports
    assert first.cumulative_lost == -3 and first.lsr == 0
    assert second.cumulative_lost == 0x7FFFFF and second.fraction_lost_raw == 255
    assert second.jitter_ts_units == 0xFFFFFFFF


def test_empty_rr_sdes_multi_chunk_and_bye() -> None:
    data = (
        receiver_report(7, ())
        + sdes([(7, [(1, b"a")]), (8, [(1, b"bb"), (2, b"Bob")]), (9, [])])
        + bye([7, 8], b"call ended")
    )
    rr, desc, goodbye = parse_compound(data)
    assert isinstance(rr, ReceiverReport) and rr.reports == ()
    assert isinstance(desc, SourceDescription)
    assert [c.cname for c in desc.chunks] == ["a", "bb", None]
    assert isinstance(goodbye, Goodbye)
    assert goodbye.ssrcs == (7, 8) and goodbye.reason == "call ended"
    (plain,) = parse_compound(bye([0xDEAD]))
    assert plain == Goodbye((0xDEAD,), None)


def test_xr_voip_metrics_dlrr_rrt_and_unknown_block() -> None:
    data = xr(
        0x55,
        (
            rrt_block(NTP),
            dlrr_block([(0x1234, 0xB2C38000, 0x00010000), (0x4321, 0, 0)]),
            voip_metrics_block(),
            xr_block(6, b"\x00" * 36),
        ),
    )
    (report,) = parse_compound(data)
    assert isinstance(report, ExtendedReport) and report.ssrc == 0x55
    rrt, dlrr, metrics, unknown = report.blocks
    assert isinstance(rrt, ReceiverReferenceTime) and rrt.ntp_timestamp == NTP
    assert rrt.ntp_short == 0xB2C38000
    assert isinstance(dlrr, Dlrr)
    assert dlrr.items == (DlrrItem(0x1234, 0xB2C38000, 0x10000), DlrrItem(0x4321, 0, 0))
    assert unknown == UnknownXrBlock(6, 40)
    assert isinstance(metrics, VoipMetrics)
    f = VOIP_FIELDS
    assert metrics.ssrc == f["ssrc"]
    assert metrics.loss_ratio == pytest.approx(13 / 256)
    assert metrics.discard_ratio == pytest.approx(5 / 256)
    assert metrics.burst_density == pytest.approx(0.25)
    assert metrics.gap_density == pytest.approx(3 / 256)
    assert (metrics.burst_duration_ms, metrics.gap_duration_ms) == (120, 5300)
    assert (metrics.round_trip_delay_ms, metrics.end_system_delay_ms) == (86, 45)
    assert (metrics.signal_level_db, metrics.noise_level_db, metrics.rerl_db) == (-18, -62, None)
    assert metrics.gmin == 16
    assert (metrics.r_factor, metrics.ext_r_factor) == (88, None)
    assert metrics.mos_lq == pytest.approx(4.1) and metrics.mos_cq == pytest.approx(3.9)
    assert (metrics.plc, metrics.jb_adaptive, metrics.jb_rate) == (2, True, 3)
    assert (metrics.jb_nominal_ms, metrics.jb_max_ms, metrics.jb_abs_max_ms) == (40, 80, 200)


def test_voip_metrics_unavailable_mos() -> None:
    fields = {**VOIP_FIELDS, "mos_lq": 127, "mos_cq": 127, "r": 127, "signal": 127}
    (report,) = parse_compound(xr(1, (voip_metrics_block(fields),)))
    assert isinstance(report, ExtendedReport)
    (metrics,) = report.blocks
    assert isinstance(metrics, VoipMetrics)
    assert (metrics.mos_lq, metrics.mos_cq, metrics.r_factor) == (None, None, None)
    assert metrics.signal_level_db is None


def test_padding_and_app_skipped() -> None:
    app = header(204, 1, b"\x00\x00\x00\x01" + b"NAME" + b"data")
    feedback = header(206, 1, b"\x00" * 8)
    padded = receiver_report(3, (report_block(4, 1, 1, 1, 1, 0, 0),), padding=8)
    rr, unknown_app, unknown_fb = parse_compound(padded + app + feedback)
    assert isinstance(rr, ReceiverReport) and rr.reports[0].ssrc == 4
    assert unknown_app == UnknownPacket(204, 1, 16)
    assert unknown_fb == UnknownPacket(206, 1, 12)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"\x81\xc9\x00", "short header"),
        (b"\x41\xc9\x00\x01\x00\x00\x00\x01", "version 1"),
        (b"\x80\xc9\x00\x05\x00\x00\x00\x01", "length past end"),
        (b"\x81\xc9\x00\x01\x00\x00\x00\x01", "RC 1 without a block"),
        (b"\x80\x00\x00\x01\x00\x00\x00\x01", "not an RTCP type"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x00", "padding count 0"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x09", "padding past packet"),
        (receiver_report(1, ()) + b"\x80", "trailing bytes"),
        (receiver_report(1, ()) + b"\x00" * 4, "trailing zero header"),
        (header(202, 1, b"\x00\x00\x00\x01\x01\x05ab\x00"[:8]), "SDES item overruns"),
        (header(202, 2, b"\x00\x00\x00\x01\x00\x00\x00\x00"), "missing SDES chunk"),
        (header(203, 2, b"\x00\x00\x00\x01"), "BYE count"),
        (header(203, 1, b"\x00\x00\x00\x01\x09abc"), "BYE reason overruns"),
        (xr(1, (xr_block(5, b"\x00" * 8),)), "DLRR not multiple of 3 words"),
        (xr(1, (xr_block(7, b"\x00" * 8),)), "short VoIP Metrics"),
        (xr(1, (b"\x07\x00\x00\x08",)), "XR block past end"),
        (header(207, 0, b""), "XR without ssrc"),
    ],
)
def test_malformed_raise_rtcp_parse_error(data: bytes, why: str) -> None:
    with pytest.raises(RtcpParseError):
        parse_compound(data)


def test_short_zero_tail_tolerated() -> None:
    # A mis-padded SDES leaves 2 zero octets after the compound (Wireshark sample).
    (rr,) = parse_compound(receiver_report(1, ()) + b"\x00\x00")
    assert rr == ReceiverReport(1, ())


def test_looks_like_rtcp_demux() -> None:
    assert looks_like_rtcp(receiver_report(1, ()))
    assert looks_like_rtcp(sender_report(1, NTP, 0, 0, 0) + sdes([(1, [(1, b"x")])]))
    assert looks_like_rtcp(xr(1, (rrt_block(NTP),)))
    rtp_pcmu = b"\x80\x00\x12\x34" + b"\x00" * 8 + b"\xff" * 160
    rtp_marker_pt8 = b"\x80\x88\x12\x34" + b"\x00" * 8 + b"\xd5" * 160
    assert not looks_like_rtcp(rtp_pcmu) and not looks_like_rtcp(rtp_marker_pt8)
    assert not looks_like_rtcp(b"\x80\xc8\x00\x06" + b"\x00" * 4)  # SR length > datagram
    assert not looks_like_rtcp(b"\x40\xc9\x00\x01\x00\x00\x00\x01")
    assert not looks_like_rtcp(b"")


_U32 = st.integers(0, 0xFFFFFFFF)
_BLOCKS = st.lists(st.builds(ReportBlock, _U32, st.integers(0, 255),
                             st.integers(-(1 << 23), (1 << 23) - 1), _U32, _U32, _U32, _U32),
                   max_size=MAX_REPORT_BLOCKS)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.builds(SenderReport, _U32, st.integers(0, (1 << 64) - 1), _U32, _U32, _U32,
              _BLOCKS.map(tuple)),
    st.builds(ReceiverReport, _U32, _BLOCKS.map(tuple))))
def test_encode_report_is_what_parse_compound_reads_back(report: SenderReport | ReceiverReport
                                                         ) -> None:
    assert parse_compound(encode_report(report)) == (report,)


def test_encode_report_matches_the_independent_builder() -> None:
    block = ReportBlock(0x0A0B0C0D, 64, -3, 70_000, 80, 0x12345678, 65536)
    sr = SenderReport(0x01020304, (3_900_000_000 << 32) | 0x80000000, 160, 50, 8000, (block,))
    assert encode_report(sr) == sender_report(
        0x01020304, (3_900_000_000 << 32) | 0x80000000, 160, 50, 8000,
        (report_block(0x0A0B0C0D, 64, -3, 70_000, 80, 0x12345678, 65536),))
    assert encode_report(ReceiverReport(7, ())) == receiver_report(7, ())


@pytest.mark.parametrize("report", [
    ReceiverReport(1, (ReportBlock(2, 0, 0, 0, 0, 0, 0),) * (MAX_REPORT_BLOCKS + 1)),
    ReceiverReport(1, (ReportBlock(2, 256, 0, 0, 0, 0, 0),)),
    ReceiverReport(1 << 32, ()),
    SenderReport(1, 1 << 64, 0, 0, 0, ()),
])
def test_encode_report_refuses_what_does_not_fit(report: SenderReport | ReceiverReport) -> None:
    with pytest.raises(ValueError):
        encode_report(report)
