"""The human-readable calls table of `voipprobe analyze`: one line per direction."""

from __future__ import annotations

from collections.abc import Iterable

from agent.calls.record import CallRecord, DirectionRecord, SlaRecord

HEADER = ("call", "from", "to", "status", "end", "setup s", "dur s", "codec", "dir",
          "MOS", "loss %", "jit ms", "dscp", "SLA")
_NUMERIC = {5, 6, 9, 10, 11}


def _short(text: str | None, width: int) -> str:
    if text is None:
        return "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def _user(uri: str | None) -> str:
    """``sip:alice@example.com;tag`` -> ``alice@example.com`` (numbers stay readable)."""
    if uri is None:
        return "-"
    u = uri.split(":", 1)[1] if uri.lower().startswith(("sip:", "sips:", "tel:")) else uri
    return _short(u.split(";", 1)[0], 28)


def _sla(sla: SlaRecord | None) -> str:
    if sla is None:
        return "not judged"
    if sla.verdict == "met":
        return "met"
    return "violated: " + ", ".join(v.reason for v in sla.violations)


def _direction_row(d: DirectionRecord) -> tuple[str, ...]:
    s = d.stream
    marks = sorted(s.dscp.items(), key=lambda kv: int(kv[0]))
    dscp = ",".join(k if len(marks) == 1 else f"{k}:{v}" for k, v in marks)
    mos = f"{d.quality.mos_cq:.2f}" if d.quality is not None else d.media
    return (d.direction, mos, f"{100 * s.loss_ratio:.2f}",
            f"{s.jitter_mean_ms:.2f}", dscp, _sla(d.sla))


def call_rows(c: CallRecord) -> list[tuple[str, ...]]:
    """The table rows of one call: a row per direction, the call's columns on the first."""
    head = (
        _short(c.call_id, 24) if c.call_id else "(unsignalled)",
        _user(c.from_), _user(c.to),
        "-" if c.final_status is None else str(c.final_status), c.end_reason,
        "-" if c.setup_delay_s is None else f"{c.setup_delay_s:.3f}",
        "-" if c.duration_s is None else f"{c.duration_s:.1f}",
        c.codec or "-",
    )
    if not c.directions:
        return [(*head, "-", "-", "-", "-", "-", _sla(c.sla))]
    return [(*(head if i == 0 else ("",) * len(head)), *_direction_row(d))
            for i, d in enumerate(c.directions)]


def format_rows(body: Iterable[tuple[str, ...]]) -> str:
    rows: list[tuple[str, ...]] = [HEADER, *body]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in _NUMERIC else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def call_table(calls: Iterable[CallRecord]) -> str:
    return format_rows(row for c in calls for row in call_rows(c))
