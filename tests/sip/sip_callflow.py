"""Build the SIP messages of a call (RFC 3261 §24 style) and feed them to a tracker."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.sip.events import Endpoint, SipEvent
from agent.sip.message import parse_message
from agent.sip.tracker import SipTracker

ALICE = Endpoint.of("192.0.2.10", 5060)
BOB = Endpoint.of("198.51.100.20", 5060)
REASONS = {
    100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 401: "Unauthorized",
    407: "Proxy Authentication Required", 481: "Call/Transaction Does Not Exist",
    486: "Busy Here", 487: "Request Terminated", 503: "Service Unavailable",
}  # fmt: skip


def sdp(addr: str, port: int, direction: str = "sendrecv", version: int = 1) -> bytes:
    return (
        "v=0\r\n"
        f"o=- 4711 {version} IN IP4 {addr}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {addr}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 101\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        f"a={direction}\r\n"
    ).encode()


OFFER = sdp("192.0.2.10", 40000)
ANSWER = sdp("198.51.100.20", 50000)


def _message(start: str, headers: list[str], body: bytes | None) -> bytes:
    if body is not None:
        headers = [*headers, "Content-Type: application/sdp"]
    headers = [*headers, f"Content-Length: {len(body or b'')}"]
    return ("\r\n".join([start, *headers]) + "\r\n\r\n").encode() + (body or b"")


@dataclass
class CallFlow:
    """One Call-ID between Alice (caller) and Bob; tags and CSeqs as a UA would pick."""

    call_id: str = "a84b4c76e66710@pc33.example.com"
    caller_tag: str = "1928301774"
    callee_tag: str = "a6c85cf"
    cseq: int = 314159
    _branches: dict[tuple[str, int], str] = field(default_factory=dict)

    def _branch(self, method: str, cseq: int) -> str:
        # ACK for a non-2xx shares the INVITE's branch (§17.1.1.3); others get their own.
        return self._branches.setdefault((method, cseq), f"z9hG4bK{method.lower()}{cseq}")

    def request(
        self,
        method: str,
        *,
        cseq: int | None = None,
        from_callee: bool = False,
        to_tag: str | None = None,
        body: bytes | None = None,
        branch: str | None = None,
        user_agent: str | None = None,
    ) -> bytes:
        cseq = self.cseq if cseq is None else cseq
        alice = f"<sip:alice@atlanta.example.com>;tag={self.caller_tag}"
        bob = "<sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else "")
        if from_callee:
            alice, bob = f"<sip:bob@biloxi.example.com>;tag={to_tag}", alice
        headers = [
            f"Via: SIP/2.0/UDP host.example.com;branch={branch or self._branch(method, cseq)}",
            "Max-Forwards: 70",
            f"From: {alice}",
            f"To: {bob}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
        ]
        if user_agent:
            headers.append(f"User-Agent: {user_agent}")
        uri = "sip:alice@192.0.2.10" if from_callee else "sip:bob@biloxi.example.com"
        return _message(f"{method} {uri} SIP/2.0", headers, body)

    def invite(self, body: bytes | None = OFFER, **kw: object) -> bytes:
        return self.request("INVITE", body=body, user_agent="TestPhone/1.0", **kw)  # type: ignore[arg-type]

    def response(
        self,
        code: int,
        *,
        method: str = "INVITE",
        cseq: int | None = None,
        to_tag: str | None = None,
        body: bytes | None = None,
        from_callee: bool = False,
    ) -> bytes:
        """A response to a request of the caller (or of the callee with ``from_callee``)."""
        cseq = self.cseq if cseq is None else cseq
        tag = self.callee_tag if to_tag is None else to_tag
        alice = f"<sip:alice@atlanta.example.com>;tag={self.caller_tag}"
        bob = "<sip:bob@biloxi.example.com>" + (f";tag={tag}" if code != 100 else "")
        if from_callee:
            alice, bob = f"<sip:bob@biloxi.example.com>;tag={tag}", alice
        headers = [
            f"Via: SIP/2.0/UDP host.example.com;branch={self._branch(method, cseq)}",
            f"From: {alice}",
            f"To: {bob}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
        ]
        return _message(f"SIP/2.0 {code} {REASONS.get(code, 'Whatever')}", headers, body)


@dataclass
class Wire:
    """Feeds messages to a tracker as if captured between Alice and Bob."""

    tracker: SipTracker = field(default_factory=SipTracker)
    events: list[SipEvent] = field(default_factory=list)

    def caller(self, data: bytes, ts: float, dscp: int = 26) -> list[SipEvent]:
        return self._feed(data, ALICE, BOB, ts, dscp)

    def callee(self, data: bytes, ts: float, dscp: int = 26) -> list[SipEvent]:
        return self._feed(data, BOB, ALICE, ts, dscp)

    def _feed(
        self, data: bytes, src: Endpoint, dst: Endpoint, ts: float, dscp: int
    ) -> list[SipEvent]:
        out = self.tracker.feed(parse_message(data), src, dst, ts, dscp, "udp")
        self.events.extend(out)
        return out
