"""`RtcpMonitor`: far-end reports per media SSRC, XR VoIP metrics, probe round-trip legs."""

from __future__ import annotations

from rtcp_builders import (
    VOIP_FIELDS,
    receiver_report,
    report_block,
    sender_report,
    voip_metrics_block,
    xr,
)

from agent.rtcp.monitor import RtcpMonitor
from agent.rtcp.rtt import unix_to_ntp

T0 = 1_700_000_000.0
A, B = 0xAAAA0001, 0xBBBB0002  # the two endpoints' SSRCs (each sends RTP and RTCP)


def test_report_blocks_are_kept_per_reported_source() -> None:
    m = RtcpMonitor()
    assert m.feed(receiver_report(B, (report_block(A, 64, 12, 5000, 80, 0, 0),)), T0)
    r = m.report_about(A)
    assert r is not None and r.reporter_ssrc == B and r.reports == 1
    assert (r.fraction_lost, r.cumulative_lost, r.jitter_ts_units) == (0.25, 12, 80)
    assert m.report_about(B) is None  # nobody reported on B


def test_probe_leg_round_trip_from_sr_and_the_rr_answering_it() -> None:
    m = RtcpMonitor()
    ntp = unix_to_ntp(T0)
    lsr = (ntp >> 16) & 0xFFFFFFFF
    m.feed(sender_report(A, ntp, 1000, 50, 8000), T0)
    # B answers 0.5 s later having held the SR 0.45 s: the probe <-> B leg is 50 ms
    dlsr = int(0.45 * 65536)
    m.feed(receiver_report(B, (report_block(A, 0, 0, 100, 4, lsr, dlsr),)), T0 + 0.5)
    leg = m.leg_rtt_s(B)
    assert leg is not None and abs(leg - 0.05) < 1 / 65536 + 1e-9
    assert m.leg_rtt_s(A) is None


def test_xr_voip_metrics_attach_to_the_source_they_describe() -> None:
    m = RtcpMonitor()
    m.feed(xr(B, (voip_metrics_block(),)), T0)
    r = m.report_about(VOIP_FIELDS["ssrc"])
    assert r is not None and r.xr is not None
    assert (r.xr.mos_lq, r.xr.mos_cq, r.xr.r_factor) == (4.1, 3.9, 88)


def test_garbage_is_counted_not_raised() -> None:
    m = RtcpMonitor()
    assert not m.feed(b"\x80\xc9\x00\x07" + b"\x00" * 5, T0)
    assert m.counters.parse_errors == 1 and m.counters.packets == 1


def test_tables_are_bounded_and_expire() -> None:
    m = RtcpMonitor(max_sources=10)
    for i in range(100):
        m.feed(receiver_report(B, (report_block(1000 + i, 0, 0, 1, 1, 0, 0),)), T0 + i)
    assert m.counters.sources_evicted == 90
    assert m.report_about(1000) is None and m.report_about(1099) is not None
    m.expire(T0 + 1000.0)
    assert m.report_about(1099) is None
