"""Independent RTCP packet builders for the tests (RFC 3550 §6.4-6.6, RFC 3611)."""

from __future__ import annotations

import struct


def header(packet_type: int, count: int, body: bytes, padding: int = 0) -> bytes:
    """Common header + body (+ padding whose last octet is its length)."""
    if padding:
        body += b"\x00" * (padding - 1) + bytes([padding])
    assert len(body) % 4 == 0
    first = 0x80 | (0x20 if padding else 0) | count
    return struct.pack("!BBH", first, packet_type, len(body) // 4) + body


def report_block(
    ssrc: int, fraction: int, cumulative: int, ext_seq: int, jitter: int, lsr: int, dlsr: int
) -> bytes:
    lost_word = (fraction << 24) | (cumulative & 0xFFFFFF)
    return struct.pack("!IIIIII", ssrc, lost_word, ext_seq, jitter, lsr, dlsr)


def sender_report(
    ssrc: int, ntp: int, rtp_ts: int, packets: int, octets: int, blocks: tuple[bytes, ...] = ()
) -> bytes:
    info = struct.pack("!IIIIII", ssrc, ntp >> 32, ntp & 0xFFFFFFFF, rtp_ts, packets, octets)
    return header(200, len(blocks), info + b"".join(blocks))


def receiver_report(ssrc: int, blocks: tuple[bytes, ...], padding: int = 0) -> bytes:
    return header(201, len(blocks), struct.pack("!I", ssrc) + b"".join(blocks), padding)


def sdes(chunks: list[tuple[int, list[tuple[int, bytes]]]]) -> bytes:
    body = b""
    for ssrc, items in chunks:
        chunk = struct.pack("!I", ssrc)
        for kind, text in items:
            chunk += bytes([kind, len(text)]) + text
        chunk += b"\x00"
        chunk += b"\x00" * (-len(chunk) % 4)
        body += chunk
    return header(202, len(chunks), body)


def bye(ssrcs: list[int], reason: bytes | None = None) -> bytes:
    body = b"".join(struct.pack("!I", s) for s in ssrcs)
    if reason is not None:
        body += bytes([len(reason)]) + reason
        body += b"\x00" * (-len(body) % 4)
    return header(203, len(ssrcs), body)


def xr(ssrc: int, blocks: tuple[bytes, ...]) -> bytes:
    return header(207, 0, struct.pack("!I", ssrc) + b"".join(blocks))


def xr_block(block_type: int, body: bytes, specific: int = 0) -> bytes:
    return struct.pack("!BBH", block_type, specific, len(body) // 4) + body


def rrt_block(ntp: int) -> bytes:
    return xr_block(4, struct.pack("!II", ntp >> 32, ntp & 0xFFFFFFFF))


def dlrr_block(items: list[tuple[int, int, int]]) -> bytes:
    return xr_block(5, b"".join(struct.pack("!III", *item) for item in items))


VOIP_FIELDS = {
    "ssrc": 0x11223344,
    "loss": 13,
    "discard": 5,
    "burst_density": 64,
    "gap_density": 3,
    "burst_duration": 120,
    "gap_duration": 5300,
    "rtt": 86,
    "esd": 45,
    "signal": -18,
    "noise": -62,
    "rerl": 127,
    "gmin": 16,
    "r": 88,
    "ext_r": 127,
    "mos_lq": 41,
    "mos_cq": 39,
    "rx_config": 0b1011_0011,  # PLC 2 (enhanced), JBA 3 (adaptive), rate 3
    "jb_nominal": 40,
    "jb_max": 80,
    "jb_abs_max": 200,
}


def voip_metrics_block(fields: dict[str, int] = VOIP_FIELDS) -> bytes:
    f = fields
    body = struct.pack(
        "!IBBBBHHHHbbBBBBBBBBHHH",
        f["ssrc"], f["loss"], f["discard"], f["burst_density"], f["gap_density"],
        f["burst_duration"], f["gap_duration"], f["rtt"], f["esd"],
        f["signal"], f["noise"], f["rerl"], f["gmin"],
        f["r"], f["ext_r"], f["mos_lq"], f["mos_cq"],
        f["rx_config"], 0, f["jb_nominal"], f["jb_max"], f["jb_abs_max"],
    )  # fmt: skip
    return xr_block(7, body)
