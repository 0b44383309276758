"""The payload registry (agent/media/payloads.py), SRTP trailers (agent/media/srtp.py),
and what SDP hands the RTP layer (agent/media/description.py, correlate.describe)."""

from __future__ import annotations

import pytest

from agent.calls.correlate import describe
from agent.media.description import EndpointMedia, srtp_trailers
from agent.media.payloads import (
    STATIC_PAYLOAD_TYPES,
    MediaKind,
    PayloadKind,
    canonical_name,
    lookup,
    media_kind,
    payload_info,
)
from agent.media.srtp import PLAUSIBLE_TRAILERS, trailer_bytes
from agent.sip.sdp import parse_sdp


@pytest.mark.parametrize(
    ("written", "canonical"),
    [("pcma", "PCMA"), ("PCMU/8000", "PCMU"), ("g711A", "PCMA"), ("G.729a", "G729"),
     ("g729", "G729"), ("G.723.1", "G723"), ("amr-wb", "AMR-WB"), ("AMR_WB", "AMR-WB"),
     ("OPUS", "opus"), ("opus/48000/2", "opus"), ("ilbc", "iLBC"), ("g726-16", "G726-16"),
     ("aal2-g726-32", "AAL2-G726-32"), ("gsm-efr", "GSM-EFR"), ("GSM-HR", "GSM-HR-08"),
     ("Telephone-Event", "telephone-event"), ("cn", "CN"), ("h263-1998", "H263-1998"),
     ("T38", "t38"), ("X-Vendor/8000", "X-Vendor")],
)
def test_one_name_per_codec(written: str, canonical: str) -> None:
    assert canonical_name(written) == canonical


@pytest.mark.parametrize(
    ("name", "kind"),
    [("PCMA", MediaKind.AUDIO), ("opus", MediaKind.AUDIO), ("H264", MediaKind.VIDEO),
     ("VP8", MediaKind.VIDEO), ("t38", MediaKind.IMAGE), ("CN", MediaKind.COMFORT_NOISE),
     ("telephone-event", MediaKind.TELEPHONE_EVENT), ("t140", MediaKind.TEXT),
     ("nonsense", MediaKind.UNKNOWN), (None, MediaKind.UNKNOWN)],
)
def test_media_kind(name: str | None, kind: MediaKind) -> None:
    assert media_kind(name) == kind


def test_static_table_rfc3551() -> None:
    got = {pt: (i.name, i.clock_rate, i.channels) for pt, i in STATIC_PAYLOAD_TYPES.items()}
    assert got[0] == ("PCMU", 8000, 1) and got[8] == ("PCMA", 8000, 1)
    assert got[9] == ("G722", 8000, 1)  # RFC 3551 §4.5.2: 8000 Hz although 16 kHz sampling
    assert got[10] == ("L16", 44100, 2) and got[6] == ("DVI4", 16000, 1)
    assert got[18] == ("G729", 8000, 1) and got[34] == ("H263", 90000, 1)
    assert STATIC_PAYLOAD_TYPES[13].kind == PayloadKind.COMFORT_NOISE
    assert STATIC_PAYLOAD_TYPES[34].media_kind == MediaKind.VIDEO
    assert lookup(96) is None and lookup(96, {96: payload_info("AMR", 8000)}) is not None


def test_rtpmap_kinds() -> None:
    assert payload_info("TELEPHONE-EVENT", 8000).kind == PayloadKind.TELEPHONE_EVENT
    assert payload_info("cn", 16000).kind == PayloadKind.COMFORT_NOISE
    info = payload_info("Opus", 48000, 2)
    assert (info.name, info.clock_rate, info.kind, info.channels) == (
        "opus", 48000, PayloadKind.MEDIA, 2)


@pytest.mark.parametrize(
    ("suite", "params", "trailer"),
    [("AES_CM_128_HMAC_SHA1_80", "inline:a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5", 10),
     ("AES_CM_128_HMAC_SHA1_32", "inline:a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5", 4),
     ("AES_CM_128_HMAC_SHA1_80", "inline:a2V5a2V5a2V5|2^20|1:4", 14),
     ("AES_CM_128_HMAC_SHA1_32", "inline:a2V5a2V5a2V5|1:2", 6),
     ("aes_256_cm_hmac_sha1_80", "inline:a2V5", 10),
     ("AEAD_AES_128_GCM", "inline:a2V5", 16),
     ("AES_CM_128_HMAC_SHA1_80", "inline:a2V5|2^20|1:999", 10),  # MKI length out of range
     ("NO_SUCH_SUITE", "inline:a2V5", None)],
)
def test_trailer_bytes(suite: str, params: str, trailer: int | None) -> None:
    assert trailer_bytes(suite, params) == trailer


def test_srtp_trailers_of_a_section() -> None:
    assert srtp_trailers("RTP/AVP", ()) == ()
    assert srtp_trailers("RTP/SAVP", (10,)) == (10,)
    assert srtp_trailers("RTP/SAVP", (10, 4)) == (4, 10)  # an offer with two suites
    assert srtp_trailers("UDP/TLS/RTP/SAVPF", ()) == PLAUSIBLE_TRAILERS  # DTLS-SRTP
    assert srtp_trailers("RTP/SAVP", (None,)) == PLAUSIBLE_TRAILERS
    assert EndpointMedia({}, "RTP/AVP").event_payload_bytes == (4,)
    assert EndpointMedia({}, "RTP/SAVP", (14,)).event_payload_bytes == (18,)
    assert EndpointMedia({}, "RTP/SAVP", (14,)).srtp_trailer_bytes == 14
    assert EndpointMedia({}, "RTP/SAVP", (4, 10)).srtp_trailer_bytes is None


SDES = (
    "v=0\r\no=- 1 1 IN IP4 198.18.0.1\r\ns=-\r\nc=IN IP4 198.18.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/SAVP 8 101 13\r\n"
    "a=rtpmap:8 pcma/8000\r\na=rtpmap:101 Telephone-Event/8000\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5|2^20|1:4\r\n"
    "m=video 4002 RTP/AVP 96\r\na=rtpmap:96 h264/90000\r\n"
)


def test_sdp_to_endpoint_media() -> None:
    audio, video = parse_sdp(SDES).media
    assert audio.crypto_trailers == (8,) and audio.crypto_suites == ("AES_CM_128_HMAC_SHA1_32",)
    assert [p.encoding for p in audio.payloads] == ["PCMA", "telephone-event", "CN"]
    got = describe(audio)
    assert (got.profile, got.srtp_trailers, got.event_payload_bytes) == ("RTP/SAVP", (8,), (12,))
    assert got.payloads[8] is STATIC_PAYLOAD_TYPES[8]  # one entry whether or not restated
    assert got.payloads[101].kind == PayloadKind.TELEPHONE_EVENT
    assert got.payloads[13].kind == PayloadKind.COMFORT_NOISE
    v = describe(video)
    assert (v.profile, v.srtp, v.payloads[96].name) == ("RTP/AVP", False, "H264")
    assert v.payloads[96].media_kind == MediaKind.VIDEO


@pytest.mark.parametrize("params", ["inline:x|²:4", "inline:x|1:²", "inline:x|1:", "inline:|",
                                    "inline:x|2^20|1:00000000000000000004", "", "|||:::"])
def test_trailer_bytes_of_garbage_key_params(params: str) -> None:
    # network input: a strange MKI is ignored (tag only), never an exception
    assert trailer_bytes("AES_CM_128_HMAC_SHA1_80", params) == 10


def test_sdp_with_garbage_crypto_parses() -> None:
    body = SDES.replace("|2^20|1:4", "|²:4").replace("AES_CM_128_HMAC_SHA1_32", "X_Y")
    (audio, _) = parse_sdp(body).media
    assert audio.crypto_trailers == (None,)
    assert describe(audio).srtp_trailers == PLAUSIBLE_TRAILERS
