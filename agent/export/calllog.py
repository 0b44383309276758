"""The call log: one line per ended call, JSON or a human-readable one-liner.

``target`` is ``"-"`` (standard output, flushed per line: under systemd every
line becomes one journald entry) or a file path opened in append mode. The
daemon calls `CallLog.reopen` on SIGHUP, so logrotate's rename-then-HUP works:
lines before the signal go to the renamed file, lines after it to a new file
at the configured path.

Formats:

- ``json``: ``CallRecord.to_json()`` after pseudonymisation, one object a line;
- ``line``: time, call, parties, outcome, codec, per direction MOS/loss/jitter,
  the SLA verdict and the thresholds crossed, e.g. ::

    2023-11-14T22:13:20.000Z call=h:1c2d3e4f5a6b sip:h:..@example.org -> sip:h:..@example.org
    peer=other 200 normal dur=3.2s setup=0.050s codec=PCMA media=both a_to_b[mos=4.38
    loss=0.00% jitter=0.0ms dscp=100%] b_to_a[...] sla=violated(max_jitter_ms,min_mos_cq)
    profile=gold

  with ``one_way=a_to_b`` after ``media=a_to_b`` for a judged one-way call.

Audio never reaches a record, so none can reach the log (DESIGN.md rule 7).
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from agent.calls.record import CallRecord
from agent.export.privacy import Pseudonymiser

CallLogFormat = Literal["json", "line"]
STDOUT = "-"


class CallLog:
    """Writes call records to stdout or a file; thread-safe, `reopen` for logrotate."""

    def __init__(self, target: str | Path = STDOUT, fmt: CallLogFormat = "json",
                 pseudonymiser: Pseudonymiser | None = None) -> None:
        if fmt not in ("json", "line"):
            raise ValueError(f"call log format must be 'json' or 'line', got {fmt!r}")
        self.target = str(target)
        self.fmt: CallLogFormat = fmt
        self.pseudonymiser = pseudonymiser or Pseudonymiser("clear")
        # RLock: reopen() may run in a signal handler that interrupted write() in the
        # same thread; a plain Lock would deadlock there.
        self._lock = threading.RLock()
        self._file: IO[str] | None = None
        self._open()

    def _open(self) -> None:
        if self.target != STDOUT:
            path = Path(self.target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8", buffering=1)

    def format(self, record: CallRecord) -> str:
        """The line (without newline) that `write` would write for ``record``."""
        data = self.pseudonymiser.apply(record.to_json())
        if self.fmt == "json":
            return json.dumps(data, separators=(",", ":"))
        return format_line(data)

    def write(self, record: CallRecord) -> None:
        """Append one record as one line, flushed."""
        line = self.format(record) + "\n"
        with self._lock:
            out = self._file if self._file is not None else sys.stdout
            out.write(line)
            out.flush()

    def reopen(self) -> None:
        """Close and reopen the file at the configured path (after logrotate renamed it)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._open()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            else:
                sys.stdout.flush()


def _num(value: Any, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    if isinstance(value, int | float):
        return f"{value * scale:{fmt}}{unit}"
    return "-"


def _time(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def format_line(rec: dict[str, Any]) -> str:
    """The human-readable one-liner of a (pseudonymised) record's JSON."""
    start = rec.get("invite_ts") if rec.get("invite_ts") is not None else rec.get("end_ts")
    parts = [
        _time(start),
        f"call={rec.get('call_id') or '-'}",
        f"{rec.get('from') or '-'} -> {rec.get('to') or '-'}",
        f"peer={rec.get('peer')}",
        str(rec.get("final_status") or "-"),
        str(rec.get("end_reason")),
        f"dur={_num(rec.get('duration_s'), '.1f', unit='s')}",
        f"setup={_num(rec.get('setup_delay_s'), '.3f', unit='s')}",
        f"codec={rec.get('codec') or '-'}",
        f"media={rec.get('media_seen') or '-'}",
    ]
    if rec.get("one_way_media"):
        parts.append(f"one_way={rec['one_way_media']}")
    if rec.get("rtt_ms") is not None:
        parts.append(f"rtt={_num(rec.get('rtt_ms'), '.0f', unit='ms')}")
    for d in rec.get("directions", []):
        stream, quality = d.get("stream", {}), d.get("quality") or {}
        media = d.get("media", "audio")
        kind = "" if media == "audio" else f"{media} "
        parts.append(
            f"{d.get('direction')}[{kind}mos={_num(quality.get('mos_cq'), '.2f')}"
            f" loss={_num(stream.get('loss_ratio'), '.2f', 100.0, '%')}"
            f" jitter={_num(stream.get('jitter_ms'), '.1f', unit='ms')}"
            f" dscp={_num(d.get('dscp_compliance_ratio'), '.0f', 100.0, '%')}"
            f"{_endpoint(d.get('endpoint_report'))}]"
        )
    sla = rec.get("sla", {})
    crossed = sorted({v["threshold"] for v in sla.get("violations", [])}
                     | {v["threshold"] for d in rec.get("directions", [])
                        for v in (d.get("sla") or {}).get("violations", [])})
    verdict = str(sla.get("verdict", "-"))
    parts.append(f"sla={verdict}" + (f"({','.join(crossed)})" if crossed else ""))
    parts.append(f"profile={sla.get('profile', '-')}")
    return " ".join(parts)


def _endpoint(rep: dict[str, Any] | None) -> str:
    """`` endpoint_mos=3.90`` when the endpoint's RFC 6035 report covered the direction."""
    if not rep:
        return ""
    return f" endpoint_mos={_num(rep.get('mos_cq'), '.2f')}"
