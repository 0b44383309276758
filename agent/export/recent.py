"""The exporter's recent-calls page: ``/calls`` (HTML) and ``/calls.json``.

The last N call records, as the call log writes them (pseudonymised by the same
`agent.export.privacy.Pseudonymiser`: no clear number unless ``privacy: clear``),
worst first: violated calls before the others, then by the lowest MOS-CQ of their
directions, then the newest first. ``?peer=NAME`` and ``?verdict=met|violated``
filter, ``?limit=N`` shortens. The HTML is one server-rendered table with no script
and no external asset; every value is escaped (URIs, Call-IDs, reasons come from
the network). Violated rows carry the class ``violated`` and the background
`VIOLATED_RGB`, so a screenshot shows them.

The store is a bounded deque fed by the capture thread (`add`) and read by the
HTTP workers (`rows`): one lock, O(N) per page, O(1) per call.
"""

from __future__ import annotations

import html
import json
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

VIOLATED_RGB = (248, 196, 196)  # the background of a violated row (#f8c4c4)
VERDICTS = ("met", "violated", "not_judged")
MAX_LIMIT = 10_000

_VIOLATED_HEX = "".join(f"{c:02x}" for c in VIOLATED_RGB)
_STYLE = (
    "body{font-family:sans-serif;margin:16px;background:#fff;color:#111}"
    "table{border-collapse:collapse;font-size:13px}"
    "th,td{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top}"
    "th{background:#e8e8e8}"
    f"tr.violated td{{background:#{_VIOLATED_HEX}}}"
    "tr.met td{background:#ffffff}"
)


class RecentCalls:
    """The last ``capacity`` records (dicts as the call log writes them)."""

    def __init__(self, capacity: int = 200) -> None:
        self.capacity = capacity
        self._rows: deque[Mapping[str, Any]] = deque(maxlen=max(capacity, 1))
        self._lock = threading.Lock()

    def add(self, shown: Mapping[str, Any]) -> None:
        """One ended call's record, already pseudonymised."""
        if self.capacity <= 0:
            return
        with self._lock:
            self._rows.append(shown)

    def rows(self, peer: str | None = None, verdict: str | None = None,
             limit: int | None = None) -> list[Mapping[str, Any]]:
        """The records the filters keep, worst first."""
        with self._lock:
            rows = list(self._rows)
        if peer is not None:
            rows = [r for r in rows if r.get("peer") == peer]
        if verdict is not None:
            rows = [r for r in rows if _verdict(r) == verdict]
        order = sorted(range(len(rows)),
                       key=lambda i: (_verdict(rows[i]) != "violated", _worst_mos(rows[i]), -i))
        picked = [rows[i] for i in order]
        return picked[:limit] if limit is not None else picked


def _verdict(rec: Mapping[str, Any]) -> str:
    sla = rec.get("sla") or {}
    return str(sla.get("verdict") or "not_judged")


def _worst_mos(rec: Mapping[str, Any]) -> float:
    values = [d["quality"]["mos_cq"] for d in rec.get("directions") or []
              if isinstance(d.get("quality"), Mapping)
              and isinstance(d["quality"].get("mos_cq"), int | float)]
    return min(values) if values else math.inf


def _reasons(rec: Mapping[str, Any]) -> list[str]:
    """Every violation's reason: each direction's, prefixed by the direction, then the
    call's own (setup delay, signalling DSCP, two-way media); the call's verdict
    repeats its directions' violations, which are not listed twice."""
    def text(v: Mapping[str, Any]) -> str:
        return str(v.get("reason") or v.get("threshold"))

    out: list[str] = []
    seen: set[str] = set()
    for d in rec.get("directions") or []:
        for v in (d.get("sla") or {}).get("violations") or []:
            seen.add(text(v))
            out.append(f"{d.get('direction')}: {text(v)}")
    calls_own = [text(v) for v in (rec.get("sla") or {}).get("violations") or []]
    return out + [r for r in calls_own if r not in seen]


def query_filters(query: str) -> tuple[str | None, str | None, int | None] | str:
    """(peer, verdict, limit) from a query string, or the reason it is refused."""
    params = parse_qs(query, keep_blank_values=False, max_num_fields=8)
    peer = params.get("peer", [None])[-1]
    verdict = params.get("verdict", [None])[-1]
    if verdict is not None and verdict not in VERDICTS:
        return f"verdict must be one of {', '.join(VERDICTS)}"
    limit_text = params.get("limit", [None])[-1]
    limit = None
    if limit_text is not None:
        if not limit_text.isdigit() or not 0 < int(limit_text) <= MAX_LIMIT:
            return f"limit must be a whole number from 1 to {MAX_LIMIT}"
        limit = int(limit_text)
    return peer, verdict, limit


def render_json(rows: list[Mapping[str, Any]]) -> bytes:
    return (json.dumps({"calls": rows}, separators=(",", ":"), default=str) + "\n").encode()


def _fmt(value: Any, spec: str = "", scale: float = 1.0) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int | float) and spec:
        return format(value * scale, spec)
    return str(value)


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


_COLUMNS = ("ended (UTC)", "call", "from", "to", "peer", "status", "end", "dur s",
            "codec", "direction", "MOS", "loss %", "jitter ms", "verdict", "reasons")


def render_html(rows: list[Mapping[str, Any]], *, held: int, capacity: int,
                peer: str | None, verdict: str | None) -> bytes:
    """The page: a heading that says how many calls it shows, then one row per call
    direction group (a call's directions stacked in its cells)."""
    esc = html.escape
    shown = [f"peer {peer}" if peer else "", f"verdict {verdict}" if verdict else ""]
    what = ", ".join(s for s in shown if s) or "all"
    out = [
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">",
        "<title>voipprobe: recent calls</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Recent calls</h1>",
        f"<p id=\"summary\" data-calls=\"{len(rows)}\">{len(rows)} calls shown ({esc(what)}; "
        f"{held} kept of the last {capacity}), worst first. Filters: "
        "<code>?peer=NAME</code>, <code>?verdict=met|violated</code>, "
        "<code>?limit=N</code>; <a href=\"calls.json\">calls.json</a>.</p>",
        "<table id=\"calls\"><thead><tr>",
        "".join(f"<th>{esc(c)}</th>" for c in _COLUMNS),
        "</tr></thead><tbody>",
    ]
    for rec in rows:
        verdict_of = _verdict(rec)
        dirs = list(rec.get("directions") or [])

        def per_dir(f: Any, dirs: list[Any] = dirs) -> str:
            return "<br>".join(esc(f(d)) for d in dirs)

        cells = [
            _when(rec.get("end_ts")), _fmt(rec.get("call_id")), _fmt(rec.get("from")),
            _fmt(rec.get("to")), _fmt(rec.get("peer")), _fmt(rec.get("final_status")),
            _fmt(rec.get("end_reason")), _fmt(rec.get("duration_s"), ".1f"),
            _fmt(rec.get("codec")),
        ]
        row = [f"<td>{esc(c)}</td>" for c in cells]
        row += [
            f"<td>{per_dir(lambda d: _fmt(d.get('direction')))}</td>",
            f"<td>{per_dir(lambda d: _fmt((d.get('quality') or {}).get('mos_cq'), '.2f'))}</td>",
            "<td>" + per_dir(lambda d: _fmt((d.get("stream") or {}).get("loss_ratio"),
                                            ".2f", 100.0)) + "</td>",
            "<td>" + per_dir(lambda d: _fmt((d.get("stream") or {}).get("jitter_ms"), ".2f"))
            + "</td>",
            f"<td class=\"verdict\">{esc(verdict_of)}"
            + (" (capture lossy)" if rec.get("capture_lossy") else "") + "</td>",
            "<td class=\"reasons\">" + "<br>".join(esc(r) for r in _reasons(rec)) + "</td>",
        ]
        out.append(f"<tr class=\"{esc(verdict_of)}\">" + "".join(row) + "</tr>")
    out.append("</tbody></table></body></html>\n")
    return "".join(out).encode("utf-8")
