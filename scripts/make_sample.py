"""Regenerate agent/data/sample.pcap.gz, the capture `voipprobe analyze` reads by default.

A 20-second SIP call with G.711 A-law media between a phone and a carrier SBC on
198.18.0.0/15 (INVITE/180/200/ACK ... BYE/200, SDP offer and answer, SIP marked CS3),
built with the test suite's independent generator (tests/synth.py), seeded so the
file is reproducible:
- caller -> callee: clean, one DTMF digit (RFC 4733, PT 101), marked EF;
- callee -> caller: 2 % loss, up to 12 ms of jitter, a few reordered packets, and
  10 % of packets re-marked to DSCP 0 by some misconfigured hop.

    python3 scripts/make_sample.py
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import synth  # noqa: E402  (the generator lives with the tests)

OUT = ROOT / "agent" / "data" / "sample.pcap.gz"
SLOTS = 1000  # 20 ms each


def _sdp(addr: str, port: int) -> bytes:
    return (f"v=0\r\no=- 20261126 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
            "a=sendrecv\r\n").encode()


def _sip(first: str, cseq: str, to_tag: str, body: bytes = b"", via: str = "198.18.7.10") -> bytes:
    head = [first, f"Via: SIP/2.0/UDP {via}:5060;branch=z9hG4bK{cseq.split()[0]}{cseq[-3:]}",
            'From: "Reception" <sip:201@office.example>;tag=8a3f',
            f"To: <sip:+15550100@carrier.example>{to_tag}",
            "Call-ID: 5f1c7e2a9b@198.18.7.10", f"CSeq: {cseq}", "Max-Forwards: 70",
            "User-Agent: SamplePhone/1.0"]
    if body:
        head.append("Content-Type: application/sdp")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def signalling(caller: synth.Flow, callee: synth.Flow) -> list[synth.CapturedPacket]:
    """The call's SIP, timed around the media (which starts 20 ms after the ACK)."""
    a = synth.Flow(caller.src, callee.src, 5060, 5060, dscp=24)
    b = synth.Flow(callee.src, caller.src, 5060, 5060, dscp=24)
    t0 = synth.BASE_EPOCH_NS - 2_400_000_000  # INVITE 2.4 s before the first RTP packet
    tag = ";tag=c0de"
    msgs = [
        (0, a, _sip("INVITE sip:+15550100@carrier.example SIP/2.0", "1 INVITE", "",
                    _sdp(caller.src, caller.sport))),
        (35, b, _sip("SIP/2.0 100 Trying", "1 INVITE", "")),
        (180, b, _sip("SIP/2.0 180 Ringing", "1 INVITE", tag)),
        (2350, b, _sip("SIP/2.0 200 OK", "1 INVITE", tag, _sdp(callee.src, callee.sport))),
        (2380, a, _sip("ACK sip:+15550100@carrier.example SIP/2.0", "1 ACK", tag)),
        (22500, a, _sip("BYE sip:+15550100@carrier.example SIP/2.0", "2 BYE", tag)),
        (22540, b, _sip("SIP/2.0 200 OK", "2 BYE", tag)),
    ]
    return [synth.CapturedPacket(t0 + ms * 1_000_000, synth.link_frame(
        synth.LINKTYPE_ETHERNET, synth.ip_udp(flow, payload, ident=i)))
        for i, (ms, flow, payload) in enumerate(msgs)]


def main() -> None:
    caller = synth.Flow("198.18.7.10", "198.19.8.20", 16384, 20000, dscp=46)
    callee = synth.Flow("198.19.8.20", "198.18.7.10", 20000, 16384, dscp=46)
    fwd = synth.make_stream(
        SLOTS, ssrc=0x5A17C0DE, seed=11, pt=synth.PT_PCMA,
        impair=synth.Impairments(jitter_ms=1.0), dtmf=[synth.DtmfEvent(at=400, event=7)],
    )
    back = synth.make_stream(
        SLOTS, ssrc=0x0BADCAFE, seed=12, pt=synth.PT_PCMA,
        start_ns=synth.BASE_EPOCH_NS + 35_000_000,
        impair=synth.Impairments(loss=0.02, jitter_ms=12.0, reorder=0.003),
    )
    rng = random.Random(13)
    remark = [0 if rng.random() < 0.10 else 46 for _ in back.packets]
    packets = synth.merge(
        signalling(caller, callee),
        synth.stream_frames(fwd, caller),
        synth.stream_frames(back, callee, dscp_per_packet=remark),
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    synth.write_pcap(OUT, packets, compress=True)
    print(f"wrote {OUT}: {len(packets)} packets, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
