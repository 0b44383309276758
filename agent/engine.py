"""The sans-IO pipeline: `Batch` in, events out.

`Engine.feed(batch)` decodes the batch and routes each UDP/TCP frame:

- SIP: UDP or TCP payloads that start like a SIP message (any port; TCP
  through `SipTcpReassembler`), parsed and fed to the dialog tracker;
  TLS on 5061 is counted as encrypted signalling (its media is still measured);
- RTCP: version 2 with packet type 200..207 in the second byte (RFC 5761 §4),
  fed to the `RtcpMonitor`;
- everything else UDP: RTP candidates for the `StreamTracker`.

The call table joins dialogs, streams and RTCP into `CallRecord`s.
`Engine.tick(now)` expires idle state by packet time; `Engine.finish()` ends
everything (end of a capture file, or shutdown). The engine never reads a
clock, opens a socket or logs: `voipprobe analyze` and the live agent drive
the very same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from agent.calls.hints import payload_hints
from agent.calls.record import CallRecord
from agent.calls.table import CallTable
from agent.capture.batch import Batch
from agent.config import Config
from agent.decode import Decoder
from agent.decode.frames import IPPROTO_TCP, IPPROTO_UDP, Frames, format_addr
from agent.quality.model import Quality
from agent.rtcp.monitor import RtcpMonitor
from agent.rtp.model import StreamKey, StreamStats
from agent.rtp.rules import JitterBufferSpec
from agent.rtp.tracker import StreamTracker, TrackerConfig
from agent.sip.errors import SipParseError
from agent.sip.events import CallSignalling, DialogEnded, Endpoint, EndReason, SipEvent
from agent.sip.message import is_keepalive, looks_like_sip, parse_message
from agent.sip.tcpstream import SipTcpReassembler
from agent.sip.tracker import SipTracker

SIP_TLS_PORT = 5061  # RFC 3261 §26.2: sips; encrypted, counted, not decoded


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """An RTP stream finished (idle timeout, its call ended, end of capture)."""

    stats: StreamStats


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A call (or a pseudo-call of unsignalled media) is over and judged."""

    record: CallRecord


@dataclass(frozen=True, slots=True)
class CallInterval:
    """One interval (``calls.interval_s`` of packet time) of a running stream, rated.

    ``call_id`` is the call the stream belongs to (None: unsignalled media);
    ``delta`` holds the interval's counters (packets, expected, lost, discards)
    on top of the stream's identity; ``quality`` is None when the interval held
    too few packets to rate."""

    ts: float
    call_id: str | None
    delta: StreamStats
    quality: Quality | None


Event = StreamEnded | CallEnded | CallInterval


@dataclass(frozen=True, slots=True)
class EngineConfig:
    config: Config = field(default_factory=Config)
    # How often (packet time) idle state is swept while feeding; sweeping scans tables.
    sweep_interval_s: float = 5.0

    def tracker(self) -> TrackerConfig:
        jb = self.config.quality.jitter_buffer
        spec = JitterBufferSpec(model=jb.model, fixed_ms=jb.fixed_ms,
                                adaptive_min_ms=jb.adaptive_min_ms,
                                adaptive_max_ms=jb.adaptive_max_ms)
        return TrackerConfig(idle_timeout_s=self.config.calls.media_idle_timeout_s,
                             jitter_buffer=spec)


@dataclass(slots=True)
class RouteCounters:
    sip_udp: int = 0
    sip_tcp_segments: int = 0
    sip_messages: int = 0
    sip_parse_errors: int = 0
    sip_keepalives: int = 0
    sip_tls_packets: int = 0  # encrypted signalling, not decoded
    rtcp_packets: int = 0
    rtp_candidates: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in RouteCounters.__dataclass_fields__}


class Engine:
    """Feed batches in packet-time order; collect events."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        cfg = self.config.config
        self.decoder = Decoder()
        self.streams = StreamTracker(self.config.tracker())
        self.sip = SipTracker(setup_timeout_s=cfg.calls.setup_timeout_s)
        self.tcp = SipTcpReassembler()
        self.rtcp = RtcpMonitor()
        self.calls = CallTable(cfg, self.rtcp)
        self.route = RouteCounters()
        self.packets = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._next_sweep: float | None = None
        self._next_interval: float | None = None

    def reconfigure(self, config: Config) -> list[str]:
        """Apply a reloaded configuration without losing running calls or streams.

        SLA profiles, quality settings and call timeouts are read when a record is
        made, so they apply at once. Returns the settings only a restart applies: the
        jitter-buffer model (running streams carry state built with the old one).
        """
        old = self.config.config
        self.config = EngineConfig(config=config, sweep_interval_s=self.config.sweep_interval_s)
        self.calls.config = config
        self.calls.intervals.config = config
        self.sip.setup_timeout_s = config.calls.setup_timeout_s
        self.streams.config = replace(self.streams.config,
                                      idle_timeout_s=config.calls.media_idle_timeout_s)
        return ["quality.jitter_buffer"] if config.quality.jitter_buffer != \
            old.quality.jitter_buffer else []

    # -- feeding ----------------------------------------------------------------------

    def feed(self, batch: Batch) -> list[Event]:
        """Process one batch; returns the events it completed."""
        n = len(batch)
        if n == 0:
            return []
        self.packets += n
        if self.first_ts is None:
            self.first_ts = float(batch.ts[0])
        self.last_ts = float(batch.ts[-1])
        frames = self.decoder.decode(batch)
        if len(frames):
            self._route(frames)
        now = float(batch.ts.max())
        if self._next_interval is None:
            self._next_interval = now + self.config.config.calls.interval_s
        out: list[Event] = []
        if now >= self._next_interval:
            self._next_interval = now + self.config.config.calls.interval_s
            out.extend(self._observe_intervals(now))
        if self._next_sweep is None:
            self._next_sweep = now + self.config.sweep_interval_s
        if now >= self._next_sweep:
            self._next_sweep = now + self.config.sweep_interval_s
            out.extend(self.tick(now))
        return out

    def _route(self, f: Frames) -> None:
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
        rtcp = udp & (first >> 6 == 2) & (second >= 200) & (second <= 207)
        self.route.sip_tls_packets += int(np.count_nonzero(tls))
        for i in np.flatnonzero(udp & textual).tolist():
            self._sip_datagram(f, i)
        for i in np.flatnonzero(rtcp).tolist():
            self.route.rtcp_packets += 1
            self.rtcp.feed(f.payload(i), float(f.ts[i]))
        tcp_rows = np.flatnonzero((f.proto == IPPROTO_TCP) & ~tls & (plen > 0))
        for i in tcp_rows.tolist():
            self._sip_segment(f, i)
        rtp = np.flatnonzero(udp & ~textual & ~rtcp).astype(np.int64)
        self.route.rtp_candidates += int(rtp.size)
        if rtp.size:
            self.streams.feed(f, rtp)

    def _sip_datagram(self, f: Frames, i: int) -> None:
        payload = f.payload(i)
        if is_keepalive(payload):
            self.route.sip_keepalives += 1
            return
        if not looks_like_sip(payload):
            return
        self.route.sip_udp += 1
        self._sip_message(f, i, payload, "udp")

    def _sip_segment(self, f: Frames, i: int) -> None:
        key = (int(f.src_hi[i]), int(f.src_lo[i]), int(f.sport[i]),
               int(f.dst_hi[i]), int(f.dst_lo[i]), int(f.dport[i]))
        self.route.sip_tcp_segments += 1
        for msg in self.tcp.feed(key, int(f.tcp_seq[i]), int(f.tcp_flags[i]), f.payload(i),
                                 float(f.ts[i])):
            self._sip_message(f, i, msg, "tcp")

    def _sip_message(self, f: Frames, i: int, data: bytes, transport: str) -> None:
        try:
            msg = parse_message(data)
        except SipParseError:
            self.route.sip_parse_errors += 1
            return
        self.route.sip_messages += 1
        src = Endpoint(format_addr(f.src_hi[i], f.src_lo[i]), int(f.sport[i]))
        dst = Endpoint(format_addr(f.dst_hi[i], f.dst_lo[i]), int(f.dport[i]))
        self._sip_events(self.sip.feed(msg, src, dst, float(f.ts[i]), int(f.dscp[i]), transport))

    def _sip_events(self, events: list[SipEvent]) -> None:
        for e in events:
            self.calls.on_sip(e)
            if not isinstance(e, DialogEnded):
                self._hint_media(e.call)

    def _hint_media(self, call: CallSignalling) -> None:
        """Tell the RTP layer what each SDP endpoint will carry (codec, clock, events)."""
        for sdp in call.media:
            for m in sdp.media:
                if m.address is not None and m.rtp_port:
                    self.streams.hint_endpoint(m.address, m.rtp_port, payload_hints(m))

    # -- time -------------------------------------------------------------------------

    def tick(self, now: float) -> list[Event]:
        """Expire state idle at packet time ``now`` (epoch seconds); emit what ended."""
        out: list[Event] = []
        self._sip_events(self.sip.expire(now))
        self.tcp.expire(now)
        self.rtcp.expire(now)
        for s in self.streams.expire(now):
            out.append(StreamEnded(s))
            self.calls.on_stream(s)
        self._end_idle_calls(now)
        due = self.calls.due(now)
        if due:
            out.extend(self._close_calls(due))
        out.extend(CallEnded(r) for r in self.calls.take_unsignalled(now))
        return out

    def _observe_intervals(self, now: float) -> list[Event]:
        """One interval of every running stream (for `mos_min` and the exporter)."""
        out: list[Event] = []
        for k in self.streams.streams():
            snap = self.streams.snapshot(k)
            if snap is None:
                continue
            delta, q = self.calls.intervals.observe(snap)
            m = self.calls.index.match_key(k, snap.first_ts)
            out.append(CallInterval(now, None if m is None else m.call_id, delta, q))
        return out

    def _end_idle_calls(self, now: float) -> None:
        """Answered calls whose media stopped without a BYE end as timed out."""
        timeout = self.config.config.calls.media_idle_timeout_s
        if not self.calls.media_idle(now, timeout, set()):
            return  # the common case: no candidate, so no stream needs matching
        running: set[str] = set()
        for k in self.streams.streams():
            snap = self.streams.snapshot(k)
            m = None if snap is None else self.calls.index.match_key(k, snap.first_ts)
            if m is not None:
                running.add(m.call_id)
        for call_id, last in self.calls.media_idle(now, timeout, running):
            self._sip_events(self.sip.end(call_id, EndReason.TIMED_OUT, last))

    def _close_calls(self, call_ids: list[str]) -> list[Event]:
        """End calls whose dialog is over: first their streams still running (else they
        would end later, as unsignalled media), then the records."""
        by_endpoint: dict[tuple[str, int], list[StreamKey]] = {}
        for k in self.streams.streams():
            for ep in ((format_addr(k.dst_hi, k.dst_lo), k.dport),
                       (format_addr(k.src_hi, k.src_lo), k.sport)):
                by_endpoint.setdefault(ep, []).append(k)
        out: list[Event] = []
        for call_id in call_ids:
            keys: set[StreamKey] = set()
            for ep in self.calls.endpoints(call_id):
                keys.update(by_endpoint.get(ep, ()))
            mine = []
            for k in keys:
                snap = self.streams.snapshot(k)
                m = None if snap is None else self.calls.index.match_key(k, snap.first_ts)
                if m is not None and m.call_id == call_id:
                    mine.append(k)
            for st in self.streams.close(mine):
                out.append(StreamEnded(st))
                self.calls.on_stream(st)
            out.append(CallEnded(self.calls.take(call_id)))
        return out

    def finish(self) -> list[Event]:
        """End of input: every remaining stream, dialog and call ends."""
        now = self.last_ts if self.last_ts is not None else 0.0
        out = self.tick(now)  # what was already idle at the end of input ends as such
        for s in self.streams.finish():
            out.append(StreamEnded(s))
            self.calls.on_stream(s)
        self._sip_events(self.sip.finish(now))
        out.extend(CallEnded(r) for r in self.calls.finish())
        return out

    def counters(self) -> dict[str, int]:
        """Every drop and table counter of the pipeline, prefixed by its stage."""
        out: dict[str, int] = {"packets": self.packets}
        for prefix, counts in (
            ("decode", self.decoder.counters.as_dict()),
            ("route", self.route.as_dict()),
            ("rtp", self.streams.counters.as_dict()),
            ("sip", self.sip.counters.as_dict()),
            ("sip_tcp", self.tcp.counters.as_dict()),
            ("rtcp", self.rtcp.counters.as_dict()),
            ("calls", self.calls.counters.as_dict()),
        ):
            out.update({f"{prefix}_{k}": v for k, v in counts.items()})
        return out
