"""The shipped Prometheus rules (config/prometheus/) pass `promtool check rules` and their
unit tests (`promtool test rules`, whose expected values are worked out by hand in
config/prometheus/tests/voipprobe.rules.test.yml).

Skipped without promtool (Debian package ``prometheus``); fails instead under ``CI``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "config" / "prometheus" / "voipprobe.rules.yml"
RULE_TESTS = sorted((REPO / "config" / "prometheus" / "tests").glob("*.yml"))


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
    path = RULE_TESTS[0]
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
            assert group_by.startswith("site,"), (rule, group_by)
