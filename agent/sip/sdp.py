"""SDP session descriptions (RFC 4566 / RFC 8866) as the probe needs them.

Theory of operation
-------------------
The body is a list of `<type>=<value>` lines (§5); everything up to the first
`m=` is the session section, each `m=` opens a media section. The probe uses
SDP for one thing: predicting where media will flow and what it carries, so
each `MediaDescription` exposes *effective* values, already resolved:

- connection address: media-level `c=` overrides session-level `c=` (§5.7);
- RTCP: `a=rtcp` port/address (RFC 3605), else the RTP port when
  `a=rtcp-mux` (RFC 5761), else RTP port + 1 (RFC 3550 §11);
- direction: media-level attribute, else session-level, else sendrecv
  (RFC 3264 §5.1); `c=0.0.0.0` is the RFC 2543 hold that RFC 3264 §8.4 still
  asks us to understand, reported as `on_hold`;
- payload map: `a=rtpmap` entries, plus the RFC 3551 static table for static
  payload types listed without one.

Strict where the structure is broken (first line not `v=0`, a line that is not
`x=...`, bad `o=`, `c=` or `m=`), lenient for attributes: a malformed
`a=rtpmap` or `a=ptime` is ignored, as §5.13 asks for unknown attributes.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum

from agent.decode.endpoint import Endpoint
from agent.media.payloads import STATIC_PAYLOAD_TYPES, canonical_name
from agent.media.srtp import trailer_bytes
from agent.sip.errors import SdpParseError

Attribute = tuple[str, str | None]
_NULL_ADDRESSES = frozenset({"0.0.0.0", "::"})


class Direction(StrEnum):
    """Media direction attribute (RFC 4566 §6, RFC 3264 §5.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"


@dataclass(frozen=True, slots=True)
class Connection:
    """`c=IN IP4 192.0.2.1` (RFC 4566 §5.7); TTL/count suffixes dropped."""

    address_type: str  # "IP4" or "IP6"
    address: str  # literal address or FQDN, as written

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.address)
        except ValueError:
            return None

    @property
    def is_null(self) -> bool:
        """0.0.0.0 / :: : the old-style hold of RFC 2543 (RFC 3264 §8.4)."""
        return self.address in _NULL_ADDRESSES


@dataclass(frozen=True, slots=True)
class Origin:
    """`o=<username> <sess-id> <sess-version> IN <addrtype> <address>` (§5.2)."""

    username: str
    session_id: str
    session_version: str
    address_type: str
    address: str


@dataclass(frozen=True, slots=True)
class PayloadType:
    """One payload type of a media section; `static` if it came from RFC 3551."""

    pt: int
    encoding: str  # the registry's spelling (`agent.media.payloads.canonical_name`)
    clock_rate_hz: int
    channels: int
    fmtp: str | None
    static: bool

    @property
    def encoding_upper(self) -> str:
        """Encoding name upper-cased, for table lookups (`pcma` and `PCMA` are one codec)."""
        return self.encoding.upper()


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One `m=` section with its effective (session-merged) values."""

    media: str  # audio, video, image, application, ...
    port: int
    port_count: int
    proto: str  # RTP/AVP, RTP/SAVP, RTP/SAVPF, UDP/TLS/RTP/SAVPF, udptl, ...
    formats: tuple[str, ...]
    connection: Connection | None  # effective: media-level else session-level
    direction: Direction  # effective: media-level else session-level else sendrecv
    rtcp_port_attr: int | None  # a=rtcp (RFC 3605)
    rtcp_address_attr: str | None
    rtcp_mux: bool
    ptime_ms: float | None
    maxptime_ms: float | None
    crypto_suites: tuple[str, ...]  # a=crypto (RFC 4568) suites, keys never kept
    payloads: tuple[PayloadType, ...]  # in m= order
    attributes: tuple[Attribute, ...]
    # per a=crypto line: SRTP MKI + auth tag bytes (None: suite unknown to the registry)
    crypto_trailers: tuple[int | None, ...] = ()

    @property
    def is_audio(self) -> bool:
        return self.media == "audio"

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    @property
    def is_srtp(self) -> bool:
        """SRTP profile or SDES keys: payload encrypted, RTP headers still measurable."""
        return "SAVP" in self.proto.upper() or bool(self.crypto_suites)

    @property
    def rejected(self) -> bool:
        """Port 0 rejects or disables the stream (RFC 3264 §6, §8.2)."""
        return self.port == 0

    @property
    def address(self) -> str | None:
        return self.connection.address if self.connection is not None else None

    @property
    def rtp_port(self) -> int:
        return self.port

    @property
    def rtp_endpoint(self) -> Endpoint | None:
        """Where this section's RTP is to be sent; None when nothing is (port 0, c=0.0.0.0
        hold) or the address is not an IP literal (an FQDN the probe cannot match)."""
        addr = self.address
        if addr is None or self.port == 0:
            return None
        try:
            ep = Endpoint.of(addr, self.port)
        except ValueError:
            return None
        return None if ep.is_unspecified else ep

    @property
    def rtcp_port(self) -> int:
        if self.rtcp_port_attr is not None:
            return self.rtcp_port_attr
        if self.rtcp_mux:
            return self.port
        return self.port + 1

    @property
    def rtcp_address(self) -> str | None:
        return self.rtcp_address_attr or self.address

    @property
    def on_hold(self) -> bool:
        """sendonly/inactive, or the old-style c=0.0.0.0 hold."""
        held = self.direction in (Direction.SENDONLY, Direction.INACTIVE)
        return held or (self.connection is not None and self.connection.is_null)

    @property
    def payload_map(self) -> dict[int, PayloadType]:
        return {p.pt: p for p in self.payloads}


@dataclass(frozen=True, slots=True)
class SessionDescription:
    version: int
    origin: Origin
    session_name: str
    connection: Connection | None  # session-level c=
    timing: tuple[tuple[int, int], ...]
    direction: Direction | None  # session-level attribute, if any
    attributes: tuple[Attribute, ...]
    media: tuple[MediaDescription, ...]

    @property
    def audio(self) -> tuple[MediaDescription, ...]:
        return tuple(m for m in self.media if m.is_audio)


@dataclass
class _MediaLines:
    """Raw lines of one m= section while the body is walked."""

    mline: str
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)


@dataclass
class _SessionLines:
    """Session-level lines while the body is walked."""

    origin: Origin | None = None
    session_name: str = ""
    connection: Connection | None = None
    timing: list[tuple[int, int]] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)

    def add(self, kind: str, value: str) -> None:
        if kind == "o":
            self.origin = _parse_origin(value)
        elif kind == "s":
            self.session_name = value
        elif kind == "c":
            self.connection = _parse_connection(value)
        elif kind == "t":
            self.timing.append(_parse_timing(value))
        elif kind == "a":
            self.attributes.append(_parse_attribute(value))


# The engine and the dialog read the same body in turn: the last bodies parsed, and
# those the engine hands back (`remember`) just before the dialog reads them.
_RECENT: OrderedDict[bytes | str, SessionDescription] = OrderedDict()
_RECENT_SIZE = 64


def parse_sdp(body: bytes | str) -> SessionDescription:
    """Parse an SDP body (RFC 4566 §5). Raises `SdpParseError` only. The result is
    immutable, so a cached one is shared safely."""
    desc = _RECENT.get(body)
    if desc is None:
        desc = _parse_sdp(body)
    remember(body, desc)
    return desc


def remember(body: bytes | str, desc: SessionDescription) -> None:
    """Keep ``desc`` (``body`` parsed) among the recent ones (bounded)."""
    _RECENT[body] = desc
    _RECENT.move_to_end(body)
    if len(_RECENT) > _RECENT_SIZE:
        _RECENT.popitem(last=False)


def _parse_sdp(body: bytes | str) -> SessionDescription:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    lines = [line for line in (raw.strip() for raw in text.split("\n")) if line]
    if not lines or lines[0] != "v=0":
        raise SdpParseError("SDP must start with v=0")
    session = _SessionLines()
    sections: list[_MediaLines] = []
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpParseError(f"bad SDP line {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            sections.append(_MediaLines(mline=value))
        elif sections:
            _media_line(sections[-1], kind, value)
        else:
            session.add(kind, value)
    if session.origin is None:
        raise SdpParseError("missing o= line")
    direction = _direction(session.attributes)
    return SessionDescription(
        version=0,
        origin=session.origin,
        session_name=session.session_name,
        connection=session.connection,
        timing=tuple(session.timing),
        direction=direction,
        attributes=tuple(session.attributes),
        media=tuple(_build_media(m, session.connection, direction) for m in sections),
    )


def _media_line(section: _MediaLines, kind: str, value: str) -> None:
    if kind == "c" and section.connection is None:
        section.connection = _parse_connection(value)
    elif kind == "a":
        section.attributes.append(_parse_attribute(value))


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpParseError(f"bad o= line {value[:40]!r}")
    return Origin(parts[0], parts[1], parts[2], parts[4].upper(), parts[5])


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3 or parts[0].upper() != "IN" or parts[1].upper() not in ("IP4", "IP6"):
        raise SdpParseError(f"bad c= line {value[:40]!r}")
    address = parts[2].split("/", 1)[0]  # §5.7: multicast /ttl[/count] suffix
    if not address:
        raise SdpParseError("empty connection address")
    return Connection(address_type=parts[1].upper(), address=address)


def _parse_timing(value: str) -> tuple[int, int]:
    parts = value.split()
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 20 for p in parts):
        raise SdpParseError(f"bad t= line {value[:40]!r}")
    return int(parts[0]), int(parts[1])


def _parse_attribute(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    return name.strip().lower(), rest.strip() if colon else None


_DIRECTIONS = frozenset(d.value for d in Direction)


def _direction(attributes: list[Attribute]) -> Direction | None:
    found: Direction | None = None
    for name, value in attributes:
        if value is None and name in _DIRECTIONS:
            found = Direction(name)
    return found


def _small_int(text: str, limit: int) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 8:
        return None
    number = int(text)
    return number if number <= limit else None


def _parse_mline(value: str) -> tuple[str, int, int, str, tuple[str, ...]]:
    """`m=<media> <port>[/<number of ports>] <proto> <fmt> ...` (RFC 4566 §5.14)."""
    parts = value.split()
    if len(parts) < 3:
        raise SdpParseError(f"bad m= line {value[:40]!r}")
    port_text, _, count_text = parts[1].partition("/")
    port = _small_int(port_text, 65535)
    count = _small_int(count_text, 65535) if count_text else 1
    if port is None or count is None:
        raise SdpParseError(f"bad m= port {parts[1][:20]!r}")
    return parts[0].lower(), port, count, parts[2], tuple(parts[3:])


def _build_media(
    section: _MediaLines, session_conn: Connection | None, session_dir: Direction | None
) -> MediaDescription:
    media, port, count, proto, formats = _parse_mline(section.mline)
    attrs = section.attributes
    is_rtp = "RTP/" in proto.upper()
    pts: list[int] = []
    if is_rtp:
        for fmt in formats:
            pt = _small_int(fmt, 127)
            if pt is None:
                raise SdpParseError(f"bad RTP payload type {fmt[:10]!r}")
            pts.append(pt)
    rtcp_port, rtcp_addr = _rtcp_attribute(attrs)
    crypto_lines = [v.split() for n, v in attrs if n == "crypto" and v and len(v.split()) > 2]
    crypto = tuple(c[1] for c in crypto_lines)
    return MediaDescription(
        media=media,
        port=port,
        port_count=count,
        proto=proto,
        formats=formats,
        connection=section.connection or session_conn,
        direction=_direction(attrs) or session_dir or Direction.SENDRECV,
        rtcp_port_attr=rtcp_port,
        rtcp_address_attr=rtcp_addr,
        rtcp_mux=any(n == "rtcp-mux" for n, _ in attrs),
        ptime_ms=_float_attribute(attrs, "ptime"),
        maxptime_ms=_float_attribute(attrs, "maxptime"),
        crypto_suites=crypto,
        payloads=_payloads(pts, attrs),
        attributes=tuple(attrs),
        crypto_trailers=tuple(trailer_bytes(c[1], c[2]) for c in crypto_lines),
    )


def _rtcp_attribute(attrs: list[Attribute]) -> tuple[int | None, str | None]:
    """`a=rtcp:<port> [IN IP4 <address>]` (RFC 3605 §2.1); malformed is ignored."""
    for name, value in attrs:
        if name != "rtcp" or not value:
            continue
        parts = value.split()
        port = _small_int(parts[0], 65535)
        if port is None:
            continue
        address = parts[3] if len(parts) == 4 and parts[1].upper() == "IN" else None
        return port, address
    return None, None


def _float_attribute(attrs: list[Attribute], wanted: str) -> float | None:
    for name, value in attrs:
        if name == wanted and value:
            try:
                number = float(value.split()[0])
            except ValueError:
                continue
            if 0 < number < 100_000:  # also rejects nan and inf
                return number
    return None


def _payloads(pts: list[int], attrs: list[Attribute]) -> tuple[PayloadType, ...]:
    rtpmap: dict[int, tuple[str, int, int]] = {}
    fmtp: dict[int, str] = {}
    for name, value in attrs:
        if not value or name not in ("rtpmap", "fmtp"):
            continue
        pt_text, _, rest = value.partition(" ")
        pt = _small_int(pt_text, 127)
        if pt is None:
            continue
        if name == "fmtp":
            fmtp.setdefault(pt, rest.strip())
            continue
        parsed = _parse_rtpmap(rest.strip())
        if parsed is not None:
            rtpmap.setdefault(pt, parsed)
    out: list[PayloadType] = []
    for pt in pts:
        if pt in rtpmap:
            encoding, clock, channels = rtpmap[pt]
            out.append(PayloadType(pt, canonical_name(encoding), clock, channels,
                                   fmtp.get(pt), False))
        elif pt in STATIC_PAYLOAD_TYPES:
            static = STATIC_PAYLOAD_TYPES[pt]
            out.append(
                PayloadType(
                    pt, static.name, static.clock_rate or 0, static.channels, fmtp.get(pt), True
                )
            )
    return tuple(out)


def _parse_rtpmap(text: str) -> tuple[str, int, int] | None:
    """`<encoding name>/<clock rate>[/<channels>]` (RFC 4566 §6)."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not parts[0]:
        return None
    clock = _small_int(parts[1].strip(), 10_000_000)
    channels = _small_int(parts[2].strip(), 255) if len(parts) == 3 else 1
    if not clock or not channels:
        return None
    return parts[0].strip(), clock, channels
