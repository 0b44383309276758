"""End to end: two probes (sites ``a`` and ``b``) scraped by one real Prometheus with the
shipped rules, and a second Prometheus federating the first's ``voipprobe:*`` series; the
dashboard's Fleet queries give per-site values and overall values equal to the sum of
what the two probes themselves say on ``/metrics``, on both Prometheus servers.

One tests/netlab.py lab (caller A - gateway R - callee B): probe ``a`` captures on R's
``rb`` (toward B) from the start, probe ``b`` on R's ``ra`` (toward A) from the second
call on, so the two sites count different calls (a: 3, b: 2) of the same sipp traffic.
Peer ``carrier`` (B's network) is bound to a profile no PCMA call meets (min MOS-CQ 4.5
at a, 4.45 at b: G.711's E-model ceiling is 4.41), so every call violates and the MOS
alert must compare each site with its own limit. Prometheus ``P1`` scrapes both agents
and evaluates the rules every second; ``P2`` federates ``{__name__=~"voipprobe:.*"}``
from P1 every second (``honor_labels``).
"""

from __future__ import annotations

import json
import math
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dashboard_queries
import netlab
import pytest
from test_e2e_agent import _http, _log_tail, _require, _samples, _start_agent, _total, _wait_for
from test_grafana_dashboard_e2e import write_agent_config

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "config" / "prometheus" / "voipprobe.rules.yml"

pytestmark = [pytest.mark.slow]

PORTS = {"a": 9957, "b": 9958}
P1_PORT, P2_PORT = 9090, 9091
LIMITS = {"a": 4.5, "b": 4.45}  # min_mos_cq of peer carrier's profile at each site


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[netlab.Lab]:
    _require()
    with netlab.Lab("fl", tmp_path / "lab") as built:
        yield built


def _agent_config(tmp_path: Path, site: str) -> Path:
    state = tmp_path / f"state-{site}"
    state.mkdir()
    config = tmp_path / f"voipprobe-{site}.yaml"
    write_agent_config(config, state, site, LIMITS[site])
    return config


def _prometheus(lab: netlab.Lab, workdir: Path, name: str, port: int, body: str) -> None:
    home = workdir / name
    home.mkdir()
    (home / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n" + body, encoding="utf-8")
    log = workdir / f"{name}.log"
    proc = lab._spawn(lab.ns_r, ["prometheus", f"--config.file={home / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={home / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], log, cwd=home)

    def ready() -> bool:
        assert proc.poll() is None, f"{name} exited: {_log_tail(log)}"
        return _http(lab.ns_r, f"http://127.0.0.1:{port}/-/ready")[0] == 200

    _wait_for(f"{name} ready", ready, 20.0, interval=0.5)


def _query(ns: str, port: int, expr: str) -> dict[str, float]:
    """An instant query: {site or "" (no site label): value}."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = _http(ns, url)
    assert status == 200, (expr, status, body)
    doc: dict[str, Any] = json.loads(body)
    assert doc["status"] == "success", (expr, doc)
    out = {}
    for r in doc["data"]["result"]:
        site = r["metric"].get("site", "")
        assert site not in out, (expr, doc)
        out[site] = float(r["value"][1])
    return out


OVERALL = "(overall)"  # the site label the overall series gets in a combined query


def _per_site_and_overall(ns: str, port: int, per_site: str,
                          overall: str) -> tuple[dict[str, float], float]:
    """A panel's per-site and overall queries in one instant query, so both read the
    same samples: ({site: value}, overall value)."""
    both = _query(ns, port, f'({per_site}) or label_replace(({overall}), "site", '
                             f'"{OVERALL}", "", "")')
    return {k: v for k, v in both.items() if k != OVERALL}, both[OVERALL]


def _fleet() -> dict[str, tuple[str, str]]:
    """Fleet panel title -> (per-site query, overall query), variables at All."""
    queries = dashboard_queries.queries(dashboard_queries.row(dashboard_queries.load(), "Fleet"))
    out: dict[str, tuple[str, str]] = {}
    for i in range(0, len(queries), 2):
        (title, per_site), (same, overall) = queries[i], queries[i + 1]
        assert title == same
        out[title] = (per_site, overall)
    return out


def _own(ns: str, sites: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """What each probe says on its own /metrics: site -> figure -> value."""
    out = {}
    for site in sites:
        status, text = _http(ns, f"http://127.0.0.1:{PORTS[site]}/metrics")
        assert status == 200, (site, status)
        s = _samples(text)
        assert {lab.get("site") for n, lab, _ in s if n.startswith("voipprobe_")} == {site}
        out[site] = {
            "active": _total(s, "voipprobe_calls_active"),
            "ended": _total(s, "voipprobe_calls_ended_total"),
            "up": _total(s, "voipprobe_capture_up"),
            "judged": _total(s, "voipprobe_sla_verdicts_total"),
            "violated": _total(s, "voipprobe_sla_verdicts_total", verdict="violated"),
            "limit": _total(s, "voipprobe_sla_min_mos_cq", peer="carrier"),
        }
    return out


def _assert_fleet_row(ns: str, port: int, fleet: dict[str, tuple[str, str]],
                      want: dict[str, dict[str, float]],
                      ratios: tuple[dict[str, float], float], limits: dict[str, float]) -> None:
    """On the Prometheus at ``port``: each additive Fleet panel gives the probes' own
    figures per site and their sum overall; the violation ratio per site and overall
    (violated over judged, summed over the probes) and the MOS limits are the probes'."""
    mismatch: list[object] = []

    def agrees() -> bool:
        mismatch.clear()
        for title, sites in want.items():
            per_site, overall = fleet[title]
            got = (_query(ns, port, per_site), _query(ns, port, overall))
            if got != (sites, {"": sum(sites.values())}):
                mismatch.append((title, got, sites))
        per_site, overall = fleet["SLA violation ratio"]
        got = (_query(ns, port, per_site), _query(ns, port, overall))
        if got != (ratios[0], {"": ratios[1]}):
            mismatch.append(("SLA violation ratio", got, ratios))
        got_limits = _query(ns, port, 'voipprobe:sla_min_mos_cq:max{peer="carrier"}')
        if got_limits != limits:
            mismatch.append(("limits", got_limits, limits))
        return not mismatch

    try:
        _wait_for(f"the Fleet row on :{port} to equal the probes' sums", agrees, 20.0,
                  interval=1.0)
    except AssertionError:
        pytest.fail(f"Fleet row on :{port} differs from the probes: {mismatch}")

    # Rates and quantiles, each panel's two queries evaluated in one query (one snapshot
    # of the TSDB: a sample ingested between two queries, a federated one stamped in the
    # past, cannot make them disagree): overall = the sum of the sites (calls a minute),
    # or between them (the MOS p05 of the summed histograms).
    rates, fleet_rate = _per_site_and_overall(ns, port, *fleet["Calls a minute"])
    assert set(rates) == {"a", "b"} and min(rates.values()) > 0, rates
    assert fleet_rate == pytest.approx(sum(rates.values()))
    p05, fleet_p05 = _per_site_and_overall(ns, port, *fleet["MOS-CQ 5th percentile"])
    assert set(p05) == {"a", "b"} and all(4.0 <= v <= 4.41 for v in p05.values()), p05
    assert not math.isnan(fleet_p05)
    assert min(p05.values()) - 1e-9 <= fleet_p05 <= max(p05.values()) + 1e-9


def test_two_sites_one_prometheus_and_a_federating_one(lab: netlab.Lab,
                                                       tmp_path: Path) -> None:
    ns = lab.ns_r
    fleet = _fleet()
    assert set(fleet) == {"Calls in progress", "Calls a minute",
                          "Calls measured since each probe started", "SLA violation ratio",
                          "MOS-CQ 5th percentile", "Capture sources up"}
    _start_agent(lab, _agent_config(tmp_path, "a"), "rb", tmp_path / "calls-a.jsonl",
                 tmp_path / "agent-a.log", port=PORTS["a"])
    targets = ", ".join(f"'127.0.0.1:{p}'" for p in PORTS.values())
    _prometheus(lab, tmp_path, "p1", P1_PORT,
                f"rule_files:\n  - '{RULES}'\n"
                "scrape_configs:\n  - job_name: voipprobe\n"
                f"    static_configs:\n      - targets: [{targets}]\n")
    _prometheus(lab, tmp_path, "p2", P2_PORT,
                "scrape_configs:\n  - job_name: federate\n    honor_labels: true\n"
                "    metrics_path: /federate\n"
                "    params:\n      'match[]': ['{__name__=~\"voipprobe:.*\"}']\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{P1_PORT}']\n")

    first = lab.run_calls(1)  # site a only
    assert first.uac_returncode == 0, _log_tail(first.uac_log)
    _start_agent(lab, _agent_config(tmp_path, "b"), "ra", tmp_path / "calls-b.jsonl",
                 tmp_path / "agent-b.log", port=PORTS["b"])
    _wait_for("P1 scraping both probes", lambda: set(
        _query(ns, P1_PORT, "voipprobe_packets_total")) == {"a", "b"}, 20.0)

    runs: list[netlab.CallRun] = []
    calls = threading.Thread(target=lambda: runs.append(lab.run_calls(2)))
    calls.start()
    try:
        # During a call: calls in progress per site and overall, both Prometheus servers,
        # equal the probes' own gauges (read before and after, unchanged in between).
        per_site, overall = fleet["Calls in progress"]
        seen: list[object] = []

        def in_progress_agree() -> bool:
            before = _own(ns, ("a", "b"))
            got = [(_query(ns, port, per_site), _query(ns, port, overall))
                   for port in (P1_PORT, P2_PORT)]
            after = _own(ns, ("a", "b"))
            want_site = {s: before[s]["active"] for s in before}
            seen[:] = [before, got]
            return (before == after and set(want_site.values()) == {1.0}
                    and all(g == (want_site, {"": sum(want_site.values())}) for g in got))

        _wait_for("calls in progress to agree with the probes", in_progress_agree, 25.0,
                  interval=0.5)
    except AssertionError:
        pytest.fail(f"calls in progress never agreed: {seen}")
    finally:
        calls.join(timeout=120)
    assert runs and runs[0].uac_returncode == 0, runs and _log_tail(runs[0].uac_log)

    # After the calls: every probe figure settled (each agent ended its calls).
    def settled() -> bool:
        own = _own(ns, ("a", "b"))
        return own["a"]["ended"] == 3 and own["b"]["ended"] == 2 and all(
            o["active"] == 0 for o in own.values())

    _wait_for("the probes' records of 3 and 2 calls", settled, 20.0)
    own = _own(ns, ("a", "b"))
    want = {
        "Calls in progress": {s: own[s]["active"] for s in own},
        "Calls measured since each probe started": {s: own[s]["ended"] for s in own},
        "Capture sources up": {s: own[s]["up"] for s in own},
    }
    assert want["Calls measured since each probe started"] == {"a": 3.0, "b": 2.0}
    assert want["Capture sources up"] == {"a": 1.0, "b": 1.0}
    ratio = {s: own[s]["violated"] / own[s]["judged"] for s in own}
    assert ratio == {"a": 1.0, "b": 1.0}  # the strict profiles: every call violated
    overall_ratio = sum(o["violated"] for o in own.values()) / sum(
        o["judged"] for o in own.values())

    limits = {site: own[site]["limit"] for site in own}
    for port in (P1_PORT, P2_PORT):
        _assert_fleet_row(ns, port, fleet, want, (ratio, overall_ratio), limits)

    # The MOS alert compares each site with its own profile's limit (4.5, 4.45): pending
    # for carrier at both sites, with the profile's name.
    pending: list[dict[str, Any]] = []

    def mos_alerts() -> bool:
        status, body = _http(ns, f"http://127.0.0.1:{P1_PORT}/api/v1/alerts")
        pending[:] = [a for a in json.loads(body)["data"]["alerts"]
                      if a["labels"]["alertname"] == "VoipprobeMosP05Low"]
        return status == 200 and len(pending) == 2

    _wait_for("VoipprobeMosP05Low for both sites", mos_alerts, 15.0)
    assert sorted((a["labels"]["site"], a["labels"]["peer"], a["labels"]["profile"],
                   a["state"]) for a in pending) == [
        ("a", "carrier", "strict", "pending"), ("b", "carrier", "strict", "pending")]
