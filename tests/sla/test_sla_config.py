"""SLA config models and loader (agent/sla/config.py)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
import yaml

from agent.sla import SlaConfigError, default_sla_config, load_sla_config, parse_sla_config
from agent.sla.config import DEFAULT_SLA, SlaConfig

REPO = Path(__file__).resolve().parents[2]
DEFAULT_YAML = REPO / "config" / "sla-default.yaml"

GOOD = """
local_networks: [192.168.1.0/24, "2001:db8:1::/48"]
peers:
  - name: carrier-a
    networks: [203.0.113.0/24, "2001:db8:ff::/48"]
    profile: gold
  - name: carrier-b
    networks: [198.51.100.0/24]
profiles:
  default: {min_mos_cq: 3.6}
  gold:
    min_mos_cq: 4.0
    max_jitter_ms: 20
    max_loss_ratio: "0.5%"
    max_rtt_ms: 200
    max_one_way_delay_ms: 100
    max_setup_delay_s: 3
    media_dscp: [46]
    signalling_dscp: [24, 40]
    min_dscp_compliance_ratio: 0.99
"""


def test_shipped_yaml_sla_section_equals_default() -> None:
    section = yaml.safe_load(DEFAULT_YAML.read_text())["sla"]
    shipped = SlaConfig.model_validate(section)
    assert shipped == default_sla_config()
    p = shipped.profiles["default"]
    assert p.min_dscp_compliance_ratio == 0.95
    assert p.require_two_way_media is False and p.two_way_media_after_s == 5.0


def test_the_unvalidated_default_is_what_validation_gives() -> None:
    """`default_sla_config` skips validation (start-up): value for value, type for type,
    it is what validating the shipped default section gives."""
    built, checked = default_sla_config(), SlaConfig.model_validate(DEFAULT_SLA)
    assert built == checked and built.model_dump() == checked.model_dump()
    for b, c in ((built, checked), (built.profiles["default"], checked.profiles["default"])):
        assert b.model_fields_set == c.model_fields_set
        assert {k: type(v) for k, v in vars(b).items()} == {k: type(v) for k, v in vars(c).items()}
    assert [type(n) for n in built.local_networks] == [type(n) for n in checked.local_networks]
    assert built.profiles["default"].media_dscp == (46,)


def test_no_profiles_means_the_built_in_default_profile() -> None:
    c = parse_sla_config("local_networks: [192.168.1.0/24]")
    assert c.profiles == default_sla_config().profiles
    assert c.profile_for_peer("other").max_loss_ratio == 0.01


def test_mistyped_key_suggests_the_field() -> None:
    msg = bad("profiles: {default: {min_dscp_compliance: 0.9}}")
    assert msg.splitlines()[1] == (
        "  profiles.default.min_dscp_compliance: unknown setting; "
        "did you mean 'profiles.default.min_dscp_compliance_ratio'? (got 0.9)")


def test_yaml_error_names_source_line_and_column() -> None:
    assert bad("peers: []\nprofiles: {default: [") == (
        "test.yaml:2:22: not valid YAML: while parsing a flow node, "
        "expected the node content, but found '<stream end>'")


def test_good_config() -> None:
    c = parse_sla_config(GOOD)
    assert c.local_networks[1] == ipaddress.ip_network("2001:db8:1::/48")
    gold = c.profiles["gold"]
    assert gold.name == "gold"
    assert gold.max_loss_ratio == pytest.approx(0.005)
    assert c.peers[1].profile == "default"
    assert c.profile_for_peer("carrier-a") is gold
    assert c.profile_for_peer("carrier-b").name == "default"
    assert c.profile_for_peer("other").name == "default"


def bad(text: str) -> str:
    with pytest.raises(SlaConfigError) as info:
        parse_sla_config(text, "test.yaml")
    return str(info.value)


def test_error_names_field_path_and_value() -> None:
    msg = bad("profiles: {default: {}, gold: {max_jitter_ms: abc}}")
    assert "profiles.gold.max_jitter_ms" in msg and "'abc'" in msg
    assert msg.startswith("test.yaml")


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("profiles: {default: {max_loss_ratio: 5}}", "profiles.default.max_loss_ratio", "5"),
        (
            "profiles: {default: {max_loss_ratio: 'lots%'}}",
            "profiles.default.max_loss_ratio",
            "'lots%'",
        ),
        ("profiles: {default: {min_mos_cq: 5.2}}", "profiles.default.min_mos_cq", "5.2"),
        ("profiles: {default: {media_dscp: [46, 64]}}", "profiles.default.media_dscp.1", "64"),
        ("profiles: {default: {max_jiter_ms: 30}}", "profiles.default.max_jiter_ms", "30"),
        (
            "local_networks: [10.0.0.300/8]\nprofiles: {default: {}}",
            "local_networks.0",
            "'10.0.0.300/8'",
        ),
        (
            "peers: [{name: a, networks: [10.1.0.0/16], profile: default, x: 1}]\n"
            "profiles: {default: {}}",
            "peers.0.x",
            "1",
        ),
        (
            "peers: [{name: 'bad name', networks: [10.1.0.0/16]}]\nprofiles: {default: {}}",
            "peers.0.name",
            "'bad name'",
        ),
        (
            "peers: [{name: other, networks: [10.1.0.0/16]}]\nprofiles: {default: {}}",
            "peers.0.name",
            "'other'",
        ),
        ("bogus: 1\nprofiles: {default: {}}", "bogus", "1"),
    ],
)
def test_field_errors(text: str, path: str, value: str) -> None:
    msg = bad(text)
    assert re.search(rf"^  {re.escape(path)}: .*\(got {re.escape(value)}\)$", msg, re.M), msg


def test_missing_peer_profile() -> None:
    msg = bad(
        "peers: [{name: a, networks: [10.1.0.0/16], profile: silver}]\nprofiles: {default: {}}"
    )
    assert "peers.0.profile: 'silver' is not among profiles ['default']" in msg


def test_missing_default_profile() -> None:
    msg = bad("profiles: {gold: {}}")
    assert "default_profile: 'default' is not among profiles ['gold']" in msg


def test_duplicate_peer() -> None:
    msg = bad(
        "peers: [{name: a, networks: [10.1.0.0/16]}, {name: a, networks: [10.2.0.0/16]}]\n"
        "profiles: {default: {}}"
    )
    assert "peers.1.name: duplicate peer name 'a'" in msg


def test_yaml_syntax_and_shape_errors(tmp_path: Path) -> None:
    assert "not valid YAML" in bad("profiles: {default: [")
    assert "top level must be a mapping" in bad("- 1\n- 2")
    with pytest.raises(SlaConfigError, match="cannot read"):
        load_sla_config(tmp_path / "missing.yaml")


def test_percent_strings() -> None:
    c = parse_sla_config(
        "profiles: {default: {max_loss_ratio: '1%', min_dscp_compliance_ratio: '99.5 %'}}"
    )
    p = c.profiles["default"]
    assert p.max_loss_ratio == pytest.approx(0.01)
    assert p.min_dscp_compliance_ratio == pytest.approx(0.995)


def test_models_are_frozen() -> None:
    c = default_sla_config()
    with pytest.raises(Exception, match="frozen"):
        c.default_profile = "x"  # type: ignore[misc]
    assert isinstance(c, SlaConfig)


def test_two_way_media_options() -> None:
    c = parse_sla_config(
        "profiles: {default: {}, gold: {require_two_way_media: true, two_way_media_after_s: 8}}")
    gold, default = c.profiles["gold"], c.profiles["default"]
    assert (gold.require_two_way_media, gold.two_way_media_after_s) == (True, 8.0)
    assert (default.require_two_way_media, default.two_way_media_after_s) == (False, 5.0)


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("profiles: {default: {require_two_way_media: maybe}}",
         "profiles.default.require_two_way_media", "'maybe'"),
        ("profiles: {default: {two_way_media_after_s: -1}}",
         "profiles.default.two_way_media_after_s", "-1"),
        ("profiles: {default: {two_way_media_after_s: soon}}",
         "profiles.default.two_way_media_after_s", "'soon'"),
        ("profiles: {default: {require_two_way: true}}",
         "profiles.default.require_two_way", "True"),
    ],
)
def test_two_way_media_option_errors(text: str, path: str, value: str) -> None:
    msg = bad(text)
    assert re.search(rf"^  {re.escape(path)}: .*\(got {re.escape(value)}\)$", msg, re.M), msg
