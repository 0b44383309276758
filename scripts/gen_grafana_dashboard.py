"""Write config/grafana/voipprobe.json: the Grafana dashboard of a fleet of probes.

    python scripts/gen_grafana_dashboard.py            # print the dashboard JSON
    python scripts/gen_grafana_dashboard.py --write    # rewrite config/grafana/voipprobe.json

The panels are a table below (title, unit, PromQL); this script lays them out and adds
the variables: ``datasource`` (any Prometheus), ``site`` and ``peer`` (label values,
multi-select, All included). The Fleet row shows each figure per site and over all the
selected sites, from recorded series only (it works on a Prometheus that federates
them). Queries read the recording rules of config/prometheus/voipprobe.rules.yml where
one exists, so Prometheus must load that file. tests/test_grafana_dashboard.py
checks the committed file equals this output; tests/test_grafana_dashboard_e2e.py runs
every query against a Prometheus that scraped a live agent.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "config" / "grafana" / "voipprobe.json"

SEL = 'site=~"$site", peer=~"$peer"'  # the variables, on every per-peer series
SITE = 'site=~"$site"'
OVERALL = "all sites"  # the legend of a Fleet panel's overall series


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    expr: str
    legend: str
    description: str = ""
    kind: str = "timeseries"
    overall: str = ""  # a second query: the figure over all selected sites


def _fleet(title: str, unit: str, per_site: str, overall: str, description: str,
           kind: str = "timeseries") -> Panel:
    """A Fleet panel: one series per site (legend the site) and the overall one."""
    return Panel(title, unit, per_site, "{{site}}", description, kind, overall)


def _ratio(by: str, series: str) -> str:
    """Violated verdicts over all verdicts, 0 (not absent) before a first violation."""
    violated = series.replace("{", '{verdict="violated", ', 1)
    return (f"(sum{by} ({violated}) or 0 * sum{by} ({series})) / (sum{by} ({series}) > 0)")


_VERDICTS = f"voipprobe:sla_verdicts:rate15m{{{SEL}}}"
_MOS_BUCKETS = f"voipprobe:call_mos_bucket:rate15m{{{SEL}}}"

# Only `voipprobe:*` recorded series: the row works on a global Prometheus that federates
# them (or receives them by remote_write) from each site's Prometheus. Overall = the sum
# over the selected sites (ratios and quantiles: of the summed rates and buckets).
FLEET = (
    _fleet("Calls in progress", "short",
           f"sum by (site) (voipprobe:calls_active:sum{{{SITE}}})",
           f"sum(voipprobe:calls_active:sum{{{SITE}}})",
           "Calls started and not yet ended, per site and over all selected sites."),
    _fleet("Calls a minute", "cpm",
           f"60 * sum by (site) (voipprobe:calls_ended:rate15m{{{SEL}}})",
           f"60 * sum(voipprobe:calls_ended:rate15m{{{SEL}}})",
           "Ended calls a minute (15 min average)."),
    _fleet("Calls measured since each probe started", "short",
           f"sum by (site) (voipprobe:calls_ended_total:sum{{{SEL}}})",
           f"sum(voipprobe:calls_ended_total:sum{{{SEL}}})",
           "Ended calls each probe counted since it started (drops back at a restart).",
           kind="stat"),
    _fleet("SLA violation ratio", "percentunit", _ratio(" by (site)", _VERDICTS),
           _ratio("", _VERDICTS),
           "Share of ended calls whose SLA verdict is violated (15 min); overall: all "
           "violated calls over all judged calls, not an average of the sites' ratios."),
    _fleet("MOS-CQ 5th percentile", "none",
           f"histogram_quantile(0.05, sum by (site, le) ({_MOS_BUCKETS}))",
           f"histogram_quantile(0.05, sum by (le) ({_MOS_BUCKETS}))",
           "The worst 5 % of call directions score this or less (15 min); overall: "
           "from the sites' summed MOS histograms."),
    _fleet("Capture sources up", "short",
           f"sum by (site) (voipprobe:capture_up:sum{{{SITE}}})",
           f"sum(voipprobe:capture_up:sum{{{SITE}}})",
           "Interfaces and listeners capturing (alert VoipprobeCaptureDown on a 0).",
           kind="stat"),
)

ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("Fleet", FLEET),
    ("Peers", (
        Panel("MOS-CQ median by peer", "none", f"voipprobe:call_mos:p50_15m{{{SEL}}}",
              "{{site}} {{peer}}", "Median MOS-CQ of ended call directions over 15 min."),
        Panel("MOS-CQ 5th percentile by peer", "none", f"voipprobe:call_mos:p05_15m{{{SEL}}}",
              "{{site}} {{peer}}", "The worst 5 % of call directions score this or less; "
              "alert VoipprobeMosP05Low under the peer's profile's min_mos_cq."),
        Panel("SLA violation ratio by peer", "percentunit",
              f"voipprobe:sla_violation:ratio_15m{{{SEL}}}", "{{site}} {{peer}} {{profile}}",
              "Share of ended calls whose SLA verdict is violated (15 min)."),
        Panel("SLA violations by threshold", "cpm",
              f"60 * sum by (site, peer, threshold) (voipprobe:sla_violations:rate15m{{{SEL}}})",
              "{{site}} {{peer}} {{threshold}}", "Calls a minute that crossed each threshold."),
        Panel("RTP loss ratio by peer and direction", "percentunit",
              f"voipprobe:rtp_loss:ratio_5m{{{SEL}}}", "{{site}} {{peer}} {{direction}}"),
        Panel("Jitter 95th percentile by peer", "s",
              f"voipprobe:call_jitter_seconds:p95_15m{{{SEL}}}", "{{site}} {{peer}}",
              "RFC 3550 interarrival jitter at the end of each call direction."),
        Panel("Calls ended by peer", "cpm",
              f"60 * sum by (site, peer, end_reason) (rate(voipprobe_calls_ended_total{{{SEL}}}"
              "[$__rate_interval]))", "{{site}} {{peer}} {{end_reason}}"),
        Panel("One-way audio ratio by peer", "percentunit",
              f"voipprobe:calls_one_way_media:ratio_15m{{{SEL}}}", "{{site}} {{peer}}",
              "Answered calls whose media passed in one direction only."),
        Panel("Media DSCP compliance by peer", "percentunit",
              f"voipprobe:dscp_media_compliance:ratio_15m{{{SEL}}}", "{{site}} {{peer}}",
              "Share of RTP packets marked as the SLA profile expects (EF by default)."),
    )),
    ("Directions", (
        Panel("MOS-CQ median by direction and codec", "none",
              f"voipprobe:call_mos_by_direction_codec:p50_15m{{{SEL}}}",
              "{{site}} {{peer}} {{direction}} {{codec}}"),
        Panel("Interval MOS-CQ median by direction", "none",
              "histogram_quantile(0.5, sum by (site, peer, direction, le) "
              f"(rate(voipprobe_interval_mos_bucket{{{SEL}}}[15m])))",
              "{{site}} {{peer}} {{direction}}",
              "Rated intervals of running streams: quality before the call ends."),
        Panel("RTP packets by direction", "pps",
              "sum by (site, peer, direction) "
              f"(rate(voipprobe_rtp_packets_total{{{SEL}}}[$__rate_interval]))",
              "{{site}} {{peer}} {{direction}}"),
    )),
    ("Codecs", (
        Panel("RTP packets by codec", "pps",
              "sum by (site, codec) "
              f"(rate(voipprobe_rtp_packets_total{{{SEL}}}[$__rate_interval]))",
              "{{site}} {{codec}}"),
        Panel("Call directions rated by codec (1 h)", "short",
              f"sum by (site, codec) (increase(voipprobe_call_mos_count{{{SEL}}}[1h]))",
              "{{site}} {{codec}}"),
    )),
    ("Probe health", (
        Panel("Packets delivered by interface", "pps",
              f"voipprobe:capture_packets:rate5m{{{SITE}}}", "{{site}} {{instance}} {{interface}}",
              "Zero for 10 min fires VoipprobeCaptureSilent (the probe is blind)."),
        Panel("Capture sources up", "bool_yes_no", f"voipprobe_capture_up{{{SITE}}}",
              "{{site}} {{instance}} {{interface}}", "0: the interface or listener is "
              "missing, down or closed (alert VoipprobeCaptureDown).", kind="stat"),
        Panel("Calls the probe itself lost packets of", "cpm",
              f"60 * sum by (site, peer) (rate(voipprobe_calls_capture_lossy_total{{{SITE}}}"
              "[$__rate_interval]))", "{{site}} {{peer}}",
              "Their figures may be the probe's fault, not the provider's."),
        Panel("Kernel drop ratio by interface", "percentunit",
              f"voipprobe:capture_kernel_drops:ratio_5m{{{SITE}}}",
              "{{site}} {{instance}} {{interface}}",
              "Packets the kernel dropped before the probe read them."),
        Panel("Decode errors", "pps",
              f"sum by (site, reason) (rate(voipprobe_decode_errors_total{{{SITE}}}"
              "[$__rate_interval]))", "{{site}} {{reason}}"),
        Panel("Active calls", "short", f"sum by (site) (voipprobe_calls_active{{{SITE}}})",
              "{{site}}"),
        Panel("Last configuration reload succeeded", "bool_yes_no",
              f"voipprobe_config_last_reload_successful{{{SITE}}}",
              "{{site}} {{instance}}", "0: the last (re)load was rejected; the probe runs "
              "the previous configuration.", kind="stat"),
        Panel("Call log records written", "short",
              f"sum by (site) (rate(voipprobe_calllog_records_written_total{{{SITE}}}"
              "[$__rate_interval]) * 60)", "{{site}}", "Records a minute."),
        Panel("Probes up", "bool_yes_no", 'up{job=~"voipprobe.*"}', "{{instance}}",
              "Prometheus' scrape of each probe (job voipprobe...).", kind="stat"),
    )),
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _label_variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name, "label": name, "type": "query", "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
        "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid, "type": p.kind, "title": p.title, "description": p.description,
        "datasource": DATASOURCE, "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": "A", "datasource": DATASOURCE, "expr": p.expr,
                     "legendFormat": p.legend}] + ([
                    {"refId": "B", "datasource": DATASOURCE, "expr": p.overall,
                     "legendFormat": OVERALL}] if p.overall else []),
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row in ROWS:
        panels.append({"id": len(panels) + 1, "type": "row", "title": title,
                       "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                       "panels": []})
        y += 1
        for i, p in enumerate(row):
            panels.append(_panel(p, len(panels) + 1, 8 * (i % 3), y + 8 * (i // 3)))
        y += 8 * ((len(row) + 2) // 3)
    return {
        "uid": "voipprobe", "title": "voipprobe: call quality", "tags": ["voipprobe", "voip"],
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"}, "timezone": "",
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "current": {}, "refresh": 1},
            # recorded series: the variables work on a federating Prometheus too
            _label_variable("site", "label_values(voipprobe:capture_up:sum, site)"),
            _label_variable("peer",
                            f"label_values(voipprobe:calls_ended_total:sum{{{SITE}}}, peer)"),
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {OUT}")
    args = parser.parse_args(argv)
    if args.write:
        OUT.write_text(render(), encoding="utf-8")
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
