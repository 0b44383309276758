"""Whatever the network sends, the engine counts and drops; it never raises.

Hypothesis feeds the whole pipeline (decode -> route -> SIP/RTCP/RTP -> calls)
with raw IPv4/UDP and TCP packets whose payloads are random bytes, mutated SIP
with SDP, and mutated RTCP, then finishes it and checks the records are valid.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.calls.events import CallEnded
from agent.capture.batch import Batch, LinkType
from agent.engine import Engine

INVITE = (
    b"INVITE sip:bob@198.19.8.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.7.1:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:alice@198.18.7.1>;tag=a\r\nTo: <sip:bob@198.19.8.2>\r\nCall-ID: fuzz@x\r\n"
    b"CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 120\r\n\r\n"
    b"v=0\r\no=- 1 1 IN IP4 198.18.7.1\r\ns=-\r\nc=IN IP4 198.18.7.1\r\nt=0 0\r\n"
    b"m=audio 16000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)
RTCP = bytes.fromhex("80c8000600000001e8a1b2c3d4e5f6070000012c0000000a00000640"
                     "81ca000300000001010361626300")


def ipv4_udp(payload: bytes, sport: int, dport: int, proto: int = 17) -> bytes:
    l4 = (struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) if proto == 17
          else struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x18, 65535, 0, 0))
    total = 20 + len(l4) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0xB8, total & 0xFFFF, 1, 0, 64, proto, 0,
                     bytes([198, 18, 7, 1]), bytes([198, 19, 8, 2]))
    return ip + l4 + payload


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    b = bytearray(data)
    for pos, val in flips:
        b[pos % len(b)] = val
    return bytes(b[: max(1, cut % (len(b) + 1))])


packet = st.one_of(
    st.binary(max_size=300),
    st.builds(mutate, st.just(INVITE), st.lists(st.tuples(st.integers(0, 10**6),
              st.integers(0, 255)), max_size=8), st.integers(0, 10**6)),
    st.builds(mutate, st.just(RTCP), st.lists(st.tuples(st.integers(0, 10**6),
              st.integers(0, 255)), max_size=4), st.integers(0, 10**6)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(packet, st.sampled_from([5060, 5061, 16000, 16001, 40000]),
                          st.sampled_from([17, 6])), min_size=1, max_size=40))
def test_engine_survives_anything(items: list[tuple[bytes, int, int]]) -> None:
    engine = Engine()
    frames = [ipv4_udp(p, port, port, proto) for p, port, proto in items]
    ts = [1_700_000_000.0 + 0.02 * i for i in range(len(frames))]
    events = engine.feed(Batch.from_packets(frames, ts, LinkType.RAW))
    events += engine.tick(ts[-1] + 3600.0)
    events += engine.finish()
    for e in events:
        if isinstance(e, CallEnded):
            assert e.record.to_json()["kind"] == "call"
    c = engine.counters()
    assert c["packets"] == len(frames)
    assert c["decode_frames"] <= len(frames)
