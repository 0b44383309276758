#!/usr/bin/env python3
"""Write a large pcap of concurrent G.711 calls for throughput benchmarks.

    python3 bench/gen_workload.py --calls 100 --packets 1000000 --out bench/out/w.pcap

Each call is two RTP streams (A->B and B->A), 20 ms ptime, 160-byte G.711
payload (172-byte RTP packet, 214-byte Ethernet/IPv4/UDP frame), EF-marked,
addresses from 198.18.0.0/15 (RFC 2544 benchmarking space) and distinct ports.
Every packet gets uniform(0, --jitter-ms) of network delay and --loss of them
are dropped (never the first few of a stream, so RTP detection sees a clean
start), timestamps are in arrival order. ``--packets`` is the exact number of
packets in the file.

The file is built with numpy record arrays, a chunk at a time, because a
per-packet Python loop (or scapy) would take minutes for a million packets and
the benchmark should measure the analyser, not wait for its input.
``--truth FILE.json`` writes per-stream packets/expected/lost for checking.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

PTIME_NS = 20_000_000
TS_STEP = 160  # 8 kHz * 20 ms
PAYLOAD_LEN = 160
FRAME_LEN = 14 + 20 + 8 + 12 + PAYLOAD_LEN  # 214
CLEAN_HEAD = 4  # first packets of each stream are never dropped
BASE_EPOCH_S = 1_700_000_000
CHUNK = 262_144  # records written per numpy batch: bounds memory at ~60 MB

RECORD = np.dtype(
    [
        ("ts_sec", "<u4"),
        ("ts_usec", "<u4"),
        ("incl_len", "<u4"),
        ("orig_len", "<u4"),
        ("l2l4", "u1", (42,)),  # Ethernet + IPv4 + UDP, constant per stream
        ("rtp_vpxcc", "u1"),
        ("rtp_mpt", "u1"),
        ("rtp_seq", ">u2"),
        ("rtp_ts", ">u4"),
        ("rtp_ssrc", ">u4"),
        ("payload", "u1", (PAYLOAD_LEN,)),
    ]
)
assert RECORD.itemsize == 16 + FRAME_LEN


def _checksum(hdr: bytes) -> int:
    total = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def l2l4_template(src: int, dst: int, sport: int, dport: int, dscp: int = 46) -> bytes:
    """Ethernet/IPv4/UDP header bytes of one stream (IP id 0 + DF, so the checksum is constant)."""
    eth = bytes.fromhex("02000000b000") + bytes.fromhex("02000000a000") + b"\x08\x00"
    udp_len = 8 + 12 + PAYLOAD_LEN
    ip = struct.pack("!BBHHHBBHII", 0x45, dscp << 2, 20 + udp_len, 0, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0)  # checksum 0: allowed over IPv4
    return eth + ip + udp


def stream_endpoints(calls: int) -> list[tuple[int, int, int, int]]:
    """(src, dst, sport, dport) per stream; stream 2i is A->B of call i, 2i+1 is B->A."""
    if calls > 65000:
        raise ValueError("at most 65000 calls fit the address plan")
    a_net = int.from_bytes(bytes([198, 18, 0, 0]), "big")
    b_net = int.from_bytes(bytes([198, 19, 0, 0]), "big")
    out = []
    for i in range(calls):
        a, b = a_net + 1 + i, b_net + 1 + i
        pa, pb = 16384 + 2 * (i % 8192), 40000 + 2 * (i % 8192)  # even RTP ports
        out += [(a, b, pa, pb), (b, a, pb, pa)]
    return out


def generate(
    out: Path,
    *,
    calls: int = 100,
    packets: int = 1_000_000,
    loss: float = 0.005,
    jitter_ms: float = 2.0,
    seed: int = 1,
) -> dict[str, object]:
    """Write the workload; returns its truth (per-stream packets/expected/lost)."""
    rng = np.random.default_rng(seed)
    endpoints = stream_endpoints(calls)
    n_streams = len(endpoints)
    per_stream = math.ceil(packets / (n_streams * (1.0 - loss)))
    if per_stream <= CLEAN_HEAD:
        raise ValueError("too few packets per stream")
    sent = n_streams * per_stream
    n_drop = sent - packets
    if n_drop < 0:
        raise ValueError("internal: fewer packets than requested")

    # Arrival time of every sent packet, (stream, k) row-major, in integer µs.
    offset_us = rng.integers(0, PTIME_NS // 1000, n_streams)[:, None]
    k = np.arange(per_stream, dtype=np.int64)[None, :]
    delay_us = rng.integers(0, int(jitter_ms * 1000) + 1, (n_streams, per_stream))
    arrival_us = (offset_us + k * (PTIME_NS // 1000) + delay_us).ravel()

    keep = np.ones((n_streams, per_stream), dtype=bool)
    droppable = np.flatnonzero(np.tile(np.arange(per_stream) >= CLEAN_HEAD, n_streams))
    keep.ravel()[rng.choice(droppable, n_drop, replace=False)] = False
    idx = np.flatnonzero(keep.ravel())
    idx = idx[np.argsort(arrival_us[idx], kind="stable")]

    templates = np.frombuffer(
        b"".join(l2l4_template(*e) for e in endpoints), dtype=np.uint8
    ).reshape(n_streams, 42)
    ssrc = rng.integers(1, 2**32, n_streams, dtype=np.uint64).astype(np.uint32)
    seq0 = rng.integers(0, 2**16, n_streams, dtype=np.int64)
    ts0 = rng.integers(0, 2**32, n_streams, dtype=np.int64)
    pt = np.where(np.arange(n_streams) // 2 % 2 == 0, 0, 8).astype(np.uint8)  # PCMU / PCMA
    pool = rng.integers(0, 256, (64, PAYLOAD_LEN), dtype=np.uint8)  # payload is never parsed

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for lo in range(0, idx.size, CHUNK):
            _write_chunk(
                f,
                idx[lo : lo + CHUNK],
                per_stream,
                arrival_us,
                templates,
                ssrc,
                seq0,
                ts0,
                pt,
                pool,
            )

    last_kept = per_stream - 1 - np.argmax(keep[:, ::-1], axis=1)
    got = keep.sum(axis=1)
    streams = [
        {
            "src": f"{_ip(e[0])}:{e[2]}",
            "dst": f"{_ip(e[1])}:{e[3]}",
            "ssrc": int(ssrc[s]),
            "packets": int(got[s]),
            "expected": int(last_kept[s] + 1),
            "lost": int(last_kept[s] + 1 - got[s]),
        }
        for s, e in enumerate(endpoints)
    ]
    return {"file": str(out), "packets": int(idx.size), "calls": calls, "streams": streams}


def _write_chunk(
    f: object,
    idx: npt.NDArray[np.int64],
    per_stream: int,
    arrival_us: npt.NDArray[np.int64],
    templates: npt.NDArray[np.uint8],
    ssrc: npt.NDArray[np.uint32],
    seq0: npt.NDArray[np.int64],
    ts0: npt.NDArray[np.int64],
    pt: npt.NDArray[np.uint8],
    pool: npt.NDArray[np.uint8],
) -> None:
    s, k = np.divmod(idx, per_stream)
    rec = np.empty(idx.size, dtype=RECORD)
    t = arrival_us[idx]
    rec["ts_sec"] = BASE_EPOCH_S + t // 1_000_000
    rec["ts_usec"] = t % 1_000_000
    rec["incl_len"] = FRAME_LEN
    rec["orig_len"] = FRAME_LEN
    rec["l2l4"] = templates[s]
    rec["rtp_vpxcc"] = 0x80
    rec["rtp_mpt"] = pt[s] | np.where(k == 0, 0x80, 0).astype(np.uint8)  # M on first packet
    rec["rtp_seq"] = (seq0[s] + k) & 0xFFFF
    rec["rtp_ts"] = (ts0[s] + k * TS_STEP) & 0xFFFFFFFF
    rec["rtp_ssrc"] = ssrc[s]
    rec["payload"] = pool[k % pool.shape[0]]
    f.write(rec.tobytes())  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- SIP workload

SIP_PORT = 5060
TRUNK_IP = "198.19.0.1"  # every call goes phone -> trunk
MEDIA_GW_NET = (198 << 24) | (19 << 16) | (1 << 8)  # 198.19.1.0: the trunk's media gateways
PHONE_NET = (198 << 24) | (18 << 16)  # 198.18.0.0/16: the phones
PHONES = 65_000
GW_PORTS = 24_000  # media ports per gateway address: 16384 + 2 * n
RTP_SPAN_US = 10_000  # media starts within 10 ms of the 200 OK (after the ACK)
SIP_DSCP = 26  # AF31


@dataclass(slots=True)
class _Packets:
    """Variable-length pcap records (header included) with their arrival time in µs."""

    chunks: list[bytes]
    times: list[int]

    def add(self, t_us: int, frame: bytes) -> None:
        self.times.append(t_us)
        sec, usec = divmod(BASE_EPOCH_S * 1_000_000 + t_us, 1_000_000)
        self.chunks.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)


def udp_frame(src: int, dst: int, sport: int, dport: int, payload: bytes, dscp: int) -> bytes:
    """Ethernet/IPv4/UDP frame (IP id 0 + DF, UDP checksum 0) around ``payload``."""
    eth = bytes.fromhex("02000000b000") + bytes.fromhex("02000000a000") + b"\x08\x00"
    udp_len = 8 + len(payload)
    ip = struct.pack("!BBHHHBBHII", 0x45, dscp << 2, 20 + udp_len, 0, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return eth + ip + struct.pack("!HHHH", sport, dport, udp_len, 0) + payload


def _sdp(ip: str, port: int, sess: int) -> str:
    return (
        "v=0\r\n"
        f"o=- {sess} {sess} IN IP4 {ip}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {ip}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 101\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )


def _msg(start: str, headers: list[tuple[str, str]], body: str = "") -> bytes:
    """A SIP message; Content-Length is the body's length in bytes."""
    lines = [start] + [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 486: "Busy Here",
           487: "Request Terminated", 503: "Service Unavailable"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SipCall:
    """One generated call: addresses, identifiers and the times (µs) of its events."""

    index: int
    outcome: int  # final status of the INVITE: 200, 486, 503 or 487 (CANCELled)
    t_invite: int
    phone: int  # caller IPv4 as int
    number: str  # caller's extension
    dialled: str  # called number
    phone_media: int
    gw: int  # callee media IPv4 as int
    gw_media: int
    call_id: str
    from_tag: str
    to_tag: str
    branch: str


@dataclass(frozen=True, slots=True)
class CallTimes:
    """What happened when (µs from the capture start); answer/ACK/BYE only for answered calls."""

    setup_us: int  # INVITE -> first 18x, or -> the final response when there is none
    answer_us: int | None
    ack_us: int | None
    end_us: int  # BYE, or the final response of a failed/cancelled INVITE
    bye_from: str | None  # "caller" / "callee"


def _call_messages(c: SipCall, rnd: random.Random, pk: _Packets) -> CallTimes:
    """Append the call's SIP packets to ``pk``; return when things happened (drawn from ``rnd``)."""
    phone_ip, gw_ip = _ip(c.phone), _ip(c.gw)
    trunk = int.from_bytes(bytes(int(x) for x in TRUNK_IP.split(".")), "big")
    ms = lambda lo, hi: rnd.randint(lo * 1000, hi * 1000)  # noqa: E731
    via = f"SIP/2.0/UDP {phone_ip}:{SIP_PORT};branch={c.branch};rport"
    frm = f'"{c.number}" <sip:{c.number}@{phone_ip}>;tag={c.from_tag}'
    to = f"<sip:{c.dialled}@{TRUNK_IP}>"
    to_t = f"{to};tag={c.to_tag}"
    ruri = f"sip:{c.dialled}@{TRUNK_IP}:{SIP_PORT}"
    contact_a = f"<sip:{c.number}@{phone_ip}:{SIP_PORT}>"
    contact_b = f"<sip:{c.dialled}@{TRUNK_IP}:{SIP_PORT}>"

    def up(t: int, m: bytes) -> None:  # phone -> trunk
        pk.add(t, udp_frame(c.phone, trunk, SIP_PORT, SIP_PORT, m, SIP_DSCP))

    def down(t: int, m: bytes) -> None:  # trunk -> phone
        pk.add(t, udp_frame(trunk, c.phone, SIP_PORT, SIP_PORT, m, SIP_DSCP))

    def resp(
        code: int, method: str, to_hdr: str, body: str = "", *, contact: bool = False
    ) -> bytes:
        h = [("Via", via), ("From", frm), ("To", to_hdr), ("Call-ID", c.call_id),
             ("CSeq", f"1 {method}")]  # fmt: skip
        if contact:
            h.append(("Contact", contact_b))
        h.append(("Server", "voipprobe-bench-trunk"))
        return _msg(f"SIP/2.0 {code} {REASONS[code]}", h, body)

    def req(method: str, uri: str, v: str, to_hdr: str, cseq: int, body: str = "") -> bytes:
        h = [("Via", v), ("Max-Forwards", "70"), ("From", frm), ("To", to_hdr),
             ("Call-ID", c.call_id), ("CSeq", f"{cseq} {method}")]  # fmt: skip
        if method == "INVITE":
            h += [("Contact", contact_a), ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
                  ("User-Agent", "voipprobe-bench-phone")]  # fmt: skip
        return _msg(f"{method} {uri} SIP/2.0", h, body)

    t0 = c.t_invite
    up(t0, req("INVITE", ruri, via, to, 1, _sdp(phone_ip, c.phone_media, 1000 + c.index)))
    down(t0 + ms(1, 10), resp(100, "INVITE", to))
    setup = ms(50, 300)  # INVITE -> first 18x, or -> the final response when there is none
    if c.outcome in (486, 503):  # rejected at once, ACKed in the INVITE transaction
        t_final = t0 + setup
        down(t_final, resp(c.outcome, "INVITE", to_t))
        up(t_final + ms(2, 6), req("ACK", ruri, via, to_t, 1))
        return CallTimes(setup, None, None, t_final, None)
    t_ring = t0 + setup
    down(t_ring, resp(180, "INVITE", to_t, contact=True))
    if c.outcome == 487:  # the caller gives up while it rings
        t_cancel = t_ring + ms(500, 2000)
        up(t_cancel, req("CANCEL", ruri, via, to, 1))
        t = t_cancel + ms(1, 5)
        down(t, resp(200, "CANCEL", to_t))
        t += ms(1, 5)
        down(t, resp(487, "INVITE", to_t))
        up(t + ms(2, 6), req("ACK", ruri, via, to_t, 1))
        return CallTimes(setup, None, None, t, None)
    t_answer = t_ring + ms(100, 1000)
    down(t_answer, resp(200, "INVITE", to_t, _sdp(gw_ip, c.gw_media, 9000 + c.index), contact=True))
    ack_via = f"SIP/2.0/UDP {phone_ip}:{SIP_PORT};branch={c.branch}a;rport"
    t_ack = t_answer + ms(2, 6)
    up(t_ack, req("ACK", f"sip:{c.dialled}@{TRUNK_IP}:{SIP_PORT}", ack_via, to_t, 1))
    t_bye = t_answer + ms(500, 2000)
    if rnd.random() < 0.5:  # the caller hangs up
        bye_via = f"SIP/2.0/UDP {phone_ip}:{SIP_PORT};branch={c.branch}b;rport"
        up(t_bye, req("BYE", f"sip:{c.dialled}@{TRUNK_IP}:{SIP_PORT}", bye_via, to_t, 2))
        ok = _msg("SIP/2.0 200 OK", [("Via", bye_via), ("From", frm), ("To", to_t),
                  ("Call-ID", c.call_id), ("CSeq", "2 BYE")])  # fmt: skip
        down(t_bye + ms(1, 10), ok)
        by = "caller"
    else:  # the callee hangs up: its own From/To and CSeq space
        bye_via = f"SIP/2.0/UDP {TRUNK_IP}:{SIP_PORT};branch={c.branch}c"
        h = [("Via", bye_via), ("Max-Forwards", "70"), ("From", to_t), ("To", frm),
             ("Call-ID", c.call_id), ("CSeq", "1 BYE")]  # fmt: skip
        down(t_bye, _msg(f"BYE sip:{c.number}@{phone_ip}:{SIP_PORT} SIP/2.0", h))
        up(t_bye + ms(1, 10), _msg("SIP/2.0 200 OK", h[:1] + h[2:]))
        by = "callee"
    return CallTimes(setup, t_answer, t_ack, t_bye, by)


def generate_sip(
    out: Path,
    *,
    calls: int = 20_000,
    rate: float = 200.0,
    rtp_packets: int = 25,
    fail: float = 0.05,
    cancel: float = 0.02,
    seed: int = 1,
) -> dict[str, object]:
    """Write the SIP-heavy workload; returns its truth (every call's Call-ID, status, delays).

    Call i sends its INVITE at i/rate s (plus up to 1/rate of random offset), so
    calls overlap. ``fail`` of them are rejected (486 or 503, half each),
    ``cancel`` are CANCELled while ringing (487), the rest are answered, carry
    ``rtp_packets`` PCMA packets each way (20 ms apart, starting within 10 ms of
    the 200 OK) and end with a BYE from either side 0.5-2 s after the answer.
    """
    if calls < 1 or rate <= 0:
        raise ValueError("need at least one call and a positive rate")
    if (rtp_packets - 1) * (PTIME_NS // 1000) + RTP_SPAN_US + 1000 >= 500_000:
        raise ValueError("the media must end before the shortest call does (0.5 s)")
    rnd = random.Random(seed)
    rng = np.random.default_rng(seed)
    n_fail, n_cancel = round(calls * fail), round(calls * cancel)
    if n_fail + n_cancel > calls:
        raise ValueError("--fail + --cancel exceed the number of calls")
    outcome = np.full(calls, 200, dtype=np.int64)
    outcome[:n_fail] = 486
    outcome[n_fail // 2 : n_fail] = 503
    outcome[n_fail : n_fail + n_cancel] = 487
    outcome = rng.permutation(outcome)
    gap_us = 1e6 / rate

    pk = _Packets([], [])
    truth_calls: list[dict[str, object]] = []
    media: list[tuple[int, int, int, int, int]] = []  # (phone, port, gw, port, t_ack) answered
    for i in range(calls):
        phone = PHONE_NET + 1 + i % PHONES
        c = SipCall(
            index=i,
            outcome=int(outcome[i]),
            t_invite=int(i * gap_us + rnd.random() * gap_us),
            phone=phone,
            number=str(100_000 + i % PHONES),
            dialled=f"+3120{rnd.randrange(10**7):07d}",
            phone_media=10_000 + 2 * (i % 25_000),
            gw=MEDIA_GW_NET + 1 + i // GW_PORTS,
            gw_media=16_384 + 2 * (i % GW_PORTS),
            call_id=f"{i:08x}-{rnd.getrandbits(64):016x}@{_ip(phone)}",
            from_tag=f"{rnd.getrandbits(32):08x}",
            to_tag=f"{rnd.getrandbits(32):08x}",
            branch=f"z9hG4bK{rnd.getrandbits(48):012x}",
        )
        t = _call_messages(c, rnd, pk)
        answered = t.answer_us is not None and t.ack_us is not None
        if t.ack_us is not None:
            media.append((c.phone, c.phone_media, c.gw, c.gw_media, t.ack_us))
        truth_calls.append(
            {
                "call_id": c.call_id,
                "final_status": c.outcome,
                "from": f"sip:{c.number}@{_ip(c.phone)}",
                "to": f"sip:{c.dialled}@{TRUNK_IP}",
                "invite_s": (BASE_EPOCH_S * 1_000_000 + c.t_invite) / 1e6,
                "setup_delay_s": t.setup_us / 1e6,
                "answer_delay_s": (t.answer_us - c.t_invite) / 1e6 if answered else None,
                "duration_s": (t.end_us - t.answer_us) / 1e6 if t.answer_us else None,
                "bye_from": t.bye_from,
                "media": (
                    {
                        "caller": f"{_ip(c.phone)}:{c.phone_media}",
                        "callee": f"{_ip(c.gw)}:{c.gw_media}",
                    }
                    if answered
                    else None
                ),
            }
        )

    rtp_blob, rtp_times, n_streams = _sip_media(media, rtp_packets, rnd, rng)
    sip_blob = b"".join(pk.chunks)
    sip_len = np.fromiter((len(x) for x in pk.chunks), dtype=np.int64, count=len(pk.chunks))
    n_rtp = rtp_times.size
    starts = np.concatenate(
        [np.arange(n_rtp, dtype=np.int64) * RECORD.itemsize,
         len(rtp_blob) + np.concatenate([[0], np.cumsum(sip_len)[:-1]])]
    )  # fmt: skip
    lens = np.concatenate([np.full(n_rtp, RECORD.itemsize, dtype=np.int64), sip_len])
    times = np.concatenate([rtp_times, np.asarray(pk.times, dtype=np.int64)])
    order = np.argsort(times, kind="stable")
    blob = memoryview(rtp_blob + sip_blob)
    del rtp_blob, sip_blob, pk

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for lo in range(0, order.size, CHUNK):
            o = order[lo : lo + CHUNK]
            spans = zip(starts[o].tolist(), lens[o].tolist(), strict=True)
            f.write(b"".join([blob[s : s + n] for s, n in spans]))
    statuses = {str(s): int((outcome == s).sum()) for s in (200, 486, 503, 487)}
    return {
        "file": str(out),
        "workload": "sip",
        "packets": int(order.size),
        "sip_packets": int(sip_len.size),
        "rtp_packets": int(n_rtp),
        "rtp_streams": n_streams,
        "calls": calls,
        "rate": rate,
        "statuses": statuses,
        "call_list": truth_calls,
    }


def _sip_media(
    media: list[tuple[int, int, int, int, int]],
    rtp_packets: int,
    rnd: random.Random,
    rng: np.random.Generator,
) -> tuple[bytes, npt.NDArray[np.int64], int]:
    """PCMA RTP both ways for every answered call: records, arrival times (µs), stream count."""
    n_streams = 2 * len(media)
    if n_streams == 0 or rtp_packets == 0:
        return b"", np.empty(0, dtype=np.int64), 0
    endpoints: list[tuple[int, int, int, int]] = []
    start = np.empty(n_streams, dtype=np.int64)
    for j, (phone, pport, gw, gport, t_ack) in enumerate(media):
        endpoints += [(phone, gw, pport, gport), (gw, phone, gport, pport)]
        start[2 * j] = t_ack + rnd.randint(1000, 4000)  # both ends start after the ACK
        start[2 * j + 1] = t_ack + rnd.randint(1000, 4000)
    templates = np.frombuffer(
        b"".join(l2l4_template(*e) for e in endpoints), dtype=np.uint8
    ).reshape(n_streams, 42)
    k = np.arange(rtp_packets, dtype=np.int64)
    jitter = rng.integers(0, 1001, (n_streams, rtp_packets))  # up to 1 ms: never reorders
    arrival = start[:, None] + k[None, :] * (PTIME_NS // 1000) + jitter
    s = np.repeat(np.arange(n_streams), rtp_packets)
    kk = np.tile(k, n_streams)
    t = arrival.ravel()
    rec = np.empty(t.size, dtype=RECORD)
    rec["ts_sec"] = BASE_EPOCH_S + t // 1_000_000
    rec["ts_usec"] = t % 1_000_000
    rec["incl_len"] = FRAME_LEN
    rec["orig_len"] = FRAME_LEN
    rec["l2l4"] = templates[s]
    rec["rtp_vpxcc"] = 0x80
    rec["rtp_mpt"] = 8 | np.where(kk == 0, 0x80, 0).astype(np.uint8)
    seq0 = rng.integers(0, 2**16, n_streams, dtype=np.int64)
    ts0 = rng.integers(0, 2**32, n_streams, dtype=np.int64)
    rec["rtp_seq"] = (seq0[s] + kk) & 0xFFFF
    rec["rtp_ts"] = (ts0[s] + kk * TS_STEP) & 0xFFFFFFFF
    rec["rtp_ssrc"] = rng.integers(1, 2**32, n_streams, dtype=np.uint64).astype(np.uint32)[s]
    rec["payload"] = 0xD5  # PCMA silence
    return rec.tobytes(), t, n_streams


def _ip(v: int) -> str:
    return ".".join(str(b) for b in v.to_bytes(4, "big"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sip", action="store_true", help="write the SIP-heavy workload instead")
    ap.add_argument("--calls", type=int, help="G.711: concurrent calls (100); SIP: calls (20000)")
    ap.add_argument("--packets", type=int, default=1_000_000, help="G.711: packets in the file")
    ap.add_argument("--loss", type=float, default=0.005, help="G.711: fraction of packets dropped")
    ap.add_argument("--jitter-ms", type=float, default=2.0, help="G.711: max random network delay")
    ap.add_argument("--rate", type=float, default=200.0, help="SIP: new calls per second")
    ap.add_argument("--rtp-packets", type=int, default=25, help="SIP: RTP packets each way")
    ap.add_argument("--fail", type=float, default=0.05, help="SIP: share rejected (486/503)")
    ap.add_argument("--cancel", type=float, default=0.02, help="SIP: share CANCELled (487)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--truth", type=Path, help="write the truth (streams or calls) as JSON here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.sip:
        truth = generate_sip(
            args.out,
            calls=20_000 if args.calls is None else args.calls,
            rate=args.rate,
            rtp_packets=args.rtp_packets,
            fail=args.fail,
            cancel=args.cancel,
            seed=args.seed,
        )
        what = f"{truth['calls']} calls at {args.rate:g}/s, {truth['rtp_streams']} RTP streams"
    else:
        truth = generate(
            args.out,
            calls=100 if args.calls is None else args.calls,
            packets=args.packets,
            loss=args.loss,
            jitter_ms=args.jitter_ms,
            seed=args.seed,
        )
        what = f"{2 * int(truth['calls'])} streams"  # type: ignore[call-overload]
    if args.truth:
        args.truth.parent.mkdir(parents=True, exist_ok=True)
        args.truth.write_text(json.dumps(truth, indent=1) + "\n")
    print(
        f"wrote {args.out}: {truth['packets']} packets, {what}, {time.perf_counter() - t0:.2f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
