"""Fuzz: whatever bytes arrive, the SIP and SDP parsers return a value or raise
their own error type, nothing else (STYLE.md 4, DESIGN.md core rule 3)."""

from __future__ import annotations

import contextlib
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sip_samples import REGISTER_401, SDP_ANSWER, SDP_OFFER, invite, request, response

from agent.sip import (
    SdpParseError,
    SipMessage,
    SipParseError,
    is_keepalive,
    looks_like_sip,
    parse_message,
    parse_sdp,
    split_stream,
)
from agent.sip.message import find_sdp

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SIP_SAMPLES = [
    invite(),
    response(183, "Session Progress", sdp=SDP_ANSWER),
    response(200, "OK"),
    request("BYE"),
    REGISTER_401,
    b"INVITE sip:b@x SIP/2.0\nv: SIP/2.0/UDP h;branch=z\nf: <sip:a@x>;tag=1\nt: sip:b@x\n"
    b"i: c\nCSeq: 1 INVITE\nc: multipart/mixed;boundary=zz\n\n"
    b"--zz\nContent-Type: application/sdp\n\nv=0\n--zz--\n",
]
SDP_SAMPLES = [SDP_OFFER, SDP_ANSWER]


@st.composite
def mutated(draw: st.DrawFn, samples: list[bytes]) -> bytes:
    """A valid sample after a few byte flips, truncations, insertions and deletions."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            special = st.sampled_from([b"\r\n", b"\n ", b":", b";", b",", b'"', b"<", b"\0", b"9"])
            data[at:at] = draw(st.one_of(special, st.binary(max_size=8)))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            data[at:at] = draw(st.sampled_from(samples))[: draw(st.integers(0, 80))]
    return bytes(data)


def exercise(msg: SipMessage) -> None:
    """Touch every derived value; only SipParseError may come out of vias()."""
    _ = (msg.from_uri, msg.from_tag, msg.from_display, msg.to_uri, msg.to_tag, msg.to_display)
    _ = (msg.via_branch, msg.content_type, msg.is_response, list(msg.headers), len(msg.headers))
    for name, _value in msg.headers:
        msg.headers.get_all(name)
    with contextlib.suppress(SipParseError):
        msg.vias()
    if msg.sdp is not None:
        with contextlib.suppress(SdpParseError):
            parse_sdp(msg.sdp)


def check_sip(data: bytes) -> None:
    looks_like_sip(data)
    is_keepalive(data)
    with contextlib.suppress(SipParseError):
        exercise(parse_message(data))
    try:
        ranges, consumed = split_stream(data)
    except SipParseError:
        return
    assert 0 <= consumed <= len(data)
    previous = 0
    for start, end in ranges:
        assert previous <= start < end <= consumed
        previous = end


@FUZZ
@given(st.binary(max_size=2048))
def test_sip_random_bytes(data: bytes) -> None:
    check_sip(data)


@FUZZ
@given(mutated(SIP_SAMPLES))
def test_sip_mutated(data: bytes) -> None:
    check_sip(data)


@FUZZ
@given(st.text(max_size=300), st.binary(max_size=300))
def test_find_sdp_any_content_type(content_type: str, body: bytes) -> None:
    find_sdp(content_type, body)
    find_sdp(f"multipart/mixed; boundary={content_type}", body)


def check_sdp(body: bytes | str) -> None:
    try:
        desc = parse_sdp(body)
    except SdpParseError:
        return
    for media in desc.media:
        _ = (media.rtcp_port, media.rtcp_address, media.on_hold, media.payload_map)
        _ = (media.is_srtp, media.rejected, media.connection and media.connection.ip)


@FUZZ
@given(st.one_of(st.binary(max_size=1024), st.text(max_size=512)))
def test_sdp_random(body: bytes | str) -> None:
    check_sdp(body)


@FUZZ
@given(mutated(SDP_SAMPLES))
def test_sdp_mutated(body: bytes) -> None:
    check_sdp(body)


def test_lying_lengths_do_not_allocate() -> None:
    lies = [
        b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 4294967295\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nl: 1048576\r\n\r\nabc",
        b"SIP/2.0 200 OK\r\nContent-Length: 9999999999\r\n\r\n",
    ]
    tracemalloc.start()
    try:
        for data in lies:
            check_sip(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 512 * 1024
