"""HEP v3 out: what the probe captured, forwarded to HOMER collectors (heplify-server).

Theory of operation
-------------------
The engine hands its tap (`agent.engine.PacketTap`) each SIP message it parsed and
each RTCP packet it fed, in packet order; the daemon hands `call_ended` each call
record. `HepOut` turns each into `HepRecord`s (the one HEP v3 encoder is
`agent.decode.hep.encode_hep3`) and puts them on one bounded queue per collector:

- SIP: HEP type 1, the message bytes, the packet's time, addresses and ports;
- RTCP: type 5 with the packet's bytes and/or (``rtcp_json``) the JSON object HOMER
  reads (the field names of `agent.decode.hep_rtcp_json`, which reads it back), with
  the call's Call-ID as correlation id (heplify-server stores type 5 only with one);
- per call direction with a stream: type 34 (heplify-server's RTP-agent JSON QoS
  report, stored in HOMER's report table), with ``MOS``/``JITTER``/``PACKET_LOSS``
  (the keys heplify-server reads) and the probe's figures, correlation id the
  Call-ID as sent, at the call's end time.

The capture thread only builds a small record and enqueues it (`queue.Queue.put_nowait`):
a full queue drops the packet and counts it (``queue_full``), so a collector that is
down or slow never slows capture. One sender thread per collector encodes and sends:
UDP datagrams, or a HEP3 stream over TCP/TLS, reconnected with exponential backoff
(`BACKOFF_MIN_S` doubling to `BACKOFF_MAX_S`); what it cannot send while the
connection is down is dropped and counted (``not_connected``, ``send_error``).
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from agent.calls.record import CallRecord, DirectionRecord
from agent.config import HepCollectorConfig
from agent.decode.frames import IPPROTO_UDP, Frames
from agent.decode.hep import PROTO_RTCP, PROTO_RTP, PROTO_SIP, HepError, HepRecord, encode_hep3
from agent.rtcp.packets import ReceiverReport, RtcpParseError, SenderReport, parse_compound

PROTO_QOS_JSON = 34  # heplify-server: RTP-agent JSON QoS report (HOMER's report table)
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 30.0
DROP_REASONS = ("queue_full", "not_connected", "send_error", "too_large")
_V4_MAPPED = 0xFFFF << 32


@dataclass(slots=True)
class CollectorStats:
    """One collector's totals (monotonic) and state, read by the metrics."""

    name: str
    sent: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    queued: int = 0
    up: bool = False
    connects: int = 0


def _addr(hi: int, lo: int) -> tuple[int, bytes]:
    """(IP version, packed address) of the decoder's two address words."""
    if hi == 0 and lo >> 32 == 0xFFFF:
        return 4, (lo & 0xFFFFFFFF).to_bytes(4, "big")
    return 6, hi.to_bytes(8, "big") + lo.to_bytes(8, "big")


def frame_record(f: Frames, i: int, payload: bytes, proto_type: int,
                 correlation_id: bytes = b"") -> HepRecord:
    """A HEP record of frames row ``i`` (its time, addresses, ports) carrying ``payload``."""
    version, src = _addr(int(f.src_hi[i]), int(f.src_lo[i]))
    _, dst = _addr(int(f.dst_hi[i]), int(f.dst_lo[i]))
    ts = float(f.ts[i])
    sec = int(ts)
    usec = min(999_999, round((ts - sec) * 1e6))
    return HepRecord(version=3, ip_version=version, ip_proto=int(f.proto[i]), src=src,
                     dst=dst, sport=int(f.sport[i]), dport=int(f.dport[i]), ts_sec=sec,
                     ts_usec=usec, proto_type=proto_type, capture_id=0, payload=payload,
                     correlation_id=correlation_id,
                     tos=int(f.dscp[i]) << 2 | int(f.ecn[i]))  # chunk 24: DSCP goes along


def rtcp_json(payload: bytes) -> bytes | None:
    """The first SR or RR of a compound RTCP packet as HOMER's RTCP JSON object (the
    wire fields, as `agent.decode.hep_rtcp_json` reads them), None without one."""
    try:
        packets = parse_compound(payload)
    except RtcpParseError:
        return None
    for p in packets:
        if isinstance(p, SenderReport | ReceiverReport):
            obj: dict[str, object] = {"ssrc": p.ssrc, "type": 200 if isinstance(
                p, SenderReport) else 201, "report_count": len(p.reports)}
            if isinstance(p, SenderReport):
                obj["sender_information"] = {
                    "ntp_timestamp_sec": p.ntp_timestamp >> 32,
                    "ntp_timestamp_usec": p.ntp_timestamp & 0xFFFFFFFF,
                    "rtp_timestamp": p.rtp_timestamp, "packets": p.packet_count,
                    "octets": p.octet_count}
            obj["report_blocks"] = [{
                "source_ssrc": b.ssrc, "fraction_lost": b.fraction_lost_raw,
                "packets_lost": b.cumulative_lost, "highest_seq_no": b.extended_highest_seq,
                "ia_jitter": b.jitter_ts_units, "lsr": b.lsr, "dlsr": b.dlsr}
                for b in p.reports]
            return json.dumps(obj, separators=(",", ":")).encode()
    return None


def _split(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def quality_report(record: CallRecord, d: DirectionRecord) -> HepRecord | None:
    """Type 34 JSON report of one call direction (None for a call without Call-ID)."""
    if record.call_id is None:
        return None
    s = d.stream
    q = d.quality
    doc = {
        "CORRELATION_ID": record.call_id, "DIR": d.direction, "MEDIA": d.media,
        "CODEC": s.codec, "SSRC": s.ssrc, "POINT": d.point or s.point,
        "MOS": q.mos_cq if q is not None else None,
        "RFACTOR": q.r_factor if q is not None else None,
        "JITTER": s.jitter_ms, "JITTER_MAX": s.jitter_max_ms, "DELTA": s.max_delta_ms,
        "PACKETS": s.packets, "PACKET_LOSS": s.lost, "LOSS_RATIO": s.loss_ratio,
        "TOTAL_PK": s.expected, "DUPLICATES": s.duplicates,
        "START": s.first_ts, "END": s.last_ts, "PEER": record.peer,
        "SLA": d.sla.verdict if d.sla is not None else None,
        "RTCP_FRACTION_LOST": d.rtcp.fraction_lost if d.rtcp is not None else None,
        "RTCP_JITTER": d.rtcp.jitter_ms if d.rtcp is not None else None,
    }
    try:
        (sh, sp), (dh, dp) = _split(s.src), _split(s.dst)
        src, dst = socket.inet_pton(_family(sh), sh), socket.inet_pton(_family(dh), dh)
    except (ValueError, OSError):
        return None
    ts = record.end_ts
    return HepRecord(version=3, ip_version=4 if len(src) == 4 else 6, ip_proto=IPPROTO_UDP,
                     src=src, dst=dst if len(dst) == len(src) else bytes(len(src)), sport=sp,
                     dport=dp, ts_sec=int(ts), ts_usec=min(999_999, round((ts % 1) * 1e6)),
                     proto_type=PROTO_QOS_JSON, capture_id=0,
                     payload=json.dumps(doc, separators=(",", ":")).encode(),
                     correlation_id=record.call_id.encode())


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


Connect = Callable[[HepCollectorConfig], socket.socket]


def connect(c: HepCollectorConfig, timeout_s: float = 5.0) -> socket.socket:
    """A socket to the collector: UDP connected, TCP, or TLS over TCP."""
    if c.transport == "udp":
        info = socket.getaddrinfo(c.address, c.port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(info[0], socket.SOCK_DGRAM)
        sock.connect(info[4])
        return sock
    sock = socket.create_connection((c.address, c.port), timeout=timeout_s)
    if c.transport == "tls":
        ctx = ssl.create_default_context(cafile=str(c.tls_ca_file) if c.tls_ca_file else None)
        if not c.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock, server_hostname=c.address)
    sock.settimeout(timeout_s)
    return sock


class CollectorSender:
    """One collector: a bounded queue and the thread that drains it."""

    def __init__(self, config: HepCollectorConfig, *, open_socket: Connect = connect,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.stats = CollectorStats(f"{config.transport}:{config.address}:{config.port}")
        # (record, as RTCP JSON): the JSON is made here, off the capture thread
        self._queue: queue.Queue[tuple[HepRecord, bool] | None] = queue.Queue(
            config.queue_size)
        self._open = open_socket
        self._sleep = sleep
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._backoff = BACKOFF_MIN_S
        self._retry_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"hep-out {self.stats.name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, rec: HepRecord, as_json: bool = False) -> None:
        """Enqueue (never blocks): a full queue drops ``rec`` and counts it. ``as_json``:
        ``rec`` is binary RTCP to be sent as its JSON object."""
        try:
            self._queue.put_nowait((rec, as_json))
        except queue.Full:
            self.stats.dropped["queue_full"] += 1

    def depth(self) -> int:
        return self._queue.qsize()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the sender after what is queued (at most ``timeout_s``)."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._disconnect()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            rec, as_json = item
            if as_json:
                doc = rtcp_json(rec.payload)
                if doc is None:  # no SR/RR in it (an SDES or BYE alone): nothing to send
                    continue
                rec = replace(rec, payload=doc)
            self._send(rec)

    def _send(self, rec: HepRecord) -> None:
        c = self.config
        try:
            data = encode_hep3(replace(rec, capture_id=c.agent_id,
                                       node_name=c.node_name.encode()))
        except HepError:
            self.stats.dropped["too_large"] += 1
            return
        if self._sock is None and not self._reconnect():
            self.stats.dropped["not_connected"] += 1
            return
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError:
            self.stats.dropped["send_error"] += 1
            self._disconnect()
            return
        self.stats.sent += 1

    def _reconnect(self) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            return False
        try:
            self._sock = self._open(self.config)
        except OSError:
            self._retry_at = now + self._backoff
            self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
            return False
        self._backoff = BACKOFF_MIN_S
        self.stats.connects += 1
        self.stats.up = True
        return True

    def _disconnect(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self.stats.up = False
        # TCP: a collector that went away is retried after the backoff, not per packet
        self._retry_at = time.monotonic() + self._backoff


class HepOut:
    """The engine's packet tap and the call-record sink, fanning out to collectors."""

    def __init__(self, collectors: Sequence[HepCollectorConfig], *,
                 open_socket: Connect = connect) -> None:
        self.senders = [CollectorSender(c, open_socket=open_socket) for c in collectors]

    def start(self) -> None:
        for s in self.senders:
            s.start()

    def _put(self, rec: HepRecord, what: str) -> None:
        for s in self.senders:
            if getattr(s.config, what):
                s.put(rec, as_json=what == "rtcp_json")

    # -- PacketTap (the capture thread: build and enqueue only) ---------------------------

    def sip(self, f: Frames, row: int, data: bytes, transport: str, call_id: str) -> None:
        self._put(frame_record(f, row, bytes(data), PROTO_SIP), "sip")

    def rtcp(self, f: Frames, row: int, payload: bytes, call_id: str | None) -> None:
        cid = call_id.encode() if call_id else b""
        if any(s.config.rtcp for s in self.senders):
            self._put(frame_record(f, row, bytes(payload), PROTO_RTCP, cid), "rtcp")
        if any(s.config.rtcp_json for s in self.senders):
            self._put(frame_record(f, row, bytes(payload), PROTO_RTCP, cid), "rtcp_json")

    def rtp(self, f: Frames, rows: npt.NDArray[np.int64]) -> None:
        if rows.size == 0 or not any(s.config.rtp for s in self.senders):
            return
        for i in rows.tolist():
            self._put(frame_record(f, i, bytes(f.payload(i)), PROTO_RTP), "rtp")

    # -- records ------------------------------------------------------------------------

    def call_ended(self, record: CallRecord) -> None:
        if not any(s.config.reports for s in self.senders):
            return
        for d in record.directions:
            rec = quality_report(record, d)
            if rec is not None:
                self._put(rec, "reports")

    def stats(self) -> list[CollectorStats]:
        out = []
        for s in self.senders:
            s.stats.queued = s.depth()
            out.append(s.stats)
        return out

    def close(self) -> None:
        for s in self.senders:
            s.close()
