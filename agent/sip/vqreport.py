"""RFC 6035 voice-quality reports (``application/vq-rtcpxr``): body text in, a frozen report out.

Theory of operation
-------------------
A phone (the *reporter*) sends its own view of a call's media in a SIP PUBLISH
(or a NOTIFY of the ``vq-rtcpxr`` event package) at the end of the call and,
if configured, every interval. `parse_report` turns the body into a
`QualityReport`, or raises `VqReportError` — the one error type of this parser
(DESIGN.md rule 3): whatever the bytes, nothing else escapes.

The body is line oriented (RFC 6035 §4.4 ABNF): a first line naming the report
(``VQSessionReport`` [``: CallTerm``], ``VQIntervalReport``, ``VQAlertReport:
Type=.. Severity=.. Dir=..``), then ``Name: value`` lines. Session information
(``CallID``, ``LocalID``, ``RemoteID``, ``OrigID``, ``LocalGroup``,
``RemoteGroup``, ``LocalAddr``, ``RemoteAddr``, ``DialogID``) belongs to the
report; metric lines (``Timestamps``, ``SessionDesc``, ``JitterBuffer``,
``PacketLoss``, ``BurstGapLoss``, ``Delay``, ``Signal``, ``QualityEst``) belong
to the block the last ``LocalMetrics:`` / ``RemoteMetrics:`` line opened.

Leniency follows what phones send, not the strict grammar, since a report a
collector cannot read is worth nothing: session lines anywhere (Snom and
Linphone put ``CallID`` inside ``LocalMetrics``), folded continuation lines
(the RFC's own example folds ``FMTP`` and ``DialogID``), CRLF or bare LF,
``FromID``/``ToID`` for ``LocalID``/``RemoteID``, ``IP:a PORT:b`` for
``IP=a PORT=b``, an SSRC without its ``0x`` (the RFC's example) or in decimal
(Linphone), unknown lines and parameters (``x-UserAgent``, ``OWD``, ``EXTRI``)
ignored. A value that does not read as its kind is *absent*, as is a value a
reporter uses to say "unavailable" (RFC 3611 §4.7: R = 127, MOS = 12.7): a
report is rejected only when it cannot be a report at all — too large, not
text, no report line, no ``CallID``.

Units: the RFC's percentages become ratios 0..1 (``_ratio``), delays and
durations stay milliseconds (``_ms``), levels dBm0/dB as sent, MOS 1..5,
R 0..120, START/STOP epoch seconds (UTC).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from agent.decode.endpoint import Endpoint

MAX_REPORT_BYTES = 16 * 1024  # a phone's report is ~1 KB; the largest seen are under 3 KB
MAX_LINES = 256
MAX_VALUE_CHARS = 512  # a text field kept (Call-ID, IDs, groups) is cut to this
MEDIA_TYPE = "application/vq-rtcpxr"


class VqReportError(ValueError):
    """An RFC 6035 report body is malformed (not a report, too large, no CallID)."""


class ReportKind(StrEnum):
    SESSION = "session"  # VQSessionReport: the whole session (CallTerm: its last one)
    INTERVAL = "interval"  # VQIntervalReport: one interval of a running session
    ALERT = "alert"  # VQAlertReport: a threshold crossed (Type, Severity, Dir)


@dataclass(frozen=True, slots=True)
class ReportAddr:
    """``LocalAddr`` / ``RemoteAddr``: where an endpoint's media is, and its SSRC.

    ``ssrcs`` holds every reading of the SSRC text: one for ``0x..`` or hex with
    letters; two (hex and decimal) for bare digits, which the RFC's grammar
    (``0x`` 1*8HEXDIG) does not settle and phones write both ways."""

    endpoint: Endpoint | None
    ssrcs: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Metrics:
    """One ``LocalMetrics`` or ``RemoteMetrics`` block (RFC 6035 §4.4); None: not reported."""

    start_ts: float | None = None
    stop_ts: float | None = None
    payload_type: int | None = None
    payload_desc: str | None = None
    sample_rate_hz: int | None = None
    frame_duration_ms: int | None = None
    frame_octets: int | None = None
    frames_per_packet: int | None = None
    packets_per_s: int | None = None
    fmtp: str | None = None
    plc: int | None = None  # 0 unspecified, 1 disabled, 2 enhanced, 3 standard
    silence_suppression: bool | None = None
    jb_adaptive: int | None = None  # RFC 3611 §4.7.7: 0 unknown, 2 non-adaptive, 3 adaptive
    jb_rate: int | None = None
    jb_nominal_ms: int | None = None
    jb_max_ms: int | None = None
    jb_abs_max_ms: int | None = None
    network_loss_ratio: float | None = None  # NLR
    jb_discard_ratio: float | None = None  # JDR
    burst_density_ratio: float | None = None  # BLD
    burst_duration_ms: int | None = None  # BD
    gap_density_ratio: float | None = None  # GLD
    gap_duration_ms: int | None = None  # GD
    gap_min: int | None = None  # GMIN (packets)
    round_trip_ms: int | None = None  # RTD
    end_system_delay_ms: int | None = None  # ESD
    symm_one_way_delay_ms: int | None = None  # SOWD
    interarrival_jitter_ms: int | None = None  # IAJ
    mean_abs_jitter_ms: int | None = None  # MAJ
    signal_level_dbm0: int | None = None  # SL
    noise_level_dbm0: int | None = None  # NL
    residual_echo_return_loss_db: int | None = None  # RERL
    r_lq: float | None = None  # RLQ
    r_cq: float | None = None  # RCQ
    ext_r_in: float | None = None  # EXTRI
    ext_r_out: float | None = None  # EXTRO
    mos_lq: float | None = None
    mos_cq: float | None = None
    qoe_alg: str | None = None  # QoEEstAlg


@dataclass(frozen=True, slots=True)
class QualityReport:
    """A parsed report. ``local`` is what the reporter *received* (the stream from
    ``remote_addr`` to ``local_addr``); ``remote`` what the other end told it about the
    stream it sent (RTCP XR), when it included that block."""

    kind: ReportKind
    call_term: bool
    call_id: str
    local_id: str | None
    remote_id: str | None
    orig_id: str | None
    local_group: str | None
    remote_group: str | None
    local_addr: ReportAddr
    remote_addr: ReportAddr
    local: Metrics | None
    remote: Metrics | None
    dialog_id: str | None
    alert_type: str | None = None
    alert_severity: str | None = None  # Warning, Critical, Clear
    alert_dir: str | None = None  # local, remote
    ignored_lines: int = field(default=0, compare=False)


def parse_report(body: bytes) -> QualityReport:
    """Parse one ``application/vq-rtcpxr`` body; raises `VqReportError` (only)."""
    if len(body) > MAX_REPORT_BYTES:
        raise VqReportError(f"report of {len(body)} bytes (limit {MAX_REPORT_BYTES})")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VqReportError("report is not UTF-8 text") from exc
    if _CONTROL_RE.search(text):
        raise VqReportError("control character in report")
    lines = _logical_lines(text)
    if not lines:
        raise VqReportError("empty report")
    return _Builder(lines).build()


def is_vq_report(content_type: str | None) -> bool:
    """Does a message's media type (lower case, no parameters) carry a report?"""
    return content_type == MEDIA_TYPE


# -- lines and parameters ---------------------------------------------------------------

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NAME_RE = re.compile(r"[ \t]*([A-Za-z][A-Za-z0-9_.-]{0,63})[ \t]*(?::|\Z)")
# key = value or key : value; a value is a quoted string (FMTP="a b") or a run of non-space
_PARAM_RE = re.compile(r'([A-Za-z][A-Za-z0-9_.-]{0,31})[ \t]*[=:][ \t]*("[^"]*"|[^ \t"]*)')
_NUMBER_RE = re.compile(r"[+-]?[0-9]{1,12}(?:\.[0-9]{1,9})?\Z")


def _logical_lines(text: str) -> list[tuple[str, str]]:
    """(name, value) per line; a line starting with white space continues the last one."""
    out: list[tuple[str, str]] = []
    for raw in text.split("\n"):
        raw = raw.rstrip("\r")
        if not raw.strip():
            continue
        if raw[0] in " \t" and out:
            name, value = out[-1]
            out[-1] = (name, f"{value} {raw.strip()}")
            continue
        if len(out) >= MAX_LINES:
            raise VqReportError(f"more than {MAX_LINES} lines")
        m = _NAME_RE.match(raw)
        if m is None:
            out.append(("", raw.strip()))  # not a named line: ignored, unless it is the first
            continue
        out.append((m.group(1), raw[m.end():].strip()))
    return out


def _params(value: str) -> dict[str, str]:
    """``KEY=value`` pairs of a metric line, keys upper case; the first of a key wins."""
    out: dict[str, str] = {}
    for m in _PARAM_RE.finditer(value):
        key = m.group(1).upper()
        if key not in out:
            out[key] = m.group(2).strip('"')
    return out


def _number(text: str | None) -> float | None:
    if text is None or _NUMBER_RE.match(text) is None:
        return None
    x = float(text)
    return x if math.isfinite(x) else None


def _int(text: str | None, lo: int, hi: int) -> int | None:
    x = _number(text)
    if x is None or x != int(x) or not lo <= x <= hi:
        return None
    return int(x)


def _ranged(text: str | None, lo: float, hi: float) -> float | None:
    x = _number(text)
    return x if x is not None and lo <= x <= hi else None


def _percent(text: str | None) -> float | None:
    x = _ranged(text, 0.0, 100.0)
    return None if x is None else round(x / 100.0, 6)


def _mos(text: str | None) -> float | None:
    return _ranged(text, 1.0, 5.0)  # 12.7 (RFC 3611: 127 / 10) and 0 mean "unavailable"


def _r_factor(text: str | None) -> float | None:
    return _ranged(text, 0.0, 120.0)  # 127 means "unavailable"


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value[:MAX_VALUE_CHARS] or None


def _timestamp(text: str | None) -> float | None:
    """RFC 3339 date-time (``2004-10-10T18:23:43Z``, fractions, offsets) -> epoch s."""
    if not text or len(text) > 40:
        return None
    try:
        t = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if t.tzinfo is None:
        return None  # RFC 3339 requires an offset; a local time names no instant
    try:
        return t.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _ssrcs(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    t = text.strip().lower()
    try:
        if t.startswith("0x"):
            values = [int(t[2:], 16)] if 0 < len(t) - 2 <= 8 else []
        elif t.startswith("-") and t[1:].isdigit() and len(t) <= 11:
            values = [int(t) & 0xFFFFFFFF]  # a signed 32-bit print of it (%d)
        elif t.isdigit() and len(t) <= 10:
            values = [int(t, 16)] if len(t) <= 8 else []
            values.append(int(t))
        elif len(t) <= 8:
            values = [int(t, 16)]
        else:
            values = []
    except ValueError:
        return ()
    return tuple(dict.fromkeys(v for v in values if v <= 0xFFFFFFFF))


def _addr(value: str) -> ReportAddr:
    p = _params(value)
    port = _int(p.get("PORT"), 0, 65535)
    endpoint: Endpoint | None = None
    ip = p.get("IP", "").strip("[]")
    if ip and port is not None:
        try:
            endpoint = Endpoint.of(ip, port)
        except ValueError:
            endpoint = None
    return ReportAddr(endpoint, _ssrcs(p.get("SSRC")))


# -- the report -------------------------------------------------------------------------

_REPORT_KINDS = {
    "vqsessionreport": ReportKind.SESSION,
    "vqintervalreport": ReportKind.INTERVAL,
    "vqalertreport": ReportKind.ALERT,
}
_SESSION_NAMES = {
    "callid": "call_id", "localid": "local_id", "fromid": "local_id",
    "remoteid": "remote_id", "toid": "remote_id", "origid": "orig_id",
    "localgroup": "local_group", "remotegroup": "remote_group", "dialogid": "dialog_id",
}  # fmt: skip
_METRIC_LINES = frozenset({"timestamps", "sessiondesc", "jitterbuffer", "packetloss",
                           "burstgaploss", "delay", "signal", "qualityest"})


class _Builder:
    def __init__(self, lines: list[tuple[str, str]]) -> None:
        self.lines = lines
        self.text: dict[str, str] = {}
        self.addrs: dict[str, ReportAddr] = {}
        self.blocks: dict[str, dict[str, str]] = {}  # "local"/"remote" -> merged params
        self.ignored = 0

    def build(self) -> QualityReport:
        (name, value), rest = self.lines[0], self.lines[1:]
        kind = _REPORT_KINDS.get(name.lower())
        if kind is None:
            raise VqReportError("no VQSessionReport/VQIntervalReport/VQAlertReport line")
        head = _params(value)
        call_term = "callterm" in value.lower()
        block: str | None = None
        for name, value in rest:
            key = name.lower()
            if key in ("localmetrics", "remotemetrics"):
                block = key.removesuffix("metrics")
                self.blocks.setdefault(block, {})
            elif key in _METRIC_LINES:
                target = self.blocks.setdefault(block or "local", {})
                for k, v in _params(value).items():
                    target.setdefault(k, v)
            elif key in _SESSION_NAMES:
                self.text.setdefault(_SESSION_NAMES[key], value)
            elif key in ("localaddr", "remoteaddr"):
                self.addrs.setdefault(key, _addr(value))
            else:
                self.ignored += 1
        call_id = _text(self.text.get("call_id"))
        if call_id is None:
            raise VqReportError("report without CallID")
        local, remote = (self._metrics(b) for b in ("local", "remote"))
        return QualityReport(
            kind=kind, call_term=call_term, call_id=call_id,
            local_id=_text(self.text.get("local_id")),
            remote_id=_text(self.text.get("remote_id")),
            orig_id=_text(self.text.get("orig_id")),
            local_group=_text(self.text.get("local_group")),
            remote_group=_text(self.text.get("remote_group")),
            local_addr=self.addrs.get("localaddr", ReportAddr(None)),
            remote_addr=self.addrs.get("remoteaddr", ReportAddr(None)),
            local=local, remote=remote,
            dialog_id=_text(self.text.get("dialog_id")),
            alert_type=_text(head.get("TYPE")) if kind is ReportKind.ALERT else None,
            alert_severity=_text(head.get("SEVERITY")) if kind is ReportKind.ALERT else None,
            alert_dir=_text(head.get("DIR")) if kind is ReportKind.ALERT else None,
            ignored_lines=self.ignored,
        )

    def _metrics(self, block: str) -> Metrics | None:
        p = self.blocks.get(block)
        if p is None:
            return None
        ssup = p.get("SSUP", "").lower()
        return Metrics(
            start_ts=_timestamp(p.get("START")), stop_ts=_timestamp(p.get("STOP")),
            payload_type=_int(p.get("PT"), 0, 127), payload_desc=_text(p.get("PD")),
            sample_rate_hz=_int(p.get("SR"), 1, 10_000_000),
            frame_duration_ms=_int(p.get("FD"), 0, 65535),
            frame_octets=_int(p.get("FO"), 0, 65535),
            frames_per_packet=_int(p.get("FPP"), 0, 65535),
            packets_per_s=_int(p.get("PPS"), 0, 65535), fmtp=_text(p.get("FMTP")),
            plc=_int(p.get("PLC"), 0, 3),
            silence_suppression={"on": True, "off": False}.get(ssup),
            jb_adaptive=_int(p.get("JBA"), 0, 3), jb_rate=_int(p.get("JBR"), 0, 15),
            jb_nominal_ms=_int(p.get("JBN"), 0, 65534),
            jb_max_ms=_int(p.get("JBM"), 0, 65534),
            jb_abs_max_ms=_int(p.get("JBX"), 0, 65534),  # 65535: unavailable
            network_loss_ratio=_percent(p.get("NLR")),
            jb_discard_ratio=_percent(p.get("JDR")),
            burst_density_ratio=_percent(p.get("BLD")),
            burst_duration_ms=_int(p.get("BD"), 0, 10**9),
            gap_density_ratio=_percent(p.get("GLD")),
            gap_duration_ms=_int(p.get("GD"), 0, 10**9),
            gap_min=_int(p.get("GMIN"), 1, 255),
            round_trip_ms=_int(p.get("RTD"), 0, 65534),
            end_system_delay_ms=_int(p.get("ESD"), 0, 65534),
            symm_one_way_delay_ms=_int(p.get("SOWD"), 0, 65534),
            interarrival_jitter_ms=_int(p.get("IAJ"), 0, 65534),
            mean_abs_jitter_ms=_int(p.get("MAJ"), 0, 65534),
            signal_level_dbm0=_int(p.get("SL"), -99, 99),
            noise_level_dbm0=_int(p.get("NL"), -99, 99),
            residual_echo_return_loss_db=_int(p.get("RERL"), 0, 126),
            r_lq=_r_factor(p.get("RLQ")), r_cq=_r_factor(p.get("RCQ")),
            ext_r_in=_r_factor(p.get("EXTRI")), ext_r_out=_r_factor(p.get("EXTRO")),
            mos_lq=_mos(p.get("MOSLQ")), mos_cq=_mos(p.get("MOSCQ")),
            qoe_alg=_text(p.get("QOEESTALG")),
        )
