"""The PromQL of config/grafana/voipprobe.json with its variables substituted, as Grafana
sends it to Prometheus (shared by tests/test_grafana_dashboard*.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parent.parent / "config" / "grafana" / "voipprobe.json"

#: What Grafana puts for the variables: "All" on a multi-value variable is the
#: variable's allValue; $__rate_interval is at least four scrape intervals.
SUBSTITUTIONS = {"$site": ".*", "$peer": ".*", "$__rate_interval": "1m"}


def load() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def queries(doc: dict[str, Any] | None = None,
            values: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(panel title, query) of every target of every panel, variables substituted."""
    subs = SUBSTITUTIONS | (values or {})
    out = []
    for panel in (doc or load())["panels"]:
        for target in panel.get("targets", ()):
            expr = target["expr"]
            for var, value in sorted(subs.items(), key=lambda kv: -len(kv[0])):
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


def row(doc: dict[str, Any], title: str) -> dict[str, Any]:
    """The dashboard with only the panels of row ``title``."""
    panels: list[dict[str, Any]] = []
    current = ""
    for panel in doc["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
        elif current == title:
            panels.append(panel)
    return {**doc, "panels": panels}
