"""SIP + RTP call captures with known truth, for the time-true engine tests (issue 7).

Theory of operation
-------------------
Like ``synth`` (whose framing and pcap helpers it reuses), this module imports
nothing from ``agent``: it is a yardstick, so it must not share code or bugs
with the probe.

A scenario is built as a list of *emissions*: a SIP message or an RTP packet
with its capture time in integer nanoseconds, the frame bytes, and (for RTP)
the stream it belongs to and its sequence number. Times are quantised to the
microsecond of a classic pcap *before* anything is derived from them, then the
emissions are sorted by (time, creation order) -- exactly the order the file
is written in. All truth is computed from that final, written order:

- per call: the timestamps of INVITE, first 18x, final response, BYE, hence
  ``setup_delay_s`` (RFC 6076 SRD: INVITE -> first 18x, or the final response
  when no 18x was sent) and ``duration_s`` (BYE - 200 OK: the session ends
  when the BYE is sent, RFC 3261 §15.1.1); ``final_status``; ``end_reason``
  (``normal`` BYE, ``failed`` >= 300, ``cancelled`` CANCEL/487,
  ``capture_end`` for an answered call still up when the capture ends);
- per stream (5-tuple + SSRC), on the arrival order of its packets:
  ``packets`` every packet received, duplicates included; ``distinct``
  sequence numbers; ``expected = highest - lowest seq received + 1`` (the
  generator never wraps the sequence number); ``lost = expected - distinct``;
  ``duplicates = packets - distinct``; ``reordered``: non-duplicate packets
  that arrive after a packet with a higher sequence number.

Network delay is drawn per RTP packet (``delay_ms`` range); duplicates are
extra copies that arrive 1-40 ms after their original. SIP travels without
delay. Every address is in 198.18.0.0/15 (RFC 2544); nothing is sent anywhere.

Scenarios (each returns ``(packets, truth)``; ``write`` makes the pcap):

``many_calls``       concurrent, overlapping calls: answered (some with a
                     re-INVITE moving the caller's media port, some with
                     in-dialog UPDATE/INFO/OPTIONS), failed (486), cancelled.
``port_reuse``       sequential calls between the same two media endpoints,
                     each with its own codec on dynamic PT 99 (G.726 variants,
                     or speex at 8 and 16 kHz); ``same_ssrc`` replays the same
                     SSRC, sequence and timestamp base every call, as sipp's
                     ``uac_pcap`` does.
``sip_only_refresh`` no RTP at all; RFC 4028 session timers refreshed by UPDATE
                     56, 61 and 104 s after the answer; some calls end by BYE,
                     the others are still up when the capture ends.
``reorder_start``    one call whose two streams have 30-60 ms per-packet delay
                     from the first packet (the 2nd often overtakes the 1st)
                     and 30 duplicates each, no loss; ``signalled=False`` gives
                     the very same RTP without any SIP.
``heavy_jitter``     one call with 0-80 ms delay on every packet and 1 % loss
                     (never on the first or last 5 packets of a stream).
``media_directions`` calls whose sides send audio, RFC 3389 comfort noise only,
                     RFC 4733 events only or nothing after the answer; early
                     media (183 with SDP, a ringback until the answer); a short
                     call; a held (sendonly/recvonly) call. Each call's truth
                     says which directions carried media (audio or CN, not
                     events alone) from the answer on: ``media_seen``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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

MS = 1_000_000  # ns
S = 1_000_000_000  # ns
RESOLUTION_NS = 1000  # classic pcap: microseconds
SIP_PORT = 5060
DSCP_SIP = 26  # AF31
DSCP_RTP = 46  # EF
PTIME_MS = 20

# ---------------------------------------------------------------------------
# Truth
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamTruth:
    """One RTP stream (5-tuple + SSRC), from the module docstring's definitions."""

    src: str  # "a.b.c.d:port", the text form of analyze --json
    dst: str
    ssrc: int
    codec: str  # encoding name as the SDP rtpmap writes it ("PCMA", "G726-16", ...)
    clock_rate: int  # Hz
    packets: int
    distinct: int
    expected: int
    lost: int
    duplicates: int
    reordered: int
    first_ts: float  # epoch seconds (µs-exact)
    last_ts: float
    events: int = 0  # RFC 4733 packets (the end packet's repeats included)
    comfort_noise: int = 0  # RFC 3389 packets
    # RFC 3550 A.8 final interarrival jitter over the audio packets alone (events and
    # CN excluded), arrival order, ms
    jitter_ms: float = 0.0

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.src, self.dst, self.ssrc)


@dataclass(frozen=True, slots=True)
class CallTruth:
    """One SIP call, from the timestamps of the messages written."""

    call_id: str
    final_status: int | None
    end_reason: str  # normal | failed | cancelled | capture_end
    invite_ts: float
    ringing_ts: float | None  # first 18x
    answer_ts: float | None  # 200 OK to the initial INVITE
    bye_ts: float | None
    codec: str | None
    clock_rate: int | None
    streams: tuple[StreamTruth, ...]  # empty when no RTP was sent
    final_ts: float | None  # the final response to the initial INVITE
    reinvite: bool = False  # the caller moved its media port mid-call
    in_dialog: tuple[str, ...] = ()  # in-dialog methods sent besides ACK/BYE
    # Directions that carried audio or comfort noise from the answer on (any time for an
    # unanswered call): "both", "a_to_b" (caller -> callee), "b_to_a", "none".
    media_seen: str = "none"

    @property
    def setup_delay_s(self) -> float:
        """RFC 6076 SRD: INVITE -> first 18x, else -> the final response."""
        end = self.ringing_ts
        if end is None:
            assert self.final_ts is not None
            end = self.final_ts
        return round(end - self.invite_ts, 6)  # both are whole microseconds

    @property
    def duration_s(self) -> float | None:
        """BYE - 200 OK; None for unanswered calls and calls without a BYE."""
        if self.answer_ts is None or self.bye_ts is None:
            return None
        return round(self.bye_ts - self.answer_ts, 6)


@dataclass(frozen=True, slots=True)
class ScenarioTruth:
    calls: tuple[CallTruth, ...]
    unsignalled: tuple[StreamTruth, ...] = ()  # RTP that no SDP announced

    def streams(self) -> list[StreamTruth]:
        return [s for c in self.calls for s in c.streams] + list(self.unsignalled)


# ---------------------------------------------------------------------------
# Emissions
# ---------------------------------------------------------------------------

# (call tag, src ip, src port, dst ip, dst port, ssrc): the tag keeps apart the streams of
# sequential calls that replay one 5-tuple and SSRC (port_reuse with same_ssrc).
StreamId = tuple[str, str, int, str, int, int]


@dataclass(slots=True)
class _Emission:
    ts_ns: int
    order: int
    frame: bytes
    stream: StreamId | None = None
    seq: int = 0
    rtp_ts: int = 0
    kind: str = "audio"  # audio | event | cn


@dataclass(slots=True)
class _Capture:
    """Emissions being collected; ``finish`` sorts them and derives stream truth."""

    emissions: list[_Emission] = field(default_factory=list)

    def add(self, ts_ns: int, flow: Flow, payload: bytes, *, dscp: int,
            stream: StreamId | None = None, seq: int = 0, rtp_ts: int = 0,
            kind: str = "audio") -> int:
        ts_ns = ts_ns // RESOLUTION_NS * RESOLUTION_NS
        frame = link_frame(LINKTYPE_ETHERNET, ip_udp(flow, payload, dscp=dscp,
                                                     ident=len(self.emissions)))
        self.emissions.append(_Emission(ts_ns, len(self.emissions), frame, stream, seq,
                                        rtp_ts, kind))
        return ts_ns

    def finish(self) -> list[_Emission]:
        self.emissions.sort(key=lambda e: (e.ts_ns, e.order))
        return self.emissions

    @staticmethod
    def packets(emissions: Sequence[_Emission]) -> list[CapturedPacket]:
        return [CapturedPacket(e.ts_ns, e.frame) for e in emissions]


def stream_truth(emissions: Sequence[_Emission], sid: StreamId, codec: str,
                 clock_rate: int) -> StreamTruth:
    """Counters of one stream on the arrival order of the written capture."""
    mine = [e for e in emissions if e.stream == sid]
    if not mine:
        raise ValueError(f"no packet of stream {sid}")
    seen: set[int] = set()
    highest = -1
    reordered = 0
    for e in mine:
        if e.seq in seen:
            continue
        seen.add(e.seq)
        if e.seq < highest:
            reordered += 1
        highest = max(highest, e.seq)
    expected = max(seen) - min(seen) + 1
    jitter = 0.0  # RFC 3550 A.8 in timestamp units, over audio packets in arrival order
    audio = [e for e in mine if e.kind == "audio"]
    for a, b in itertools.pairwise(audio):
        d = (b.ts_ns - a.ts_ns) / S * clock_rate - (b.rtp_ts - a.rtp_ts)
        jitter += (abs(d) - jitter) / 16.0
    _, src_ip, sport, dst_ip, dport, ssrc = sid
    return StreamTruth(
        src=f"{src_ip}:{sport}", dst=f"{dst_ip}:{dport}", ssrc=ssrc, codec=codec,
        clock_rate=clock_rate, packets=len(mine), distinct=len(seen), expected=expected,
        lost=expected - len(seen), duplicates=len(mine) - len(seen), reordered=reordered,
        first_ts=mine[0].ts_ns / S, last_ts=mine[-1].ts_ns / S,
        events=sum(e.kind == "event" for e in mine),
        comfort_noise=sum(e.kind == "cn" for e in mine),
        jitter_ms=jitter / clock_rate * 1000.0,
    )


# ---------------------------------------------------------------------------
# SIP text
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    """What one call negotiates: a payload type and its rtpmap."""

    pt: int
    name: str  # as in a=rtpmap
    clock_rate: int
    payload_bytes: int  # per 20 ms packet
    fmtp: str = ""  # a=fmtp parameters of the codec's payload type (none when empty)

    @property
    def ts_step(self) -> int:
        return self.clock_rate * PTIME_MS // 1000


PCMU = Codec(0, "PCMU", 8000, 160)
PCMA = Codec(8, "PCMA", 8000, 160)
G726 = [Codec(99, f"{p}G726-{k}", 8000, k * 20 // 8)
        for p in ("", "AAL2-") for k in (16, 24, 32, 40)]
SPEEX = [Codec(99, "speex", 8000, 38), Codec(99, "speex", 16000, 70)]
H263 = Codec(34, "H263", 90000, 400)  # RFC 3551 static video type; sent every 20 ms here
VIDEO_PORT_OFFSET = 100  # a call's video port: its audio port + this


EVENT_PT = 101
CN_PT = 13  # RFC 3551 static comfort noise (RFC 3389)
# RFC 4568 §6.2: the auth tag of each SDES suite, bytes
SRTP_TAG_BYTES = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4}


@dataclass(frozen=True, slots=True)
class MediaPlan:
    """What a call's RTP carries besides audio. Packet slots are 20 ms apart from 0.

    ``srtp_suite``: the SDP says RTP/SAVP with an ``a=crypto`` of that suite (and an
    MKI of ``srtp_mki_bytes``); every payload is then random bytes (as encrypted
    media looks) followed by MKI + tag. ``dtmf_at``: slots where an RFC 4733 event
    starts; it replaces ``dtmf_packets`` audio slots, every packet carries the onset
    timestamp, the first has the marker bit and the last (E bit) is sent three
    times with one sequence number (§2.5.1.4). ``silence``: [start, stop) slots of
    VAD silence: no audio, a CN packet (RFC 3389) at the first slot and every
    ``cn_every`` slots after; the next talkspurt starts with the marker bit.
    """

    srtp_suite: str | None = None
    srtp_mki_bytes: int = 0
    dtmf_at: tuple[int, ...] = ()
    dtmf_packets: int = 6
    silence: tuple[tuple[int, int], ...] = ()
    cn_every: int = 10

    @property
    def trailer_bytes(self) -> int:
        return SRTP_TAG_BYTES[self.srtp_suite] + self.srtp_mki_bytes if self.srtp_suite else 0

    def slot(self, k: int) -> tuple[str, int]:
        """(what slot ``k`` sends: audio | event | event_end | cn | nothing, the onset slot
        of its event or silence)."""
        for e in self.dtmf_at:
            if e <= k < e + self.dtmf_packets:
                return ("event_end" if k == e + self.dtmf_packets - 1 else "event"), e
        for lo, hi in self.silence:
            if lo <= k < hi:
                return ("cn" if (k - lo) % self.cn_every == 0 else "nothing"), lo
        return "audio", k


NO_MEDIA_PLAN = MediaPlan()


def sdp(ip: str, port: int, codec: Codec, version: int = 1,
        media: MediaPlan = NO_MEDIA_PLAN, direction: str = "sendrecv",
        video_port: int | None = None) -> bytes:
    """An audio offer/answer with one codec plus telephone-event (RFC 4733); CN when
    the plan has silence; RTP/SAVP and ``a=crypto`` (RFC 4568) when it has SRTP; with
    ``video_port``, an H.263 video section after the audio one."""
    video = (f"m=video {video_port} RTP/AVP {H263.pt}\r\n"
             f"a=rtpmap:{H263.pt} {H263.name}/{H263.clock_rate}\r\na=sendrecv\r\n"
             if video_port is not None else "")
    profile = "RTP/SAVP" if media.srtp_suite else "RTP/AVP"
    cn = f" {CN_PT}" if media.silence else ""
    codec_fmtp = f"a=fmtp:{codec.pt} {codec.fmtp}\r\n" if codec.fmtp else ""
    crypto = ""
    if media.srtp_suite:
        mki = f"|2^20|1:{media.srtp_mki_bytes}" if media.srtp_mki_bytes else ""
        crypto = (f"a=crypto:1 {media.srtp_suite} "
                  f"inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz{mki}\r\n")
    return (
        f"v=0\r\no=- 4242 {version} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} {profile} {codec.pt} {EVENT_PT}{cn}\r\n"
        f"a=rtpmap:{codec.pt} {codec.name}/{codec.clock_rate}\r\n"
        f"{codec_fmtp}"
        f"a=rtpmap:{EVENT_PT} telephone-event/8000\r\na=fmtp:{EVENT_PT} 0-15\r\n"
        f"a=ptime:20\r\n{crypto}a={direction}\r\n{video}"
    ).encode()


@dataclass(slots=True)
class _Dialog:
    """Header values of one dialog; the caller sends the initial INVITE."""

    call_id: str
    caller_ip: str
    callee_ip: str
    from_tag: str
    to_tag: str
    cseq: int = 1
    branch_n: int = 0
    caller_uri: str = "sip:alice@example.test"
    callee_uri: str = "sip:bob@example.test"

    def _branch(self) -> str:
        self.branch_n += 1
        return f"z9hG4bK-{self.call_id[:8]}-{self.branch_n}"

    def request(self, method: str, *, from_caller: bool = True, in_dialog: bool = True,
                cseq: int | None = None, branch: str | None = None, body: bytes = b"",
                extra: Sequence[str] = ()) -> tuple[bytes, dict[str, str]]:
        """A request and the headers a response to it must echo."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        via_ip = self.caller_ip if from_caller else self.callee_ip
        ruri_ip = self.callee_ip if from_caller else self.caller_ip
        me, peer = ((self.caller_uri, self.from_tag), (self.callee_uri, self.to_tag))
        if not from_caller:
            me, peer = peer, me
        to = f"<{peer[0]}>" + (f";tag={peer[1]}" if in_dialog else "")
        echo = {
            "Via": f"SIP/2.0/UDP {via_ip}:{SIP_PORT};branch={branch or self._branch()}",
            "From": f"<{me[0]}>;tag={me[1]}",
            "To": to,
            "Call-ID": self.call_id,
            "CSeq": f"{cseq} {method}",
        }
        ruri = peer[0].replace("@example.test", f"@{ruri_ip}")
        lines = [f"{method} {ruri} SIP/2.0", *(f"{k}: {v}" for k, v in echo.items()),
                 "Max-Forwards: 70", f"Contact: <sip:{via_ip}:{SIP_PORT}>", *extra]
        return _finish(lines, body), echo

    def response(self, echo: dict[str, str], code: int, reason: str, *, body: bytes = b"",
                 extra: Sequence[str] = ()) -> bytes:
        headers = dict(echo)
        if code != 100 and ";tag=" not in headers["To"]:
            headers["To"] += f";tag={self.to_tag}"
        lines = [f"SIP/2.0 {code} {reason}", *(f"{k}: {v}" for k, v in headers.items()), *extra]
        return _finish(lines, body)


def _finish(lines: list[str], body: bytes) -> bytes:
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------------------
# A call
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leg:
    """One media direction of call ``tag``: RTP from (ip, port) to (ip, port)."""

    tag: str
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    ssrc: int

    @property
    def sid(self) -> StreamId:
        return (self.tag, self.src_ip, self.src_port, self.dst_ip, self.dst_port, self.ssrc)

    def flow(self) -> Flow:
        return Flow(self.src_ip, self.dst_ip, self.src_port, self.dst_port, dscp=DSCP_RTP)


@dataclass(frozen=True, slots=True)
class Delay:
    """Per-packet network delay and duplication of one RTP direction."""

    delay_ms: tuple[float, float] = (0.0, 2.0)  # uniform one-way delay, every packet
    duplicates: int = 0  # this many distinct packets get one extra copy
    loss: float = 0.0  # chance per packet, never on the first/last ``protect`` packets
    protect: int = 5
    head_ms: tuple[float, ...] = ()  # fixed delays of the first packets (replace the draw)


def _slot_packet(rng: random.Random, media: MediaPlan, codec: Codec, k: int, onset: int,
                 what: str) -> tuple[int, bytes, bool, int, str]:
    """(PT, payload, marker, RTP timestamp slot, truth kind) of one sent slot."""
    trailer = rng.randbytes(media.trailer_bytes) if media.trailer_bytes else b""
    if what in ("event", "event_end"):
        # RFC 4733 §2.3: event 5, E bit on the end packet, volume 10, duration so far
        duration = (k - onset + 1) * codec.ts_step * 8000 // codec.clock_rate
        body = bytes([5, (0x80 if what == "event_end" else 0) | 10]) + duration.to_bytes(2, "big")
        if media.srtp_suite:
            body = rng.randbytes(4)  # encrypted: nothing of it can be read
        return EVENT_PT, body + trailer, k == onset, onset, "event"
    if what == "cn":
        return CN_PT, (rng.randbytes(1) if media.srtp_suite else b"\x40") + trailer, False, k, "cn"
    resumed = k > 0 and media.slot(k - 1)[0] in ("cn", "nothing")
    return codec.pt, rng.randbytes(codec.payload_bytes) + trailer, k == 0 or resumed, k, "audio"


def emit_rtp(cap: _Capture, rng: random.Random, leg: Leg, codec: Codec, start_ns: int,
             n: int, delay: Delay, *, seq0: int, ts0: int,
             media: MediaPlan = NO_MEDIA_PLAN) -> tuple[int, int]:
    """``n`` 20 ms slots from ``start_ns`` (send time), each sending what ``media`` says
    (audio by default); returns the next (seq, ts)."""
    dup_slots = set(rng.sample(range(n), delay.duplicates)) if delay.duplicates else set()
    seq = seq0
    for k in range(n):
        what, onset = media.slot(k)
        if what == "nothing":
            continue
        if not 0 <= seq < 0xFFFF:
            raise ValueError("the generator never wraps the sequence number")
        protected = k < delay.protect or k >= n - delay.protect
        if what == "audio" and not protected and rng.random() < delay.loss:
            seq += 1
            continue
        pt, payload, marker, ts_slot, kind = _slot_packet(rng, media, codec, k, onset, what)
        ts = ts0 + ts_slot * codec.ts_step
        data = rtp_packet(seq, ts, leg.ssrc, pt, marker, payload)
        send = start_ns + k * PTIME_MS * MS
        drawn = rng.uniform(*delay.delay_ms)
        arrival = send + round((delay.head_ms[k] if k < len(delay.head_ms) else drawn) * MS)
        copies = [arrival] + ([arrival + round(rng.uniform(1.0, 40.0) * MS)]
                              if k in dup_slots else [])
        if what == "event_end":  # RFC 4733 §2.5.1.4: the end packet three times
            copies = [arrival, arrival + 2 * MS, arrival + 4 * MS]
        for at in copies:
            cap.add(at, leg.flow(), data, dscp=DSCP_RTP, stream=leg.sid, seq=seq,
                    rtp_ts=ts, kind=kind)
        seq += 1
    return seq, ts0 + n * codec.ts_step


#: What one side sends after the answer (`CallPlan.sends`): its audio (with the call's
#: `MediaPlan`), RFC 3389 comfort noise only (VAD on all call long: a CN packet every
#: 100 ms), RFC 4733 events only (digits back to back, no audio), or nothing.
AUDIO, COMFORT_NOISE, EVENTS, SILENT = "audio", "cn", "events", "none"
CN_ONLY = MediaPlan(silence=((0, 1 << 20),), cn_every=5)
EVENTS_ONLY_DIGIT_SLOTS = 6


@dataclass(frozen=True, slots=True)
class CallPlan:
    """What one call does. Times are ns offsets from ``start_ns``."""

    call_id: str
    start_ns: int
    caller_ip: str
    callee_ip: str
    caller_media: int  # port
    callee_media: int
    codec: Codec
    outcome: str  # answered | failed | cancelled
    ringing: bool = True  # send 180 before the final response
    setup_ns: int = 1 * S  # INVITE -> final response
    talk_ns: int | None = 5 * S  # 200 OK -> BYE; None: no BYE (capture ends first)
    rtp: bool = True
    reinvite_at_ns: int | None = None  # after the 200 OK: caller moves to caller_media + 1000
    in_dialog: tuple[tuple[int, str], ...] = ()  # (ns after 200 OK, method)
    session_expires: int | None = None  # RFC 4028 seconds, refresher=uac
    bye_from_callee: bool = False
    ssrcs: tuple[int, int] | None = None  # (caller's, callee's); random when None
    seq_ts: tuple[int, int, int, int] | None = None  # (seq, ts) caller, (seq, ts) callee
    delay: Delay = Delay()
    media: MediaPlan = NO_MEDIA_PLAN
    sends: tuple[str, str] = (AUDIO, AUDIO)  # what (caller, callee) send after the answer
    early_media: bool = False  # 183 with SDP instead of 180; callee ringback until answer
    held: bool = False  # offer sendonly, answer recvonly: one-way media by agreement
    video: bool = False  # an H.263 m=video section too, and video both ways after the answer

    def video_port(self, audio_port: int) -> int | None:
        return audio_port + VIDEO_PORT_OFFSET if self.video else None


def emit_call(cap: _Capture, rng: random.Random, plan: CallPlan) -> _PendingCall:
    """Write one call's SIP (and RTP) into ``cap``; the truth is taken after sorting."""
    d = _Dialog(plan.call_id, plan.caller_ip, plan.callee_ip,
                from_tag=f"a{rng.getrandbits(32):08x}", to_tag=f"b{rng.getrandbits(32):08x}")
    up = Flow(plan.caller_ip, plan.callee_ip, SIP_PORT, SIP_PORT, dscp=DSCP_SIP)
    down = Flow(plan.callee_ip, plan.caller_ip, SIP_PORT, SIP_PORT, dscp=DSCP_SIP)

    def send(t_ns: int, flow: Flow, data: bytes) -> int:
        return cap.add(t_ns, flow, data, dscp=DSCP_SIP)

    timer = ([f"Session-Expires: {plan.session_expires};refresher=uac", "Supported: timer"]
             if plan.session_expires else [])
    t = plan.start_ns
    offer_dir, answer_dir = ("sendonly", "recvonly") if plan.held else ("sendrecv",) * 2
    invite, echo = d.request("INVITE", in_dialog=False, cseq=1,
                             body=sdp(plan.caller_ip, plan.caller_media, plan.codec,
                                      media=plan.media, direction=offer_dir,
                                      video_port=plan.video_port(plan.caller_media)),
                             extra=timer)
    p = _PendingCall(plan)
    p.invite_ns = send(t, up, invite)
    send(t + 8 * MS, down, d.response(echo, 100, "Trying"))
    t_final = t + plan.setup_ns
    if plan.early_media:
        body = sdp(plan.callee_ip, plan.callee_media, plan.codec, direction=answer_dir,
                   video_port=plan.video_port(plan.callee_media))
        p.ringing_ns = send(t + plan.setup_ns // 3, down,
                            d.response(echo, 183, "Session Progress", body=body))
        ring = Leg(plan.call_id, plan.callee_ip, plan.callee_media, plan.caller_ip,
                   plan.caller_media, rng.getrandbits(32))
        start = p.ringing_ns + 30 * MS
        emit_rtp(cap, rng, ring, plan.codec, start,
                 (t_final - 40 * MS - start) // (PTIME_MS * MS), plan.delay,
                 seq0=rng.randrange(1, 20000), ts0=rng.getrandbits(31))
        p.legs.append(ring)
        if plan.outcome != "answered":
            p.media_sent.add("b_to_a")  # the ringback: all the media an unanswered call has
    elif plan.ringing:
        p.ringing_ns = send(t + plan.setup_ns // 3, down, d.response(echo, 180, "Ringing"))
    if plan.outcome == "failed":
        p.final_status = 486
        p.final_ns = send(t_final, down, d.response(echo, 486, "Busy Here"))
        send(t_final + 5 * MS, up, d.request("ACK", cseq=1, branch=echo["Via"].split("=")[-1])[0])
        return p
    if plan.outcome == "cancelled":
        cancel, cecho = d.request("CANCEL", in_dialog=False, cseq=1,
                                  branch=echo["Via"].split("=")[-1])
        send(t_final - 30 * MS, up, cancel)
        send(t_final - 25 * MS, down, d.response(cecho, 200, "OK"))
        p.final_status = 487
        p.final_ns = send(t_final, down, d.response(echo, 487, "Request Terminated"))
        send(t_final + 5 * MS, up, d.request("ACK", cseq=1, branch=echo["Via"].split("=")[-1])[0])
        return p
    p.final_status = 200
    p.final_ns = p.answer_ns = send(
        t_final, down, d.response(echo, 200, "OK",
                                  body=sdp(plan.callee_ip, plan.callee_media, plan.codec,
                                           media=plan.media, direction=answer_dir,
                                           video_port=plan.video_port(plan.callee_media)),
                                  extra=[s.replace("Supported", "Require") for s in timer]))
    send(t_final + 4 * MS, up, d.request("ACK", cseq=1)[0])
    answer = t_final
    end = None if plan.talk_ns is None else answer + plan.talk_ns

    for at, method in plan.in_dialog:
        if end is not None and answer + at >= end - 100 * MS:
            continue
        req, recho = d.request(method, extra=timer if method == "UPDATE" else ())
        send(answer + at, up, req)
        send(answer + at + 20 * MS, down, d.response(recho, 200, "OK", extra=timer))
        p.in_dialog.append(method)

    if plan.rtp:
        assert end is not None, "RTP calls end by BYE"
        _call_media(cap, rng, plan, d, p, answer, end, up, down)

    if end is not None:
        bye, becho = d.request("BYE", from_caller=not plan.bye_from_callee)
        p.bye_ns = send(end, down if plan.bye_from_callee else up, bye)
        send(end + 15 * MS, up if plan.bye_from_callee else down,
             d.response(becho, 200, "OK"))
    return p


def _call_media(cap: _Capture, rng: random.Random, plan: CallPlan, d: _Dialog,
                p: _PendingCall, answer: int, end: int, up: Flow, down: Flow) -> None:
    """Both directions from 30 ms after the answer to 40 ms before the BYE; a re-INVITE
    moves the caller's port (symmetric RTP: it sends from where it receives)."""
    ssrc_a, ssrc_b = plan.ssrcs or (rng.getrandbits(32), rng.getrandbits(32))
    if plan.seq_ts is not None:
        seq_a, ts_a, seq_b, ts_b = plan.seq_ts
    else:
        seq_a, seq_b = rng.randrange(1, 20000), rng.randrange(1, 20000)
        ts_a, ts_b = rng.getrandbits(31), rng.getrandbits(31)
    t0 = answer + 30 * MS
    t_end = end - 40 * MS
    ports = [(plan.caller_media, t0, t_end)]
    if plan.reinvite_at_ns is not None:
        t_re = answer + plan.reinvite_at_ns
        new_port = plan.caller_media + 1000
        req, echo = d.request("INVITE", body=sdp(plan.caller_ip, new_port, plan.codec, 2,
                                                 plan.media))
        cap.add(t_re, up, req, dscp=DSCP_SIP)
        cap.add(t_re + 30 * MS, down,
                d.response(echo, 200, "OK",
                           body=sdp(plan.callee_ip, plan.callee_media, plan.codec, 2,
                                    plan.media)),
                dscp=DSCP_SIP)
        cap.add(t_re + 35 * MS, up, d.request("ACK", cseq=d.cseq)[0], dscp=DSCP_SIP)
        # Media moves on a 20 ms slot boundary after the 200 OK to the re-INVITE.
        switch = t0 + ((t_re + 60 * MS - t0) // (PTIME_MS * MS) + 1) * PTIME_MS * MS
        ports = [(plan.caller_media, t0, switch), (new_port, switch, t_end)]
        p.reinvite = True
    for port, start, stop in ports:
        n = (stop - start) // (PTIME_MS * MS)
        a = Leg(plan.call_id, plan.caller_ip, port, plan.callee_ip, plan.callee_media, ssrc_a)
        b = Leg(plan.call_id, plan.callee_ip, plan.callee_media, plan.caller_ip, port, ssrc_b)
        seq_a, ts_a = _emit_side(cap, rng, p, a, plan.sends[0], "a_to_b", start, n,
                                 seq_a, ts_a)
        seq_b, ts_b = _emit_side(cap, rng, p, b, plan.sends[1], "b_to_a", start + 7 * MS,
                                 n, seq_b, ts_b)
    if plan.video:  # both ways, whatever the audio does: video is not audio
        for leg in (Leg(plan.call_id, plan.caller_ip, plan.caller_media + VIDEO_PORT_OFFSET,
                        plan.callee_ip, plan.callee_media + VIDEO_PORT_OFFSET,
                        rng.getrandbits(32)),
                    Leg(plan.call_id, plan.callee_ip, plan.callee_media + VIDEO_PORT_OFFSET,
                        plan.caller_ip, plan.caller_media + VIDEO_PORT_OFFSET,
                        rng.getrandbits(32))):
            emit_rtp(cap, rng, leg, H263, t0 + 3 * MS, (t_end - t0) // (PTIME_MS * MS),
                     plan.delay, seq0=rng.randrange(1, 20000), ts0=rng.getrandbits(31))
            p.legs.append(leg)
            p.codecs[leg.sid] = H263.name


def _emit_side(cap: _Capture, rng: random.Random, p: _PendingCall, leg: Leg, kind: str,
               direction: str, start: int, n: int, seq: int, ts: int) -> tuple[int, int]:
    """One side's media of one port period, as `CallPlan.sends` says; next (seq, ts)."""
    plan = p.plan
    if kind == SILENT:
        return seq, ts
    media = {
        AUDIO: plan.media,
        COMFORT_NOISE: CN_ONLY,
        EVENTS: MediaPlan(dtmf_at=tuple(range(0, n, EVENTS_ONLY_DIGIT_SLOTS)),
                          dtmf_packets=EVENTS_ONLY_DIGIT_SLOTS),
    }[kind]
    seq, ts = emit_rtp(cap, rng, leg, plan.codec, start, n, plan.delay, seq0=seq, ts0=ts,
                       media=media)
    p.legs.append(leg)
    if kind != EVENTS:  # events alone are not media
        p.media_sent.add(direction)
    if kind != AUDIO:
        p.codecs[leg.sid] = "CN" if kind == COMFORT_NOISE else "telephone-event"
    return seq, ts


@dataclass(slots=True)
class _PendingCall:
    """What ``emit_call`` wrote; becomes a `CallTruth` once the capture is sorted."""

    plan: CallPlan
    invite_ns: int = 0
    ringing_ns: int | None = None
    final_ns: int | None = None
    answer_ns: int | None = None
    bye_ns: int | None = None
    final_status: int | None = None
    reinvite: bool = False
    in_dialog: list[str] = field(default_factory=list)
    legs: list[Leg] = field(default_factory=list)
    media_sent: set[str] = field(default_factory=set)  # a_to_b / b_to_a: audio or CN sent
    codecs: dict[StreamId, str] = field(default_factory=dict)  # legs not in the call's codec

    def truth(self, emissions: Sequence[_Emission]) -> CallTruth:
        c = self.plan.codec
        if self.final_status == 200:
            reason = "normal" if self.bye_ns is not None else "capture_end"
        else:
            reason = "cancelled" if self.final_status == 487 else "failed"

        def sec(ns: int | None) -> float | None:
            return None if ns is None else ns / S

        return CallTruth(
            call_id=self.plan.call_id, final_status=self.final_status, end_reason=reason,
            invite_ts=self.invite_ns / S, ringing_ts=sec(self.ringing_ns),
            answer_ts=sec(self.answer_ns), bye_ts=sec(self.bye_ns),
            codec=c.name, clock_rate=c.clock_rate,
            streams=tuple(stream_truth(emissions, leg.sid, self.codecs.get(leg.sid, c.name),
                                       c.clock_rate)
                          for leg in self.legs),
            final_ts=sec(self.final_ns), reinvite=self.reinvite,
            in_dialog=tuple(self.in_dialog),
            media_seen=("both" if len(self.media_sent) == 2
                        else next(iter(self.media_sent), "none")),
        )


def _build(rng: random.Random, plans: Sequence[CallPlan]
           ) -> tuple[list[CapturedPacket], ScenarioTruth]:
    cap = _Capture()
    pending = [emit_call(cap, rng, p) for p in plans]
    emissions = cap.finish()
    truth = ScenarioTruth(tuple(p.truth(emissions) for p in pending))
    return _Capture.packets(emissions), truth


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------


def many_calls(n: int = 14, seed: int = 7) -> tuple[list[CapturedPacket], ScenarioTruth]:
    """``n`` overlapping calls to one PBX (198.18.2.1), started over 15 s, 3-12 s long.

    Outcomes are dealt from a fixed deck (so every kind is present whatever the
    seed): answered, answered with a re-INVITE, answered with UPDATE/INFO/OPTIONS,
    failed (486), cancelled (CANCEL, 200, 487).
    """
    rng = random.Random(seed)
    deck = ["answered", "reinvite", "in_dialog", "failed", "cancelled"]
    kinds = [deck[i % len(deck)] for i in range(n)]
    rng.shuffle(kinds)
    plans = []
    for i, kind in enumerate(kinds):
        talk = rng.randrange(3 * S, 12 * S)
        plans.append(CallPlan(
            call_id=f"{rng.getrandbits(64):016x}@198.18.1.{i + 1}",
            start_ns=BASE_EPOCH_NS + rng.randrange(0, 15 * S),
            caller_ip=f"198.18.1.{i + 1}", callee_ip="198.18.2.1",
            caller_media=20000 + 2 * i, callee_media=30000 + 2 * i,
            codec=rng.choice([PCMA, PCMU]),
            outcome=kind if kind in ("failed", "cancelled") else "answered",
            ringing=rng.random() < 0.8, setup_ns=rng.randrange(300 * MS, 4 * S),
            talk_ns=talk,
            reinvite_at_ns=talk // 2 if kind == "reinvite" else None,
            in_dialog=(((talk // 4, "UPDATE"), (talk // 3, "INFO"), (talk // 2, "OPTIONS"))
                       if kind == "in_dialog" else ()),
            bye_from_callee=rng.random() < 0.3,
        ))
    return _build(rng, plans)


def port_reuse(codecs: str = "g726", same_ssrc: bool = False, seed: int = 11
               ) -> tuple[list[CapturedPacket], ScenarioTruth]:
    """Sequential calls 198.18.3.1:20000 <-> 198.18.4.1:30000, one codec each on PT 99.

    ``codecs``: ``"g726"`` (the eight G726/AAL2-G726 rates) or ``"speex"``
    (speex/8000, speex/16000, twice). Each call talks 3 s; the next INVITE
    follows the BYE by 0.5-2 s. ``same_ssrc``: every call replays one SSRC,
    sequence and timestamp base per direction (sipp ``uac_pcap``).
    """
    rng = random.Random(seed)
    chosen = G726 if codecs == "g726" else [*SPEEX, *SPEEX]
    fixed_ssrcs = (0x11223344, 0x55667788)
    fixed_seq_ts = (1000, 160_000, 5000, 480_000)
    plans = []
    t = BASE_EPOCH_NS
    for i, codec in enumerate(chosen):
        setup, talk = 1 * S, 3 * S
        plans.append(CallPlan(
            call_id=f"reuse-{codecs}-{i}-{rng.getrandbits(32):08x}@198.18.3.1",
            start_ns=t, caller_ip="198.18.3.1", callee_ip="198.18.4.1",
            caller_media=20000, callee_media=30000, codec=codec, outcome="answered",
            setup_ns=setup, talk_ns=talk,
            ssrcs=fixed_ssrcs if same_ssrc else None,
            seq_ts=fixed_seq_ts if same_ssrc else None,
        ))
        t += setup + talk + 15 * MS + rng.randrange(500 * MS, 2 * S)
    return _build(rng, plans)


# Offsets of the UPDATE refreshes after the 200 OK, and each call's BYE (None: none).
REFRESH_AT_S = (56.0, 61.0, 104.0)
REFRESH_BYES_S: tuple[float | None, ...] = (106.2, None, 58.0, 106.9, None, 75.5, None, 106.2)


def sip_only_refresh(seed: int = 13) -> tuple[list[CapturedPacket], ScenarioTruth]:
    """Answered calls with ``Session-Expires: 120;refresher=uac`` and no RTP.

    Started within 8 s of each other; UPDATE (and its 200) at 56, 61 and 104 s after
    the answer while the call is up; BYE per `REFRESH_BYES_S`. The capture ends with
    the last BYE transaction, less than 30 s after the last refresh of every call
    without a BYE and long before any session timer could expire (last refresh
    + 120 s), so those calls are up when the capture ends.
    """
    rng = random.Random(seed)
    plans = []
    for i, bye in enumerate(REFRESH_BYES_S):
        plans.append(CallPlan(
            call_id=f"refresh-{i}-{rng.getrandbits(32):08x}@198.18.5.{i + 1}",
            start_ns=BASE_EPOCH_NS + rng.randrange(0, 8 * S),
            caller_ip=f"198.18.5.{i + 1}", callee_ip="198.18.6.1",
            caller_media=20000 + 2 * i, callee_media=30000 + 2 * i, codec=PCMA,
            outcome="answered", setup_ns=rng.randrange(500 * MS, 3 * S),
            talk_ns=None if bye is None else round(bye * S), rtp=False,
            in_dialog=tuple((round(at * S), "UPDATE") for at in REFRESH_AT_S),
            session_expires=120, bye_from_callee=i % 3 == 0,
        ))
    packets, truth = _build(rng, plans)
    last = max(p.ts_ns for p in packets) / S
    for c in truth.calls:
        if c.bye_ts is None:
            assert c.answer_ts is not None and last - (c.answer_ts + REFRESH_AT_S[-1]) < 30.0
    return packets, truth


def _one_call_streams(seed: int, delay: Delay, n: int, signalled: bool, base_ip: str
                      ) -> tuple[list[CapturedPacket], ScenarioTruth]:
    rng = random.Random(seed)
    caller, callee = f"{base_ip}.1", f"{base_ip}.2"
    plan = CallPlan(
        call_id=f"one-{seed}@{caller}", start_ns=BASE_EPOCH_NS, caller_ip=caller,
        callee_ip=callee, caller_media=40000, callee_media=40002, codec=PCMU,
        outcome="answered", setup_ns=500 * MS,
        talk_ns=(n * PTIME_MS + 200) * MS, delay=delay,
    )
    if signalled:
        return _build(rng, [plan])
    # The same RTP (same seed, same draws) with every SIP message left out.
    cap = _Capture()
    pending = emit_call(cap, rng, plan)
    rtp_only = [e for e in cap.finish() if e.stream is not None]
    streams = tuple(stream_truth(rtp_only, leg.sid, "PCMU", 8000) for leg in pending.legs)
    return _Capture.packets(rtp_only), ScenarioTruth((), unsignalled=streams)


def reorder_start(signalled: bool = True, seed: int = 17
                  ) -> tuple[list[CapturedPacket], ScenarioTruth]:
    """~500 packets per direction, 30-60 ms delay on each (from the first packet), 30
    duplicates per direction, no loss. The first two packets of each direction are
    delayed 60 and 30 ms, so the 2nd arrives before the 1st (the lowest sequence number
    is not the first arrival). ``signalled=False``: the same RTP, no SIP."""
    return _one_call_streams(seed, Delay((30.0, 60.0), duplicates=30, protect=0,
                                         head_ms=(60.0, 30.0)), 500, signalled, "198.18.9")


def heavy_jitter(seed: int = 19) -> tuple[list[CapturedPacket], ScenarioTruth]:
    """One call, 1000 packets per direction, 0-80 ms delay on every packet, 1 % loss."""
    return _one_call_streams(seed, Delay((0.0, 80.0), duplicates=5, loss=0.01), 1000,
                             True, "198.18.10")


@dataclass(frozen=True, slots=True)
class MediaCase:
    """One call of `media_directions`: what each side sends after the answer, and how."""

    name: str  # the Call-ID starts with it
    caller: str  # AUDIO | COMFORT_NOISE | EVENTS | SILENT
    callee: str
    talk_s: float = 8.0
    early_media: bool = False
    held: bool = False
    outcome: str = "answered"
    video: bool = False


MEDIA_DIRECTION_CALLS: tuple[MediaCase, ...] = (
    MediaCase("two_way", AUDIO, AUDIO),
    MediaCase("caller_only", AUDIO, SILENT),
    MediaCase("callee_only", SILENT, AUDIO),
    MediaCase("no_rtp", SILENT, SILENT),
    MediaCase("short_one_way", AUDIO, SILENT, talk_s=3.0),
    MediaCase("events_reverse", AUDIO, EVENTS),
    MediaCase("cn_reverse", AUDIO, COMFORT_NOISE),
    MediaCase("early_then_one_way", AUDIO, SILENT, early_media=True),
    MediaCase("early_then_two_way", AUDIO, AUDIO, early_media=True),
    MediaCase("early_failed", SILENT, SILENT, early_media=True, outcome="failed"),
    MediaCase("held_one_way", AUDIO, SILENT, held=True),
    MediaCase("video_one_way_audio", AUDIO, SILENT, video=True),
    MediaCase("video_two_way", AUDIO, AUDIO, video=True),
)


def media_directions(seed: int = 23) -> tuple[list[CapturedPacket], ScenarioTruth]:
    """One call per `MEDIA_DIRECTION_CALLS` case, 198.18.11.<n> -> 198.18.12.1, PCMA,
    started 1 s apart."""
    rng = random.Random(seed)
    plans = []
    for i, case in enumerate(MEDIA_DIRECTION_CALLS):
        plans.append(CallPlan(
            call_id=f"{case.name}-{rng.getrandbits(32):08x}@198.18.11.{i + 1}",
            start_ns=BASE_EPOCH_NS + i * S, caller_ip=f"198.18.11.{i + 1}",
            callee_ip="198.18.12.1", caller_media=20000 + 2 * i, callee_media=30000 + 2 * i,
            codec=PCMA, outcome=case.outcome, setup_ns=2 * S, talk_ns=round(case.talk_s * S),
            sends=(case.caller, case.callee), early_media=case.early_media, held=case.held,
            video=case.video,
        ))
    return _build(rng, plans)


SCENARIOS = {
    "many_calls": many_calls,
    "port_reuse_g726": lambda: port_reuse("g726"),
    "port_reuse_g726_same_ssrc": lambda: port_reuse("g726", same_ssrc=True),
    "port_reuse_speex": lambda: port_reuse("speex"),
    "port_reuse_speex_same_ssrc": lambda: port_reuse("speex", same_ssrc=True),
    "sip_only_refresh": sip_only_refresh,
    "reorder_start": reorder_start,
    "reorder_start_unsignalled": lambda: reorder_start(signalled=False),
    "heavy_jitter": heavy_jitter,
    "media_directions": media_directions,
}


def write(path: Path | str, packets: Sequence[CapturedPacket]) -> Path:
    """A classic µs pcap, Ethernet link type (the resolution the truth was built at)."""
    return write_pcap(path, packets, LINKTYPE_ETHERNET)


__all__ = [
    "MEDIA_DIRECTION_CALLS", "SCENARIOS", "CallTruth", "Codec", "MediaCase", "ScenarioTruth",
    "StreamTruth",
    "heavy_jitter", "many_calls", "media_directions", "port_reuse", "reorder_start",
    "sip_only_refresh", "stream_truth", "write",
]
