"""Config precedence (defaults < file < VOIPPROBE_* < flags), check-config, run's config errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from agent.cli import build_parser, effective_config, main
from agent.config import Config, ConfigError, config_from_mapping, env_overrides, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    f = tmp_path / "config.yaml"
    f.write_text("exporter:\n  listen: 10.0.0.1:9100\n  site: hq\n"
                 "capture:\n  interfaces: [eth9]\n  promisc: true\n"
                 "call_log:\n  target: /tmp/from-file.log\n")
    return f


def effective(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Config:
    args = build_parser().parse_args(argv)
    config, _path, _overrides = effective_config(args, sys.stderr)
    return config


def test_file_then_environment_then_flags(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = effective(["check-config", str(config_file)], capsys)
    assert cfg.exporter.listen == "10.0.0.1:9100" and cfg.capture.interfaces == ["eth9"]
    monkeypatch.setenv("VOIPPROBE_EXPORTER__LISTEN", "127.0.0.1:9999")
    monkeypatch.setenv("VOIPPROBE_CAPTURE__INTERFACES", "eth0,eth1")
    monkeypatch.setenv("VOIPPROBE_PRIVACY", "clear")
    monkeypatch.setenv("VOIPPROBE_CAPTURE__PROMISC", "false")
    cfg = effective(["check-config", str(config_file)], capsys)
    assert cfg.exporter.listen == "127.0.0.1:9999" and cfg.exporter.port == 9999
    assert cfg.capture.interfaces == ["eth0", "eth1"] and cfg.capture.promisc is False
    assert cfg.privacy == "clear" and cfg.exporter.site == "hq"  # untouched: the file's
    cfg = effective(["check-config", str(config_file), "-i", "wan0", "--interface", "lan0",
                     "--listen", "[::1]:9200", "--call-log", "-"], capsys)
    assert cfg.capture.interfaces == ["wan0", "lan0"]
    assert (cfg.exporter.host, cfg.exporter.port) == ("::1", 9200)
    assert cfg.call_log.target == "-" and cfg.privacy == "clear"


def test_environment_values_are_typed_by_the_field() -> None:
    env = {"VOIPPROBE_CAPTURE__SIP_PORTS": "[5060, 5080]", "VOIPPROBE_CAPTURE__BPF": "null",
           "VOIPPROBE_CAPTURE__BLOCK_COUNT": "8", "voipprobe_calls__interval_s": "5",
           "VOIPPROBE_QUALITY__JITTER_BUFFER__MODEL": "fixed", "OTHER": "x"}
    cfg = config_from_mapping({"capture": {"bpf": "vlan 20"}}, "t", env_overrides(env))
    assert cfg.capture.sip_ports == [5060, 5080] and cfg.capture.bpf is None
    assert cfg.capture.block_count == 8 and cfg.calls.interval_s == 5.0
    assert cfg.quality.jitter_buffer.model == "fixed"


@pytest.mark.parametrize(("env", "field", "bad"), [
    ({"VOIPPROBE_EXPORTER__LISTEN": "nohost"}, "exporter.listen", "nohost"),
    ({"VOIPPROBE_CAPTURE__BLOCK_SIZE": "5000"}, "capture.block_size", "5000"),
    ({"VOIPPROBE_CALL_LOG__FORMAT": "xml"}, "call_log.format", "xml"),
    ({"VOIPPROBE_CAPTURE__INTERFACES": "eth0,any"}, "capture.interfaces", "any"),
    ({"VOIPPROBE_COLOUR": "blue"}, "colour", "blue"),
])
def test_errors_name_the_field_the_value_and_the_variable(
    env: dict[str, str], field: str, bad: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping({}, "t.yaml", env_overrides(env))
    text = str(err.value)
    assert field in text and bad in text and next(iter(env)) in text


def test_a_mistyped_variable_gets_did_you_mean_and_its_origin() -> None:
    env = {"VOIPPROBE_EXPORTER__LISTN": "127.0.0.1:1"}
    with pytest.raises(ConfigError) as err:
        config_from_mapping({}, "t.yaml", env_overrides(env))
    assert str(err.value).splitlines()[1] == (
        "  exporter.listn: unknown setting; did you mean 'exporter.listen'? "
        "(got '127.0.0.1:1') [from environment VOIPPROBE_EXPORTER__LISTN]")


def test_a_bad_flag_is_named(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(config_file), "--listen", "0.0.0.0:70000"]) == 2
    err = capsys.readouterr().err
    assert "exporter.listen" in err and "70000" in err and "--listen" in err


def test_check_config_prints_the_effective_config_as_yaml(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(config_file), "-i", "eth3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["capture"]["interfaces"] == ["eth3"]
    assert printed["exporter"] == {"listen": "10.0.0.1:9100", "site": "hq", "recent_calls": 200,
                                    "web_config": None}
    # The printed document is itself a valid config giving the same settings.
    assert config_from_mapping(printed) == load_config(config_file).model_copy(
        update={"capture": load_config(config_file).capture.model_copy(
            update={"interfaces": ["eth3"]})})


def test_check_config_reports_errors_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("capture:\n  block_timeout_ms: 0\ncall_log:\n  format: xml\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "capture.block_timeout_ms" in err and "call_log.format" in err and "'xml'" in err


def test_run_with_a_missing_explicit_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: cannot read" in capsys.readouterr().err


def test_no_default_file_means_built_in_defaults_with_a_note(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("agent.cli.DEFAULT_CONFIG", str(tmp_path / "absent.yaml"))
    args = build_parser().parse_args(["run"])
    config, path, _ = effective_config(args, sys.stderr)
    assert path is None and config == Config()
    assert "using built-in defaults" in capsys.readouterr().err


def test_built_in_defaults_are_what_the_issue_asks() -> None:
    cfg = Config()
    assert cfg.capture.interfaces == ["any"] and cfg.call_log.target == "-"
    # issue 10: never every address by default (a gateway's WAN side); the loopback
    assert 9100 <= cfg.exporter.port <= 9999 and cfg.exporter.host == "127.0.0.1"
    assert cfg.state_dir == Path("/var/lib/voipprobe") and cfg.privacy == "hash"


def test_example_config_shows_every_setting_at_its_default() -> None:
    example = ROOT / "config" / "voipprobe.yaml"
    assert load_config(example) == Config()

    def keys(node: object, prefix: str = "") -> set[str]:
        if not isinstance(node, dict):
            return set()
        out = set()
        for k, v in node.items():
            out.add(prefix + str(k))
            # below a user-named mapping (profiles, codec_overrides) keys are examples
            if k not in ("profiles", "codec_overrides"):
                out |= keys(v, f"{prefix}{k}.")
        return out

    written = keys(yaml.safe_load(example.read_text()))
    assert keys(Config().model_dump(mode="json")) <= written | {"sla.profiles"}
