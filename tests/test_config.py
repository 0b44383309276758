"""The configuration file: the README's example is valid, errors name field and value."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from agent.config import Config, ConfigError, config_from_mapping, default_config, load_config
from agent.sla import default_sla_config

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


def test_shipped_sla_default_loads_as_a_config_and_is_the_built_in() -> None:
    shipped = load_config(ROOT / "config" / "sla-default.yaml").sla
    assert shipped == default_sla_config()
    p = shipped.profiles["default"]
    assert (p.min_mos_cq, p.max_jitter_ms, p.max_loss_ratio, p.max_one_way_delay_ms) == (
        3.6, 30.0, 0.01, 150.0)
    assert p.media_dscp == (46,) and p.signalling_dscp == (24, 26, 40)
    assert p.max_rtt_ms is None and p.max_setup_delay_s is None


def test_analyze_accepts_the_shipped_sla_default() -> None:
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "--no-progress",
                           "--config", str(ROOT / "config" / "sla-default.yaml")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "1 calls" in proc.stdout


def test_an_sla_section_naming_no_profiles_keeps_the_built_in_default() -> None:
    sla = config_from_mapping({"sla": {"local_networks": ["10.1.0.0/16"]}}).sla
    assert [str(n) for n in sla.local_networks] == ["10.1.0.0/16"]
    assert sla.profiles == default_sla_config().profiles
    assert sla.profile_for_peer("other").max_jitter_ms == 30.0
    # A peer may name the built-in profile without restating it.
    peers = {"sla": {"peers": [{"name": "c", "networks": ["203.0.113.0/24"]}]}}
    assert config_from_mapping(peers).sla.profile_for_peer("c").min_mos_cq == 3.6
    # Profiles written out replace it.
    own = {"sla": {"profiles": {"gold": {"max_jitter_ms": 10}}, "default_profile": "gold"}}
    assert list(config_from_mapping(own).sla.profiles) == ["gold"]


@pytest.mark.parametrize(("data", "line"), [
    ({"sla": {"profiles": {"default": {"max_jiter_ms": 3}}}},
     "sla.profiles.default.max_jiter_ms: unknown setting; "
     "did you mean 'sla.profiles.default.max_jitter_ms'? (got 3)"),
    ({"capture": {"hep_listeners": [{"allowed_senders": ["1.2.3.4/32"], "adress": "::"}]}},
     "capture.hep_listeners.0.adress: unknown setting; "
     "did you mean 'capture.hep_listeners.0.address'? (got '::')"),
    ({"exportr": {}}, "exportr: unknown setting; did you mean 'exporter'? (got {})"),
    ({"quality": {"jitter_bufer": {}}},
     "quality.jitter_bufer: unknown setting; did you mean 'quality.jitter_buffer'? (got {})"),
    ({"colour": "blue"}, "colour: unknown setting (got 'blue')"),
])
def test_a_mistyped_key_gets_did_you_mean_with_its_dotted_path(
        data: dict[str, object], line: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping(data, "test.yaml")
    assert str(err.value).splitlines()[1:] == ["  " + line]


@pytest.mark.parametrize(("data", "line"), [
    ({"sla": {"default_profile": "gld", "profiles": {"gold": {}}}},
     "sla.default_profile: 'gld' is not among profiles ['gold']; did you mean 'gold'?"),
    ({"sla": {"peers": [{"name": "a", "networks": ["1.0.0.0/8"], "profile": "defualt"}]}},
     "sla.peers.0.profile: 'defualt' is not among profiles ['default']; "
     "did you mean 'default'?"),
    ({"capture": {"hep_listeners": [{"port": 9000, "allowed_senders": ["1.1.1.1/32"]}],
                  "tzsp_listeners": [{"port": 9000, "allowed_senders": ["1.1.1.1/32"]}]}},
     "capture: hep_listeners[0] and tzsp_listeners[0] both listen on UDP port 9000"),
])
def test_a_section_check_names_the_dotted_field_without_dumping_the_section(
        data: dict[str, object], line: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping(data, "test.yaml")
    assert str(err.value).splitlines()[1:] == ["  " + line]


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("sla:\n  local_networks: [10.0.0.0/8\n  peers: []\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}:3:8: not valid YAML: while parsing a flow sequence")
    assert "<unicode string>" not in msg and msg.count(str(f)) == 1


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


def _unvalidated_defaults(model: type[BaseModel]) -> list[type[BaseModel]]:
    """The models whose ``model_construct`` is a default factory of a field of ``model``
    or of a model below it."""
    out: list[type[BaseModel]] = []
    for info in model.model_fields.values():
        factory = info.default_factory
        owner = getattr(factory, "__self__", None)
        if getattr(factory, "__name__", "") == "model_construct" and owner not in out:
            out.append(owner)
        for t in (info.annotation, *typing.get_args(info.annotation)):
            if isinstance(t, type) and issubclass(t, BaseModel):
                out += [m for m in _unvalidated_defaults(t) if m not in out]
    return out


def test_the_unvalidated_defaults_are_what_validation_gives() -> None:
    """`default_config()` (analyze without --config) and the sections' default factories
    skip validation (start-up): each must equal what validating no settings gives."""
    validated = config_from_mapping({})
    built_in = default_config()
    assert built_in == validated == Config()
    assert built_in.model_dump() == validated.model_dump()
    assert built_in.model_fields_set == validated.model_fields_set == set()
    sections = _unvalidated_defaults(Config)
    assert {s.__name__ for s in sections} >= {
        "CaptureConfig", "ExporterConfig", "QualityConfig", "HepOutConfig", "CallsConfig"}
    for section in sections:
        constructed, checked = section.model_construct(), section.model_validate({})
        assert constructed == checked, section.__name__
        assert constructed.model_dump() == checked.model_dump(), section.__name__
        assert constructed.model_fields_set == checked.model_fields_set, section.__name__
    # and nothing was validated on the way (the validators are built at first use)
    code = ("import agent.config as c, agent.sla.config as s; c.default_config(); "
            "print(c.Config.__pydantic_complete__, c.CaptureConfig.__pydantic_complete__, "
            "s.SlaConfig.__pydantic_complete__, s.SlaProfile.__pydantic_complete__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out.split() == ["False"] * 4
