"""agent/sip/sdp.py: session descriptions as the probe resolves them."""

from __future__ import annotations

import ipaddress

import pytest
from sip_samples import SDP_ANSWER, SDP_OFFER

from agent.sip import Direction, SdpParseError, parse_sdp


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


HEAD = ("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0")


def test_ipv4_offer() -> None:
    desc = parse_sdp(SDP_OFFER)
    assert desc.origin.username == "alice" and desc.origin.address == "192.0.2.10"
    assert desc.session_name == "-" and desc.timing == ((0, 0),)
    assert desc.connection is not None and desc.connection.address == "192.0.2.10"
    (audio,) = desc.audio
    assert audio.is_audio and audio.is_rtp and not audio.is_srtp and not audio.rejected
    assert (audio.address, audio.rtp_port, audio.rtcp_port) == ("192.0.2.10", 49170, 49171)
    assert audio.rtcp_address == "192.0.2.10"
    assert audio.connection is not None
    assert audio.connection.ip == ipaddress.ip_address("192.0.2.10")
    assert audio.proto == "RTP/AVP" and audio.formats == ("0", "8", "101")
    pmap = audio.payload_map
    assert [p.pt for p in audio.payloads] == [0, 8, 101]
    assert (pmap[0].encoding, pmap[0].clock_rate_hz, pmap[0].channels) == ("PCMU", 8000, 1)
    assert (pmap[101].encoding, pmap[101].clock_rate_hz) == ("telephone-event", 8000)
    assert pmap[101].fmtp == "0-15" and not pmap[101].static
    assert audio.ptime_ms == 20.0 and audio.maxptime_ms is None
    assert audio.direction is Direction.SENDRECV and not audio.on_hold


def test_answer_from_str() -> None:
    (audio,) = parse_sdp(SDP_ANSWER.decode()).media
    assert audio.port == 3456 and [p.encoding for p in audio.payloads] == [
        "PCMA",
        "telephone-event",
    ]


def test_ipv6_rtcp_mux_and_static_without_rtpmap() -> None:
    desc = parse_sdp(
        sdp(
            "v=0",
            "o=- 7 7 IN IP6 2001:db8::10",
            "s=call",
            "t=0 0",
            "m=audio 5004 RTP/AVP 0 18 13",
            "c=IN IP6 2001:db8::10",
            "a=rtcp-mux",
            "a=maxptime:40",
        )
    )
    assert desc.connection is None and desc.origin.address_type == "IP6"
    (audio,) = desc.media
    assert audio.connection is not None and audio.connection.address_type == "IP6"
    assert audio.address == "2001:db8::10" and audio.rtcp_mux
    assert audio.rtcp_port == 5004
    assert all(p.static for p in audio.payloads)
    assert [(p.encoding, p.clock_rate_hz) for p in audio.payloads] == [
        ("PCMU", 8000),
        ("G729", 8000),
        ("CN", 8000),
    ]
    assert audio.maxptime_ms == 40.0


def test_rtcp_attribute_with_address() -> None:
    (audio,) = parse_sdp(
        sdp(*HEAD, "c=IN IP4 192.0.2.1", "m=audio 40000 RTP/AVP 8", "a=rtcp:53020 IN IP4 10.1.2.3")
    ).media
    assert audio.rtcp_port == 53020 and audio.rtcp_address == "10.1.2.3"
    (plain,) = parse_sdp(
        sdp(*HEAD, "c=IN IP4 192.0.2.1", "m=audio 40000 RTP/AVP 8", "a=rtcp:40009")
    ).media
    assert plain.rtcp_port == 40009 and plain.rtcp_address == "192.0.2.1"


def test_savp_with_crypto() -> None:
    (audio,) = parse_sdp(
        sdp(
            *HEAD,
            "c=IN IP4 192.0.2.1",
            "m=audio 16384 RTP/SAVP 8 101",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
            "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32",
            "a=crypto:2 AES_CM_128_HMAC_SHA1_32 "
            "inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32",
            "a=rtpmap:101 telephone-event/8000",
        )
    ).media
    assert audio.is_srtp and audio.is_rtp
    assert audio.crypto_suites == ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
    assert "inline" not in repr(audio.crypto_suites)


def test_webrtc_profile_and_dynamic_opus() -> None:
    (audio,) = parse_sdp(
        sdp(
            *HEAD,
            "c=IN IP4 203.0.113.7",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 13",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "a=rtpmap:13 CN/8000",
        )
    ).media
    assert audio.is_srtp and audio.proto == "UDP/TLS/RTP/SAVPF"
    opus = audio.payload_map[111]
    assert (opus.encoding, opus.clock_rate_hz, opus.channels) == ("opus", 48000, 2)
    assert opus.fmtp == "minptime=10;useinbandfec=1"
    assert not audio.payload_map[13].static  # an explicit rtpmap wins


@pytest.mark.parametrize("direction", list(Direction))
def test_direction_media_overrides_session(direction: Direction) -> None:
    other = Direction.INACTIVE if direction is not Direction.INACTIVE else Direction.SENDRECV
    desc = parse_sdp(
        sdp(
            *HEAD,
            f"a={other}",
            "c=IN IP4 192.0.2.1",
            "m=audio 1000 RTP/AVP 0",
            f"a={direction}",
            "m=audio 2000 RTP/AVP 0",
        )
    )
    assert desc.direction is other
    assert desc.media[0].direction is direction
    assert desc.media[1].direction is other
    assert desc.media[0].on_hold == (direction in (Direction.SENDONLY, Direction.INACTIVE))


def test_inactive_and_old_style_hold() -> None:
    (inactive,) = parse_sdp(
        sdp(*HEAD, "c=IN IP4 192.0.2.1", "m=audio 1000 RTP/AVP 0", "a=inactive")
    ).media
    assert inactive.direction is Direction.INACTIVE and inactive.on_hold
    (held,) = parse_sdp(sdp(*HEAD, "c=IN IP4 0.0.0.0", "m=audio 1000 RTP/AVP 0")).media
    assert held.direction is Direction.SENDRECV and held.on_hold
    assert held.connection is not None and held.connection.is_null


def test_session_level_connection_only_and_other_media() -> None:
    desc = parse_sdp(
        sdp(
            *HEAD,
            "c=IN IP4 224.2.17.12/127",
            "m=audio 49170 RTP/AVP 0",
            "m=video 51372 RTP/AVP 99",
            "a=rtpmap:99 h263-1998/90000",
            "m=image 0 udptl t38",
        )
    )
    audio, video, image = desc.media
    assert audio.address == video.address == "224.2.17.12"
    assert not video.is_audio and video.payload_map[99].clock_rate_hz == 90000
    assert (
        image.rejected and not image.is_rtp and image.formats == ("t38",) and image.payloads == ()
    )
    assert desc.audio == (audio,)


def test_lf_only_and_malformed_attributes_ignored() -> None:
    text = "\n".join(
        [
            *HEAD,
            "c=IN IP4 192.0.2.1",
            "m=audio 1000/2 RTP/AVP 96",
            "a=rtpmap:96 AMR",
            "a=ptime:abc",
            "",
        ]
    )
    (audio,) = parse_sdp(text).media
    assert audio.port_count == 2 and audio.payloads == () and audio.ptime_ms is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"v=1\r\n",
        b"o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n",
        sdp("v=0", "s=-"),
        sdp(*HEAD, "c=IN IP4"),
        sdp(*HEAD, "c=IN IPX 1.2.3.4"),
        sdp(*HEAD, "m=audio"),
        sdp(*HEAD, "m=audio 70000 RTP/AVP 0"),
        sdp(*HEAD, "m=audio 1000 RTP/AVP PCMU"),
        sdp(*HEAD, "this is not sdp"),
        sdp("v=0", "o=- 1 1 IN IP4", "s=-"),
        sdp(*HEAD, "t=now 0"),
    ],
)
def test_malformed_raise_sdp_parse_error(body: bytes) -> None:
    with pytest.raises(SdpParseError):
        parse_sdp(body)
