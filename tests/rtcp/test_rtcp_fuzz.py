"""Fuzz: the RTCP parser returns packets or raises RtcpParseError, nothing else,
and lying lengths and counts never make it read or allocate beyond the datagram."""

from __future__ import annotations

import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtcp_builders import (
    bye,
    dlrr_block,
    receiver_report,
    report_block,
    rrt_block,
    sdes,
    sender_report,
    voip_metrics_block,
    xr,
)

from agent.rtcp import ProbeRoundTrip, RtcpParseError, SenderReport, looks_like_rtcp, parse_compound

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_BLOCK = report_block(2, 10, -5, 1000, 30, 0xB7052000, 0x54000)
SAMPLES = [
    sender_report(1, 0xE7A1B2C380000000, 160, 10, 1600, (_BLOCK,)) + sdes([(1, [(1, b"cn")])]),
    receiver_report(1, (_BLOCK, _BLOCK), padding=4) + bye([1, 2], b"bye"),
    xr(9, (rrt_block(0xE7A1B2C380000000), dlrr_block([(1, 2, 3)]), voip_metrics_block())),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "byte"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[at] = draw(st.sampled_from([0x00, 0x1F, 0x3F, 0x7F, 0xA0, 0xBF, 0xC8, 0xCF, 0xFF]))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(max_size=12))
    return bytes(data)


def check(data: bytes) -> None:
    looks_like_rtcp(data)
    try:
        packets = parse_compound(data)
    except RtcpParseError:
        return
    probe = ProbeRoundTrip(max_sources=4)
    for packet in packets:
        if isinstance(packet, SenderReport):
            probe.sender_report(packet.ssrc, packet.ntp_timestamp, now=1.0)
        for block in getattr(packet, "reports", ()):
            probe.report_block(block, now=2.0)
    assert len(probe) <= 4


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.binary(min_size=4, max_size=256), st.integers(192, 223), st.integers(0, 31))
def test_random_bodies_behind_valid_header(body: bytes, packet_type: int, count: int) -> None:
    length = (len(body) + 3) // 4
    check(bytes([0x80 | count, packet_type, length >> 8, length & 0xFF]) + body)


@FUZZ
@given(mutated())
def test_mutated(data: bytes) -> None:
    check(data)


def test_lying_lengths_do_not_allocate() -> None:
    lies = [
        b"\x9f\xc8\xff\xff" + b"\x00" * 24,  # SR, RC 31, length 65535
        b"\x9f\xc9\x00\x01\x00\x00\x00\x01",  # RR claims 31 blocks in 4 bytes
        b"\x9f\xcb\x00\x01\x00\x00\x00\x01",  # BYE claims 31 sources
        b"\x80\xcf\x00\x02\x00\x00\x00\x01\x05\x00\xff\xff",  # DLRR block of 65535 words
        b"\x81\xca\x00\x02\x00\x00\x00\x01\x01\xff\x00\x00",  # SDES item of 255 bytes
    ]
    tracemalloc.start()
    try:
        for data in lies:
            check(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024
