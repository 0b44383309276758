"""Two-way, one-way and missing media per call (issue 8 item 5, agent/calls/media_seen.py).

Generated traffic through the real engine: `callgen.media_directions` writes one call
per `callgen.MEDIA_DIRECTION_CALLS` row (both sides talk; one side silent; no RTP at
all; a 3 s call; RFC 4733 events only or RFC 3389 comfort noise only in the reverse
direction; early media (183 + ringback) followed by one- or two-way media; a failed
call with early media; a held call; calls with video both ways beside one- or two-way
audio), written to a pcap and read back exactly as
`voipprobe analyze` reads it. The truth of which directions carried media comes from
the generator (what it emitted), the expected verdicts from the rules in the module
docstring of agent/calls/media_seen.py, written out per call below.

Config: peer ``carrier`` (the callee side, 198.18.12.0/24) bound to a profile that
requires two-way media after 5 s; the metric is read from a private registry.
"""

from __future__ import annotations

import functools
from pathlib import Path

import callgen
import pytest
from prometheus_client import CollectorRegistry

from agent.calls.events import CallEnded, Event
from agent.calls.media_seen import carries_media, media_seen, two_way_media
from agent.calls.record import CallRecord
from agent.capture.pcapfile import open_capture
from agent.config import Config
from agent.engine import Engine, EngineConfig
from agent.export.calllog import format_line
from agent.export.metrics import ProbeMetrics
from agent.sip.events import Side

PEER_NETWORK = "198.18.12.0/24"


def _config(require: bool, after_s: float = 5.0) -> Config:
    return Config.model_validate({"sla": {
        "peers": [{"name": "carrier", "networks": [PEER_NETWORK], "profile": "strict"}],
        "profiles": {"default": {}, "strict": {"require_two_way_media": require,
                                               "two_way_media_after_s": after_s}},
    }})


REQUIRED = _config(True)
NOT_REQUIRED = _config(False)

#: call name -> (media_seen, one_way_media, how require_two_way_media ends: violated /
#: met / not_judged). Why each, from agent/calls/media_seen.py:
EXPECTED: dict[str, tuple[str, str | None, str]] = {
    "two_way": ("both", None, "met"),
    "caller_only": ("a_to_b", "a_to_b", "violated"),
    "callee_only": ("b_to_a", "b_to_a", "violated"),
    "no_rtp": ("none", None, "not_judged"),  # the probe may not be on the media path
    "short_one_way": ("a_to_b", None, "not_judged"),  # 3 s < two_way_media_after_s
    "events_reverse": ("a_to_b", "a_to_b", "violated"),  # DTMF alone is not audio
    "cn_reverse": ("both", None, "met"),  # silent behind VAD still sends media
    "early_then_one_way": ("a_to_b", "a_to_b", "violated"),  # ringback ended at answer
    "early_then_two_way": ("both", None, "met"),
    "early_failed": ("b_to_a", None, "not_judged"),  # never answered
    "held_one_way": ("a_to_b", None, "not_judged"),  # sendonly/recvonly: agreed one-way
    "video_one_way_audio": ("a_to_b", "a_to_b", "violated"),  # video both ways: not audio
    "video_two_way": ("both", None, "met"),
}


@functools.cache
def _scenario(folder: str) -> tuple[Path, callgen.ScenarioTruth]:
    packets, truth = callgen.media_directions()
    return callgen.write(Path(folder) / "media_directions.pcap", packets), truth


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, callgen.ScenarioTruth]:
    return _scenario(str(tmp_path_factory.mktemp("media_seen")))


def _events(path: Path, config: Config) -> list[Event]:
    engine = Engine(EngineConfig(config=config))
    events: list[Event] = []
    with open_capture(path) as reader:
        for batch in reader:
            events += engine.feed(batch)
    return events + engine.finish()


def _records(events: list[Event]) -> dict[str, CallRecord]:
    out = {}
    for e in events:
        # (a dialog that keeps only audio m-lines leaves the video streams unsignalled)
        if isinstance(e, CallEnded) and e.record.call_id is not None:
            out[e.record.call_id.split("-")[0]] = e.record
    return out


def test_every_row_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(case.name for case in callgen.MEDIA_DIRECTION_CALLS)


def test_generator_truth_matches_the_expectations(
        scenario: tuple[Path, callgen.ScenarioTruth]) -> None:
    """The generator's own account of what it sent agrees with the table above."""
    _, truth = scenario
    got = {c.call_id.split("-")[0]: c.media_seen for c in truth.calls}
    assert got == {name: exp[0] for name, exp in EXPECTED.items()}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_media_seen_and_two_way_verdict(
        name: str, scenario: tuple[Path, callgen.ScenarioTruth]) -> None:
    path, truth = scenario
    rec = _records(_events(path, REQUIRED))[name]
    seen, one_way, verdict = EXPECTED[name]
    call = next(c for c in truth.calls if c.call_id == rec.call_id)
    assert rec.peer == "carrier" and rec.sla.profile == "strict"
    assert rec.final_status == call.final_status
    assert rec.media_seen == seen
    assert rec.one_way_media == one_way
    assert rec.media_at_probe is bool(call.streams)
    two_way = [v for v in rec.sla.violations if v.threshold == "require_two_way_media"]
    if verdict == "violated":
        assert [(v.limit, v.value) for v in two_way] == [(2.0, 1.0)]
        assert rec.sla.verdict == "violated"
        # The direction that did carry media names the call's fault too (like setup delay);
        # an events-only direction is not audio, not judged (sla None)
        judged_dirs = [d for d in rec.directions if d.sla is not None]
        assert judged_dirs and all(d.media == "audio" for d in judged_dirs)
        assert all("require_two_way_media" in {v.threshold for v in d.sla.violations}
                   for d in judged_dirs)
    else:
        assert two_way == []
    judged = "require_two_way_media" not in rec.sla.not_judged
    assert judged is (verdict != "not_judged")


def test_one_way_directions_are_named_by_the_caller_side(
        scenario: tuple[Path, callgen.ScenarioTruth]) -> None:
    """a_to_b is the caller's media toward the callee: the one stream of caller_only is
    sent from the caller's address, the one of callee_only from the callee's."""
    path, truth = scenario
    recs = _records(_events(path, REQUIRED))
    for name, sender in (("caller_only", "198.18.11."), ("callee_only", "198.18.12.")):
        (d,) = recs[name].directions
        assert d.stream.src.startswith(sender), d.stream
        want = next(c for c in truth.calls if c.call_id == recs[name].call_id).streams
        assert [(s.src, s.dst, s.packets) for s in want] == [
            (d.stream.src, d.stream.dst, d.stream.packets)]


def test_not_required_keeps_the_field_and_drops_the_verdict(
        scenario: tuple[Path, callgen.ScenarioTruth]) -> None:
    path, _ = scenario
    recs = _records(_events(path, NOT_REQUIRED))
    for name, (seen, one_way, _) in EXPECTED.items():
        rec = recs[name]
        assert (rec.media_seen, rec.one_way_media) == (seen, one_way), name
        names = {v.threshold for v in rec.sla.violations} | set(rec.sla.not_judged)
        assert "require_two_way_media" not in names, (name, rec.sla)


def test_threshold_is_the_profiles(scenario: tuple[Path, callgen.ScenarioTruth]) -> None:
    """With ``two_way_media_after_s: 2`` the 3 s one-way call is judged, and violates."""
    path, _ = scenario
    rec = _records(_events(path, _config(True, after_s=2.0)))["short_one_way"]
    assert rec.one_way_media == "a_to_b"
    assert [(v.threshold, v.value) for v in rec.sla.violations
            if v.threshold == "require_two_way_media"] == [("require_two_way_media", 1.0)]


def test_metric_counts_one_way_calls_by_peer(
        scenario: tuple[Path, callgen.ScenarioTruth]) -> None:
    path, _ = scenario
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry, config=REQUIRED)
    metrics.observe_all(_events(path, REQUIRED))
    want = {d: sum(1 for _, ow, _ in EXPECTED.values() if ow == d) for d in ("a_to_b", "b_to_a")}
    assert want == {"a_to_b": 4, "b_to_a": 1}
    for direction, n in want.items():
        got = registry.get_sample_value("voipprobe_calls_one_way_media_total", {
            "site": "default", "peer": "carrier", "direction": direction})
        assert got == n, direction
    violated = sum(1 for *_, v in EXPECTED.values() if v == "violated")
    assert registry.get_sample_value("voipprobe_sla_violations_total", {
        "site": "default", "peer": "carrier", "profile": "strict",
        "threshold": "require_two_way_media"}) == violated
    assert registry.get_sample_value("voipprobe_calls_one_way_media_total", {
        "site": "default", "peer": "other", "direction": "a_to_b"}) is None


def test_event_only_and_cn_only_streams(scenario: tuple[Path, callgen.ScenarioTruth]) -> None:
    """The building blocks on the engine's own stream statistics: an RFC 4733 stream
    carries no media, a comfort-noise stream does; a stream that ended before the answer
    does not count for an answered call."""
    path, _ = scenario
    recs = _records(_events(path, REQUIRED))
    events_stream = next(d for d in recs["events_reverse"].directions
                         if d.stream.src.startswith("198.18.12."))
    assert events_stream.stream.packets == events_stream.stream.telephone_event_packets
    cn = next(d for d in recs["cn_reverse"].directions
              if d.stream.src.startswith("198.18.12."))
    assert cn.stream.comfort_noise_packets == cn.stream.packets > 0


def test_media_seen_pure(scenario: tuple[Path, callgen.ScenarioTruth]) -> None:
    """`media_seen` / `two_way_media` on stream statistics, without the call table."""
    from agent.calls.events import StreamEnded

    path, _ = scenario
    stats = [e.stats for e in _events(path, REQUIRED) if isinstance(e, StreamEnded)]
    audio = next(s for s in stats  # a PCMA stream (8 kHz clock; H.263 has 90 kHz)
                 if s.telephone_event_packets == 0 and s.packets > 300 and s.clock_rate == 8000)
    events = next(s for s in stats if s.packets == s.telephone_event_packets > 0)
    assert carries_media(audio) and not carries_media(events)
    assert media_seen([(Side.CALLEE, audio), (Side.CALLER, events)]) == "a_to_b"
    assert media_seen([(Side.CALLER, audio), (Side.CALLEE, events)]) == "b_to_a"
    assert media_seen([(Side.CALLER, audio), (Side.CALLEE, audio)]) == "both"
    assert media_seen([(Side.CALLEE, events)]) == "none"
    assert media_seen([]) == "none"
    # answered after the stream's last packet: it was early media only
    assert media_seen([(Side.CALLEE, audio)], answer_ts=audio.last_ts + 0.001) == "none"
    assert media_seen([(Side.CALLEE, audio)], answer_ts=audio.last_ts) == "a_to_b"
    unsignalled = two_way_media([(Side.CALLEE, audio)], None, audio.last_ts, 0.0)
    assert (unsignalled.seen, unsignalled.judged, unsignalled.one_way) == ("a_to_b", False,
                                                                           None)


def test_call_log_line_names_the_media_directions(
        scenario: tuple[Path, callgen.ScenarioTruth]) -> None:
    path, _ = scenario
    recs = _records(_events(path, REQUIRED))
    line = format_line(recs["caller_only"].to_json())
    assert " media=a_to_b one_way=a_to_b " in line
    assert "sla=violated[media_directions: 1 (min 2)]" in line
    short = format_line(recs["short_one_way"].to_json())
    assert " media=a_to_b " in short and "one_way=" not in short
    assert " media=none " in format_line(recs["no_rtp"].to_json())
