"""agent/rtcp/rtt.py: RFC 3550 §6.4.1 round trip, NTP formats, probe-leg RTT."""

from __future__ import annotations

import pytest

from agent.rtcp import (
    ProbeRoundTrip,
    ReportBlock,
    ntp_short,
    ntp_to_unix,
    rtt_from_report,
    unix_to_ntp,
    unix_to_ntp_short,
)


def test_standards_vector() -> None:
    # STANDARDS.md / RFC 3550 Figure 2: A 0xb710:8000, LSR 0xb705:2000, DLSR 0x0005:4000.
    assert rtt_from_report(0xB7108000, 0xB7052000, 0x00054000) == 6.125


def test_no_measurement_cases() -> None:
    assert rtt_from_report(0xB7108000, 0, 0x00054000) is None  # no SR received yet
    assert rtt_from_report(0xB7108000, 0xB7052000, 0x00100000) is None  # negative
    assert rtt_from_report(0xB7000000, 0xB7052000, 0) is None  # arrival before LSR


def test_wraps_across_ntp_short_overflow() -> None:
    lsr = 0xFFFF8000  # 0.5 s before the 16.16 wrap
    arrival = 0x00018000  # 1.5 s after it
    assert rtt_from_report(arrival, lsr, 0x00010000) == pytest.approx(1.0)


def test_ntp_conversions() -> None:
    # 2024-01-01T00:00:00Z = Unix 1704067200 = NTP seconds 3913056000.
    ntp = unix_to_ntp(1704067200.25)
    assert ntp >> 32 == 3913056000 and ntp & 0xFFFFFFFF == 0x40000000
    assert ntp_to_unix(ntp) == pytest.approx(1704067200.25)
    assert ntp_short(ntp) == ((3913056000 & 0xFFFF) << 16) | 0x4000
    assert unix_to_ntp_short(1704067200.25) == ntp_short(ntp)
    assert ntp_to_unix(unix_to_ntp(0.0)) == 0.0


def block(ssrc: int, lsr: int, dlsr_s: float) -> ReportBlock:
    return ReportBlock(ssrc, 0, 0, 0, 0, lsr, round(dlsr_s * 65536))


def test_probe_leg_round_trip() -> None:
    probe = ProbeRoundTrip()
    sr_ntp = unix_to_ntp(1000.0)
    probe.sender_report(0xA, sr_ntp, now=50.000)
    probe.sender_report(0xA, unix_to_ntp(1005.0), now=55.000)
    # Far end held the first SR for 0.9 s; the RR passes the probe 0.96 s after the SR did.
    rtt = probe.report_block(block(0xA, ntp_short(sr_ntp), 0.9), now=50.960)
    assert rtt == pytest.approx(0.060, abs=2e-5)
    assert probe.report_block(block(0xA, 0, 0.0), now=51.0) is None  # LSR 0
    assert probe.report_block(block(0xB, ntp_short(sr_ntp), 0.1), now=51.0) is None  # unknown
    assert probe.report_block(block(0xA, 0x12345678, 0.1), now=51.0) is None  # SR not seen
    assert probe.report_block(block(0xA, ntp_short(sr_ntp), 2.0), now=51.0) is None  # negative
    self_report = block(0xA, ntp_short(sr_ntp), 0.9)
    assert probe.report_block(self_report, now=50.96, reporter_ssrc=0xA) is None


def test_probe_duplicate_sr_keeps_first_sighting() -> None:
    probe = ProbeRoundTrip()
    ntp = unix_to_ntp(2000.0)
    probe.sender_report(1, ntp, now=10.0)
    probe.sender_report(1, ntp, now=10.4)
    assert probe.report_block(block(1, ntp_short(ntp), 0.5), now=11.0) == pytest.approx(0.5)


def test_probe_table_is_bounded() -> None:
    probe = ProbeRoundTrip(max_sources=3, history=2, idle_timeout_s=30.0)
    for ssrc in range(10):
        probe.sender_report(ssrc, unix_to_ntp(100.0 + ssrc), now=float(ssrc))
    assert len(probe) == 3 and probe.evictions == 7
    for i in range(5):  # history per source is capped too
        probe.sender_report(9, unix_to_ntp(200.0 + i), now=10.0 + i)
    oldest = ntp_short(unix_to_ntp(200.0))
    assert probe.report_block(block(9, oldest, 0.0), now=20.0) is None
    newest = ntp_short(unix_to_ntp(204.0))
    assert probe.report_block(block(9, newest, 0.0), now=20.0) == pytest.approx(6.0)
    assert probe.expire(now=38.5) == 2  # ssrc 7 (t=7) and 8 (t=8) idle for 30 s
    assert len(probe) == 1 and probe.expirations == 2
