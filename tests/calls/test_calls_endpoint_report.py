"""Which block of an RFC 6035 report describes which stream (agent/calls/endpoint_report.py),
and the SIP tracker's handling of report messages."""

from __future__ import annotations

from agent.calls.endpoint_report import best_block, describes_any
from agent.decode.endpoint import Endpoint
from agent.rtp.model import StreamKey
from agent.sip.events import QualityReported
from agent.sip.message import parse_message
from agent.sip.tracker import SipTracker
from agent.sip.vqreport import parse_report

PHONE, GW = Endpoint.of("192.0.2.10", 40000), Endpoint.of("192.0.2.1", 5060)


def _key(src: Endpoint, dst: Endpoint, ssrc: int) -> StreamKey:
    return StreamKey(src.hi, src.lo, src.port, dst.hi, dst.lo, dst.port, ssrc)


def _seen(body: str, ts: float = 10.0) -> QualityReported:
    return QualityReported(ts, PHONE, parse_report(body.encode()))


# The phone behind NAT reports private addresses; the probe sees public ones.
NATTED = ("VQSessionReport: CallTerm\nCallID: c1\n"
          "LocalAddr: IP=10.0.0.5 PORT=4000 SSRC=0x0000aaaa\n"
          "RemoteAddr: IP=10.9.9.9 PORT=5000 SSRC=0x0000bbbb\n"
          "LocalMetrics:\nQualityEst: MOSCQ=3.1\n"
          "RemoteMetrics:\nQualityEst: MOSCQ=4.0\n")
TO_PHONE = _key(Endpoint.of("198.51.100.7", 30000), Endpoint.of("203.0.113.5", 61000), 0xBBBB)
FROM_PHONE = _key(Endpoint.of("203.0.113.5", 61000), Endpoint.of("198.51.100.7", 30000), 0xAAAA)


def test_nat_rewritten_addresses_still_join_by_ssrc() -> None:
    reports = [_seen(NATTED)]
    to_phone, from_phone = best_block(reports, TO_PHONE), best_block(reports, FROM_PHONE)
    assert to_phone is not None and from_phone is not None
    assert (to_phone[1].by_receiver, to_phone[1].metrics.mos_cq) == (True, 3.1)
    assert (from_phone[1].by_receiver, from_phone[1].metrics.mos_cq) == (False, 4.0)
    other = _key(Endpoint.of("198.51.100.7", 30002), Endpoint.of("203.0.113.5", 61002), 7)
    assert best_block(reports, other) is None and not describes_any(reports[0], [other])


def test_receiver_beats_sender_and_session_beats_interval_and_latest_wins() -> None:
    interval_rx = _seen(NATTED.replace("VQSessionReport: CallTerm", "VQIntervalReport")
                        .replace("MOSCQ=3.1", "MOSCQ=3.5"), ts=5.0)
    session_rx = _seen(NATTED, ts=20.0)
    later_rx = _seen(NATTED.replace("MOSCQ=3.1", "MOSCQ=3.3"), ts=21.0)
    found = best_block([session_rx, interval_rx], TO_PHONE)
    assert found is not None and found[1].metrics.mos_cq == 3.1
    found = best_block([interval_rx, later_rx, session_rx], TO_PHONE)
    assert found is not None and found[1].metrics.mos_cq == 3.3
    # the far end's report of the same stream as its sender (RemoteMetrics) loses to
    # the phone's own LocalMetrics, whatever the order
    far = _seen("VQSessionReport: CallTerm\nCallID: c1\n"
                "LocalAddr: IP=198.51.100.7 PORT=30000 SSRC=0x0000bbbb\n"
                "RemoteAddr: IP=203.0.113.5 PORT=61000 SSRC=0x0000aaaa\n"
                "LocalMetrics:\nQualityEst: MOSCQ=4.4\n"
                "RemoteMetrics:\nQualityEst: MOSCQ=2.0\n", ts=30.0)
    found = best_block([far, session_rx], TO_PHONE)
    assert found is not None and (found[1].by_receiver, found[1].metrics.mos_cq) == (True, 3.1)


def _publish(method: str, body: bytes, cseq: int = 1, ctype: str = "application/vq-rtcpxr"
             ) -> bytes:
    head = (f"{method} sip:collector@192.0.2.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-{cseq}\r\n"
            "From: <sip:p@192.0.2.10>;tag=1\r\nTo: <sip:collector@192.0.2.1>\r\n"
            f"Call-ID: pub-1\r\nCSeq: {cseq} {method}\r\nEvent: vq-rtcpxr\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def test_tracker_reports_publish_and_notify_once_and_counts_bad_bodies() -> None:
    t = SipTracker()
    body = NATTED.encode()
    out = t.feed(parse_message(_publish("PUBLISH", body)), PHONE, GW, 1.0)
    assert len(out) == 1 and isinstance(out[0], QualityReported)
    assert (out[0].ts, out[0].reporter, out[0].report.call_id) == (1.0, PHONE, "c1")
    assert t.feed(parse_message(_publish("PUBLISH", body)), PHONE, GW, 1.5) == []  # retransmit
    out = t.feed(parse_message(_publish("NOTIFY", body, cseq=2)), PHONE, GW, 2.0)
    assert len(out) == 1 and isinstance(out[0], QualityReported)
    assert t.feed(parse_message(_publish("PUBLISH", b"junk", cseq=3)), PHONE, GW, 3.0) == []
    assert t.feed(parse_message(_publish("PUBLISH", body, cseq=4, ctype="text/plain")),
                  PHONE, GW, 4.0) == []  # not a report: just a PUBLISH
    c = t.counters
    assert (c.vq_reports, c.vq_report_errors, c.retransmissions) == (2, 1, 1)
    assert c.requests_by_method == {"PUBLISH": 4, "NOTIFY": 1}
    assert len(t) == 0  # no dialog state for reports
