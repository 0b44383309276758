"""Calls through the whole engine from raw packets: SIP dialog + RTP both ways."""

from __future__ import annotations

from packetbuild import rtp, sdp, sip, udp

from agent.calls.events import CallEnded
from agent.capture.batch import Batch, LinkType
from agent.engine import Engine

T0 = 1_700_000_000.0
A, B = "198.18.7.10", "198.19.8.20"


def packets(bye: bool) -> tuple[list[bytes], list[float]]:
    out: list[tuple[float, bytes]] = [
        (T0, udp(A, 5060, B, 5060, sip("INVITE sip:bob@example.org SIP/2.0", "1 INVITE",
                                       body=sdp(A, 40000)), 24)),
        (T0 + 0.05, udp(B, 5060, A, 5060, sip("SIP/2.0 180 Ringing", "1 INVITE", ";tag=b1"), 24)),
        (T0 + 1.0, udp(B, 5060, A, 5060, sip("SIP/2.0 200 OK", "1 INVITE", ";tag=b1",
                                             sdp(B, 50000)), 24)),
        (T0 + 1.01, udp(A, 5060, B, 5060, sip("ACK sip:bob@example.org SIP/2.0", "1 ACK",
                                              ";tag=b1"), 24)),
    ]
    for i in range(150):
        t = T0 + 1.1 + 0.02 * i
        out.append((t, udp(A, 40000, B, 50000, rtp(i, 160 * i, 0xA), 46)))
        out.append((t + 0.001, udp(B, 50000, A, 40000, rtp(500 + i, 160 * i, 0xB), 46)))
    if bye:
        out.append((T0 + 4.2, udp(A, 5060, B, 5060, sip("BYE sip:bob@example.org SIP/2.0",
                                                        "2 BYE", ";tag=b1"), 24)))
        out.append((T0 + 4.21, udp(B, 5060, A, 5060, sip("SIP/2.0 200 OK", "2 BYE",
                                                         ";tag=b1"), 24)))
    # unrelated traffic much later, so packet time moves past every timeout
    out += [(T0 + 100.0 + i, udp(A, 53000, "198.18.0.53", 53, b"\x12\x34" + b"\x00" * 30))
            for i in range(3)]
    return [p for _, p in out], [t for t, _ in out]


def run(bye: bool) -> list[dict[str, object]]:
    frames, ts = packets(bye)
    engine = Engine()
    events = engine.feed(Batch.from_packets(frames, ts, LinkType.RAW)) + engine.finish()
    return [e.record.to_json() for e in events if isinstance(e, CallEnded)]


def test_call_with_bye() -> None:
    (c,) = run(bye=True)
    assert (c["call_id"], c["final_status"], c["end_reason"]) == ("idle@test", 200, "normal")
    assert abs(c["setup_delay_s"] - 0.05) < 1e-6 and abs(c["duration_s"] - 3.2) < 1e-6
    dirs = c["directions"]
    assert [d["direction"] for d in dirs] == ["a_to_b", "b_to_a"]  # type: ignore[index]
    for d in dirs:  # type: ignore[attr-defined]
        assert d["stream"]["packets"] == 150 and d["stream"]["lost"] == 0
        assert d["stream"]["codec"] == "PCMA" and d["stream"]["ptime_ms"] == 20.0
        assert d["sla"]["verdict"] == "met", d["sla"]
    assert c["signalling_dscp"] == {"24": 6} and c["sla"]["verdict"] == "met"


def test_call_without_bye_times_out_at_its_last_media() -> None:
    (c,) = run(bye=False)
    assert c["end_reason"] == "timed_out" and c["final_status"] == 200
    last_media = T0 + 1.1 + 0.02 * 149 + 0.001
    assert abs(c["end_ts"] - last_media) < 1e-6  # type: ignore[operator]
    assert len(c["directions"]) == 2  # type: ignore[arg-type]


def test_a_bad_interval_shows_in_mos_min() -> None:
    # 60 s of clean media with 10 s of 20 % loss in the middle: the call's MOS (1/30
    # loss overall) stays fair, the worst interval's is much lower.
    frames, ts = [], []
    for i in range(3000):
        t = T0 + 0.02 * i
        if 1000 <= i < 1500 and i % 5 == 0:
            continue  # lost in the network
        frames.append(udp(A, 40000, B, 50000, rtp(i, 160 * i, 0xC), 46))
        ts.append(t)
    engine = Engine()
    for start in range(0, len(frames), 500):  # batches of 10 s: intervals see the change
        engine.feed(Batch.from_packets(frames[start:start + 500], ts[start:start + 500],
                                       LinkType.RAW))
    events = engine.finish()
    (c,) = [e.record for e in events if isinstance(e, CallEnded)]
    (d,) = c.directions
    assert d.stream.lost == 100 and c.call_id is None
    q = d.quality
    assert q.mos_min is not None and q.mos_min < q.mos_cq - 0.3


def test_intervals_are_emitted_with_their_quality() -> None:
    from agent.calls.events import CallInterval

    frames, ts = [], []
    for i in range(3000):
        if 1000 <= i < 1500 and i % 5 == 0:
            continue
        frames.append(udp(A, 40000, B, 50000, rtp(i, 160 * i, 0xD), 46))
        ts.append(T0 + 0.02 * i)
    engine = Engine()
    events = []
    for start in range(0, len(frames), 500):
        events += engine.feed(Batch.from_packets(frames[start:start + 500],
                                                 ts[start:start + 500], LinkType.RAW))
    intervals = [e for e in events if isinstance(e, CallInterval)]
    assert len(intervals) >= 4 and all(e.call_id is None for e in intervals)
    rated = [e for e in intervals if e.quality is not None]
    assert sum(e.delta.lost for e in intervals) <= 100
    worst = min(rated, key=lambda e: e.quality.mos_cq)  # type: ignore[union-attr]
    assert worst.delta.lost > 0 and worst.delta.loss_ratio > 0.05
