"""Call records: timings, directions, quality, DSCP and SLA verdicts, pseudo-calls."""

from __future__ import annotations

from callsbuild import T0, call, stream, with_jb

from agent.calls.events import CallEnded
from agent.calls.table import CallTable
from agent.config import Config, config_from_mapping
from agent.quality.model import DirectionInput, compute_quality
from agent.rtcp.monitor import RtcpMonitor
from agent.rtp.model import StreamStats
from agent.sip.events import DialogEnded, DialogStarted

CALLER, CALLEE = ("198.18.7.1", 16000), ("198.19.8.2", 20000)


def table(cfg: Config | None = None) -> CallTable:
    return CallTable(cfg or Config(), RtcpMonitor())


def test_clean_call_record() -> None:
    t = table()
    t.on_sip(DialogStarted(call(ended=False)))
    t.on_sip(DialogEnded(call()))
    t.stream_ended(stream(CALLER, CALLEE, 1), T0)
    t.stream_ended(stream(CALLEE, CALLER, 2), T0)
    # the record is due calls.report_linger_s (5 s) after the dialog's end (its BYE at T0 + 31)
    assert t.next_deadline() == T0 + 31.0 + 5.0
    assert t.expire(T0 + 35.9) == []
    (done,) = [e for e in t.expire(T0 + 36.0) if isinstance(e, CallEnded)]
    r = done.record.to_json()
    assert r["kind"] == "call" and r["call_id"] == "c1@test"
    assert (r["from"], r["to"]) == ("sip:alice@example.org", "sip:bob@example.org")
    assert (r["final_status"], r["end_reason"], r["codec"]) == (200, "normal", "PCMA")
    assert abs(r["setup_delay_s"] - 0.1) < 1e-9 and abs(r["answer_delay_s"] - 1.0) < 1e-9
    assert abs(r["duration_s"] - 30.0) < 1e-9 and abs(r["disconnect_delay_s"] - 0.02) < 1e-6
    assert [d["direction"] for d in r["directions"]] == ["a_to_b", "b_to_a"]
    want = compute_quality(DirectionInput(codec="PCMA", loss_ratio=0.0)).mos_cq
    for d in r["directions"]:
        assert d["quality"]["delay_source"] == "assumed"
        assert abs(d["quality"]["mos_cq"] - want) < 1e-3 and d["quality"]["mos_cq"] > 4.3
        assert d["dscp_compliance_ratio"] == 1.0 and d["sla"]["verdict"] == "met"
        assert d["stream"]["kind"] == "stream" and d["rtcp"] is None
    assert r["sla"]["verdict"] == "met" and r["signalling_dscp_compliance_ratio"] == 1.0


def test_loss_and_dscp_violations_name_threshold_and_value() -> None:
    t = table()
    t.on_sip(DialogEnded(call()))
    t.stream_ended(stream(CALLER, CALLEE, 1, packets=1425, lost=75), T0)  # 5 %
    t.stream_ended(stream(CALLEE, CALLER, 2, dscp=0), T0)
    r = t.take("c1@test")
    a, b = r.directions
    assert a.sla.verdict == "violated"
    v = {x.threshold: x for x in a.sla.violations}
    # G.711 with PLC (Bpl 25.1) at 5 % random loss: R 77.4, MOS 3.9 > 3.6 still
    assert set(v) == {"max_loss_ratio"}
    assert abs(v["max_loss_ratio"].value - 0.05) < 1e-9 and v["max_loss_ratio"].limit == 0.01
    assert a.quality.mos_cq < b.quality.mos_cq
    assert [x.threshold for x in b.sla.violations] == ["media_dscp"]
    assert b.dscp_compliance_ratio == 0.0 and b.sla.violations[0].accepted == [46]
    assert b.sla.violations[0].reason == "media_dscp_compliance: 0.00 (min 0.95)"
    assert v["max_loss_ratio"].reason == "loss_ratio: 0.05 (max 0.01)"
    assert r.to_json()["sla"]["violations"][0]["reason"] in {
        "loss_ratio: 0.05 (max 0.01)", "media_dscp_compliance: 0.00 (min 0.95)"}
    assert r.sla.verdict == "violated"
    assert {x.threshold for x in r.sla.violations} == {"max_loss_ratio", "media_dscp"}


def test_jitter_buffer_discards_lower_the_mos() -> None:
    t = table()
    t.on_sip(DialogEnded(call()))
    t.stream_ended(with_jb(stream(CALLER, CALLEE, 1), discarded=0), T0)
    t.stream_ended(with_jb(stream(CALLEE, CALLER, 2), discarded=60), T0)
    a, b = t.take("c1@test").directions
    assert a.quality.effective_loss_ratio == 0.0 and b.quality.jitter_buffer_discarded == 60
    assert abs(b.quality.effective_loss_ratio - 60 / 1500) < 1e-6
    assert b.quality.mos_cq < a.quality.mos_cq


def test_local_networks_and_peers_name_direction_and_profile() -> None:
    cfg = config_from_mapping({"sla": {
        "local_networks": ["198.18.0.0/16"],
        "peers": [{"name": "carrier", "networks": ["198.19.0.0/16"], "profile": "gold"}],
        "default_profile": "default",
        "profiles": {"default": {"min_mos_cq": 3.6}, "gold": {"max_jitter_ms": 0.1}},
    }})
    t = table(cfg)
    t.on_sip(DialogEnded(call()))
    t.stream_ended(stream(CALLER, CALLEE, 1), T0)
    t.stream_ended(stream(CALLEE, CALLER, 2), T0)
    r = t.take("c1@test")
    assert r.peer == "carrier" and r.sla.profile == "gold"
    assert [d.direction for d in r.directions] == ["outbound", "inbound"]
    assert {v.threshold for d in r.directions for v in d.sla.violations} == {"max_jitter_ms"}


def test_unsignalled_streams_pair_into_one_pseudo_call() -> None:
    t = table()
    t.stream_ended(stream(("198.18.1.1", 4000), ("198.19.1.1", 5000), 10), T0)
    t.stream_ended(stream(("198.19.1.1", 5000), ("198.18.1.1", 4000), 11), T0)
    t.stream_ended(stream(("198.18.2.2", 4000), ("198.19.2.2", 5000), 12), T0)
    out = [e.record for e in t.finish() if isinstance(e, CallEnded)]
    assert sorted(len(c.directions) for c in out) == [1, 2]
    assert all(c.call_id is None and c.end_reason == "unsignalled" for c in out)
    assert t.counters.unsignalled_calls == 2


def test_table_is_bounded() -> None:
    cfg = config_from_mapping({"calls": {"max_calls": 10}})
    t = table(cfg)
    for i in range(100):
        t.on_sip(DialogStarted(call(f"c{i}", ended=False, answered=False, t0=T0 + i)))
    assert len(t) == 10 and t.counters.calls_evicted == 90


def test_event_only_stream_rides_with_the_media_of_its_five_tuple() -> None:
    from dataclasses import replace

    t = table()
    t.on_sip(DialogEnded(call()))
    t.stream_ended(stream(CALLER, CALLEE, 1), T0)
    t.stream_ended(stream(CALLEE, CALLER, 2), T0)
    dtmf = replace(stream(CALLER, CALLEE, 3, packets=10), codec="telephone-event",
                   payload_types=(101,))
    t.stream_ended(dtmf, T0)
    r = t.take("c1@test")
    assert len(r.directions) == 2
    a, b = r.directions
    assert [e.ssrc for e in a.event_streams] == [3] and b.event_streams == []


def test_inbound_media_is_judged_at_the_point_nearest_the_provider() -> None:
    """The gateway seen on both sides: the provider's media arrives clean on the WAN
    point and the gateway drops 10 % before the LAN point. The provider's SLA verdict
    counts only what the provider delivered; the LAN loss is in the record, between the
    points. Outbound media lost inside the gateway is still judged where it leaves."""
    from dataclasses import replace

    cfg = config_from_mapping({"sla": {
        "local_networks": ["198.18.0.0/16"],
        "profiles": {"default": {"max_loss_ratio": 0.01}}, "default_profile": "default"}})

    def at(s: StreamStats, point: str, dt: float, lost: int) -> StreamStats:
        return replace(s, key=replace(s.key, point=point), packets=s.packets - lost,
                       lost=lost, first_ts=s.first_ts + dt, last_ts=s.last_ts + dt)

    t = table(cfg)
    t.on_sip(DialogEnded(call()))
    inbound, outbound = stream(CALLEE, CALLER, 2), stream(CALLER, CALLEE, 1)
    t.stream_ended(at(inbound, "wan", 0.0, 0), T0)
    t.stream_ended(at(inbound, "lan", 0.0002, 150), T0)
    t.stream_ended(at(outbound, "lan", 0.0, 0), T0)
    t.stream_ended(at(outbound, "wan", 0.0002, 150), T0)
    r = t.take("c1@test")
    by = {d.direction: d for d in r.directions}
    assert set(by) == {"inbound", "outbound"}
    assert (by["inbound"].point, by["inbound"].stream.lost) == ("wan", 0)
    assert by["inbound"].sla.verdict == "met"
    assert [(h.upstream, h.downstream, h.lost) for h in by["inbound"].loss_between_points] \
        == [("wan", "lan", 150)]
    assert (by["outbound"].point, by["outbound"].stream.lost) == ("wan", 150)
    assert {v.threshold for v in by["outbound"].sla.violations} == {"max_loss_ratio"}
