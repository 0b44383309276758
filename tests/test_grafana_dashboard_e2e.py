"""End to end: every query of the Grafana dashboard returns data from a real Prometheus
that scraped the live agent on the sipp lab's gateway and evaluated the shipped rules.

tests/netlab.py builds caller A - gateway R - callee B; ``voipprobe run`` captures on
R's ``rb`` (test_e2e_agent's helpers start it) with peer ``carrier`` (B's network)
bound to a profile no PCMA call can meet (min MOS-CQ 4.5), so the violation families
exist too. A ``prometheus`` in R scrapes the agent every second and loads
config/prometheus/voipprobe.rules.yml (evaluated every second). After :data:`CALLS`
sequential calls (one every ~9 s, so each counter steps more than once), each panel's
query must return a series, with the variables at All and at the lab's site and peer
(whose label_values() queries must find them); a few carry values the lab fixes. Then a
bad configuration on SIGHUP: the reload panel reads 0 and VoipprobeConfigReloadFailed
is pending.
"""

from __future__ import annotations

import json
import signal
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dashboard_queries
import netlab
import pytest
from test_e2e_agent import (
    AGENT_PORT,
    PROM_PORT,
    _http,
    _log_tail,
    _require,
    _start_agent,
    _start_prometheus,
    _wait_for,
)

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "config" / "prometheus" / "voipprobe.rules.yml"

pytestmark = [pytest.mark.slow]

CALLS = 3


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[netlab.Lab]:
    _require()
    with netlab.Lab("gd", tmp_path / "lab") as built:
        yield built


def write_agent_config(path: Path, state: Path, site: str, strict_mos: float = 4.5) -> None:
    """The lab agent's config: A's network local, peer ``carrier`` (B's) bound to profile
    ``strict`` (min MOS-CQ ``strict_mos``; media EF), short call timeouts."""
    path.write_text(
        f"state_dir: {state}\n"
        f"exporter:\n  site: {site}\n"
        "calls:\n  media_idle_timeout_s: 3.0\n  interval_s: 3.0\n"
        "sla:\n"
        "  local_networks: [198.18.7.0/24]\n"
        "  peers: [{name: carrier, networks: [198.18.8.0/24], profile: strict}]\n"
        "  profiles:\n"
        "    default: {min_mos_cq: 3.6, media_dscp: [46]}\n"
        f"    strict: {{min_mos_cq: {strict_mos}, media_dscp: [46]}}\n",
        encoding="utf-8")


def _query(ns: str, expr: str) -> list[dict[str, Any]]:
    url = (f"http://127.0.0.1:{PROM_PORT}/api/v1/query?"
           + urllib.parse.urlencode({"query": expr}))
    status, body = _http(ns, url)
    assert status == 200, (expr, status, body)
    doc = json.loads(body)
    assert doc["status"] == "success", (expr, doc)
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def _label_values(ns: str, label: str, match: str) -> list[str]:
    url = (f"http://127.0.0.1:{PROM_PORT}/api/v1/label/{label}/values?"
           + urllib.parse.urlencode({"match[]": match}))
    status, body = _http(ns, url)
    assert status == 200, (label, match, status, body)
    values: list[str] = json.loads(body)["data"]
    return values


def _values(result: list[dict[str, Any]]) -> dict[tuple[str, ...], float]:
    return {tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")):
            float(r["value"][1]) for r in result}


def test_every_dashboard_query_returns_data(lab: netlab.Lab, tmp_path: Path) -> None:
    ns = lab.ns_r
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "voipprobe.yaml"
    write_agent_config(config, state, "lab")
    agent, _ = _start_agent(lab, config, "rb", tmp_path / "calls.jsonl", tmp_path / "agent.log",
                 port=AGENT_PORT)

    prom, prom_log = _start_prometheus(lab, tmp_path, (RULES,))

    def rules_loaded() -> bool:
        assert prom.poll() is None, f"prometheus exited: {_log_tail(prom_log)}"
        status, body = _http(ns, f"http://127.0.0.1:{PROM_PORT}/api/v1/rules")
        return status == 200 and len(json.loads(body)["data"]["groups"]) == 2

    _wait_for("prometheus with the rules loaded", rules_loaded, 20.0, interval=0.5)
    _wait_for("a first scrape", lambda: bool(_query(ns, "voipprobe_packets_total")), 15.0)

    run = lab.run_calls(CALLS)
    assert run.uac_returncode == 0, _log_tail(run.uac_log)
    _wait_for(f"{CALLS} ended calls in prometheus", lambda: sum(
        float(r["value"][1]) for r in _query(ns, "voipprobe_calls_ended_total")) >= CALLS, 20.0)

    # The variables' own queries, as Grafana runs label_values(): the lab's site and peer.
    assert _label_values(ns, "site", "voipprobe:capture_up:sum") == ["lab"]
    assert _label_values(ns, "peer", 'voipprobe:calls_ended_total:sum{site=~".*"}') == [
        "carrier"]

    # Every panel with "All" selected, and with the lab's site and peer selected.
    queries = dashboard_queries.queries() + dashboard_queries.queries(
        values={"$site": "lab", "$peer": "carrier"})
    empty: list[tuple[str, str]] = []

    def all_answer() -> bool:
        empty[:] = [(title, expr) for title, expr in queries if not _query(ns, expr)]
        return not empty

    try:
        _wait_for("every dashboard query to return data", all_answer, 20.0, interval=1.0)
    except AssertionError:
        pytest.fail(f"dashboard queries without data: {empty}")

    # Values the lab fixes: clean PCMA calls, all marked EF by the endpoints, peer
    # carrier's profile asks MOS-CQ 4.5 (G.711's E-model ceiling is 4.41), no drops.
    carrier = ("peer", "carrier"), ("profile", "strict"), ("site", "lab")
    assert _values(_query(ns, "voipprobe:sla_violation:ratio_15m")) == {carrier: 1.0}
    p05 = _values(_query(ns, 'voipprobe:call_mos:p05_15m{peer="carrier"}'))
    assert list(p05) == [(("peer", "carrier"), ("site", "lab"))]
    assert 4.0 <= next(iter(p05.values())) <= 4.4, p05
    assert set(_values(_query(ns, "voipprobe:dscp_media_compliance:ratio_15m")).values()) == {1.0}
    loss = _values(_query(ns, 'voipprobe:rtp_loss:ratio_5m{peer="carrier"}'))
    assert {dict(k)["direction"] for k in loss} == {"inbound", "outbound"}, loss
    assert set(loss.values()) == {0.0}, loss
    assert set(_values(_query(ns, "voipprobe:capture_kernel_drops:ratio_5m")).values()) == {0.0}
    assert _values(_query(ns, "voipprobe:calls_judged:increase15m"))[carrier] > 0
    # sipp's G.711 A-law both ways: toward A (local) inbound, toward B outbound.
    by_direction = _values(_query(ns, "voipprobe:call_mos_by_direction_codec:p50_15m"))
    assert {(dict(k)["direction"], dict(k)["codec"]) for k in by_direction} == {
        ("inbound", "PCMA"), ("outbound", "PCMA")}, by_direction

    # A rejected reload: the health panel shows 0 for the lab's site (the gauge's own
    # site label), and the alert is pending.
    reload_panel = next(expr for title, expr in queries if title.startswith("Last config"))
    assert set(_values(_query(ns, reload_panel)).values()) == {1.0}
    config.write_text("calls: {interval_s: -1}\n", encoding="utf-8")
    agent.send_signal(signal.SIGHUP)

    def reload_failed() -> bool:
        return set(_values(_query(ns, reload_panel)).values()) == {0.0}

    _wait_for("the failed reload in prometheus", reload_failed, 10.0)
    assert list(_values(_query(ns, reload_panel))) == [
        (("instance", f"127.0.0.1:{AGENT_PORT}"), ("job", "voipprobe"), ("site", "lab"))]
    pending: list[dict[str, Any]] = []

    def alert_pending() -> bool:
        status, body = _http(ns, f"http://127.0.0.1:{PROM_PORT}/api/v1/alerts")
        pending[:] = [a for a in json.loads(body)["data"]["alerts"]
                      if a["labels"]["alertname"] == "VoipprobeConfigReloadFailed"]
        return status == 200 and bool(pending)

    _wait_for("VoipprobeConfigReloadFailed pending", alert_pending, 10.0)
    assert [(a["state"], a["labels"]["severity"], a["labels"]["instance"]) for a in pending] == [
        ("pending", "warning", f"127.0.0.1:{AGENT_PORT}")]
