"""The shipped Prometheus rules (config/prometheus/) pass `promtool check rules` and their
unit tests (`promtool test rules`, whose expected values are worked out by hand in
config/prometheus/tests/voipprobe.rules.test.yml).

Skipped without promtool (Debian package ``prometheus``); fails instead under ``CI``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "config" / "prometheus" / "voipprobe.rules.yml"
RULE_TESTS_DIR = REPO / "config" / "prometheus" / "tests"
RULE_TESTS = sorted(RULE_TESTS_DIR.glob("*.yml"))
FLEET_TESTS = RULE_TESTS_DIR / "voipprobe.fleet.test.yml"


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing in CI (Debian package prometheus)")
        pytest.skip("promtool missing (Debian package prometheus)")
    return tool


def _promtool_run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60,
                          check=False, cwd=cwd)


def _rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_rules_pass_promtool_check() -> None:
    proc = _promtool_run("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in proc.stdout


def test_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool unit test files under config/prometheus/tests"
    for path in RULE_TESTS:
        proc = _promtool_run("test", "rules", path.name, cwd=path.parent)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "SUCCESS" in proc.stdout


def test_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    """A wrong expectation fails promtool: the unit test above really compares values."""
    path = RULE_TESTS_DIR / "voipprobe.rules.test.yml"
    text = path.read_text(encoding="utf-8")
    assert "value: 0.04\n" in text
    broken = tmp_path / path.name
    broken.write_text(text.replace("value: 0.04\n", "value: 0.05\n"), encoding="utf-8")
    shutil.copy(RULES, tmp_path / RULES.name)
    broken.write_text(broken.read_text(encoding="utf-8").replace(
        "../voipprobe.rules.yml", RULES.name), encoding="utf-8")
    proc = _promtool_run("test", "rules", broken.name, cwd=tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert "voipprobe:rtp_loss:ratio_5m" in proc.stdout + proc.stderr


def test_every_rule_is_tested_and_well_formed() -> None:
    """Each recording rule is asserted and each alert expected to fire in the unit tests;
    alerts carry ``for``, a severity and both annotations; recorded names are
    ``voipprobe:...`` and keep ``site`` in every aggregation."""
    tested = "".join(p.read_text(encoding="utf-8") for p in RULE_TESTS)
    tests = [t for p in RULE_TESTS for t in yaml.safe_load(p.read_text())["tests"]]
    firing = {a["alertname"] for t in tests for a in t.get("alert_rule_test", ())
              if a["exp_alerts"]}
    for rule in _rules():
        expr = str(rule["expr"])
        if "record" in rule:
            name = str(rule["record"])
            assert name.startswith("voipprobe:"), name
            assert f"expr: {name}" in tested, f"recording rule {name} has no unit test"
        else:
            assert rule["alert"] in firing, f"alert {rule['alert']} never fires in a test"
            assert rule.get("for"), rule["alert"]
            labels = rule.get("labels")
            assert isinstance(labels, dict)
            assert labels.get("severity") in {"critical", "warning", "info"}, rule["alert"]
            annotations = rule.get("annotations")
            assert isinstance(annotations, dict)
            assert {"summary", "description"} <= set(annotations), rule["alert"]
        for group_by in expr.split("by (")[1:]:
            assert group_by.startswith(("site,", "site)")), (rule, group_by)


def test_no_rule_assumes_a_single_probe() -> None:
    """Every aggregation keeps ``site`` (checked above); none drops it with ``without``
    or a bare ``sum(``/``max(``; every vector match of two recorded series matches on
    ``site``; and alert thresholds that belong to a profile are not literal numbers."""
    for rule in _rules():
        expr = " ".join(str(rule["expr"]).split())
        assert "without" not in expr, rule
        assert not re.search(r"\b(sum|max|min|avg|count)\s*\(", expr), rule  # no "by"
        if " on (" in expr:
            assert all(p.startswith(("site,", "site)")) for p in expr.split(" on (")[1:]), rule
    alerts = {str(r["alert"]): " ".join(str(r["expr"]).split()) for r in _rules()
              if "alert" in r}
    assert alerts["VoipprobeMosP05Low"] == (
        "voipprobe:call_mos:p05_15m < on (site, peer) group_left (profile) "
        "voipprobe:sla_min_mos_cq:max")
    assert alerts["VoipprobeDscpMediaRemarked"].endswith(
        "< on (site, peer) group_left (profile) voipprobe:sla_min_dscp_compliance_ratio:max")


def _fleet_expectations() -> dict[str, dict[str, float]]:
    """The fleet unit test's expected values: expr -> {site or "": value}."""
    (test,) = yaml.safe_load(FLEET_TESTS.read_text(encoding="utf-8"))["tests"]
    out: dict[str, dict[str, float]] = {}
    for case in test["promql_expr_test"]:
        values = {}
        for sample in case["exp_samples"]:
            labels = sample.get("labels", "{}")
            site = labels.split('site="', 1)[1].split('"', 1)[0] if "site=" in labels else ""
            values[site] = float(sample["value"])
        out[case["expr"]] = values
    return out


def test_fleet_overall_is_the_sum_over_sites() -> None:
    """In the fleet unit test (whose values promtool checks), the overall value of each
    additive Fleet query equals the sum of its per-site values, over two sites one of
    which runs two probes; ratios and quantiles lie between the sites' values."""
    expected = _fleet_expectations()
    pairs = [(e, re.sub(r"^(60 \* )?sum by \(site\) \(", r"\1sum(", e)) for e in expected
             if re.match(r"^(60 \* )?sum by \(site\) \(", e)]
    assert len(pairs) == 4, pairs  # in progress, a minute, measured, capture sources
    for per_site, overall in pairs:
        sites = expected[per_site]
        assert set(sites) == {"paris", "lyon"}, per_site
        assert expected[overall] == {"": sum(sites.values())}, overall
    shaped = [(e, o) for e in expected for o in expected
              if e.startswith(("(sum by (site)", "histogram_quantile(0.05, sum by (site, le)"))
              and o == e.replace("sum by (site) (", "sum (").replace(
                  "sum by (site, le)", "sum by (le)")]
    assert len(shaped) == 2, shaped
    for per_site, overall in shaped:
        low, high = min(expected[per_site].values()), max(expected[per_site].values())
        assert low < expected[overall][""] < high, (per_site, expected[overall])
