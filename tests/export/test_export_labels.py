"""The seam to the sinks (issue 10 item 7): labels worked out once in the core, the
same for every metric; counters a typed snapshot; DSCP and RTP on one clock."""

from __future__ import annotations

from exportbuild import config, packets, run
from prometheus_client import CollectorRegistry

from agent.calls.events import CallEnded, CallInterval, StreamEnded
from agent.calls.labels import codec_label
from agent.calls.record import StreamRecord
from agent.capture.batch import Batch, LinkType
from agent.config import Config, config_from_mapping
from agent.counters import DECODE_DROP_REASONS, CounterSnapshot
from agent.engine import Engine
from agent.export.metrics import ProbeMetrics

CARRIER = {"site": "hq", "peer": "carrier"}


def _no_local_networks() -> Config:
    """The carrier peer, but no ``sla.local_networks``: directions are a_to_b/b_to_a."""
    return config_from_mapping({
        "sla": {"peers": [{"name": "carrier", "networks": ["198.19.0.0/16"],
                           "profile": "gold"}],
                "profiles": {"default": {"min_mos_cq": 3.6},
                             "gold": {"min_mos_cq": 4.0, "media_dscp": [46]}}},
        "calls": {"interval_s": 2.5},
    })


def _metrics(cfg: Config, **kw: int) -> tuple[CollectorRegistry, list[object]]:
    events, counters = run(cfg, **kw)
    reg = CollectorRegistry()
    m = ProbeMetrics(reg, site="hq", config=cfg)
    m.observe_all(events)
    m.update(counters)
    return reg, list(events)


def _series(reg: CollectorRegistry, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value
            for metric in reg.collect() for s in metric.samples if s.name == family}


def test_interval_and_rtp_metrics_use_the_call_records_direction() -> None:
    """No local networks: the record says a_to_b (caller -> callee) / b_to_a, and so
    do the interval histograms and RTP counters (they said "unknown")."""
    cfg = _no_local_networks()
    reg, events = _metrics(cfg, lose_every=10)
    (rec,) = [e.record for e in events if isinstance(e, CallEnded)]
    assert sorted(d.direction for d in rec.directions) == ["a_to_b", "b_to_a"]
    assert {e.labels.direction for e in events if isinstance(e, CallInterval)} == \
        {"a_to_b", "b_to_a"}
    v = reg.get_sample_value
    for direction, sent, lost in (("a_to_b", 400, 0), ("b_to_a", 360, 39)):
        lab = {**CARRIER, "direction": direction, "codec": "PCMA", "point": "unnamed"}
        assert v("voipprobe_rtp_packets_total", lab) == sent
        assert v("voipprobe_rtp_lost_packets_total", lab) == lost
        assert v("voipprobe_interval_jitter_seconds_count", lab) == 4.0
        assert v("voipprobe_call_mos_count", {**CARRIER, "direction": direction,
                                              "codec": "PCMA"}) == 1.0
    directions = {dict(k)["direction"] for k in _series(reg, "voipprobe_rtp_packets_total")}
    assert directions == {"a_to_b", "b_to_a"}


def test_sip_requests_have_a_bounded_peer_label() -> None:
    """The INVITE, ACK and BYE go to the carrier's network: peer="carrier"; with no peer
    configured every request is "other"."""
    reg, _ = _metrics(config())
    requests = _series(reg, "voipprobe_sip_requests_total")
    assert requests == {
        (("method", m), ("peer", "carrier"), ("site", "hq")): 1.0
        for m in ("ACK", "BYE", "INVITE")}
    reg, _ = _metrics(Config())
    assert set(_series(reg, "voipprobe_sip_requests_total")) == {
        (("method", m), ("peer", "other"), ("site", "hq")) for m in ("ACK", "BYE", "INVITE")}


def test_dtmf_is_its_own_codec_and_does_not_dilute_the_audio_series() -> None:
    reg, events = _metrics(config(), dtmf=50)
    v = reg.get_sample_value
    out = {**CARRIER, "direction": "outbound", "point": "unnamed"}
    assert v("voipprobe_rtp_packets_total", {**out, "codec": "telephone-event"}) == 50.0
    assert v("voipprobe_rtp_packets_total", {**out, "codec": "PCMA"}) == 400.0  # audio only
    assert v("voipprobe_rtp_packets_total", {**out, "codec": "other"}) is None
    ended = {e.stats.key.ssrc: e.labels.codec for e in events if isinstance(e, StreamEnded)}
    assert ended == {0xA: "PCMA", 0xB: "PCMA", 0xE: "telephone-event"}
    assert codec_label("telephone-event/8000") == "telephone-event"
    assert (codec_label("PCMA"), codec_label("speex"), codec_label(None)) == \
        ("PCMA", "other", "unknown")


def test_dscp_mismatch_and_rtp_packets_count_on_the_same_clock() -> None:
    """Every 4th B->A packet is CS0 where the profile wants EF. Live (intervals only) and
    at the end, mismatched / RTP packets is the fraction of mismatched packets seen."""
    cfg = config()
    events, _ = run(cfg, cs0_every=4)
    reg = CollectorRegistry()
    m = ProbeMetrics(reg, site="hq", config=cfg)
    v = reg.get_sample_value
    media = {**CARRIER, "traffic": "media", "expected": "EF"}
    inbound = {**CARRIER, "direction": "inbound", "codec": "PCMA", "point": "unnamed"}
    outbound = {**inbound, "direction": "outbound"}

    boundaries = sorted({e.ts for e in events if isinstance(e, CallInterval)})
    cut = next(i for i, e in enumerate(events)
               if isinstance(e, CallInterval) and e.ts == boundaries[2])
    m.observe_all(events[:cut])  # two intervals: the call is still running
    seen_in, seen_out = v("voipprobe_rtp_packets_total", inbound), \
        v("voipprobe_rtp_packets_total", outbound)
    assert seen_in is not None and seen_out is not None and 0 < seen_in < 400
    bad = v("voipprobe_dscp_mismatched_packets_total", media)
    # B->A packets 3, 7, 11 ... of those counted so far: counted live, like the packets
    # (counted at the call's end, this was 0 while rtp_packets already held 2 intervals)
    assert bad == seen_in // 4 > 0

    m.observe_all(events[cut:])
    total = v("voipprobe_rtp_packets_total", inbound) + v("voipprobe_rtp_packets_total",
                                                           outbound)
    (rec,) = [e.record for e in events if isinstance(e, CallEnded)]
    mismatched = sum(n for d in rec.directions for k, n in d.stream.dscp.items() if k != "46")
    assert (total, mismatched) == (800.0, 100)
    assert v("voipprobe_dscp_mismatched_packets_total", media) / total == mismatched / 800
    sig = {**CARRIER, "traffic": "signalling", "expected": "CS3+AF31+CS5"}
    assert v("voipprobe_dscp_mismatched_packets_total", sig) == 0.0  # SIP sent CS3


def test_counter_snapshot_is_typed_and_keeps_the_summary() -> None:
    """The exporter's groups come from the stages' fields; `totals` is the flat summary
    of ``analyze --json`` (unchanged)."""
    _, snap = run(config())
    assert isinstance(snap, CounterSnapshot)
    assert snap.sip_requests == {("carrier", "INVITE"): 1, ("carrier", "ACK"): 1,
                                 ("carrier", "BYE"): 1}
    assert snap.sip_responses == {"1xx": 1, "2xx": 2}
    assert (snap.calls_started, snap.calls_ended) == (1, 1)
    t = snap.totals
    assert (t["sip_requests_invite"], t["sip_responses_2xx"], t["calls_calls_started"]) == \
        (1, 2, 1)
    assert snap.packets == t["packets"] == len(packets()[0])  # every frame fed
    assert tuple(snap.decode_drops) == DECODE_DROP_REASONS
    assert snap.decode_drops == {r: t[f"decode_{r}"] for r in DECODE_DROP_REASONS}
    evicted = {k for k in t if k.endswith("_evicted")}
    assert len(snap.table_evictions) == len(evicted) == 12
    assert snap.table_evictions["calls"] == t["calls_calls_evicted"] == 0
    assert snap.hep.records_by_version == {"1": 0, "2": 0, "3": 0}
    assert Engine().snapshot().totals == Engine().counters()


def test_direction_streams_are_typed_records_with_the_stream_json() -> None:
    events, _ = run(config(), dtmf=5)
    ended = {e.stats.key.ssrc: e.stats for e in events if isinstance(e, StreamEnded)}
    (rec,) = [e.record for e in events if isinstance(e, CallEnded)]
    out = next(d for d in rec.directions if d.direction == "outbound")
    assert isinstance(out.stream, StreamRecord)
    assert (out.stream.codec, out.stream.packets, out.stream.dscp_packets()) == \
        ("PCMA", 400, {46: 400})
    assert out.stream.model_dump(mode="json") == ended[0xA].to_json()  # the JSON contract
    (dtmf,) = out.event_streams
    assert (dtmf.codec, dtmf.packets) == ("telephone-event", 5)
    shown = rec.to_json()["directions"][rec.directions.index(out)]
    assert shown["stream"] == ended[0xA].to_json()
    assert shown["event_streams"] == [ended[0xE].to_json()]


def test_a_reload_names_the_peers_of_later_requests() -> None:
    """Engine.reconfigure hands the SIP tracker the new peers: requests before the reload
    stay "other", those after it are the carrier's."""
    frames, ts = packets()
    engine = Engine()
    engine.feed(Batch.from_packets(frames[:1], ts[:1], LinkType.RAW))  # the INVITE
    engine.reconfigure(config())
    engine.feed(Batch.from_packets(frames[1:], ts[1:], LinkType.RAW))
    engine.finish()
    assert engine.snapshot().sip_requests == {("other", "INVITE"): 1, ("carrier", "ACK"): 1,
                                              ("carrier", "BYE"): 1}
