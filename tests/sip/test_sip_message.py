"""agent/sip/message.py and headers.py: parsing, framing and sniffing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sip_samples import (
    REGISTER_401,
    SDP_ANSWER,
    SDP_OFFER,
    crlf,
    invite,
    request,
    response,
    with_body,
)

from agent.sip import SipParseError, is_keepalive, looks_like_sip, parse_message, split_stream
from agent.sip.headers import Headers, parse_name_addr, split_outside_quotes
from agent.sip.message import header_end


def test_invite_with_sdp() -> None:
    msg = parse_message(invite())
    assert msg.is_request and not msg.is_response
    assert msg.method == "INVITE"
    assert msg.request_uri == "sip:bob@example.net"
    assert msg.status_code is None and msg.reason is None
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"
    assert (msg.cseq.number, msg.cseq.method) == (314159, "INVITE")
    assert msg.from_uri == "sip:alice@example.com"
    assert msg.from_tag == "1928301774"
    assert msg.from_display == "Alice Liddell"
    assert msg.to_uri == "sip:bob@example.net"
    assert msg.to_tag is None
    assert msg.to_display == "Bob"
    assert msg.via_branch == "z9hG4bK776asdhds"
    assert msg.top_via is not None
    assert (msg.top_via.transport, msg.top_via.host, msg.top_via.port) == (
        "UDP",
        "pc33.example.com",
        5060,
    )
    assert msg.top_via.param("rport") is None and ("rport", None) in msg.top_via.params
    assert msg.content_type == "application/sdp"
    assert msg.content_length == len(SDP_OFFER)
    assert msg.body == SDP_OFFER
    assert msg.sdp == SDP_OFFER
    assert msg.headers.get_all("Allow") == ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"]
    assert msg.headers.lines("allow") == ("INVITE, ACK, CANCEL, BYE, OPTIONS",)
    assert msg.headers.get("max-forwards") == "70"


@pytest.mark.parametrize(
    ("code", "reason", "method", "sdp"),
    [
        (100, "Trying", "INVITE", None),
        (180, "Ringing", "INVITE", None),
        (183, "Session Progress", "INVITE", SDP_ANSWER),
        (200, "OK", "INVITE", SDP_ANSWER),
        (487, "Request Terminated", "INVITE", None),
        (200, "OK", "BYE", None),
        (200, "OK", "CANCEL", None),
    ],
)
def test_responses(code: int, reason: str, method: str, sdp: bytes | None) -> None:
    msg = parse_message(response(code, reason, method, sdp))
    assert not msg.is_request
    assert msg.status_code == code
    assert msg.reason == reason
    assert msg.method == method  # from CSeq
    assert msg.request_uri is None
    assert msg.to_tag == (None if code == 100 else "a6c85cf")
    assert msg.sdp == sdp
    assert msg.body == (sdp or b"")


@pytest.mark.parametrize("method", ["ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "PRACK"])
def test_requests_without_body(method: str) -> None:
    msg = parse_message(request(method, 7))
    assert msg.method == method
    assert msg.cseq.number == 7 and msg.cseq.method == method
    assert msg.body == b"" and msg.sdp is None and msg.content_length == 0
    assert msg.to_tag == "a6c85cf"


def test_register_401_keeps_commas_in_non_list_header() -> None:
    msg = parse_message(REGISTER_401)
    assert msg.status_code == 401 and msg.method == "REGISTER"
    auth = msg.headers.get_all("www-authenticate")
    assert len(auth) == 1 and auth[0].startswith('Digest realm="pbx.example.com", nonce=')
    assert msg.top_via is not None and msg.top_via.param("received") == "203.0.113.9"


def test_compact_forms() -> None:
    data = with_body(
        [
            "INVITE sip:bob@example.net SIP/2.0",
            "v: SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKcompact",
            "f: <sip:alice@example.com>;tag=88",
            "t: sip:bob@example.net",
            "i: compact-1@10.1.1.1",
            "CSeq: 1 INVITE",
            "m: <sip:alice@10.1.1.1>",
            "k: 100rel, timer",
            "s: hello",
            "o: presence",
            "u: dialog",
            "x: 1800;refresher=uac",
            "r: <sip:carol@example.org>",
            "e: gzip",
        ],
        SDP_OFFER,
    ).replace(b"Content-Type:", b"c:").replace(b"Content-Length:", b"l:")
    msg = parse_message(data)
    assert msg.call_id == "compact-1@10.1.1.1"
    assert msg.from_tag == "88" and msg.to_uri == "sip:bob@example.net"
    assert msg.via_branch == "z9hG4bKcompact" and msg.top_via is not None
    assert msg.top_via.port is None
    assert msg.content_type == "application/sdp" and msg.sdp == SDP_OFFER
    headers = msg.headers
    assert headers.get_all("Supported") == ["100rel", "timer"]
    assert headers.get("Contact") == "<sip:alice@10.1.1.1>"
    assert headers.get("Subject") == "hello"
    assert headers.get("Event") == "presence"
    assert headers.get("Allow-Events") == "dialog"
    assert headers.get("Session-Expires") == "1800;refresher=uac"
    assert headers.get("Refer-To") == "<sip:carol@example.org>"
    assert headers.get("Content-Encoding") == "gzip"
    assert headers.get("i") == headers.get("CALL-ID") == "compact-1@10.1.1.1"
    assert "l" in headers and "Content-Length" in headers and "X-Nope" not in headers
    assert [name for name, _ in headers][:4] == ["Via", "From", "To", "Call-ID"]


def test_multiple_via_lines_and_comma_joined() -> None:
    data = crlf(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKtop,"
        " SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKmid",
        "v: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbottom;received=192.0.2.10",
        "From: <sip:a@example.com>;tag=1",
        "To: <sip:b@example.com>;tag=2",
        "Call-ID: vias",
        "CSeq: 2 INVITE",
        "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
        "Record-Route: <sip:p3.example.com;lr>",
        "Content-Length: 0",
    )
    msg = parse_message(data)
    vias = msg.vias()
    assert [v.branch for v in vias] == ["z9hG4bKtop", "z9hG4bKmid", "z9hG4bKbottom"]
    assert (vias[1].transport, vias[1].host, vias[1].port) == ("TCP", "2001:db8::1", 5070)
    assert msg.via_branch == "z9hG4bKtop"
    assert msg.headers.get_all("Record-Route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
        "<sip:p3.example.com;lr>",
    ]


def test_folded_header_and_lf_only() -> None:
    data = (
        b"OPTIONS sip:carol@chicago.com SIP/2.0\n"
        b"Via: SIP/2.0/UDP pc33.atlanta.com\n"
        b"  ;branch=z9hG4bKhjhs8ass877\n"
        b"To: <sip:carol@chicago.com>\n"
        b"From: Alice\n"
        b"\t<sip:alice@atlanta.com>;tag=1928301774\n"
        b"Call-ID: a84b4c76e66710\n"
        b"CSeq: 63104 OPTIONS\n"
        b"Subject: I know you're there,\n"
        b"         pick up the phone\n"
        b"Content-Length: 0\n\n"
    )
    msg = parse_message(data)
    assert msg.via_branch == "z9hG4bKhjhs8ass877"
    assert msg.from_display == "Alice" and msg.from_uri == "sip:alice@atlanta.com"
    assert msg.headers.get("Subject") == "I know you're there, pick up the phone"


def test_missing_content_length_over_udp_takes_rest() -> None:
    data = invite().replace(f"Content-Length: {len(SDP_OFFER)}\r\n".encode(), b"")
    msg = parse_message(data)
    assert msg.content_length is None and msg.body == SDP_OFFER


def test_content_length_shorter_than_datagram_ignores_extra() -> None:
    msg = parse_message(invite() + b"garbage")
    assert msg.body == SDP_OFFER


def _lf_body_crlf_length(body_lf: bytes, declared_extra: int = 0) -> bytes:
    """An INVITE whose SDP lines end in LF while Content-Length counts CRLF (plus
    ``declared_extra`` bytes more), as hep-wireshark's hepgen capture sends it."""
    data = invite()
    head, _, _ = data.partition(b"\r\n\r\n")
    crlf_len = len(body_lf.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    head = head.replace(f"Content-Length: {len(SDP_OFFER)}".encode(),
                        f"Content-Length: {crlf_len + declared_extra}".encode())
    return head + b"\r\n\r\n" + body_lf


def test_body_short_by_its_bare_lf_count_is_accepted_and_flagged() -> None:
    body = SDP_OFFER.replace(b"\r\n", b"\n")
    assert len(body) < len(SDP_OFFER)  # the SDP has CRLF line ends to drop
    msg = parse_message(_lf_body_crlf_length(body))
    assert msg.body == body and msg.sdp == body
    assert msg.content_length == len(SDP_OFFER) and msg.body_length_lenient
    # mixed line ends: only the bare LFs make up the difference
    mixed = body.replace(b"\n", b"\r\n", 2)
    msg = parse_message(_lf_body_crlf_length(mixed))
    assert msg.body == mixed and msg.body_length_lenient
    # an exact Content-Length is not lenient, LF or CRLF
    assert not parse_message(invite()).body_length_lenient
    lf_exact = invite().replace(SDP_OFFER, body).replace(
        f"Content-Length: {len(SDP_OFFER)}".encode(), f"Content-Length: {len(body)}".encode())
    assert not parse_message(lf_exact).body_length_lenient


@pytest.mark.parametrize("extra", [1, -1, 5])
def test_body_short_by_another_amount_is_still_truncated(extra: int) -> None:
    """RFC 3261 §18.3: short by anything but its bare-LF line ends (here one byte
    more or less, or a CRLF body cut short) is discarded."""
    body = SDP_OFFER.replace(b"\r\n", b"\n")
    with pytest.raises(SipParseError, match="truncated"):
        parse_message(_lf_body_crlf_length(body, extra))
    with pytest.raises(SipParseError, match="truncated"):
        parse_message(invite()[:-abs(extra)])  # CRLF lines, bytes missing at the end


def test_leading_crlf_and_no_final_empty_line() -> None:
    msg = parse_message(b"\r\n\r\n" + request("BYE").rstrip(b"\r\n"))
    assert msg.method == "BYE"


def test_multipart_mixed_extracts_sdp() -> None:
    isup = b"\x01\x00\x49\x00\x00\x03\x02\x00\x07\x04\x10\x00\x33\x63\x21\x43\x00\x00\x03"
    body = (
        b"--unique-boundary-1\r\n"
        b"Content-Type: application/sdp\r\n\r\n" + SDP_OFFER + b"\r\n"
        b"--unique-boundary-1\r\n"
        b"Content-Type: application/ISUP; version=nxv3\r\n"
        b"Content-Disposition: signal; handling=optional\r\n\r\n" + isup + b"\r\n"
        b"--unique-boundary-1--\r\n"
    )
    lines = ["INVITE sip:bob@example.net SIP/2.0", *request("X").decode().split("\r\n")[1:6]]
    lines.append("CSeq: 1 INVITE")
    data = with_body(lines, body, 'multipart/mixed; boundary="unique-boundary-1"')
    msg = parse_message(data)
    assert msg.content_type == "multipart/mixed"
    assert msg.sdp == SDP_OFFER


def test_multipart_without_sdp_part() -> None:
    body = b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n"
    lines = [*request("MESSAGE").decode().split("\r\n")[:7]]
    msg = parse_message(with_body(lines, body, "multipart/mixed;boundary=b"))
    assert msg.sdp is None and msg.body == body


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "only CRLF"),
        (b"HELLO\r\n\r\n", "no request line"),
        (b"SIP/2.0 99 Odd\r\n\r\n", "status code"),
        (b"SIP/2.0 200 OK\r\nno colon here\r\n\r\n", "header line"),
        (b"SIP/2.0 200 OK\r\n folded first\r\n\r\n", "continuation first"),
        (response(200, "OK").replace(b"Call-ID: ", b"X-Call-ID: "), "no Call-ID"),
        (response(200, "OK").replace(b"CSeq: 314159", b"CSeq: x"), "CSeq"),
        (response(200, "OK").replace(b"Content-Length: 0", b"Content-Length: 5"), "truncated"),
        (response(200, "OK").replace(b"Content-Length: 0", b"Content-Length: -1"), "negative"),
        (response(200, "OK").replace(b"SIP/2.0/UDP", b"HTTP/1.1"), "Via"),
        (response(200, "OK").replace(b"From: ", b"From: \"x <sip:a>"), "display quote"),
    ],
)
def test_malformed_raise_sip_parse_error(data: bytes, why: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(data)


def test_header_cap() -> None:
    data = b"INVITE sip:a@b SIP/2.0\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    with pytest.raises(SipParseError):
        parse_message(data)


def test_split_stream_two_messages_in_one_buffer() -> None:
    first, second = invite(), request("BYE")
    buffer = b"\r\n\r\n" + first + second + second[:30]
    ranges, consumed = split_stream(buffer)
    assert [buffer[a:b] for a, b in ranges] == [first, second]
    assert consumed == 4 + len(first) + len(second)
    assert [parse_message(buffer[a:b]).method for a, b in ranges] == ["INVITE", "BYE"]


def test_split_stream_one_message_in_three_chunks() -> None:
    data = invite()
    chunks = [data[:40], data[40 : len(data) - 50], data[len(data) - 50 :]]
    buffer = b""
    found: list[bytes] = []
    for chunk in chunks:
        buffer += chunk
        ranges, consumed = split_stream(buffer)
        found.extend(buffer[a:b] for a, b in ranges)
        buffer = buffer[consumed:]
    assert found == [data] and buffer == b""
    assert parse_message(found[0]).sdp == SDP_OFFER


def test_split_stream_caps() -> None:
    with pytest.raises(SipParseError):
        split_stream(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 70_000)
    with pytest.raises(SipParseError):
        split_stream(b"INVITE sip:a@b SIP/2.0\r\nl: 99999999\r\n\r\n")
    with pytest.raises(SipParseError):
        split_stream(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n")
    assert split_stream(b"INVITE sip:a@b SIP/2.0\r\nX: 1") == ([], 0)


def test_looks_like_sip() -> None:
    assert looks_like_sip(invite())
    assert looks_like_sip(b"SIP/2.0 180 Ringing\r\n")
    assert looks_like_sip(b"REGISTER sip:pbx.example.com SIP/2.0\n")
    assert not looks_like_sip(b"GET / HTTP/1.1\r\n")
    assert not looks_like_sip(b"\x80\x08\x00\x01" + b"\x00" * 168)
    assert not looks_like_sip(b"SIP/2.0 2000 OK\r\n")
    assert not looks_like_sip(b"")


def test_keepalive() -> None:
    assert is_keepalive(b"\r\n\r\n") and is_keepalive(b"\r\n") and is_keepalive(b"\x00\x00\x00\x00")
    assert not is_keepalive(b"") and not is_keepalive(request("BYE"))


def test_name_addr_forms() -> None:
    plain = parse_name_addr("sip:alice@example.com;tag=abc")
    assert (plain.display, plain.uri, plain.tag) == (None, "sip:alice@example.com", "abc")
    quoted = parse_name_addr(r'"A \"quoted\" name" <sip:a@x;transport=tcp>;TAG=z')
    assert quoted.display == 'A "quoted" name'
    assert quoted.uri == "sip:a@x;transport=tcp" and quoted.tag == "z"
    assert split_outside_quotes('"a,b" <sip:x,y>, <sip:z>', ",") == ['"a,b" <sip:x,y>', "<sip:z>"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["Via", "Contact", "To", "Route", "Subject"]),
                          st.text(alphabet='ab,"<> \\;', max_size=12)), max_size=6),
       st.sampled_from(["Via", "Contact", "To", "Route", "Subject"]))
def test_headers_get_is_the_first_of_get_all(fields: list[tuple[str, str]], name: str) -> None:
    """`Headers.get` splits only the lines it needs; it must say what get_all()[0] says,
    list headers (Via, Contact, Route: commas outside quotes and angles) or not."""
    h = Headers(tuple(fields))
    every = h.get_all(name)
    assert h.get(name, "<none>") == (every[0] if every else "<none>")


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=40).map(lambda b: bytes(b"\r\na"[x % 3] for x in b)),
       st.integers(0, 45), st.integers(0, 45))
def test_header_end_is_the_regex_match(data: bytes, start: int, stop: int) -> None:
    """`header_end` (two bytes.find scans) finds what ``\\r?\\n\\r?\\n`` searched over
    data[start:stop] finds: the same start and end, or nothing."""
    m = re.compile(rb"\r?\n\r?\n").search(data, start, stop)
    assert header_end(data, start, stop) == (None if m is None else (m.start(), m.end()))
