"""RFC 6035 report bodies: the RFC's own example, real phone formats, and garbage."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.decode.endpoint import Endpoint
from agent.sip.vqreport import (
    MAX_REPORT_BYTES,
    ReportKind,
    VqReportError,
    parse_report,
)

DATA = Path(__file__).resolve().parent.parent / "data"

# RFC 6035 §4.7.3, message F13 (end-of-session report in a PUBLISH), as the RFC prints
# it, folded continuation lines included. Two oddities of the RFC's example are kept on
# purpose: LocalAddr's SSRC lacks the "0x" the ABNF requires, and STOP is dated nine
# days before START.
RFC6035_F13 = (
    b"VQSessionReport: CallTerm\r\n"
    b"CallID: 6dg37f1890463\r\n"
    b"LocalID: Alice <sip:alice@pc22.example.org>\r\n"
    b"RemoteID: Bill <sip:bill@pc33.example.org>\r\n"
    b"OrigID: Alice <sip:alice@pc22.example.org>\r\n"
    b"LocalGroup: example-phone-55671\r\n"
    b"RemoteGroup: example-gateway-09871\r\n"
    b"LocalAddr: IP=10.10.1.100 PORT=5000 SSRC=1a3b5c7d\r\n"
    b"LocalMAC: 00:1f:5b:cc:21:0f\r\n"
    b"RemoteAddr:IP=11.1.1.150 PORT=5002 SSRC=0x2468abcd\r\n"
    b"RemoteMAC: 00:26:08:8e:95:02\r\n"
    b"LocalMetrics:\r\n"
    b"Timestamps:START=2004-10-10T18:23:43Z STOP=2004-10-01T18:26:02Z\r\n"
    b"SessionDesc:PT=18 PD=G729 SR=8000 FD=20 FO=20 FPP=2 PPS=50\r\n"
    b"                FMTP=\"annexb=no\" PLC=3 SSUP=on\r\n"
    b"JitterBuffer:JBA=3 JBR=2 JBN=40 JBM=80 JBX=120\r\n"
    b"PacketLoss:NLR=5.0 JDR=2.0\r\n"
    b"BurstGapLoss:BLD=0 BD=0 GLD=2.0 GD=500 GMIN=16\r\n"
    b"Delay:RTD=200 ESD=140 SOWD=200 IAJ=2 MAJ=10\r\n"
    b"Signal:SL=-21 NL=-50 RERL=55\r\n"
    b"QualityEst:RLQ=90 RCQ=85 EXTRI=90 MOSLQ=4.2 MOSCQ=4.3\r\n"
    b"  QoEEstAlg=P.564\r\n"
    b"RemoteMetrics:\r\n"
    b"Timestamps:START=2004-10-10T18:23:43Z STOP=2004-10-01T18:26:02Z\r\n"
    b"SessionDesc:PT=18 PD=G729 SR=8000 FD=20 FO=20 FPP=2 PPS=50\r\n"
    b"                FMTP=\"annexb=no\" PLC=3 SSUP=on\r\n"
    b"JitterBuffer:JBA=3 JBR=2 JBN=40 JBM=80 JBX=120\r\n"
    b"PacketLoss:NLR=5.0 JDR=2.0\r\n"
    b"BurstGapLoss:BLD=0 BD=0 GLD=2.0 GD=500 GMIN=16\r\n"
    b"Delay:RTD=200 ESD=140 SOWD=200 IAJ=2 MAJ=10\r\n"
    b"Signal:SL=-21 NL=-45 RERL=55\r\n"
    b"QualityEst:RLQ=90 RCQ=85 MOSLQ=4.3 MOSCQ=4.2 QoEEstAlg=P.564\r\n"
    b"DialogID:1890463548@alice.example.org;to-tag=8472761;\r\n"
    b"   from-tag=9123dh311\r\n"
)

# A Snom 360 end-of-call report (the format Snom's wiki documents for its rtcp_xr
# setting), with addresses from RFC 5737: session lines inside LocalMetrics, x- lines,
# FromID/ToID, JBX=65535 for "unavailable", no RemoteAddr SSRC prefix issues.
SNOM = (
    b"VQSessionReport\r\n"
    b"LocalMetrics:\r\n"
    b"Timestamps:START=2010-02-17T13:59:42Z STOP=2010-02-17T13:59:46Z\r\n"
    b"SessionDesc:PT=0 PD=G.711U PPS=50 SSUP=off\r\n"
    b"CallID:3c26a8de500f-12ct7zov3kjs\r\n"
    b"x-UserAgent:snom360/8.2.sf\r\n"
    b"FromID:<sip:446@192.0.2.1>\r\n"
    b"ToID:<sip:447@192.0.2.1;user=phone>\r\n"
    b"LocalAddr:IP=192.0.2.10 PORT=62754 SSRC=0xCBE3450E\r\n"
    b"RemoteAddr:IP=198.51.100.20 PORT=54018 SSRC=0xB80B52F3\r\n"
    b"DialogID:3c26a8de500f-12ct7zov3kjs;to-tag=866ed0cf03;from-tag=45hkui59ns\r\n"
    b"x-SIPmetrics:SVA=RG SRD=310 SFC=0\r\n"
    b"x-SIPterm:SDC=OK\r\n"
    b"JitterBuffer:JBA=0 JBR=0 JBN=0 JBM=0 JBX=65535\r\n"
    b"PacketLoss:NLR=0.0 JDR=0.0\r\n"
    b"BurstGapLoss:BLD=0.0 BD=0 GLD=0.0 GD=6569 GMIN=16\r\n"
    b"Delay:RTD=0 ESD=0 IAJ=4\r\n"
    b"RemoteMetrics:\r\n"
    b"JitterBuffer:JBA=0 JBR=0 JBN=0 JBM=0 JBX=0\r\n"
    b"PacketLoss:NLR=0.0 JDR=0.0\r\n"
    b"BurstGapLoss:BLD=0.0 BD=0 GLD=0.0 GD=4677 GMIN=16\r\n"
    b"Delay:RTD=0 ESD=0 IAJ=2\r\n"
)

# A Yealink-style alert report: "Type= Severity= Dir=" on the first line, R = 127 and
# EXTRI = 127 meaning "unavailable" (RFC 3611 §4.7.5), bare-LF line ends.
ALERT = (
    b"VQAlertReport: Type=MOSLQ Severity=Warning Dir=local\n"
    b"CallID:329662837@192.0.2.21\n"
    b"LocalID:<sip:201@192.0.2.1>\n"
    b"RemoteID:<sip:202@192.0.2.1>\n"
    b"LocalAddr:IP=192.0.2.21 PORT=11784 SSRC=0x1a2a9c52\n"
    b"RemoteAddr:IP=203.0.113.184 PORT=27210 SSRC=0xce2256d2\n"
    b"LocalMetrics:\n"
    b"Timestamps:START=2015-02-23T02:35:01Z STOP=2015-02-23T02:35:46Z\n"
    b"SessionDesc:PT=9 PPS=50 PLC=1 SSUP=off\n"
    b"JitterBuffer:JBA=2 JBR=15 JBN=40 JBM=40 JBX=240\n"
    b"PacketLoss:NLR=0.0 JDR=0.0\n"
    b"BurstGapLoss:BLD=0.7 BD=60 GLD=0.0 GD=30000 GMIN=16\n"
    b"Delay:RTD=0 ESD=177 SOWD=88 IAJ=0 MAJ=0\n"
    b"Signal:SL=-21 NL=-64 RERL=127\n"
    b"QualityEst:RLQ=127 RCQ=92 EXTRI=127 MOSLQ=3.8 MOSCQ=3.8\n"
)


def test_rfc6035_example_values() -> None:
    r = parse_report(RFC6035_F13)
    assert r.kind is ReportKind.SESSION and r.call_term
    assert r.call_id == "6dg37f1890463"
    assert r.local_id == "Alice <sip:alice@pc22.example.org>"
    assert r.remote_id == "Bill <sip:bill@pc33.example.org>"
    assert r.orig_id == "Alice <sip:alice@pc22.example.org>"
    assert (r.local_group, r.remote_group) == ("example-phone-55671", "example-gateway-09871")
    assert r.local_addr.endpoint == Endpoint.of("10.10.1.100", 5000)
    assert r.local_addr.ssrcs == (0x1A3B5C7D,)
    assert r.remote_addr.endpoint == Endpoint.of("11.1.1.150", 5002)
    assert r.remote_addr.ssrcs == (0x2468ABCD,)
    assert r.dialog_id == "1890463548@alice.example.org;to-tag=8472761; from-tag=9123dh311"
    m = r.local
    assert m is not None
    assert m.start_ts == 1097432623.0  # 2004-10-10T18:23:43Z
    assert m.stop_ts == 1096655162.0  # 2004-10-01T18:26:02Z, as the RFC prints it
    assert (m.payload_type, m.payload_desc, m.sample_rate_hz) == (18, "G729", 8000)
    assert (m.frame_duration_ms, m.frame_octets, m.frames_per_packet, m.packets_per_s) == \
        (20, 20, 2, 50)
    assert (m.fmtp, m.plc, m.silence_suppression) == ("annexb=no", 3, True)  # folded line
    assert (m.jb_adaptive, m.jb_rate, m.jb_nominal_ms, m.jb_max_ms, m.jb_abs_max_ms) == \
        (3, 2, 40, 80, 120)
    assert (m.network_loss_ratio, m.jb_discard_ratio) == (0.05, 0.02)
    assert (m.burst_density_ratio, m.burst_duration_ms, m.gap_density_ratio,
            m.gap_duration_ms, m.gap_min) == (0.0, 0, 0.02, 500, 16)
    assert (m.round_trip_ms, m.end_system_delay_ms, m.symm_one_way_delay_ms,
            m.interarrival_jitter_ms, m.mean_abs_jitter_ms) == (200, 140, 200, 2, 10)
    assert (m.signal_level_dbm0, m.noise_level_dbm0, m.residual_echo_return_loss_db) == \
        (-21, -50, 55)
    assert (m.r_lq, m.r_cq, m.ext_r_in, m.mos_lq, m.mos_cq) == (90, 85, 90, 4.2, 4.3)
    assert m.qoe_alg == "P.564"  # on a folded line
    rm = r.remote
    assert rm is not None
    assert (rm.noise_level_dbm0, rm.mos_lq, rm.mos_cq, rm.ext_r_in) == (-45, 4.3, 4.2, None)
    assert rm.qoe_alg == "P.564"


def test_lf_only_and_no_space_variants_of_the_rfc_example_agree() -> None:
    compact = RFC6035_F13.replace(b"\r\n", b"\n").replace(b": ", b":")
    assert parse_report(compact) == parse_report(RFC6035_F13)


def test_snom_format() -> None:
    r = parse_report(SNOM)
    assert r.kind is ReportKind.SESSION and not r.call_term
    assert r.call_id == "3c26a8de500f-12ct7zov3kjs"  # a session line inside LocalMetrics
    assert r.local_id == "<sip:446@192.0.2.1>"  # FromID
    assert r.remote_id == "<sip:447@192.0.2.1;user=phone>"  # ToID
    assert r.local_addr == r.local_addr.__class__(Endpoint.of("192.0.2.10", 62754),
                                                  (0xCBE3450E,))
    assert r.remote_addr.ssrcs == (0xB80B52F3,)
    assert r.local is not None and r.remote is not None
    assert r.local.jb_abs_max_ms is None  # 65535: unavailable
    assert (r.local.gap_duration_ms, r.local.interarrival_jitter_ms) == (6569, 4)
    assert r.local.silence_suppression is False
    assert (r.remote.gap_duration_ms, r.remote.interarrival_jitter_ms) == (4677, 2)
    assert r.ignored_lines == 3  # x-UserAgent, x-SIPmetrics, x-SIPterm


def test_alert_report_and_unavailable_values() -> None:
    r = parse_report(ALERT)
    assert r.kind is ReportKind.ALERT
    assert (r.alert_type, r.alert_severity, r.alert_dir) == ("MOSLQ", "Warning", "local")
    m = r.local
    assert m is not None
    assert m.r_lq is None and m.ext_r_in is None  # 127: unavailable
    assert m.residual_echo_return_loss_db is None  # 127 is above RERL's range
    assert (m.r_cq, m.mos_lq, m.mos_cq) == (92, 3.8, 3.8)
    assert (m.burst_density_ratio, m.burst_duration_ms) == (0.007, 60)
    assert m.jb_rate == 15 and m.end_system_delay_ms == 177 and m.symm_one_way_delay_ms == 88


def test_hep3_corpus_body() -> None:
    """The PUBLISH body of the corpus's hep3_sip.pcap (hepgen), extracted with tshark:
    ``IP:a PORT:b`` instead of ``IP=a PORT=b``, FromID/ToID, fractions of seconds."""
    r = parse_report((DATA / "vq_hep3_publish_body.txt").read_bytes())
    assert r.kind is ReportKind.INTERVAL
    assert r.call_id == "qgf3dm9rudi@127.0.0.1"
    assert r.local_id == "<sip:caller@domain.net>"
    assert r.local_addr.endpoint == Endpoint.of("192.168.1.55", 30539)
    assert r.remote_addr.endpoint == Endpoint.of("192.168.1.23", 7079)
    m = r.local
    assert m is not None
    assert (m.payload_type, m.payload_desc, m.sample_rate_hz) == (124, "opus", 48000)
    assert m.start_ts == pytest.approx(1425157471.000582)  # 2015-02-28T21:04:31.000582Z
    assert m.stop_ts == pytest.approx(1425157476.000598)
    assert (m.network_loss_ratio, m.interarrival_jitter_ms) == (0.08, 93)
    assert r.remote is None


@pytest.mark.parametrize(("text", "readings"), [
    ("0x2468abcd", (0x2468ABCD,)), ("1a3b5c7d", (0x1A3B5C7D,)),
    ("-1", (0xFFFFFFFF,)), ("3000000000", (3000000000,)),
    ("12345678", (0x12345678, 12345678)), ("0x123456789", ()), ("zz", ()),
])
def test_ssrc_spellings(text: str, readings: tuple[int, ...]) -> None:
    body = f"VQSessionReport\nCallID: x\nLocalAddr: IP=192.0.2.1 PORT=4 SSRC={text}\n"
    assert parse_report(body.encode()).local_addr.ssrcs == readings


@pytest.mark.parametrize("body", [
    b"", b"\r\n\r\n", b"INVITE sip:a@b SIP/2.0\r\n", b"CallID: x\r\n",
    b"VQSessionReport: CallTerm\r\nLocalMetrics:\r\n",  # no CallID
    b"VQSessionReport\r\nCallID: \xff\xfe\r\n",  # not UTF-8
    b"VQSessionReport\r\nCallID: a\x00b\r\n",  # control character
    b"VQSessionReport\r\nCallID: a\r\n" + b"X: y\r\n" * 300,  # too many lines
])
def test_malformed_bodies_raise_the_one_error(body: bytes) -> None:
    with pytest.raises(VqReportError):
        parse_report(body)


def test_oversized_input_is_refused_before_it_is_read() -> None:
    body = RFC6035_F13 + b" " * (MAX_REPORT_BYTES - len(RFC6035_F13) + 1)
    with pytest.raises(VqReportError, match="limit"):
        parse_report(body)
    assert parse_report(RFC6035_F13 + b" " * (MAX_REPORT_BYTES - len(RFC6035_F13))).call_id


def test_long_values_are_cut() -> None:
    r = parse_report(b"VQSessionReport\nCallID: " + b"a" * 5000 + b"\n")
    assert len(r.call_id) == 512


_LINES = [line + b"\r\n" for line in RFC6035_F13.split(b"\r\n") if line]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(VqReportError):
        parse_report(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.sampled_from(_LINES), max_size=40), st.data())
def test_fuzz_mutated_reports(lines: list[bytes], data: st.DataObject) -> None:
    body = bytearray(b"".join(lines))
    for _ in range(data.draw(st.integers(0, 8))):
        if not body:
            break
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    try:
        r = parse_report(bytes(body))
    except VqReportError:
        return
    for m in (r.local, r.remote):
        if m is not None:
            assert m.mos_cq is None or 1.0 <= m.mos_cq <= 5.0
            assert m.network_loss_ratio is None or 0.0 <= m.network_loss_ratio <= 1.0
