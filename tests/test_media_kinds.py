"""Every m-line of an offer/answer joins its call, each stream under its kind (issue 8).

A call with audio and video, a call that moves to T.38 fax (UDPTL) by re-INVITE, and
calls whose only RTP is RFC 4733 events or comfort noise, generated here from raw bytes
(``synth`` framing, nothing from ``agent``) and run through ``voipprobe analyze`` as a
user runs it. The truth is what the generator sent: which streams exist, their kinds and
packet counts, the UDPTL sequence numbers it left out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from synth import (
    BASE_EPOCH_NS,
    LINKTYPE_ETHERNET,
    CapturedPacket,
    Flow,
    ip_udp,
    link_frame,
    rtp_packet,
    write_pcap,
)

REPO = Path(__file__).resolve().parents[1]
MS = 1_000_000
A, B = "198.18.20.1", "198.18.20.2"


class Capture:
    def __init__(self) -> None:
        self.packets: list[CapturedPacket] = []
        self.n = 0

    def add(self, t_ns: int, flow: Flow, payload: bytes) -> None:
        frame = link_frame(LINKTYPE_ETHERNET, ip_udp(flow, payload, ident=self.n & 0xFFFF))
        self.packets.append(CapturedPacket(BASE_EPOCH_NS + t_ns, frame))
        self.n += 1

    def sip(self, t_ns: int, src: str, dst: str, first: str, call_id: str, cseq: str,
            body: str = "", to_tag: bool = True) -> None:
        to = f"To: <sip:bob@{B}>" + (";tag=b1" if to_tag else "")
        lines = [first, f"Via: SIP/2.0/UDP {src}:5060;branch=z9hG4bK{call_id}{cseq.split()[0]}",
                 f"From: <sip:alice@{A}>;tag=a1", to,
                 f"Call-ID: {call_id}", f"CSeq: {cseq}", f"Contact: <sip:{src}:5060>"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        msg = ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
        self.add(t_ns, Flow(src, dst, 5060, 5060, dscp=26), msg)

    def rtp(self, t0_ns: int, src: str, sport: int, dst: str, dport: int, *, n: int, pt: int,
            ssrc: int, step_ts: int, ptime_ms: int = 20, size: int = 160,
            every: int = 1) -> None:
        for k in range(0, n, every):
            data = rtp_packet(1000 + k, 5000 + k * step_ts, ssrc, pt, k == 0, bytes(size))
            self.add(t0_ns + k * ptime_ms * MS + 300_000, Flow(src, dst, sport, dport), data)

    def write(self, path: Path) -> Path:
        self.packets.sort(key=lambda p: p.ts_ns)
        write_pcap(path, self.packets, LINKTYPE_ETHERNET)
        return path


def sdp(ip: str, sections: list[str]) -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            + "".join(s + "\r\n" for s in sections))


AUDIO = ["a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000", "a=sendrecv"]


def audio(port: int) -> list[str]:
    return [f"m=audio {port} RTP/AVP 8 101", *AUDIO]


def video(port: int) -> list[str]:
    return [f"m=video {port} RTP/AVP 96", "a=rtpmap:96 H264/90000", "a=sendrecv"]


def image(port: int) -> list[str]:
    return [f"m=image {port} udptl t38", "a=T38FaxVersion:0", "a=T38FaxUdpEC:t38UDPRedundancy"]


def call(cap: Capture, call_id: str, offer: list[str], answer: list[str], t_ns: int = 0) -> None:
    cap.sip(t_ns, A, B, f"INVITE sip:bob@{B} SIP/2.0", call_id, "1 INVITE", sdp(A, offer),
            to_tag=False)
    cap.sip(t_ns + 100 * MS, B, A, "SIP/2.0 200 OK", call_id, "1 INVITE", sdp(B, answer))
    cap.sip(t_ns + 110 * MS, A, B, f"ACK sip:bob@{B} SIP/2.0", call_id, "1 ACK")


def bye(cap: Capture, call_id: str, t_ns: int) -> None:
    cap.sip(t_ns, A, B, f"BYE sip:bob@{B} SIP/2.0", call_id, "2 BYE")
    cap.sip(t_ns + 20 * MS, B, A, "SIP/2.0 200 OK", call_id, "2 BYE")


def analyze(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", "--no-progress", str(path)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [o for o in map(json.loads, proc.stdout.splitlines()) if o["kind"] == "call"]


def by_media(rec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["media"], d["direction"]): d for d in rec["directions"]}


def test_audio_and_video_streams_join_one_call_mos_only_on_audio(tmp_path: Path) -> None:
    cap = Capture()
    call(cap, "av-1", audio(40000) + video(40002), audio(50000) + video(50002))
    t = 200 * MS
    cap.rtp(t, A, 40000, B, 50000, n=250, pt=8, ssrc=0xA1, step_ts=160)
    cap.rtp(t, B, 50000, A, 40000, n=250, pt=8, ssrc=0xB1, step_ts=160)
    # 30 frames/s video, 3000 ticks of 90 kHz per frame, one packet per frame
    cap.rtp(t, A, 40002, B, 50002, n=150, pt=96, ssrc=0xA2, step_ts=3000, ptime_ms=33,
            size=900)
    cap.rtp(t, B, 50002, A, 40002, n=150, pt=96, ssrc=0xB2, step_ts=3000, ptime_ms=33,
            size=900, every=2)  # every other sequence number sent: 50 % loss
    bye(cap, "av-1", t + 5200 * MS)
    calls = analyze(cap.write(tmp_path / "av.pcap"))
    assert [c["call_id"] for c in calls] == ["av-1"]  # no unsignalled pseudo-call
    (rec,) = calls
    d = by_media(rec)
    assert sorted(d) == [("audio", "a_to_b"), ("audio", "b_to_a"),
                         ("video", "a_to_b"), ("video", "b_to_a")]
    for key in (("audio", "a_to_b"), ("audio", "b_to_a")):
        assert d[key]["stream"]["codec"] == "PCMA" and d[key]["stream"]["packets"] == 250
        assert d[key]["quality"]["mos_cq"] > 4.3 and d[key]["sla"] is not None
    for key, packets, lost in ((("video", "a_to_b"), 150, 0), (("video", "b_to_a"), 75, 74)):
        v = d[key]
        assert v["stream"]["codec"] == "H264" and v["stream"]["clock_rate"] == 90000
        assert (v["stream"]["packets"], v["stream"]["lost"]) == (packets, lost)
        assert v["quality"] is None and v["sla"] is None  # measured, never given a MOS
    # the call's verdict is the audio's: the video's 50 % loss is not a voice SLA breach
    assert not any(x["threshold"] == "max_loss_ratio" for x in rec["sla"]["violations"])
    assert rec["codec"] == "PCMA"


def udptl(seq: int, ifp: bytes = b"\x06\x0c\x00\x40") -> bytes:
    """A UDPTL packet (T.38 §9.1): sequence number, the primary IFP (length-prefixed),
    an empty redundancy list."""
    return seq.to_bytes(2, "big") + bytes([len(ifp)]) + ifp + b"\x00"


def test_t38_reinvite_joins_the_image_stream_to_the_call(tmp_path: Path) -> None:
    cap = Capture()
    call(cap, "fax-1", audio(40000), audio(50000))
    t = 200 * MS
    cap.rtp(t, A, 40000, B, 50000, n=100, pt=8, ssrc=0xA1, step_ts=160)
    cap.rtp(t, B, 50000, A, 40000, n=100, pt=8, ssrc=0xB1, step_ts=160)
    # 2.5 s in: re-INVITE to T.38 on the same ports (as fax gateways do)
    re = 2500 * MS
    cap.sip(re, A, B, f"INVITE sip:bob@{B} SIP/2.0", "fax-1", "3 INVITE", sdp(A, image(40000)))
    cap.sip(re + 50 * MS, B, A, "SIP/2.0 200 OK", "fax-1", "3 INVITE", sdp(B, image(50000)))
    cap.sip(re + 60 * MS, A, B, f"ACK sip:bob@{B} SIP/2.0", "fax-1", "3 ACK")
    start = re + 100 * MS
    skipped = {17, 18, 40}
    sent = [s for s in range(0, 200) if s not in skipped]
    # numbers from 0x40F0: from the 17th packet on the first byte is 0x41, an upper-case
    # 'A' as SIP starts; the answers from 0x80C0 start like RTP and pass 0x80C8..0x80CF,
    # which looks like RTCP: still UDPTL, sent to an endpoint that announced it
    for seq in sent:
        cap.add(start + seq * 30 * MS, Flow(A, B, 40000, 50000), udptl(0x40F0 + seq))
    for k in range(50):
        cap.add(start + k * 120 * MS + 5 * MS, Flow(B, A, 50000, 40000), udptl(0x80C0 + k))
    bye(cap, "fax-1", start + 6200 * MS)
    (rec,) = analyze(cap.write(tmp_path / "fax.pcap"))
    assert rec["call_id"] == "fax-1"
    images = [d for d in rec["directions"] if d["media"] == "image"]
    assert [d["direction"] for d in images] == ["a_to_b", "b_to_a"]
    fwd, back = images
    assert fwd["stream"]["codec"] == "t38" and fwd["quality"] is None and fwd["sla"] is None
    assert (fwd["stream"]["packets"], fwd["stream"]["lost"]) == (len(sent), len(skipped))
    assert (back["stream"]["packets"], back["stream"]["lost"]) == (50, 0)
    audio_dirs = [d for d in rec["directions"] if d["media"] == "audio"]
    assert sorted(d["stream"]["packets"] for d in audio_dirs) == [100, 100]


def test_udptl_sequence_gives_the_fax_loss(tmp_path: Path) -> None:
    cap = Capture()
    call(cap, "fax-2", image(40010), image(50010))
    start = 200 * MS
    skipped = {5, 6, 7, 90}
    for seq in range(300):
        if seq not in skipped:
            cap.add(start + seq * 30 * MS, Flow(A, B, 40010, 50010), udptl(65500 + seq & 0xFFFF))
    bye(cap, "fax-2", start + 9100 * MS)
    (rec,) = analyze(cap.write(tmp_path / "fax2.pcap"))
    (d,) = rec["directions"]
    s = d["stream"]
    assert (d["media"], s["codec"], s["packets"], s["lost"]) == ("image", "t38", 296, 4)
    assert s["seq_wraps"] == 1 and s["clock_rate"] is None and s["jitter_ms"] == 0.0
    assert d["quality"] is None and rec["sla"]["verdict"] in ("met", "violated")


def test_event_only_and_cn_only_streams_get_no_mos(tmp_path: Path) -> None:
    cap = Capture()
    call(cap, "ev-1", audio(40020), audio(50020))
    t = 200 * MS
    cap.rtp(t, A, 40020, B, 50020, n=200, pt=8, ssrc=0xA1, step_ts=160)
    # the callee sends nothing but RFC 4733 events (4-byte payloads), then CN only from a
    # second call
    cap.rtp(t + 1000 * MS, B, 50020, A, 40020, n=12, pt=101, ssrc=0xE1, step_ts=0, size=4)
    bye(cap, "ev-1", t + 4100 * MS)
    call(cap, "cn-1", ["m=audio 40030 RTP/AVP 8 13", "a=rtpmap:13 CN/8000"],
         ["m=audio 50030 RTP/AVP 8 13", "a=rtpmap:13 CN/8000"], t_ns=10_000 * MS)
    cap.rtp(10_200 * MS, A, 40030, B, 50030, n=100, pt=8, ssrc=0xA3, step_ts=160)
    cap.rtp(10_200 * MS, B, 50030, A, 40030, n=100, pt=13, ssrc=0xC3, step_ts=160, size=1,
            every=10)
    bye(cap, "cn-1", 14_200 * MS)
    recs = {c["call_id"]: c for c in analyze(cap.write(tmp_path / "ev.pcap"))}
    ev = by_media(recs["ev-1"])
    assert sorted(ev) == [("audio", "a_to_b"), ("telephone-event", "b_to_a")]
    e = ev[("telephone-event", "b_to_a")]
    assert e["quality"] is None and e["sla"] is None
    assert e["stream"]["telephone_event_packets"] == 12
    assert ev[("audio", "a_to_b")]["quality"]["mos_cq"] > 4.3
    cn = by_media(recs["cn-1"])
    c = cn[("comfort-noise", "b_to_a")]
    assert c["quality"] is None and c["stream"]["comfort_noise_packets"] == 10
    assert recs["cn-1"]["codec"] == "PCMA"


def test_kinds_do_not_depend_on_batching(tmp_path: Path) -> None:
    """The T.38 switch, video and event-only streams give the same records in batches of
    1, 2, 3 and 64 packets as in one batch: UDPTL is told from RTP, RTCP and SIP where
    the signalling stands at each packet, not where it stood when its batch began."""
    from test_time_true import _check, _fixed, _read

    cap = Capture()
    call(cap, "fax-3", audio(40000), audio(50000))
    cap.rtp(200 * MS, A, 40000, B, 50000, n=60, pt=8, ssrc=0xA1, step_ts=160)
    cap.sip(1400 * MS, A, B, f"INVITE sip:bob@{B} SIP/2.0", "fax-3", "3 INVITE",
            sdp(A, image(40000) + video(40002)))
    cap.sip(1450 * MS, B, A, "SIP/2.0 200 OK", "fax-3", "3 INVITE",
            sdp(B, image(50000) + video(50002)))
    for k in range(120):  # UDPTL right after the answer, numbers through 0x41.. and 0x80C8..
        seq = (0x40F8 + k) if k < 60 else (0x80C0 + k)
        cap.add(1451 * MS + k * 20 * MS, Flow(A, B, 40000, 50000), udptl(seq))
    cap.rtp(1452 * MS, B, 50002, A, 40002, n=60, pt=96, ssrc=0xB2, step_ts=3000, ptime_ms=33)
    cap.rtp(1000 * MS, B, 50000, A, 40000, n=8, pt=101, ssrc=0xE1, step_ts=0, size=4)
    bye(cap, "fax-3", 4200 * MS)
    path = cap.write(tmp_path / "mixed.pcap")
    n = len(_read(path))
    for size in (1, 2, 3, 64):
        _check(path, n, _fixed(n, size), f"batches of {size}")
    (rec,) = analyze(path)
    got = sorted((d["media"], d["direction"], d["stream"]["packets"]) for d in rec["directions"])
    assert got == [("audio", "a_to_b", 60), ("image", "a_to_b", 120),
                   ("telephone-event", "b_to_a", 8), ("video", "b_to_a", 60)]
