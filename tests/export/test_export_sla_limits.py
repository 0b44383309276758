"""The SLA profile limits are exported per peer (the profile each peer is bound to, ``other``
the default profile), in base units, follow a reloaded configuration; and every family
the probe serves carries ``site`` (a fleet of probes aggregates by it)."""

from __future__ import annotations

import exportbuild
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import config_from_mapping
from agent.counters import CounterSnapshot
from agent.export.metrics import SLA_LIMITS, ProbeMetrics


def _limits(reg: CollectorRegistry) -> dict[tuple[str, str, str, str], float]:
    out = {}
    for fam in reg.collect():
        if fam.name.startswith("voipprobe_sla_") and fam.type == "gauge":
            for s in fam.samples:
                out[(s.name, s.labels["site"], s.labels["peer"], s.labels["profile"])] = s.value
    return out


def test_limits_per_peer_in_base_units() -> None:
    reg, _ = exportbuild.sample_metrics()  # carrier -> gold; other -> default
    assert _limits(reg) == {
        ("voipprobe_sla_min_mos_cq", "hq", "carrier", "gold"): 4.0,
        ("voipprobe_sla_min_mos_cq", "hq", "other", "default"): 3.6,
        ("voipprobe_sla_max_loss_ratio", "hq", "carrier", "gold"): 0.01,
        ("voipprobe_sla_max_jitter_seconds", "hq", "carrier", "gold"): pytest.approx(0.030),
        # a field with a default in the profile model: every profile has it
        ("voipprobe_sla_min_dscp_compliance_ratio", "hq", "carrier", "gold"): 0.95,
        ("voipprobe_sla_min_dscp_compliance_ratio", "hq", "other", "default"): 0.95,
    }


def test_limits_follow_a_reload() -> None:
    reg, m = exportbuild.sample_metrics()
    m.set_config(config_from_mapping({"sla": {
        "peers": [{"name": "carrier", "networks": ["198.19.0.0/16"], "profile": "p"},
                  {"name": "backup", "networks": ["198.18.0.0/16"], "profile": "p"}],
        "default_profile": "p",
        "profiles": {"p": {"min_mos_cq": 3.1, "max_rtt_ms": 300, "max_setup_delay_s": 4,
                           "max_one_way_delay_ms": 150, "min_dscp_compliance_ratio": 0.9}},
    }}))
    limits = _limits(reg)
    for peer in ("carrier", "backup", "other"):
        assert limits.pop(("voipprobe_sla_min_mos_cq", "hq", peer, "p")) == 3.1
        assert limits.pop(("voipprobe_sla_max_round_trip_seconds", "hq", peer, "p")) == 0.3
        assert limits.pop(("voipprobe_sla_max_setup_delay_seconds", "hq", peer, "p")) == 4.0
        assert limits.pop(("voipprobe_sla_max_one_way_delay_seconds", "hq", peer, "p")) == 0.15
        assert limits.pop(("voipprobe_sla_min_dscp_compliance_ratio", "hq", peer, "p")) == 0.9
    assert limits == {}  # gold is gone, and p sets no jitter or loss limit


def test_every_limit_field_exists_in_the_profile_model() -> None:
    from agent.sla.config import SlaProfile
    assert {field for field, _, _, _ in SLA_LIMITS} <= set(SlaProfile.model_fields)


def test_every_family_carries_site() -> None:
    """Every sample the exporter serves (after a call, a reload, capture totals) has
    ``site`` (client_python's process_/python_ families are not the probe's)."""
    reg, m = exportbuild.sample_metrics()
    m.config_reloaded(False)
    m.update(CounterSnapshot(packets=10, calls_started=1), {"eth0": _Capture()})
    families = list(text_string_to_metric_families(generate_latest(reg).decode()))
    names = {f.name for f in families}
    assert {"voipprobe_build_info", "voipprobe_config_last_reload_successful",
            "voipprobe_sla_min_mos_cq", "voipprobe_call_mos"} <= names
    for fam in families:
        for s in fam.samples:
            assert s.labels.get("site") == "hq", (fam.name, s)
    assert reg.get_sample_value("voipprobe_config_last_reload_successful",
                                {"site": "hq"}) == 0.0


def test_site_label_of_a_fresh_probe() -> None:
    reg = CollectorRegistry()
    ProbeMetrics(reg, site="branch-7")
    assert reg.get_sample_value("voipprobe_config_last_reload_successful",
                                {"site": "branch-7"}) == 1.0
    assert reg.get_sample_value("voipprobe_sla_min_mos_cq", {
        "site": "branch-7", "peer": "other", "profile": "default"}) == 3.6


class _Capture:
    packets = 5
    drops = 0
