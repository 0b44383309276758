"""Call liveness (issue 7): a call lives while anything of it is seen, signalling or media.

Raw packets through the whole engine, so the timers are the engine's own: the media
idle timeout from the last packet of either kind, the RFC 4028 session timer for a call
whose media does not pass the probe, ``capture_end`` when the input stops mid-call.
"""

from __future__ import annotations

from packetbuild import rtp, sdp, sip, udp

from agent.calls.events import CallEnded
from agent.capture.batch import Batch, LinkType
from agent.engine import Engine
from agent.sip.events import EndReason

T0 = 1_700_000_000.0
A, B = "198.18.7.10", "198.19.8.20"


def setup(session_expires: int | None = None) -> list[tuple[float, bytes]]:
    ok = sip("SIP/2.0 200 OK", "1 INVITE", ";tag=b1", sdp(B, 50000))
    if session_expires is not None:
        ok = ok.replace(b"Content-Type:", f"Session-Expires: {session_expires};refresher=uac"
                        "\r\nContent-Type:".encode(), 1)
    return [
        (T0, udp(A, 5060, B, 5060, sip("INVITE sip:bob@example.org SIP/2.0", "1 INVITE",
                                       body=sdp(A, 40000)))),
        (T0 + 1.0, udp(B, 5060, A, 5060, ok)),
        (T0 + 1.01, udp(A, 5060, B, 5060, sip("ACK sip:bob@example.org SIP/2.0", "1 ACK",
                                              ";tag=b1"))),
    ]


def in_dialog(t: float, method: str, cseq: int) -> list[tuple[float, bytes]]:
    return [(t, udp(A, 5060, B, 5060, sip(f"{method} sip:bob@example.org SIP/2.0",
                                          f"{cseq} {method}", ";tag=b1"))),
            (t + 0.02, udp(B, 5060, A, 5060, sip("SIP/2.0 200 OK", f"{cseq} {method}",
                                                 ";tag=b1")))]


def later(t: float) -> list[tuple[float, bytes]]:
    """Unrelated traffic, so that packet time moves on."""
    return [(t + i, udp(A, 53000, "198.18.0.53", 53, b"\x12\x34" + b"\x00" * 30))
            for i in range(3)]


def run(packets: list[tuple[float, bytes]], batch: int = 7) -> dict[str, object]:
    packets.sort(key=lambda p: p[0])
    engine = Engine()
    events = []
    for i in range(0, len(packets), batch):
        part = packets[i:i + batch]
        events += engine.feed(Batch.from_packets([p for _, p in part], [t for t, _ in part],
                                                 LinkType.RAW))
    events += engine.finish(EndReason.CAPTURE_END)
    (rec,) = [e.record.to_json() for e in events if isinstance(e, CallEnded)]
    return rec


def test_session_timer_without_refresh_ends_the_call_at_its_last_message() -> None:
    rec = run(setup(session_expires=90) + later(T0 + 500.0))
    assert rec["end_reason"] == "session_expired" and rec["media_at_probe"] is False
    assert abs(rec["end_ts"] - (T0 + 1.01)) < 1e-6  # type: ignore[operator]


def test_refreshes_keep_a_signalling_only_call_alive() -> None:
    # refreshed 56 s and 104 s after the answer, within its 120 s session interval
    pkts = setup(session_expires=120) + in_dialog(T0 + 57.0, "UPDATE", 2)
    pkts += in_dialog(T0 + 105.0, "UPDATE", 3) + later(T0 + 200.0)
    rec = run(pkts)
    assert rec["end_reason"] == "capture_end" and rec["media_at_probe"] is False
    assert abs(rec["duration_s"] - (T0 + 202.0 - (T0 + 1.0))) < 1e-6  # type: ignore[operator]


def test_without_a_timer_a_signalling_only_call_lives_until_the_input_stops() -> None:
    rec = run(setup() + in_dialog(T0 + 56.0, "UPDATE", 2) + later(T0 + 300.0))
    assert rec["end_reason"] == "capture_end"  # not timed out at its answer (30 s)
    assert rec["duration_s"] > 300.0  # type: ignore[operator]


def test_in_dialog_signalling_after_the_media_keeps_the_call_alive_as_media_does() -> None:
    pkts = setup()
    pkts += [(T0 + 1.1 + 0.02 * i, udp(A, 40000, B, 50000, rtp(i, 160 * i, 0xA)))
             for i in range(150)]  # media until T0 + 4.08
    pkts += in_dialog(T0 + 20.0, "INFO", 2) + later(T0 + 100.0)
    rec = run(pkts)
    # 30 s of nothing after the INFO's 200 OK, not after the media: timed out then
    assert rec["end_reason"] == "timed_out" and rec["media_at_probe"] is True
    assert abs(rec["end_ts"] - (T0 + 20.02)) < 1e-6  # type: ignore[operator]
    assert abs(rec["duration_s"] - 19.02) < 1e-6  # type: ignore[operator]
