"""config/grafana/voipprobe.json is the generator's output, has the variables Grafana
provisioning needs, and every panel query parses as PromQL (promtool). That the
queries return data from a real agent: tests/test_grafana_dashboard_e2e.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dashboard_queries
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gen_grafana_dashboard.py"
RULES = REPO / "config" / "prometheus" / "voipprobe.rules.yml"
FLEET_TESTS = REPO / "config" / "prometheus" / "tests" / "voipprobe.fleet.test.yml"


def test_committed_dashboard_is_generated() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          timeout=60, check=True, cwd=REPO)
    assert proc.stdout == dashboard_queries.DASHBOARD.read_text(encoding="utf-8"), (
        "config/grafana/voipprobe.json is stale: run python scripts/gen_grafana_dashboard.py "
        "--write")


def test_variables_and_panels() -> None:
    doc = dashboard_queries.load()
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["site"]["type"] == "query"
    assert variables["site"]["definition"] == "label_values(voipprobe:capture_up:sum, site)"
    assert variables["peer"]["definition"].startswith("label_values(")
    panels = doc["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["Fleet", "Peers", "Directions", "Codecs", "Probe health"]
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) == 29
    for p in graphs:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    assert variables["site"]["multi"] is True and variables["site"]["includeAll"] is True
    # Every per-peer query honours both variables; the probe's own health honours site;
    # a Fleet panel has a per-site query (legend the site) and an overall one.
    row = ""
    for p in panels:
        if p["type"] == "row":
            row = p["title"]
            continue
        if row == "Fleet":
            assert [t["legendFormat"] for t in p["targets"]] == ["{{site}}", "all sites"]
            per_site, overall = (t["expr"] for t in p["targets"])
            assert "by (site" in per_site and "by (site" not in overall, p["title"]
        else:
            assert len(p["targets"]) == 1, p["title"]
        for target in p["targets"]:
            expr = target["expr"]
            if expr.startswith("up{"):
                continue
            assert 'site=~"$site"' in expr, p["title"]
            if row != "Fleet":
                assert ('peer=~"$peer"' in expr) == (row != "Probe health"), p["title"]


def test_fleet_queries_read_only_recorded_series_and_are_unit_tested() -> None:
    """The Fleet row works on a Prometheus that federates only `voipprobe:*` series, and
    each of its queries (variables at All) is a promql_expr_test of the fleet unit test
    (config/prometheus/tests/voipprobe.fleet.test.yml: per site and overall = sum)."""
    doc = dashboard_queries.load()
    fleet = dashboard_queries.queries(dashboard_queries.row(doc, "Fleet"))
    assert len(fleet) == 12
    tested = {case["expr"] for t in yaml.safe_load(FLEET_TESTS.read_text())["tests"]
              for case in t["promql_expr_test"]}
    for title, expr in fleet:
        names = re.findall(r"[a-z_:]*voipprobe[a-z_:]*", expr)
        assert names and all(n.startswith("voipprobe:") for n in names), (title, expr)
        assert expr in tested, (title, expr)

def test_every_query_parses(tmp_path: Path) -> None:
    """Each query, variables substituted, as a recording rule: `promtool check rules`
    parses it (a typo in PromQL fails here, before any lab)."""
    if shutil.which("promtool") is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing in CI (Debian package prometheus)")
        pytest.skip("promtool missing (Debian package prometheus)")
    queries = dashboard_queries.queries()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(queries)} rules found" in proc.stdout


def test_queries_use_only_recorded_rules_that_exist() -> None:
    recorded = {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"]
                for r in g["rules"] if "record" in r}
    used = set()
    for _, expr in dashboard_queries.queries():
        for token in expr.replace("{", " ").replace("(", " ").split():
            if token.startswith("voipprobe:"):
                used.add(token)
    assert used and used <= recorded, used - recorded
