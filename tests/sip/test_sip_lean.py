"""The lean `parse_message` (issue 11) against its readable twin, the eager parser it
replaced (`sip_reference_parser`): on generated, mutated and random messages and on
torture messages after RFC 4475 §3.1, both accept or both refuse (with the same
`SipParseError.limit`), and every value a caller can read is the same."""

from __future__ import annotations

import dataclasses

import pytest
import sip_reference_parser as ref
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sip_samples import REGISTER_401, SDP_ANSWER, SDP_OFFER, invite, request, response

from agent.sip import SipMessage, SipParseError, parse_message
from agent.sip import message as msg_module
from agent.sip.headers import (
    cseq_checked,
    find_param,
    name_addr_tag,
    param_value,
    parse_cseq,
    parse_name_addr,
    parse_params,
    parse_via,
    via_branch,
)
from agent.sip.limits import DEFAULT_LIMITS, MessageLimits
from agent.sip.message import _parse_start_line, start_line_checked

LEAN = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TIGHT = MessageLimits(max_header_bytes=500, max_headers=12, max_header_line_bytes=120,
                      max_content_length=120, max_multipart_depth=1, max_sdp_media=1,
                      max_sdp_bytes=60)


def outcome(parse: object, *args: object) -> tuple[str, object]:
    """("ok", value) or ("error", limit); any other exception fails the test."""
    try:
        return "ok", parse(*args)  # type: ignore[operator]
    except SipParseError as err:
        return "error", err.limit


def view(msg: SipMessage | ref.RefMessage) -> dict[str, object]:
    """Everything the rest of the probe (and a test) can read of a message."""
    # first, before anything builds `headers`: `header` reads the raw fields then
    named = ("User-Agent", "session-expires", "x", "Contact", "Max-Forwards", "Subject")
    one = {n: msg.header(n) if isinstance(msg, SipMessage) else msg.headers.get(n)
           for n in named}
    vias = outcome(msg.vias)
    return {
        "is_request": msg.is_request, "method": msg.method, "request_uri": msg.request_uri,
        "status_code": msg.status_code, "reason": msg.reason, "body": msg.body,
        "call_id": msg.call_id, "cseq": msg.cseq, "from_addr": msg.from_addr,
        "to_addr": msg.to_addr, "top_via": msg.top_via, "content_length": msg.content_length,
        "sdp": msg.sdp, "body_length_lenient": msg.body_length_lenient,
        "content_type": msg.content_type, "from_tag": msg.from_addr.tag,
        "to_tag": msg.to_addr.tag,
        "via_branch": msg.top_via.branch if msg.top_via is not None else None,
        "headers": msg.headers.fields,
        "get_all": {n: msg.headers.get_all(n) for n, _ in msg.headers},
        "get": {n: msg.headers.get(n) for n in ("Via", "Contact", "User-Agent", "v", "m")},
        "vias": vias,
        "header": one,
        "header_built": {n: msg.header(n) if isinstance(msg, SipMessage)
                         else msg.headers.get(n) for n in named},
    }


def check(data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> None:
    got = outcome(parse_message, data, limits)
    want = outcome(ref.parse_message, data, limits)
    assert got[0] == want[0], (got, want)
    if got[0] == "error":
        assert got[1] == want[1]
        return
    new, old = got[1], want[1]
    assert isinstance(new, SipMessage) and isinstance(old, ref.RefMessage)
    assert (new.from_tag, new.to_tag, new.via_branch) == (
        old.from_addr.tag, old.to_addr.tag, old.top_via.branch if old.top_via else None)
    assert (new.from_uri, new.from_display, new.to_uri, new.to_display) == (
        old.from_addr.uri, old.from_addr.display, old.to_addr.uri, old.to_addr.display)
    assert new.is_response is not old.is_request
    assert view(new) == view(old)


# -- generated messages --------------------------------------------------------------

# Pieces that sit on the edges of the rules: quoting, escapes, brackets, separators,
# whitespace that str.strip() removes but SP/HT rules do not, case folding oddities.
PIECES = [" ", "\t", '"', "\\", "<", ">", ";", ",", "=", ":", "/", "\r", "a", "B", "7",
          "tag", "TAG", "branch", "sip:b@x", ";tag=1", ";tag=", "\x85", "\xa0", "\x0b",
          "\u0131", "\u017f", "\u0661", "[", "]", "SIP/2.0/UDP", "SIP / 2.0 / tcp", "h.x",
          ":5060", ":99999", "z9hG4bK", ";rport", "INVITE", "1", "00", "4294967296"]
tricky = st.lists(st.sampled_from(PIECES), max_size=10).map("".join)

NAMES = ["Via", "v", "VIA", "Call-ID", "i", "call-id", "CALL-Id", "CSeq", "cseq", "From",
         "f", "FROM", "To", "t", "Content-Length", "l", "Content-Type", "c", "Max-Forwards",
         "User-Agent", "Session-Expires", "x", "Contact", "m", "X-Odd!~"]
BAD_NAMES = ["Bad Name", "", "@x", " folded", "\tfolded", "\u0131"]
COLONS = [":", ": ", " :", "\t: ", ":\t", "::"]
VALUES = {
    "via": ["SIP/2.0/UDP h.x:5060;branch=z9hG4bK1;rport", "SIP/2.0/TCP [2001:db8::1]:5061",
            "sip/2.0/udp h;branch=a, SIP/2.0/UDP g;branch=b", ", SIP/2.0/UDP h", ""],
    "from": ['"Al \\"x\\"" <sip:a@x>;tag=9', "<sip:a@x>;tag=1;x=2", "sip:a@x;tag=3",
             "<sip:a@x>", '"unterminated <sip:a@x>', "< >;tag=1", "A <sip:a@x;tag=u>;Tag=T"],
    "cseq": ["1 INVITE", "4294967295 BYE", "4294967296 BYE", "1 INV ITE", " 2\tACK ",
             "x INVITE", "1 ?", "0000000001 ACK", "00000000001 ACK", "1\x85BYE", "\u0661 BYE",
             "1 BYE\xa0"],
    "call-id": ["abc@h", "", "  "],
    "content-length": ["0", " 3 ", "-1", "1x", "99999999999"],
    "content-type": ["application/sdp", "multipart/mixed;boundary=zz", "APPLICATION/SDP ;x",
                     ""],
}
KEYS = {"v": "via", "via": "via", "call-id": "call-id", "i": "call-id", "cseq": "cseq",
        "from": "from", "f": "from", "to": "from", "t": "from", "content-length":
        "content-length", "l": "content-length", "content-type": "content-type",
        "c": "content-type"}
START_LINES = ["INVITE sip:Bob@X SIP/2.0", "SIP/2.0 200 OK", "ACK  sip:b@x SIP/2.0",
               " OPTIONS sip:b@x SIP/2.0", "INVITE sip:b@x SIP/2.0\r", "BYE sip:b@x sip/2.0",
               "SIP/2.0 180", "sip/2.0 486 Busy Here ", "SIP/2.0 200\r", "SIP/2.0 99 x",
               "IN\u0131TE sip:b@x SIP/2.0", "INVITE sip:b@x \u017fIP/2.0", "INVITE SIP/2.0",
               "SIP/2.0  603\tDecline"]
ENDS = ["\r\n"] * 4 + ["\n"] * 2 + ["\r\r\n"]
LF = b"\n"
BODIES = [b"", SDP_OFFER, b"v=0\r\nm=audio 1 RTP/AVP 0\r\nm=video 2 RTP/AVP 31\r\n",
          b"--zz\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--zz--\r\n", b"junk\n\n"]


@st.composite
def header_line(draw: st.DrawFn) -> str:
    """Mostly a well-formed line, now and then one that is not (refused, or folded)."""
    odd = draw(st.integers(0, 39)) == 0
    name = draw(st.sampled_from(BAD_NAMES if odd else NAMES))
    key = KEYS.get(name.lower())
    pool = VALUES.get(key or "", [])
    value = draw(st.one_of(st.sampled_from(pool), tricky) if pool else tricky)
    return f"{name}{'' if odd and draw(st.booleans()) else draw(st.sampled_from(COLONS))}{value}"


MANDATORY = ["Via: SIP/2.0/UDP h.x:5060;branch=z9hG4bKm", "From: <sip:a@x>;tag=f",
             "To: <sip:b@x>", "Call-ID: c@x", "CSeq: 1 INVITE"]


@st.composite
def message(draw: st.DrawFn) -> bytes:
    start = draw(st.sampled_from(START_LINES[:2] * 6 + START_LINES))
    lines = draw(st.lists(st.one_of(st.sampled_from(MANDATORY), header_line()), max_size=14))
    if draw(st.integers(0, 4)):
        lines += MANDATORY
    body = draw(st.sampled_from(BODIES))
    length = draw(st.sampled_from(["right", "none", "long", "twice", "lf"]))
    if length == "right":
        lines.append(f"Content-Length: {len(body)}")
    elif length == "long":
        lines.append(f"l: {len(body) + 2}")
    elif length == "twice":
        lines += [f"Content-Length: {len(body)}", f"content-length:{len(body)}"]
    elif length == "lf":  # counted with CRLF, written with LF
        body = body.replace(b"\r\n", b"\n")
        lines.append(f"Content-Length: {len(body) + body.count(LF)}")
    if body and draw(st.booleans()):
        lines.append(draw(st.sampled_from(["Content-Type: application/sdp",
                                           "c: multipart/mixed; boundary=zz"])))
    lines = draw(st.permutations(lines)) if draw(st.integers(0, 4)) == 0 else lines
    end = draw(st.sampled_from(ENDS))
    head = end.join([start, *lines])
    tail = draw(st.sampled_from([end + end] * 6 + [end, "", "\r\n\r\n", "\n\r\n", end + "\r"]))
    lead = draw(st.sampled_from(["", "", "\r\n", "\n\n"]))
    return (lead + head + tail).encode("utf-8", "surrogatepass") + body


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(message()))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.sampled_from([b"\r\n", b"\n ", b"\n\t", b":", b";", b",",
                                                b'"', b"<", b">", b"\0", b"\xff", b"\r"]))
        else:
            del data[at : at + draw(st.integers(1, 12))]
    return bytes(data)


limits = st.sampled_from([DEFAULT_LIMITS, DEFAULT_LIMITS, TIGHT])

# Values built the way a name-addr or a Via is, from pieces at the edges of each part.
SPACE = st.sampled_from(["", "", "", " ", "\t", "\xa0", "\r"])
params = st.lists(st.tuples(SPACE, st.sampled_from(["tag", "tag", "TAG", "branch", "x", ""]),
                            SPACE, st.sampled_from(["=", "=", "", "=="]), SPACE,
                            st.sampled_from(["1", "a b", '"q;t"', "<u>", "", "z9hG4bK"]),
                            SPACE), max_size=3).map(
    lambda ps: "".join(";" + "".join(p) for p in ps))
name_addr_text = st.tuples(
    st.sampled_from(["", '"Al"', '"A \\"q\\" <x>"', '"open', "Bob", "a<b", '"" ']), SPACE,
    st.sampled_from(["<sip:a@x>", "< sip:a@x >", "<>", "< >", "<sip:a@x", "sip:a@x",
                     "<sip:a@x;tag=u>", "<sip:a>b>"]), params).map("".join)
via_text = st.tuples(
    st.sampled_from(["SIP/2.0/UDP", "SIP / 2.0 / tcp", "sip/2.0/TLS", "SIP/2.1/UDP", ""]),
    st.sampled_from([" ", "  ", "\t", ""]),
    st.sampled_from(["h.x", "[2001:db8::1]", "[::1", "192.0.2.1", ""]),
    st.sampled_from(["", ":5060", " : 5060", ":65536", ":0", ":\u0661"]), SPACE,
    params).map("".join)



@LEAN
@given(message(), limits)
def test_generated_messages_parse_as_before(data: bytes, lim: MessageLimits) -> None:
    check(data, lim)


@LEAN
@given(mutated(), limits)
def test_mutated_messages_parse_as_before(data: bytes, lim: MessageLimits) -> None:
    check(data, lim)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), limits)
def test_random_bytes_parse_as_before(data: bytes, lim: MessageLimits) -> None:
    check(data, lim)


@pytest.mark.parametrize("data", [invite(), response(183, "Session Progress", sdp=SDP_ANSWER),
                                  response(200, "OK"), request("BYE"), REGISTER_401])
@pytest.mark.parametrize("lim", [DEFAULT_LIMITS, TIGHT])
def test_samples_parse_as_before(data: bytes, lim: MessageLimits) -> None:
    check(data, lim)


# -- the header parsers the lean path reads through ----------------------------------

def same_part(fast: object, parse: object, attr: str, text: str) -> None:
    """``fast(text)`` is ``parse(text).<attr>``, or both raise `SipParseError`."""
    want = outcome(parse, text)
    assert outcome(fast, text) == (want if want[0] == "error" else ("ok", getattr(want[1], attr)))


@LEAN
@given(st.one_of(tricky, params), st.sampled_from(["tag", "branch", "x"]))
def test_param_value_is_find_param_of_parse_params(text: str, name: str) -> None:
    assert param_value(text, name) == find_param(parse_params(text), name)


@LEAN
@given(st.one_of(tricky, st.sampled_from(VALUES["from"]), name_addr_text))
@example("<sip:a@x>;tag= 1")
@example('"A" <sip:a@x>;tag=\xa01\t')
@example("<sip:a@x>;tag= 1\t;x")
@example('"A" <sip:a@x> ;tag=1')
def test_name_addr_tag_is_the_tag_of_parse_name_addr(text: str) -> None:
    same_part(name_addr_tag, parse_name_addr, "tag", text)


@LEAN
@given(st.one_of(tricky, st.sampled_from(VALUES["via"]), via_text))
def test_via_branch_is_the_branch_of_parse_via(text: str) -> None:
    same_part(via_branch, parse_via, "branch", text)


start_line = st.tuples(
    st.sampled_from(["INVITE", "bye", "!x~", "IN VITE", "", " ACK", "SIP/2.0", "\u0131"]),
    st.sampled_from([" ", "  ", "\t", ""]), st.sampled_from(["sip:B@x", "<sip:b>", "\xa0", ""]),
    st.sampled_from([" ", "\x85", ""]), st.sampled_from(["SIP/2.0", "sip/2.0", "\u017fIP/2.0",
                                                       "SIP/2.0 ", "SIP/2.0\r", "SIP/2.1"]),
).map("".join)


@LEAN
@given(st.one_of(start_line, st.sampled_from(START_LINES), tricky))
def test_start_line_is_its_full_checks(line: str) -> None:
    assert outcome(_parse_start_line, line) == outcome(start_line_checked, line)


@LEAN
@given(st.one_of(tricky, st.sampled_from(VALUES["cseq"])))
def test_parse_cseq_is_its_full_checks(text: str) -> None:
    assert outcome(parse_cseq, text) == outcome(cseq_checked, text)


# -- the message object ----------------------------------------------------------------

def test_lazy_parts_are_built_once_and_the_message_stays_frozen() -> None:
    msg = parse_message(invite())
    assert msg.headers is msg.headers and msg.from_addr is msg.from_addr
    assert msg.to_addr is msg.to_addr and msg.top_via is msg.top_via
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.call_id = "x"  # type: ignore[misc]


def test_fast_construction_is_the_dataclass_constructor() -> None:
    msg = parse_message(invite())
    values = {f.name: getattr(msg, f.name) for f in dataclasses.fields(SipMessage)}
    assert set(vars(msg)) >= set(values)  # every field set, the lazy caches aside
    built = SipMessage(**values)
    assert built == msg and view(built) == view(msg)  # type: ignore[arg-type]
    assert hash(built) == hash(msg)  # hashable, as it was
    other = dataclasses.replace(msg, call_id="other")
    assert other.call_id == "other" and other.headers == msg.headers


# -- torture messages after RFC 4475 §3.1 ------------------------------------------------

def _msg(*lines: str, body: bytes = b"", end: str = "\r\n") -> bytes:
    return (end.join(lines) + end + end).encode() + body


MPART = b"--unique\nContent-Type: application/sdp\n\nv=0\n--unique--\n"
TORTURE_VALID = {
    # §3.1.1.1: folding, LWS around colons, odd case, compact forms, escaped quotes
    "wsinv-like": _msg(
        "INVITE sip:v@example.com;unknownparam SIP/2.0", "TO :", " sip:v@example.com ;"
        "   tag    = 1918181833n", 'from   : "J R \\\\\\"" <sip:j@example.com>', "  ;",
        "  tag = 98asjd8", "MaX-fOrWaRdS: 0068", "Call-ID: wsinv.ndaksdj@192.0.2.1",
        "Content-Length   : 0", "cseq: 0009", "  INVITE", "Via  : SIP  /   2.0",
        " /UDP", "    192.0.2.2;rport;branch=390skdjuw", "s :",
        "NewFangledHeader:   newfangled value", " continued newfangled value",
        "UnknownHeaderWithUnusualValue: ;;,,;;,;", "l: 0"),
    # §3.1.1.2: the widest token characters in method, tag and branch
    "intmeth-like": _msg(
        "!interesting-Method0123456789_*+`.%indeed'~ sip:u@example.com SIP/2.0",
        "Via: SIP/2.0/UDP host1.example.com;rport;branch=z9hG4bK-.!%66*_+`'~",
        'To: "BEL:\\\x07 DEL:\\\x7f" <sip:u@example.com>',
        "From: token1~` token2'+_ <sip:m@example.com> ;fromParam''~+*_!.-%=x;tag=_t~1'+`*%!-.",
        "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{", "CSeq: 139122385 "
        "!interesting-Method0123456789_*+`.%indeed'~", "Content-Length: 0"),
    # §3.1.1.4: a message without a body and no Content-Length over a datagram
    "no-length": _msg("OPTIONS sip:u@example.com SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9a",
                      "From: <sip:a@x>;tag=1", "To: sip:u@example.com", "Call-ID: nl@x",
                      "CSeq: 1 OPTIONS"),
    # §3.1.1.7: Via as one comma list and as several lines, IPv6 sent-by
    "mvias-like": _msg(
        "SIP/2.0 100 Trying", "v: SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKa, "
        "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKb", "Via: SIP/2.0/TCP 192.0.2.2;branch=c",
        "From: <sip:a@x>;tag=1", "t: <sip:b@x>;tag=2", "i: mv@x", "CSeq: 1 INVITE",
        "l: 0"),
    # §3.1.1.11: multipart body with the SDP inside, bare LF line ends
    "mpart-like": _msg(
        "INVITE sip:u@example.com SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9m",
        "From: <sip:a@x>;tag=1", "To: <sip:u@example.com>", "Call-ID: mp@x",
        "CSeq: 1 INVITE", "Content-Type: multipart/mixed;boundary=unique",
        f"Content-Length: {len(MPART)}", end="\n", body=MPART),
}
TORTURE_INVALID = {
    # §3.1.2.1: Content-Length larger than the message
    "clerr-like": _msg("INVITE sip:u@x SIP/2.0", "Via: SIP/2.0/UDP h;branch=1",
                       "From: <sip:a@x>;tag=1", "To: <sip:u@x>", "Call-ID: cl@x",
                       "CSeq: 1 INVITE", "Content-Length: 9999", body=b"v=0\r\n"),
    # §3.1.2.2: negative Content-Length
    "ncl-like": _msg("INVITE sip:u@x SIP/2.0", "Via: SIP/2.0/UDP h;branch=1",
                     "From: <sip:a@x>;tag=1", "To: <sip:u@x>", "Call-ID: ncl@x",
                     "CSeq: 1 INVITE", "Content-Length: -999"),
    # §3.1.2.3: CSeq number past 2**32
    "scalar02-like": _msg("REGISTER sip:x SIP/2.0", "Via: SIP/2.0/TCP h;branch=1",
                          "From: <sip:a@x>;tag=1", "To: <sip:a@x>", "Call-ID: s2@x",
                          "CSeq: 36893488147419103232 REGISTER", "Content-Length: 0"),
    # §3.1.2.6: an unterminated quoted display name
    "quotbal-like": _msg("INVITE sip:u@x SIP/2.0", "Via: SIP/2.0/UDP h;branch=1",
                         'From: "Bob <sip:a@x>;tag=1', "To: <sip:u@x>", "Call-ID: q@x",
                         "CSeq: 1 INVITE", "Content-Length: 0"),
    # §3.1.2.10: a bad SIP-Version in the request line
    "badvers-like": _msg("OPTIONS sip:u@x SIP/7.0", "Via: SIP/2.0/UDP h;branch=1",
                         "From: <sip:a@x>;tag=1", "To: <sip:u@x>", "Call-ID: bv@x",
                         "CSeq: 1 OPTIONS", "Content-Length: 0"),
    # §3.1.2.16: two Content-Lengths that disagree; §3.3.3: a missing Call-ID
    "conflicting-lengths": _msg("BYE sip:u@x SIP/2.0", "Via: SIP/2.0/UDP h;branch=1",
                                "From: <sip:a@x>;tag=1", "To: <sip:u@x>", "Call-ID: c@x",
                                "CSeq: 2 BYE", "l: 0", "Content-Length: 4", body=b"abcd"),
    "no-call-id": _msg("BYE sip:u@x SIP/2.0", "Via: SIP/2.0/UDP h;branch=1",
                       "From: <sip:a@x>;tag=1", "To: <sip:u@x>", "CSeq: 2 BYE"),
    # a malformed top Via
    "bad-via": _msg("BYE sip:u@x SIP/2.0", "Via: SIP/3.0/UDP h;branch=1",
                    "From: <sip:a@x>;tag=1", "To: <sip:u@x>", "Call-ID: c@x", "CSeq: 2 BYE"),
}


@pytest.mark.parametrize("name", sorted(TORTURE_VALID))
def test_torture_valid_parse_as_before(name: str) -> None:
    data = TORTURE_VALID[name]
    parse_message(data)
    check(data)


@pytest.mark.parametrize("name", sorted(TORTURE_INVALID))
def test_torture_invalid_are_refused_as_before(name: str) -> None:
    data = TORTURE_INVALID[name]
    with pytest.raises(SipParseError):
        parse_message(data)
    check(data)


def test_torture_values() -> None:
    ws = parse_message(TORTURE_VALID["wsinv-like"])
    assert (ws.to_tag, ws.from_tag, ws.via_branch) == ("1918181833n", "98asjd8", "390skdjuw")
    assert ws.from_display == 'J R \\"' and ws.cseq.number == 9
    assert ws.headers.get("Subject") == "" and ws.top_via is not None
    assert ws.top_via.host == "192.0.2.2"
    mv = parse_message(TORTURE_VALID["mvias-like"])
    assert mv.via_branch == "z9hG4bKa" and [v.host for v in mv.vias()] == [
        "2001:db8::9:1", "192.0.2.1", "192.0.2.2"]
    assert parse_message(TORTURE_VALID["mpart-like"]).sdp == b"v=0"


def test_memo_keeps_short_values_only_and_never_a_refusal() -> None:
    msg_module._tag.cache_clear()
    long_from = "<sip:a@x>;tag=" + "t" * msg_module._MEMO_CHARS
    data = invite().replace(b"From: ", b"From: " + long_from.encode() + b"\r\nX-Old-From: ", 1)
    assert parse_message(data).from_tag == "t" * msg_module._MEMO_CHARS
    assert msg_module._tag.cache_info().currsize == 1  # the To, not the long From
    with pytest.raises(SipParseError):
        parse_message(invite().replace(b"<sip:bob@example.net>", b"<sip:bob@example.net", 1))
    assert msg_module._tag.cache_info().currsize == 2  # From kept before To refused
    assert msg_module._tag.cache_info().maxsize == msg_module._MEMO_ENTRIES
