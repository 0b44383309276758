"""Realistic SIP messages and SDP bodies shared by the tests in tests/sip/."""

from __future__ import annotations


def crlf(*lines: str) -> bytes:
    """Join header lines with CRLF and add the empty line that ends the header."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def with_body(lines: list[str], body: bytes, content_type: str = "application/sdp") -> bytes:
    head = [*lines, f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return crlf(*head) + body


SDP_OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

SDP_ANSWER = (
    b"v=0\r\n"
    b"o=bob 2808844564 2808844564 IN IP4 198.51.100.20\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 3456 RTP/AVP 8 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)

_DIALOG = [
    "Via: SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bK776asdhds;rport",
    "Max-Forwards: 70",
    'To: "Bob" <sip:bob@example.net>',
    'From: "Alice Liddell" <sip:alice@example.com>;tag=1928301774',
    "Call-ID: a84b4c76e66710@pc33.example.com",
]


def invite() -> bytes:
    return with_body(
        [
            "INVITE sip:bob@example.net SIP/2.0",
            *_DIALOG,
            "CSeq: 314159 INVITE",
            "Contact: <sip:alice@192.0.2.10:5060>",
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS",
        ],
        SDP_OFFER,
    )


def response(code: int, reason: str, method: str = "INVITE", sdp: bytes | None = None) -> bytes:
    lines = [
        f"SIP/2.0 {code} {reason}",
        _DIALOG[0],
        _DIALOG[2] + (";tag=a6c85cf" if code > 100 else ""),
        _DIALOG[3],
        _DIALOG[4],
        f"CSeq: {314159 if method in ('INVITE', 'CANCEL') else 314160} {method}",
    ]
    if sdp is not None:
        return with_body(lines, sdp)
    return crlf(*lines, "Content-Length: 0")


def request(method: str, cseq: int = 314159) -> bytes:
    return crlf(
        f"{method} sip:bob@198.51.100.20:5060 SIP/2.0",
        "Via: SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bK776asdhdt",
        "Max-Forwards: 70",
        "To: <sip:bob@example.net>;tag=a6c85cf",
        "From: <sip:alice@example.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.example.com",
        f"CSeq: {cseq} {method}",
        "Content-Length: 0",
    )


REGISTER_401 = crlf(
    "SIP/2.0 401 Unauthorized",
    "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKnashds7;received=203.0.113.9",
    "From: <sip:100@pbx.example.com>;tag=a73kszlfl",
    "To: <sip:100@pbx.example.com>;tag=as1b2c3d4",
    "Call-ID: 1j9FpLxk3uxtm8tn@10.0.0.5",
    "CSeq: 1 REGISTER",
    'WWW-Authenticate: Digest realm="pbx.example.com", nonce="ea9c8e88df84f1cec4341ae6cbe5a359",'
    ' algorithm=MD5, qop="auth"',
    "Content-Length: 0",
)
