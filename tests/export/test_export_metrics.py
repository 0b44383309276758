"""ProbeMetrics fed the events of one synthetic call: values of every family, bounded
labels, and a clean `promtool check metrics`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from exportbuild import CALL_ID, config, run
from prometheus_client import CollectorRegistry, generate_latest

from agent.calls.events import CallEnded, CallInterval
from agent.capture.mirror_listener import MirrorStats
from agent.counters import CounterSnapshot, HepCounts
from agent.decode.sequence import SequenceGaps
from agent.export.metrics import (
    MOS_BUCKETS,
    ProbeMetrics,
    codec_label,
    dscp_class,
    status_class,
)


@dataclass(frozen=True)
class Cap:
    packets: int
    drops: int


def fed(*, lose_every: int = 10, dscp_b: int = 0) -> tuple[CollectorRegistry, ProbeMetrics]:
    cfg = config()
    events, counters = run(cfg, lose_every=lose_every, dscp_b=dscp_b)
    reg = CollectorRegistry()
    m = ProbeMetrics(reg, site="hq", config=cfg)
    m.observe_all(events)
    m.update(counters, {"eth0": Cap(1000, 3), "eth1": Cap(20, 0)})
    return reg, m


CALL = {"site": "hq", "peer": "carrier"}
IN = {**CALL, "direction": "inbound", "codec": "PCMA"}
OUT = {**CALL, "direction": "outbound", "codec": "PCMA"}
# stream-level series also say where the stream was seen (a test capture names no point)
IN_AT = {**IN, "point": "unnamed"}
OUT_AT = {**OUT, "point": "unnamed"}


def test_calls_and_sla_families() -> None:
    reg, _ = fed()
    v = reg.get_sample_value
    assert v("voipprobe_calls_ended_total",
             {**CALL, "end_reason": "normal", "status_class": "2xx"}) == 1.0
    assert v("voipprobe_calls_started_total", {"site": "hq"}) == 1.0
    assert v("voipprobe_calls_active", {"site": "hq"}) == 0.0
    assert v("voipprobe_sla_verdicts_total",
             {**CALL, "profile": "gold", "verdict": "violated"}) == 1.0
    assert v("voipprobe_sla_verdicts_total", {**CALL, "profile": "gold", "verdict": "met"}) is None
    for threshold in ("min_mos_cq", "max_loss_ratio", "media_dscp"):
        assert v("voipprobe_sla_violations_total",
                 {**CALL, "profile": "gold", "threshold": threshold}) == 1.0  # once per call
    assert v("voipprobe_sla_violations_total",
             {**CALL, "profile": "gold", "threshold": "max_jitter_ms"}) is None


def test_call_histograms_per_direction() -> None:
    reg, _ = fed()
    v = reg.get_sample_value
    assert v("voipprobe_call_mos_count", OUT) == 1.0
    assert v("voipprobe_call_mos_sum", OUT) == pytest.approx(4.375, abs=0.01)
    assert v("voipprobe_call_mos_sum", IN) == pytest.approx(3.39, abs=0.01)
    # 3.39 falls in (3.3, 3.6]: not in le=3.3, in le=3.6
    assert v("voipprobe_call_mos_bucket", {**IN, "le": "3.3"}) == 0.0
    assert v("voipprobe_call_mos_bucket", {**IN, "le": "3.6"}) == 1.0
    assert v("voipprobe_call_mos_bucket", {**IN, "le": "+Inf"}) == 1.0
    assert v("voipprobe_call_loss_ratio_sum", IN) == pytest.approx(39 / 399, abs=1e-6)
    assert v("voipprobe_call_loss_ratio_sum", OUT) == 0.0
    assert v("voipprobe_call_jitter_seconds_count", IN) == 1.0
    assert (v("voipprobe_call_jitter_seconds_sum", IN) or 0.0) < 0.001  # a perfect clock
    assert v("voipprobe_call_setup_delay_seconds_sum", CALL) == pytest.approx(0.25)
    assert v("voipprobe_call_setup_delay_seconds_bucket", {**CALL, "le": "0.25"}) == 1.0
    assert v("voipprobe_call_setup_delay_seconds_bucket", {**CALL, "le": "0.1"}) == 0.0
    assert v("voipprobe_call_round_trip_seconds_count", CALL) is None  # no RTCP in the call


def test_interval_histograms() -> None:
    reg, _ = fed()
    v = reg.get_sample_value
    # 8 s of media (T0+1.1 .. T0+9.1) on a 2.5 s grid of packet time: intervals end at
    # T0+2.5, +5.0, +7.5, +10.0 (and +12.5, empty: the stream runs until its call's record
    # is made, 5 s after the BYE); the first (70 packets) and the 1.6 s tail (80) are too
    # short to rate, the two others are rated; all four with packets observe loss, jitter
    assert v("voipprobe_interval_mos_count", OUT_AT) == 2.0
    assert v("voipprobe_interval_mos_sum", OUT_AT) == pytest.approx(2 * 4.3745, abs=0.01)
    assert v("voipprobe_interval_mos_count", IN_AT) == 2.0
    assert v("voipprobe_interval_mos_bucket", {**IN_AT, "le": "3.6"}) == 2.0
    assert v("voipprobe_interval_mos_bucket", {**IN_AT, "le": "3.3"}) == 0.0
    assert v("voipprobe_interval_loss_ratio_count", IN_AT) == 4.0
    # 6/69 + 13/126 + 12/124 + 8/80 (every 10th B->A packet lost)
    assert v("voipprobe_interval_loss_ratio_sum", IN_AT) == pytest.approx(0.3874, abs=1e-3)
    assert v("voipprobe_interval_jitter_seconds_count", OUT_AT) == 4.0


def test_rtp_and_dscp_counts() -> None:
    reg, _ = fed()
    v = reg.get_sample_value
    assert v("voipprobe_rtp_packets_total", OUT_AT) == 400.0
    assert v("voipprobe_rtp_packets_total", IN_AT) == 360.0
    # 40 dropped; the very last one is a tail loss no receiver can see (RFC 3550 A.3)
    assert v("voipprobe_rtp_lost_packets_total", IN_AT) == 39.0
    assert v("voipprobe_rtp_lost_packets_total", OUT_AT) == 0.0
    media = {**CALL, "traffic": "media", "expected": "EF"}
    assert v("voipprobe_dscp_mismatched_packets_total", media) == 360.0  # B->A sent with CS0
    sig = {**CALL, "traffic": "signalling", "expected": "CS3+AF31+CS5"}
    assert v("voipprobe_dscp_mismatched_packets_total", sig) == 0.0


def test_rtp_counted_live_from_intervals_and_completed_at_stream_end() -> None:
    cfg = config()
    events, _ = run(cfg, lose_every=10, dscp_b=0)
    reg = CollectorRegistry()
    m = ProbeMetrics(reg, site="hq", config=cfg)
    first_ended = next(i for i, e in enumerate(events) if not isinstance(e, CallInterval))
    m.observe_all(events[:first_ended])  # the intervals only
    assert reg.get_sample_value("voipprobe_rtp_packets_total", OUT_AT) == 400.0
    m.observe_all(events[first_ended:])
    assert reg.get_sample_value("voipprobe_rtp_packets_total", OUT_AT) == 400.0  # not twice


def test_engine_counter_families() -> None:
    reg, m = fed()
    v = reg.get_sample_value
    assert v("voipprobe_sip_requests_total", {**CALL, "method": "INVITE"}) == 1.0
    assert v("voipprobe_sip_requests_total", {**CALL, "method": "BYE"}) == 1.0
    assert v("voipprobe_sip_responses_total", {"site": "hq", "status_class": "2xx"}) == 2.0
    assert v("voipprobe_sip_responses_total", {"site": "hq", "status_class": "1xx"}) == 1.0
    assert v("voipprobe_capture_packets_total", {"site": "hq", "interface": "eth0"}) == 1000.0
    assert v("voipprobe_capture_kernel_drops_total", {"site": "hq", "interface": "eth0"}) == 3.0
    assert v("voipprobe_decode_errors_total", {"site": "hq", "reason": "truncated"}) == 0.0
    assert v("voipprobe_table_evictions_total", {"site": "hq", "table": "calls"}) == 0.0
    assert v("voipprobe_table_evictions_total", {"site": "hq", "table": "sip_dialogs"}) == 0.0
    assert v("voipprobe_parse_errors_total", {"site": "hq", "protocol": "sip"}) == 0.0
    # absolute values: a later snapshot replaces, never adds
    m.update(CounterSnapshot(calls_started=7, calls_ended=4,
                             sip_requests={("carrier", "INVITE"): 9, ("other", "WEIRD"): 2,
                                           ("gone-peer", "INVITE"): 3},
                             table_evictions={"rtp_streams": 5}))
    assert v("voipprobe_calls_started_total", {"site": "hq"}) == 7.0
    assert v("voipprobe_calls_active", {"site": "hq"}) == 3.0
    sip = {"site": "hq", "peer": "carrier", "method": "INVITE"}
    assert v("voipprobe_sip_requests_total", sip) == 9.0
    # a peer the config does not name (say, renamed by a reload) is "other"; so is a method
    # outside KNOWN_METHODS
    assert v("voipprobe_sip_requests_total", {**sip, "peer": "other"}) == 3.0
    assert v("voipprobe_sip_requests_total", {**sip, "peer": "other", "method": "OTHER"}) == 2.0
    assert v("voipprobe_table_evictions_total", {"site": "hq", "table": "rtp_streams"}) == 5.0
    m.set_active(11)
    assert v("voipprobe_calls_active", {"site": "hq"}) == 11.0


def test_hep_counter_families() -> None:
    reg, m = fed()
    v = reg.get_sample_value
    site = {"site": "hq"}
    assert v("voipprobe_hep_packets_total", site) == 0.0
    assert v("voipprobe_hep_records_total", {**site, "version": "3"}) == 0.0
    m.update(CounterSnapshot(hep=HepCounts(
        packets=21, bytes=15609, records_by_version={"3": 20, "2": 4},
        errors_by_version={"3": 1},
        dropped_by_reason={"duplicate": 14, "json_report": 2, "rtcp_json_malformed": 3})))
    assert v("voipprobe_hep_packets_total", site) == 21.0
    assert v("voipprobe_hep_bytes_total", site) == 15609.0
    assert v("voipprobe_hep_records_total", {**site, "version": "3"}) == 20.0
    assert v("voipprobe_hep_records_total", {**site, "version": "2"}) == 4.0
    assert v("voipprobe_hep_decode_errors_total", {**site, "version": "3"}) == 1.0
    assert v("voipprobe_hep_decode_errors_total", {**site, "version": "1"}) == 0.0
    assert v("voipprobe_hep_dropped_total", {**site, "reason": "duplicate"}) == 14.0
    assert v("voipprobe_hep_dropped_total", {**site, "reason": "json_report"}) == 2.0
    assert v("voipprobe_hep_dropped_total", {**site, "reason": "other_type"}) == 0.0
    assert v("voipprobe_hep_dropped_total", {**site, "reason": "rtcp_json_malformed"}) == 3.0


def test_mirror_listener_and_sequence_families() -> None:
    """Per configured listener (never an address), and GRE sequence gaps per point kind
    or configured point name."""
    cfg = config().model_copy(deep=True)
    cfg.capture.point_names["erspan/198.18.0.1/s7"] = "core-span"
    reg = CollectorRegistry()
    m = ProbeMetrics(reg, site="hq", config=cfg)
    m.set_interfaces(["eth0", "tzsp:37008", "dc-vxlan"])
    v = reg.get_sample_value
    tzsp = {"site": "hq", "listener": "tzsp:37008", "protocol": "tzsp"}
    m.update(CounterSnapshot(), {
        "eth0": Cap(10, 0),
        "tzsp:37008": MirrorStats("tzsp", datagrams=120, bytes=36_000, denied=5, invalid=3,
                                  not_ethernet=2, up=True),
        "dc-vxlan": MirrorStats("vxlan", datagrams=7, bytes=900, denied=0, invalid=0,
                                not_ethernet=0, up=True),
    }, {"erspan/198.18.0.1/s7": SequenceGaps(lost=4, resets=1),
        "erspan/198.18.0.2/s3": SequenceGaps(lost=2, resets=0),
        "gretap/198.18.0.3": SequenceGaps(lost=1, resets=2),
        "erspan/198.18.0.4": SequenceGaps(lost=6, resets=0)})
    assert v("voipprobe_mirror_datagrams_total", tzsp) == 120.0
    assert v("voipprobe_mirror_bytes_total", tzsp) == 36_000.0
    assert v("voipprobe_mirror_denied_total", tzsp) == 5.0
    assert v("voipprobe_mirror_decode_errors_total", {**tzsp, "reason": "invalid_header"}) == 3
    assert v("voipprobe_mirror_decode_errors_total", {**tzsp, "reason": "not_ethernet"}) == 2
    assert v("voipprobe_mirror_datagrams_total",
             {"site": "hq", "listener": "dc-vxlan", "protocol": "vxlan"}) == 7.0
    # a listener is a capture source too: its datagrams and drops
    assert v("voipprobe_capture_packets_total", {"site": "hq", "interface": "tzsp:37008"}) == 120
    assert v("voipprobe_capture_kernel_drops_total",
             {"site": "hq", "interface": "tzsp:37008"}) == 10.0
    lost, resets = "voipprobe_mirror_sequence_lost_packets_total", \
        "voipprobe_mirror_sequence_resets_total"
    assert v(lost, {"site": "hq", "point": "core-span"}) == 4.0
    assert v(lost, {"site": "hq", "point": "erspan"}) == 8.0  # the unnamed sessions summed
    assert v(lost, {"site": "hq", "point": "gretap"}) == 1.0
    assert v(resets, {"site": "hq", "point": "gretap"}) == 2.0
    points = {s.labels["point"] for f in reg.collect() for s in f.samples
              if f.name.startswith("voipprobe_mirror_sequence")}
    assert points == {"core-span", "erspan", "gretap"}
    # absolute snapshots: a later update replaces
    m.update(CounterSnapshot(),
             {"tzsp:37008": MirrorStats("tzsp", 130, 39_000, 5, 3, 2, up=True)})
    assert v("voipprobe_mirror_datagrams_total", tzsp) == 130.0
    assert v("voipprobe_mirror_datagrams_total",
             {"site": "hq", "listener": "dc-vxlan", "protocol": "vxlan"}) is None
    assert v(lost, {"site": "hq", "point": "erspan"}) == 8.0  # not given: kept
    promtool = shutil.which("promtool")
    if promtool is not None:
        proc = subprocess.run([promtool, "check", "metrics"], input=generate_latest(reg),
                              capture_output=True, timeout=30, check=False)
        assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_build_info_and_reload() -> None:
    reg, m = fed()
    v = reg.get_sample_value
    samples = [s for f in reg.collect() if f.name == "voipprobe_build_info" for s in f.samples]
    assert len(samples) == 1 and samples[0].value == 1.0 and samples[0].labels["version"]
    site = {"site": samples[0].labels["site"]}
    assert v("voipprobe_config_last_reload_successful", site) == 1.0
    m.config_reloaded(True, 1_700_000_123.0)
    assert v("voipprobe_config_last_reload_success_timestamp_seconds", site) == 1_700_000_123.0
    m.config_reloaded(False)
    assert v("voipprobe_config_last_reload_successful", site) == 0.0
    assert v("voipprobe_config_last_reload_success_timestamp_seconds", site) == 1_700_000_123.0


_IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+")
_DIRECTED = re.compile(r"^[A-Za-z0-9_.-]*:(in|out)$")


def test_label_values_are_bounded() -> None:
    reg, m = fed()
    m.set_interfaces(["eth0"])
    m.update(CounterSnapshot(), {"eth0": Cap(1, 0), "veth-a84b4c76e6": Cap(1, 0)})
    allowed_keys = {"site", "peer", "direction", "codec", "profile", "threshold", "method",
                    "status_class", "end_reason", "interface", "expected", "traffic", "reason",
                    "protocol", "table", "verdict", "le", "version", "python_version",
                    "outcome", "point", "upstream", "downstream", "listener", "errno",
                    "kind"}
    for family in reg.collect():
        for s in family.samples:
            assert set(s.labels) <= allowed_keys, (s.name, s.labels)
            for key, value in s.labels.items():
                if key in ("le", "python_version", "version"):
                    continue
                assert not _IPV4.search(value), (s.name, key, value)
                # ":" only as an interface point's direction ("eth0:in"), never an IPv6
                # address or a port
                assert ":" not in value or (key in ("point", "upstream", "downstream")
                                            and _DIRECTED.match(value)), (s.name, key, value)
                assert CALL_ID.split("@")[0] not in value and "@" not in value
                assert len(value) <= 64
    ifaces = {s.labels["interface"] for f in reg.collect()
              if f.name == "voipprobe_capture_packets" for s in f.samples}
    assert ifaces == {"eth0", "other"}


def test_unconfigured_names_fall_back_to_other() -> None:
    cfg = config()
    events, _ = run(cfg)
    (rec,) = [e.record for e in events if isinstance(e, CallEnded)]
    forged = rec.model_copy(update={"peer": "203.0.113.9", "end_reason": "x@y",
                                    "final_status": 999})
    reg = CollectorRegistry()
    ProbeMetrics(reg, config=cfg).observe(CallEnded(forged))
    assert reg.get_sample_value("voipprobe_calls_ended_total", {
        "site": "default", "peer": "other", "end_reason": "other", "status_class": "none"}) == 1


def test_label_helpers() -> None:
    assert codec_label("pcmu") == "PCMU" and codec_label("g711A") == "PCMA"
    assert codec_label("speex") == "other" and codec_label(None) == "unknown"
    assert dscp_class([46]) == "EF" and dscp_class([40, 24, 26]) == "CS3+AF31+CS5"
    assert status_class(486) == "4xx" and status_class(None) == "none"
    assert MOS_BUCKETS[0] == 1.0 and MOS_BUCKETS[-1] == 4.5


def test_promtool_check_metrics() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool not installed (scripts/test.sh installs it)")
        pytest.skip("promtool not installed")
    reg, _ = fed()
    text = generate_latest(reg)
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.strip() == b"" and proc.stderr.strip() == b""
