"""The configuration file: the README's example is valid, errors name field and value."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.config import ConfigError, config_from_mapping, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_is_a_valid_config() -> None:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block is not None
    cfg = config_from_mapping(yaml.safe_load(block.group(1)), "README")
    assert cfg.sla.profile_for_peer("carrier-a").max_loss_ratio == 0.005
    assert cfg.quality.jitter_buffer.model == "adaptive" and cfg.calls.media_idle_timeout_s == 30


def test_report_linger_defaults_to_5_s_and_may_be_0() -> None:
    assert config_from_mapping({}).calls.report_linger_s == 5.0
    assert config_from_mapping({"calls": {"report_linger_s": 0}}).calls.report_linger_s == 0.0
    assert config_from_mapping({"calls": {"report_linger_s": 30}}).calls.report_linger_s == 30


def test_shipped_sla_default_loads_as_the_sla_section(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    sla = yaml.safe_load((ROOT / "config" / "sla-default.yaml").read_text())
    f.write_text(yaml.safe_dump({"sla": sla}))
    assert load_config(f).sla.profiles["default"].min_mos_cq == 3.6


@pytest.mark.parametrize(("data", "field", "bad"), [
    ({"sla": {"profiles": {"default": {"max_jitter_ms": "abc"}}}},
     "sla.profiles.default.max_jitter_ms", "abc"),
    ({"quality": {"jitter_buffer": {"model": "magic"}}}, "quality.jitter_buffer.model", "magic"),
    ({"calls": {"media_idle_timeout_s": -1}}, "calls.media_idle_timeout_s", "-1"),
    ({"calls": {"report_linger_s": -0.5}}, "calls.report_linger_s", "-0.5"),
    ({"privacy": "maybe"}, "privacy", "maybe"),
    ({"colour": "blue"}, "colour", "blue"),
])
def test_errors_name_the_field_and_the_value(data: dict[str, object], field: str, bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping(data, "test.yaml")
    assert field in str(err.value) and bad in str(err.value)


def test_analyze_with_a_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("sla:\n  profiles:\n    default:\n      min_mos_cq: 7\n")
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "--config", str(f)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "sla.profiles.default.min_mos_cq" in proc.stderr and "Traceback" not in proc.stderr
