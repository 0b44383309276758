"""The daemon's source health and capture-lossy stamping (agent/capture/health.py seen
from agent/daemon.py): the bundled sample through a fake source whose counters the test
sets, a fake monotonic clock and a fake wall clock.

The sample's one call: INVITE at 1699999997.6, first RTP at 1700000000.0, BYE at
1700000020.1 (packet timestamps). Loss windows are spans of wall time between two
reads of the counters, so the wall clock is set around those times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from test_daemon import Clock, FakeSource, MemoryLog, sample_batches

from agent.calls.record import CallRecord
from agent.capture.afpacket import CaptureStats
from agent.config import load_config
from agent.daemon import Daemon, call_lifetime
from agent.export.calllog import format_line
from agent.export.metrics import ProbeMetrics

INVITE_TS, END_TS = 1699999997.6, 1700000020.1


class CountedSource(FakeSource):
    """A fake source with kernel-like counters for two interfaces the test sets."""

    def __init__(self, batches: list[Any]) -> None:
        super().__init__(batches)
        self.counters = {"eth0": CaptureStats(packets=0), "eth1": CaptureStats(packets=0)}
        self.reads = 0

    def stats(self) -> dict[str, Any]:
        self.reads += 1
        return dict(self.counters)


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    f = tmp_path / "config.yaml"
    f.write_text("exporter:\n  site: lab\ncalls:\n  media_idle_timeout_s: 20\n"
                 "capture:\n  interfaces: [eth0, eth1]\n  silent_after_s: 60\n")
    return f


def make(source: CountedSource, config_file: Path, wall: Wall
         ) -> tuple[Daemon, CollectorRegistry, MemoryLog]:
    registry = CollectorRegistry()
    config = load_config(config_file)
    metrics = ProbeMetrics(registry, site="lab", config=config)
    metrics.set_interfaces(["eth0", "eth1"])
    log = MemoryLog()
    d = Daemon(config, source=source, metrics=metrics, call_log=log,
               load=lambda: load_config(config_file), clock=Clock(), wall=wall)
    return d, registry, log


def run_sample(d: Daemon, source: CountedSource, wall: Wall, drop_at: float | None,
               drops: int = 5) -> None:
    """Two batches per second of wall time, the counters growing as the sample
    plays; ``drops`` kernel drops on eth0 show up at the first read at or after
    wall time ``drop_at``; then idle steps until the call's record is out."""
    steps = len(source.batches) + 40
    for k in range(steps):
        wall.t += 1.0
        n = k + 1
        dropped = drops if drop_at is not None and wall.t >= drop_at else 0
        source.counters = {"eth0": CaptureStats(packets=n, drops=dropped),
                           "eth1": CaptureStats(packets=n)}
        d.step()
        d.step()  # the fake clock: two steps are a tick (1 s)


def test_drops_during_the_call_flag_its_record_and_count_it(config_file: Path) -> None:
    source = CountedSource(sample_batches())
    wall = Wall(INVITE_TS - 10)
    d, registry, log = make(source, config_file, wall)
    run_sample(d, source, wall, drop_at=INVITE_TS + 3)
    assert [r.capture_lossy for r in log.records] == [True]
    assert registry.get_sample_value("voipprobe_calls_capture_lossy_total",
                                     {"site": "lab", "peer": "other"}) == 1
    assert registry.get_sample_value("voipprobe_capture_kernel_drops_total",
                                     {"site": "lab", "interface": "eth0"}) == 5
    rec = log.records[0].to_json()
    assert rec["capture_lossy"] is True and "capture=lossy" in format_line(rec)


def test_drops_before_the_call_leave_it_clean(config_file: Path) -> None:
    source = CountedSource(sample_batches())
    wall = Wall(INVITE_TS - 60)
    d, registry, log = make(source, config_file, wall)
    run_sample(d, source, wall, drop_at=INVITE_TS - 55)  # ~50 s before the INVITE
    assert [r.capture_lossy for r in log.records] == [False]
    assert registry.get_sample_value("voipprobe_calls_capture_lossy_total",
                                     {"site": "lab", "peer": "other"}) == 0
    rec = log.records[0].to_json()
    assert rec["capture_lossy"] is False and "capture=" not in format_line(rec)


def test_a_record_ending_after_the_last_read_reads_the_counters_first(
        config_file: Path) -> None:
    source = CountedSource(sample_batches())
    wall = Wall(END_TS + 100)
    d, _, log = make(source, config_file, wall)
    run_sample(d, source, wall, drop_at=None)
    clean = log.records[0]
    assert not clean.capture_lossy
    # the counters last read at "now"; a call ending later, whose drops come in after
    # that read, is only stamped after a fresh read finds them
    late = clean.model_copy(update={"end_ts": wall.t + 30.0})
    wall.t += 31.0
    source.counters = {"eth0": CaptureStats(packets=999, drops=2),
                       "eth1": CaptureStats(packets=999)}
    reads = source.reads
    assert d._stamp(late).capture_lossy and source.reads == reads + 1
    assert not d._stamp(clean).capture_lossy  # long over before those drops
    # just read: a record ending later does not read again (SIGTERM's thousands of calls)
    later = clean.model_copy(update={"end_ts": wall.t + 60.0})
    wall.t += 0.05
    d._stamp(later)
    assert source.reads == reads + 1


def test_shutdown_reads_the_last_drops_before_finishing_the_calls(config_file: Path) -> None:
    batches = sample_batches()
    source = CountedSource(batches[: len(batches) // 2])
    wall = Wall(INVITE_TS - 1)
    d, _, log = make(source, config_file, wall)
    for _ in range(len(source.batches)):
        d.step()
    wall.t += 1.0
    source.counters = {"eth0": CaptureStats(packets=10, drops=1),
                       "eth1": CaptureStats(packets=10)}
    d.shutdown()
    assert [(r.end_reason, r.capture_lossy) for r in log.records] == [("shutdown", True)]


def test_health_names_a_missing_interface_and_recovers(config_file: Path) -> None:
    source = CountedSource([])
    source.counters["eth1"] = CaptureStats(up=False, downs=1, down_reason="no such interface")
    wall = Wall(1_800_000_000.0)
    d, registry, _ = make(source, config_file, wall)
    ok, doc = d.health()
    assert not ok and doc["status"] == "degraded"
    assert doc["problems"] == ["eth1: down: no such interface"]
    assert doc["sources"]["eth1"]["up"] is False
    wall.t += 1.0
    d.step()
    d.step()
    up = {"site": "lab", "interface": "eth1"}
    assert registry.get_sample_value("voipprobe_capture_up", up) == 0
    assert registry.get_sample_value("voipprobe_capture_up", {**up, "interface": "eth0"}) == 1
    # plugged in, and packets flow on both
    source.counters = {"eth0": CaptureStats(packets=5), "eth1": CaptureStats(packets=3,
                                                                           downs=1, reopens=1)}
    wall.t += 1.0
    d.step()
    d.step()
    ok, doc = d.health()
    assert ok and "status" not in doc and "problems" not in doc
    assert registry.get_sample_value("voipprobe_capture_up", up) == 1
    source.counters = {"eth0": CaptureStats(packets=9), "eth1": CaptureStats(packets=7,
                                                                           downs=1, reopens=1)}
    wall.t += 1.0
    d.step()
    d.step()
    assert registry.get_sample_value("voipprobe_capture_last_packet_timestamp_seconds",
                                     up) == wall.t
    # silent for longer than capture.silent_after_s (60 s): 503 naming both
    wall.t += 61.0
    ok, doc = d.health()
    assert not ok and [p.split(":")[0:2] for p in doc["problems"]] == [
        ["eth0", " silent"], ["eth1", " silent"]]
    d.request_stop()
    assert d.health()[1]["status"] == "stopping"


def test_reload_changes_silent_after_without_reopening_the_capture(
        config_file: Path, tmp_path: Path) -> None:
    source = CountedSource([])
    wall = Wall(1_800_000_000.0)
    d, _, _ = make(source, config_file, wall)
    reopened: list[object] = []
    d._open_source = lambda capture: reopened.append(capture) or source  # type: ignore
    config_file.write_text(config_file.read_text().replace("silent_after_s: 60",
                                                           "silent_after_s: 0"))
    assert d.reload()
    assert reopened == [] and d.sources.silent_after_s == 0
    wall.t += 10_000.0
    assert d.health()[0]


def test_call_lifetime_spans_first_packet_to_end_and_a_timeout_beyond(
        config_file: Path) -> None:
    source = CountedSource(sample_batches())
    wall = Wall(INVITE_TS - 60)
    d, _, log = make(source, config_file, wall)
    run_sample(d, source, wall, drop_at=None)
    rec: CallRecord = log.records[0]
    assert call_lifetime(rec, 30.0) == (INVITE_TS, END_TS)
    unsignalled = rec.model_copy(update={"invite_ts": None, "end_reason": "timed_out"})
    start, end = call_lifetime(unsignalled, 30.0)
    assert start == pytest.approx(1700000000.000376) and end == pytest.approx(END_TS + 30)
    assert json.loads(json.dumps(rec.to_json()))["capture_lossy"] is False
