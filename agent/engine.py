"""The sans-IO pipeline: `Batch` in, events out; a router and a clock, nothing more.

`Engine.feed(batch)` replaces HEP datagrams by the packets they carry
(`agent.decode.hep_unwrap`), decodes the batch and routes each UDP/TCP frame:

- SIP: UDP or TCP payloads that start like a SIP message (any port; TCP
  through `SipTcpReassembler`), parsed and fed to the dialog tracker; TLS on
  5061 is counted as encrypted signalling (its media is still measured);
- RTCP: version 2 with packet type 200..207 in the second byte (RFC 5761 §4),
  fed to the `RtcpMonitor`;
- everything else UDP: RTP candidates for the `StreamTracker`.

Time order inside a batch. Every packet takes effect at its own time, in
arrival order, while RTP stays vectorised: SIP messages and timers are *events*,
taken in time order, and the RTP rows between them go to the tracker in as few
sub-batches as their dependencies allow. An RTP row depends on an event only
when the event names one of its endpoints: a message whose SDP announces it (what
the media index says there), a timer that reads or closes the media there (a
call's liveness or linger, a stream going idle, an unsignalled stream's pseudo-call:
each component's `due_by`). So a row is fed after the last earlier event naming
it and before the first later one, and otherwise whenever the fewest feeds allow
(`_feeds`); a run of rows is cut only where a timer's own media follows it, or an
interval boundary (which reads every stream). That is exact because SIP never
reads RTP state but through such an event; RTCP and TCP reassembly keep their
own time and touch nothing else, so they need no cut.

Timers: each component owns its own (`next_deadline()` / `expire(now)`: SIP
setup and linger timers, stream idle, call liveness, linger, intervals); the
engine's `next_deadline()` is their minimum and a deadline fires before the
first packet at or after it (on the running maximum of packet time, so a
capture whose clock steps back cannot stall a timer). The driver calls
`tick(now)` while no packets come (the live agent); `finish(reason)` ends
everything at the end of input. Hence the output is a function of the packet
sequence and packet time alone, whatever the batch sizes: `voipprobe analyze`
and the live agent drive the very same object, and a property test holds it.

The engine never reads a clock, opens a socket or logs; joining media to calls
is the call layer's (`agent.calls.table`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.calls.events import Event
from agent.calls.evidence import EvidenceKeeper
from agent.calls.labels import message_peer
from agent.calls.table import CallTable
from agent.capture.batch import Batch
from agent.capture.points import Sightings
from agent.config import Config
from agent.counters import (
    DECODE_DROP_REASONS,
    HEP_TCP_UNFRAMED_REASONS,
    HEP_VERSIONS,
    CounterSnapshot,
    EvidenceCounts,
    HepCounts,
)
from agent.decode import Decoder, TunnelPorts
from agent.decode.counters import DecodeLimits
from agent.decode.endpoint import Endpoint, with_rtcp_ports
from agent.decode.frames import IPPROTO_TCP, IPPROTO_UDP, Frames
from agent.decode.hep_unwrap import HepUnwrapper
from agent.rtcp.monitor import RtcpMonitor
from agent.rtp.tracker import StreamTracker, TrackerConfig
from agent.sip.errors import SdpParseError, SipParseError
from agent.sip.events import EndReason
from agent.sip.limits import MessageLimits
from agent.sip.message import SipMessage, is_keepalive, looks_like_sip, parse_message
from agent.sip.sdp import SessionDescription, parse_sdp, remember
from agent.sip.tcpstream import SipTcpReassembler
from agent.sip.tracker import SipTracker

SIP_TLS_PORT = 5061  # RFC 3261 §26.2: sips; encrypted, counted, not decoded
I64 = npt.NDArray[np.int64]
_M64 = (1 << 64) - 1
Parsed = tuple[SipMessage, str, bytes]  # a message, its transport, its bytes
# a region keeps its SDP parses (for the dialog, which reads them again) up to this
_KEEP_SDP_BYTES = 1 << 20
Naming = tuple[float, set[int]]  # a timer due then, the endpoint keys it reads or closes


class PacketTap(Protocol):
    """What a sink that forwards captured packets (HEP out, `agent.export.hepout`) is
    handed: each SIP message the engine parsed, in packet order, and each RTCP packet it
    fed, in the order it feeds them (RTCP touches no SIP state, so it may come before a
    SIP message of the same region; copies seen at a second point are left out), with
    its frames row and the call it belongs to. The tap must only
    copy what it needs (``f`` is reused) and never block; it changes nothing the engine
    computes."""

    def sip(self, f: Frames, row: int, data: bytes, transport: str, call_id: str) -> None: ...

    def rtcp(self, f: Frames, row: int, payload: bytes, call_id: str | None) -> None: ...

    def rtp(self, f: Frames, rows: I64) -> None:
        """The rows the engine feeds as RTP (a batch's, in packet order)."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    config: Config = field(default_factory=Config)

    def tunnel_ports(self) -> TunnelPorts:
        capture = self.config.capture
        return TunnelPorts.of(vxlan=capture.vxlan_ports, tzsp=capture.tzsp_ports)

    def tracker(self) -> TrackerConfig:
        tables = self.config.tables
        return TrackerConfig(max_streams=tables.rtp_streams,
                             max_candidates=tables.rtp_candidates,
                             idle_timeout_s=self.config.calls.media_idle_timeout_s,
                             jitter_buffer=self.config.quality.jitter_buffer)

    def limits(self) -> MessageLimits:
        return MessageLimits(**self.config.sip_limits.model_dump())

    def decode_limits(self) -> DecodeLimits:
        tables = self.config.tables
        return DecodeLimits(max_fragment_sets=tables.fragment_sets,
                            max_fragment_total_bytes=tables.fragment_total_bytes)


@dataclass(slots=True)
class RouteCounters:
    sip_udp: int = 0
    sip_tcp_segments: int = 0
    sip_messages: int = 0
    sip_parse_errors: int = 0
    # datagrams accepted though their body is short of Content-Length by exactly its
    # bare-LF line ends (CRLF counted, LF sent: `agent.sip.message`)
    sip_body_length_lenient: int = 0
    sip_keepalives: int = 0
    sip_tls_packets: int = 0  # encrypted signalling, not decoded
    rtcp_packets: int = 0
    # the same message seen again at another observation point (agent/capture/points.py
    # `Sightings`): one message of the call, not a retransmission
    sip_copies: int = 0
    rtcp_copies: int = 0
    rtp_candidates: int = 0
    # RTP-or-unknown UDP rows dropped while the driver sheds all media (`Engine.shed_media`)
    shed_media_rows: int = 0
    timer_stalls: int = 0  # a timer that did not move on after firing (a bug: counted)
    # messages dropped past a limit of `agent.sip.limits` (also in sip_parse_errors)
    sip_over_header_bytes: int = 0
    sip_over_headers: int = 0
    sip_over_header_line_bytes: int = 0
    sip_over_content_length: int = 0
    sip_over_multipart_depth: int = 0
    sip_over_sdp_media: int = 0
    sip_over_sdp_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in RouteCounters.__dataclass_fields__}


class Engine:
    """Feed batches in packet-time order; collect events."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        cfg = self.config.config
        tables = cfg.tables
        self.limits = self.config.limits()
        self.decoder = Decoder(self.config.decode_limits(), tunnel_ports=self.config.tunnel_ports())
        # HEP inside a VXLAN/TZSP mirror is found too: the same tunnel ports
        self.hep = HepUnwrapper(cfg.capture.hep_ports, tunnel_ports=self.config.tunnel_ports())
        self.streams = StreamTracker(self.config.tracker())
        self.sip = SipTracker(max_dialogs=tables.sip_dialogs,
                              setup_timeout_s=cfg.calls.setup_timeout_s,
                              max_sdp_bytes=tables.sdp_bytes,
                              peer_of=message_peer(cfg.sla.peers))
        self.tcp = SipTcpReassembler(max_streams=tables.tcp_streams,
                                     max_buffer_bytes=tables.tcp_buffer_bytes,
                                     max_total_bytes=tables.tcp_total_bytes, limits=self.limits)
        self.rtcp = RtcpMonitor(max_sources=tables.rtcp_sources)
        self.calls = CallTable(cfg, self.rtcp, streams=self.streams, sip=self.sip)
        self.streams.hints = self.calls.index  # the one SDP index, below it an interface
        # evidence pcaps (agent/calls/evidence.py): None, and no cost, when off
        self.evidence = EvidenceKeeper(cfg.evidence) if cfg.evidence.enabled else None
        self.calls.evidence = self.evidence
        self.tap: PacketTap | None = None  # HEP out: the daemon installs one
        self.route = RouteCounters()
        self.shed_media = False  # set by the live driver when far behind (see `shed`)
        self.sightings = Sightings()  # SIP and RTCP seen at several points: once
        self._rtcp_like = np.zeros(0, bool)  # per row of the batch being routed
        self.packets = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.clock: float | None = None  # engine time: the latest packet time (or tick)
        self._fired: float = -np.inf  # the latest deadline fired

    def reconfigure(self, config: Config) -> list[str]:
        """Apply a reloaded configuration without losing running calls or streams.

        SLA profiles, quality settings and call timeouts are read when a record is
        made or a timer is re-armed, so they apply at once, as do the SIP message
        limits. Returns the settings only a restart applies: the jitter-buffer model
        (running streams carry state built with the old one) and the table caps.
        """
        old = self.config.config
        self.config = EngineConfig(config=config)
        self.calls.config = config
        self.calls.intervals.config = config
        self.sip.setup_timeout_s = config.calls.setup_timeout_s
        self.sip.peer_of = message_peer(config.sla.peers)
        self.decoder.tunnel_ports = self.config.tunnel_ports()
        self.limits = self.tcp.limits = self.config.limits()
        self.streams.config = replace(self.streams.config,
                                      idle_timeout_s=config.calls.media_idle_timeout_s)
        if self.evidence is not None and config.evidence.enabled:
            self.evidence.config = config.evidence  # new caps apply at once
        elif config.evidence.enabled != old.evidence.enabled:  # on: calls from now on
            self.evidence = EvidenceKeeper(config.evidence) if config.evidence.enabled \
                else None
            self.calls.evidence = self.evidence
        restart = ["quality.jitter_buffer"] if config.quality.jitter_buffer != \
            old.quality.jitter_buffer else []
        return restart + (["tables"] if config.tables != old.tables else [])

    # -- load shedding (set by the driver) ---------------------------------------------

    @property
    def shed(self) -> bool:
        """Whether RTP candidate discovery is shed: the live driver sets it while it is
        behind (`agent.daemon`), never packet content. SIP, RTCP, open streams and media
        SDP announced are processed as ever; rows of other unknown flows are dropped
        and counted (``rtp_shed_rows``). `shed_media`, set when the driver is far
        behind, drops every RTP or unknown UDP row too (``route_shed_media_rows``): only
        SIP and RTCP are processed. Off, the output is a function of the packets."""
        return self.streams.shed

    @shed.setter
    def shed(self, on: bool) -> None:
        self.streams.shed = on

    # -- feeding ----------------------------------------------------------------------

    def feed(self, batch: Batch) -> list[Event]:
        """Process one batch; returns the events it completed (timers due inside it too)."""
        n = len(batch)
        if n == 0:
            return []
        self.packets += n
        batch = self.hep.unwrap(batch)  # HEP datagrams -> the packets they carry
        if len(batch) == 0:
            return []
        if self.first_ts is None:
            self.first_ts = float(batch.ts[0])
        self.last_ts = float(batch.ts[-1])
        frames = self.decoder.decode(batch)
        out: list[Event] = []
        if len(frames):
            self._route(frames, out)
        return out

    def _route(self, f: Frames, out: list[Event]) -> None:
        plen = f.payload_len
        first = np.where(plen > 0, f.data[np.minimum(f.payload_off, f.data.size - 1)], 0)
        second = np.where(plen > 1, f.data[np.minimum(f.payload_off + 1, f.data.size - 1)], 0)
        udp = f.proto == IPPROTO_UDP
        # SIP over TLS: TCP on 5061 carrying TLS records (content types 20..23). Plain
        # SIP over UDP from port 5061 exists (the Wireshark sample capture has it).
        tls = ((f.proto == IPPROTO_TCP) & ((f.sport == SIP_TLS_PORT) | (f.dport == SIP_TLS_PORT))
               & (first >= 0x14) & (first <= 0x17))
        # SIP starts with an upper-case method or "SIP/2.0"; CRLF keep-alives too.
        # RTP/RTCP start with 0b10 (0x80..0xBF): the two sets never overlap.
        textual = ((first >= 0x41) & (first <= 0x5A)) | (first == 0x0D) | (first == 0x00)
        rtcp_like = udp & (first >> 6 == 2) & (second >= 200) & (second <= 207)
        self.route.sip_tls_packets += int(np.count_nonzero(tls))
        messages = self._sip_payloads(f, np.flatnonzero(udp & textual),
                                      np.flatnonzero((f.proto == IPPROTO_TCP) & ~tls & (plen > 0)))
        # RTP and RTCP rows: `_feed_rtp` tells them apart where they take effect
        rtp = np.flatnonzero(udp & ~textual).astype(np.int64)
        start = -np.inf if self.clock is None else self.clock
        clock = np.maximum.accumulate(np.maximum(f.ts, start))  # never steps back
        # A payload that does not parse has no effect but a counter.
        parsed = {i: ms for i, ms in ((i, [p for p in (self._parse(d, t) for d, t in m)
                                           if p is not None]) for i, m in messages.items())
                  if ms}
        sip_rows = np.array(sorted(parsed), np.int64)
        # UDP that is not SIP after all may be UDPTL (a UDPTL packet starts with its
        # sequence number, any byte): `_feed_rtp` tells, at its point of the signalling
        not_sip = np.setdiff1d(np.flatnonzero(udp & textual), sip_rows)
        if not_sip.size:  # (a union sorts the whole batch's rows again)
            rtp = np.union1d(rtp, not_sip)
        if self.shed_media:  # far behind: only signalling (SIP, RTCP) is processed
            keep = rtcp_like[rtp]
            self.route.shed_media_rows += int(rtp.size - np.count_nonzero(keep))
            rtp = rtp[keep]
        self._rtcp_like = rtcp_like
        self.route.rtp_candidates += int(np.count_nonzero(~rtcp_like[rtp]))
        step = self.config.config.calls.interval_s
        # the shortest time from a packet to a timer it can arm: idle, linger, liveness,
        # setup (all configurable, so taken as configured)
        calls = self.config.config.calls
        horizon = min(self.streams.config.idle_timeout_s, self.calls.linger_s,
                      calls.report_linger_s, calls.media_idle_timeout_s,
                      calls.signalling_idle_timeout_s, self.sip.setup_timeout_s,
                      self.sip.ended_linger_s)
        pos, n, all_rows = 0, len(f), Rows(rtp, sip_rows, clock)
        while pos < n:
            due = self._due()
            k = n if due is None else max(pos, int(np.searchsorted(clock, due)))
            if due is not None and k == pos:  # a timer is due before this row
                out.extend(self._fire(due))
                continue
            c = float(clock[pos])
            limit = min((math.floor(c / step) + 1) * step, c + horizon)
            end = max(pos + 1, int(np.searchsorted(clock, limit)))
            timers: list[Naming] = []
            if k < end:  # timers come due among these rows: fire them inside if they can
                inside = self._inside(f, all_rows, pos, end)
                end, timers = (min(k, end), []) if inside is None else inside
            self._region(f, pos, end, all_rows, parsed, out, timers)
            pos = end

    def _inside(self, f: Frames, rows: Rows, lo: int, hi: int
                ) -> tuple[int, list[Naming]] | None:
        """The timers due by row ``hi - 1`` that may fire among rows [lo, end) without a
        cut, and that ``end``: each timer names the endpoints whose media it reads or
        closes (`CallTable.due_by`, `StreamTracker.due_by`, SIP's setup and BYE timers,
        their calls'), and the rows stop before the first RTP row of such an endpoint
        at or after the timer's time (that row must see the timer's effect: a cut).
        None: a timer that reads everything (an interval boundary) is due."""
        t = float(rows.clock[hi - 1])
        calls = self.calls.due_by(t)
        if calls is None:
            return None
        due = [(d, {_endpoint_key(e) for e in eps}) for d, eps in calls]
        due += [(d, {_endpoint_key(e) for e in eps}) for d, eps in self.streams.due_by(t)]
        due += [(d, {_endpoint_key(e) for e in self.calls.media_endpoints(cid)})
                for d, cid in self.sip.due_by(t)]
        if not due:
            return hi, []
        earliest: dict[int, float] = {}
        for d, named in due:
            for key in named:
                if d < earliest.get(key, math.inf):
                    earliest[key] = d
        order = sorted(earliest)
        keys = np.array(order, np.uint64)
        since = np.array([earliest[k] for k in order], np.float64)
        a, b = np.searchsorted(rows.rtp, [lo, hi]).tolist()
        rtp = rows.rtp[a:b]
        end = hi
        for ep in _row_endpoints(f, rtp):
            at = np.minimum(np.searchsorted(keys, ep), keys.size - 1)
            hit = np.flatnonzero((keys[at] == ep) & (rows.clock[rtp] >= since[at]))
            if hit.size:
                end = min(end, int(rtp[hit[0]]))
        if end <= lo:
            return None
        last = float(rows.clock[end - 1])
        return end, [(d, named) for d, named in due if d <= last]

    def _region(self, f: Frames, lo: int, hi: int, rows: Rows,
                parsed: dict[int, list[Parsed]], out: list[Event],
                timers: list[Naming]) -> None:
        """Rows [lo, hi): no timer that they arm comes due among them (a region never
        crosses an interval boundary nor outlasts the shortest timer a packet arms), and
        the timers due among them (``timers``: each with the endpoints it names) see no
        RTP row of those endpoints at or after their time (`_inside`). SIP messages and
        timers take effect in time order. An RTP row depends on such an event only when
        the event names one of the row's endpoints (a message's SDP changes what the
        media index says there, or closes a stream there; a timer reads or closes the
        media there): it must go to the tracker after the last earlier event naming it
        and before the first later one. Each row gets the earliest such slot that the
        fewest tracker feeds allow (`_feeds`): a stream's own rows stay in order, and
        RTP stays vectorised."""
        self.clock = float(rows.clock[hi - 1])
        self._fired = -np.inf
        a, b = np.searchsorted(rows.rtp, [lo, hi]).tolist()
        rtp = rows.rtp[a:b]
        a, b = np.searchsorted(rows.sip, [lo, hi]).tolist()
        sip = rows.sip[a:b].tolist()
        # event positions: a message at row i is 2i + 1, a timer firing before row p 2p
        events: dict[int, set[int]] = {}
        sdps: dict[int, list[tuple[bytes, SessionDescription]]] = {}
        kept = 0  # SDP bytes whose parse is kept for the dialog (bounded)
        for i in sip:
            eps, descs = _sdp_endpoints(parsed[i])
            events[2 * i + 1] = {_endpoint_key(e) for e in eps}
            if descs and kept < _KEEP_SDP_BYTES:
                sdps[i] = descs
                kept += sum(len(body) for body, _ in descs)
        fire_at: dict[int, float] = {}
        for d, keys in timers:
            at = 2 * int(np.searchsorted(rows.clock, d))
            events.setdefault(at, set()).update(keys)
            fire_at[at] = max(fire_at.get(at, -math.inf), d)
        end = 2 * len(f) + 2
        feeds = _feeds(2 * rtp + 1, *_row_endpoints(f, rtp), events, end)
        for at in sorted(events):
            if at in feeds:
                self._feed_rtp(f, rtp[feeds[at]], out)
            if at in fire_at:
                self._fire_upto(fire_at[at], out)
            if at & 1:
                i = at >> 1
                self._fire_upto(float(rows.clock[i]), out)
                for body, desc in sdps.get(i, ()):  # parsed above, read by the dialog
                    remember(body, desc)
                for msg, transport, data in parsed[i]:
                    self._sip_message(f, i, msg, transport, out)
                    if self.evidence is not None and msg.call_id in self.calls:
                        self.evidence.sip(msg.call_id, f, i, data, transport)
                    if self.tap is not None:
                        self.tap.sip(f, i, data, transport, msg.call_id)
        if end in feeds:
            self._feed_rtp(f, rtp[feeds[end]], out)

    def _fire_upto(self, t: float, out: list[Event]) -> None:
        """Fire, in deadline order, every timer due by packet time ``t``."""
        while (due := self._due()) is not None and due <= t:
            out.extend(self._fire(due))

    def _udptl_keys(self) -> npt.NDArray[np.uint64]:
        eps = self.calls.index.udptl_endpoints()
        return np.array(sorted(_endpoint_key(e) for e in eps), np.uint64)

    def _feed_rtp(self, f: Frames, rows: I64, out: list[Event]) -> None:
        if rows.size == 0:
            return
        udptl = self._udptl_keys()  # T.38 endpoints as the signalling stands now
        rtcp = self._rtcp_like[rows]
        if udptl.size:  # UDPTL is sent *to* the endpoint that announced it; what that
            # endpoint sends may still be RTP (the other side's SDP names its own)
            to_udptl = _member(_row_endpoints(f, rows)[1], udptl)
            rtcp &= ~to_udptl
        if self.evidence is not None:
            kept = rows if not udptl.size else rows[~to_udptl]  # T.38 is fax data
            self.evidence.media(f, kept, rtcp if not udptl.size else rtcp[~to_udptl],
                                self.calls.live_call_of)
        for i in rows[rtcp].tolist():
            self.route.rtcp_packets += 1
            payload, ts = f.payload(i), float(f.ts[i])
            if self.sightings.is_copy(payload, int(f.point[i]), ts):
                self.route.rtcp_copies += 1
            else:
                self.rtcp.feed(payload, ts)
                if self.tap is not None:
                    self.tap.rtcp(f, i, payload, self._call_of(f, i))
        media = rows[~rtcp & ~to_udptl] if udptl.size else rows[~rtcp]
        if self.tap is not None:
            self.tap.rtp(f, media)
        if udptl.size:
            res = self.streams.feed(f, media, udptl=rows[to_udptl])
        else:
            res = self.streams.feed(f, media)
        now = self.clock if self.clock is not None else 0.0
        for s in res.ended:
            out.extend(self.calls.stream_ended(s, now))
        for st in res.started:
            self.calls.stream_started(st)

    def _call_of(self, f: Frames, i: int) -> str | None:
        """The Call-ID of the running call an RTCP row belongs to: its media joins that
        call on these ports (rtcp-mux) or one below (RFC 3550 §11); None: no call."""
        src_hi, src_lo, dst_hi, dst_lo = (int(f.src_hi[i]), int(f.src_lo[i]),
                                          int(f.dst_hi[i]), int(f.dst_lo[i]))
        sport, dport, ts = int(f.sport[i]), int(f.dport[i]), float(f.ts[i])
        for below in (0, 1):
            cid = self.calls.live_call_of(Endpoint(src_hi, src_lo, sport - below),
                                          Endpoint(dst_hi, dst_lo, dport - below), ts)
            if cid is not None:
                return cid
        return None

    def _sip_payloads(self, f: Frames, udp_rows: I64, tcp_rows: I64
                      ) -> dict[int, list[tuple[bytes, str]]]:
        """Row -> the SIP messages it completes (TCP reassembly keeps its own time, so
        all of a batch's segments go through it first). A TCP stream is reassembled per
        observation point; a message already seen at another point is left out (a
        copy, counted)."""
        out: dict[int, list[tuple[bytes, str]]] = {}
        for i in udp_rows.tolist():
            payload = f.payload(i)
            if is_keepalive(payload):
                self.route.sip_keepalives += 1
            elif looks_like_sip(payload):
                self.route.sip_udp += 1
                if self.sightings.is_copy(payload, int(f.point[i]), float(f.ts[i])):
                    self.route.sip_copies += 1
                else:
                    out[i] = [(payload, "udp")]
        for i in tcp_rows.tolist():
            point = int(f.point[i])
            key = (int(f.src_hi[i]), int(f.src_lo[i]), int(f.sport[i]),
                   int(f.dst_hi[i]), int(f.dst_lo[i]), int(f.dport[i]), point)
            self.route.sip_tcp_segments += 1
            ts = float(f.ts[i])
            msgs = self.tcp.feed(key, int(f.tcp_seq[i]), int(f.tcp_flags[i]), f.payload(i), ts)
            for m in msgs:
                if self.sightings.is_copy(m, point, ts):
                    self.route.sip_copies += 1
                else:
                    out.setdefault(i, []).append((m, "tcp"))
        return out

    def _parse(self, data: bytes, transport: str) -> Parsed | None:
        try:
            msg = parse_message(data, self.limits)
        except SipParseError as err:
            self.route.sip_parse_errors += 1
            if err.limit is not None:
                name = f"sip_over_{err.limit}"
                setattr(self.route, name, getattr(self.route, name) + 1)
            return None
        self.route.sip_messages += 1
        if msg.body_length_lenient:
            self.route.sip_body_length_lenient += 1
        return msg, transport, data

    def _sip_message(self, f: Frames, i: int, msg: SipMessage, transport: str,
                     out: list[Event]) -> None:
        src = Endpoint(int(f.src_hi[i]), int(f.src_lo[i]), int(f.sport[i]))
        dst = Endpoint(int(f.dst_hi[i]), int(f.dst_lo[i]), int(f.dport[i]))
        for e in self.sip.feed(msg, src, dst, float(f.ts[i]), int(f.dscp[i]), transport):
            out.extend(self.calls.on_sip(e))

    # -- time -------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest packet time at which a timer of the pipeline is due."""
        ds = [d for d in (self.sip.next_deadline(), self.streams.next_deadline(),
                          self.calls.next_deadline()) if d is not None]
        return min(ds) if ds else None

    def _due(self) -> float | None:
        d = self.next_deadline()
        if d is not None and d == self._fired:  # fired, yet still due: a timer that does
            self.route.timer_stalls += 1  # not move on (a bug) must not hang the probe
            return None
        return d

    def _fire(self, due: float) -> list[Event]:
        """Every timer due at packet time ``due``, in a fixed order (SIP, RTP, calls)."""
        self._fired = due
        self.clock = due if self.clock is None else max(self.clock, due)
        out: list[Event] = []
        for e in self.sip.expire(due):
            out.extend(self.calls.on_sip(e))
        for s in self.streams.expire(due):
            out.extend(self.calls.stream_ended(s, due))
        out.extend(self.calls.expire(due, latest=self.clock))
        return out

    def tick(self, now: float) -> list[Event]:
        """Packet time has reached ``now`` with no packet (the live agent, idle): fire
        what is due, each timer at its own deadline."""
        out: list[Event] = []
        while (due := self._due()) is not None and due <= now:
            out.extend(self._fire(due))
        self.clock = now if self.clock is None else max(self.clock, now)
        return out

    def finish(self, reason: EndReason = EndReason.SHUTDOWN) -> list[Event]:
        """End of input: every remaining stream, dialog and call ends (``reason``:
        SHUTDOWN for the probe stopping, CAPTURE_END at the end of a capture file)."""
        now = self.clock if self.clock is not None else 0.0
        out = self.tick(now)  # what was already due at the end of input ends as such
        for s in self.streams.finish():
            out.extend(self.calls.stream_ended(s, now))
        for e in self.sip.finish(now, reason):
            out.extend(self.calls.on_sip(e))
        out.extend(self.calls.finish())
        return out

    def counters(self) -> dict[str, int]:
        """Every drop and table counter of the pipeline, prefixed by its stage."""
        out: dict[str, int] = {"packets": self.packets}
        for prefix, counts in (
            ("decode", self.decoder.counters.as_dict()),
            ("hep", {**self.hep.counters.as_dict(), **self.hep.tcp.counters.as_dict()}),
            ("route", self.route.as_dict()),
            ("rtp", self.streams.counters.as_dict()),
            ("sip", self.sip.counters.as_dict()),
            ("sip_tcp", self.tcp.counters.as_dict()),
            ("rtcp", self.rtcp.counters.as_dict()),
            ("calls", self.calls.counters.as_dict()),
            ("sdp_index", self.calls.index.counters.as_dict()),
            ("intervals", self.calls.intervals.counters.as_dict()),
            ("evidence", self.evidence.counters.as_dict() if self.evidence is not None else {}),
        ):
            out.update({f"{prefix}_{k}": v for k, v in counts.items()})
        return out

    def snapshot(self) -> CounterSnapshot:
        """The totals as the sinks read them, typed (`agent.counters`), read from each
        stage's counters by attribute; ``totals`` is `counters()`."""
        dec, hep, tcp = self.decoder.counters, self.hep.counters, self.hep.tcp.counters
        sip, calls = self.sip.counters, self.calls.counters
        ev = self.evidence.counters if self.evidence is not None else None
        return CounterSnapshot(
            packets=self.packets,
            calls_started=calls.calls_started,
            calls_ended=calls.calls_ended,
            sip_requests=dict(sip.requests_by_peer),
            sip_responses=dict(sip.responses_by_class),
            parse_errors={"sip": self.route.sip_parse_errors, "sdp": sip.sdp_errors,
                          "rtcp": self.rtcp.counters.parse_errors,
                          "vq-rtcpxr": sip.vq_report_errors},
            endpoint_reports={
                "received": sip.vq_reports, "malformed": sip.vq_report_errors,
                "joined": calls.reports_joined, "late": calls.reports_late,
                "unknown_call": calls.reports_unjoined, "unmatched": calls.reports_unmatched},
            decode_drops={r: int(getattr(dec, r)) for r in DECODE_DROP_REASONS},
            table_evictions={
                "decode_fragments": dec.fragments_evicted, "hep_tcp": tcp.evicted,
                "rtp_candidates": self.streams.counters.candidates_evicted,
                "rtp_streams": self.streams.counters.streams_evicted,
                "sip_dialogs": sip.dialogs_evicted, "sip_tcp": self.tcp.counters.evicted,
                "rtcp_sources": self.rtcp.counters.sources_evicted,
                "calls": calls.calls_evicted, "calls_loose": calls.loose_evicted,
                "sdp_index_adverts": self.calls.index.counters.adverts_evicted,
                "sdp_index_endpoints": self.calls.index.counters.endpoints_evicted,
                "intervals_streams": self.calls.intervals.counters.evicted},
            hep=HepCounts(
                packets=hep.packets, bytes=hep.bytes,
                records_by_version={v: int(getattr(hep, f"records_v{v}")) for v in HEP_VERSIONS},
                errors_by_version={v: int(getattr(hep, f"errors_v{v}")) for v in HEP_VERSIONS},
                dropped_by_reason={"duplicate": hep.duplicates, "json_report": hep.skipped_json,
                                   "other_type": hep.skipped_other,
                                   "rtcp_json_malformed": hep.rtcp_json_errors},
                tcp_unframed_by_reason={r: int(getattr(tcp, r))
                                        for r in HEP_TCP_UNFRAMED_REASONS}),
            evidence=EvidenceCounts(packets_dropped={} if ev is None else {
                "call_cap": ev.packets_over_call_cap,
                "buffer_cap": ev.packets_over_buffer_cap}),
            shed={"rtp_candidate": self.streams.counters.shed_rows,
                  "media": self.route.shed_media_rows},
            totals=self.counters(),
        )


@dataclass(frozen=True, slots=True)
class Rows:
    """A batch's rows by role (row numbers, sorted) and its running-maximum clock."""

    rtp: I64
    sip: I64
    clock: npt.NDArray[np.float64]


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _endpoint_key(e: Endpoint) -> int:
    """64-bit mix of an endpoint, as `_row_endpoints` computes it for rows (a collision
    only makes a row wait for a message it does not depend on: never wrong)."""
    m = 0x9E3779B97F4A7C15
    k = ((e.hi * m) & _M64) ^ e.lo
    return (((k * m) & _M64) ^ e.port) & _M64


def _member(values: npt.NDArray[np.uint64], keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    """``np.isin(values, keys)`` for sorted, non-empty ``keys``: one binary search per
    value (np.isin sorts both sides on every call, which dominates on a region's few
    keys)."""
    at = np.minimum(np.searchsorted(keys, values), keys.size - 1)
    found: npt.NDArray[np.bool_] = keys[at] == values
    return found


def _feeds(rows: I64, src: npt.NDArray[np.uint64], dst: npt.NDArray[np.uint64],
           events: dict[int, set[int]], end: int) -> dict[int, I64]:
    """Where each RTP row goes to the tracker: event position -> the rows (indexes into
    ``rows``, in order) fed just before that event, ``end`` for after the last. ``rows``
    and the events are positions on one line (they never coincide); an event names
    endpoint keys. A row must come after the last earlier event naming one of its
    endpoints and no later than the first later one; the fewest feeds meeting that are
    the greedy stabbing of those windows (feed where a window closes, taking every row
    whose window is open). A stream's rows share their naming events, so its windows
    are nested in order and its rows stay in order. The search is one composite binary
    search over (endpoint, event) pairs: the cost is in rows + pairs, not their
    product."""
    pairs = [(k, at) for at, keys in events.items() for k in keys]
    after = np.full(rows.size, -1, np.int64)  # the last earlier event naming the row
    before = np.full(rows.size, end, np.int64)  # the first later one
    if pairs and rows.size:
        key = np.array([k for k, _ in pairs], np.uint64)
        uniq, rank = np.unique(key, return_inverse=True)
        width = end + 1
        comp = np.sort(rank.astype(np.int64) * width + np.array([a for _, a in pairs], np.int64))
        for ep in (src, dst):
            u = np.minimum(np.searchsorted(uniq, ep), uniq.size - 1)
            known = uniq[u] == ep
            nxt = np.minimum(np.searchsorted(comp, u * width + rows), comp.size - 1)
            ok = known & (comp[nxt] // width == u) & (comp[nxt] % width > rows)
            before = np.where(ok, np.minimum(before, comp[nxt] % width), before)
            prv = np.searchsorted(comp, u * width + rows) - 1
            ok = known & (prv >= 0) & (comp[np.maximum(prv, 0)] // width == u)
            after = np.where(ok, np.maximum(after, comp[np.maximum(prv, 0)] % width), after)
    # greedy: walk the windows' closing events in order; feed at one when a row whose
    # window closes there is not fed yet (opened after the last feed)
    closing = before < end
    chosen: list[int] = []
    if closing.any():
        at, inv = np.unique(before[closing], return_inverse=True)
        latest = np.full(at.size, -2, np.int64)
        np.maximum.at(latest, inv, after[closing])
        last = -2
        for c, opened in zip(at.tolist(), latest.tolist(), strict=True):
            if opened >= last:
                chosen.append(c)
                last = c
    slots = np.array([*chosen, end], np.int64)
    fed = slots[np.searchsorted(slots, after, side="right")]  # the first feed after it
    order = np.argsort(fed, kind="stable")
    at, starts = np.unique(fed[order], return_index=True)
    bounds = np.append(starts, order.size).tolist()
    return {c: order[bounds[k]:bounds[k + 1]] for k, c in enumerate(at.tolist())}


def _row_endpoints(f: Frames, rows: I64) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    with np.errstate(over="ignore"):
        src = ((f.src_hi[rows] * _MIX) ^ f.src_lo[rows]) * _MIX ^ f.sport[rows].astype(np.uint64)
        dst = ((f.dst_hi[rows] * _MIX) ^ f.dst_lo[rows]) * _MIX ^ f.dport[rows].astype(np.uint64)
    return src, dst


def _sdp_endpoints(messages: list[Parsed]
                   ) -> tuple[set[Endpoint], list[tuple[bytes, SessionDescription]]]:
    """The media endpoints the messages' SDP names (none when it does not parse), and
    the bodies parsed."""
    named: list[Endpoint] = []
    descs: list[tuple[bytes, SessionDescription]] = []
    for msg, *_ in messages:
        if msg.sdp is None:
            continue
        try:
            desc = parse_sdp(msg.sdp)
        except SdpParseError:
            continue
        descs.append((msg.sdp, desc))
        named += [ep for m in desc.media if (ep := m.rtp_endpoint) is not None]
    # and their RTCP ports: RTCP rows then take effect after the message too, as the
    # evidence buffers (agent/calls/evidence.py) need
    return with_rtcp_ports(named), descs
