"""Load shedding of the live loop (issue 12 item 3): `agent.capture.overload`.

(a) `LoadShedder`: a constant capture-to-processing delay, however large (a mirror's
    clock offset), is no lag; a delay growing past the budget starts shedding, which
    stops only under half the budget; a wall-clock step that moves packet stamps alike
    is no lag; ``budget_s=None`` never sheds.
(b) The daemon behind: `callgen.many_calls` (SIP with SDP, announced RTP) interleaved
    with RTP-looking junk flows (valid sequence numbers and timestamps: they would pass
    probation) that no SDP announced, fed through a fake source while a fake wall clock
    says the loop is 10 s behind in the middle third. Checked: every junk row of that
    third is shed and counted (``rtp_shed_rows`` and
    ``voipprobe_overload_shed_packets_total{kind="rtp_candidate"}``) -- the count is
    the generator's; no junk flow of that third became a stream; every call still gets
    its record with the generator's final status and per-direction packet counts
    (signalling and SDP-known media are not shed); the calls overlapping the shed span
    are flagged ``capture_lossy`` and the others are not. The same packets with
    shedding off (``capture.shed_lag_s: 0``) give no shed rows and junk streams (the
    junk is RTP enough to be discovered), so the test can fail.
(c) Far behind (20 s, past four budgets): every RTP row of the lagging batches is shed
    (``route_shed_media_rows``, ``kind="media"``; the count is taken from the frames by
    this test), and every call still has its record with the generator's final status
    and end reason (SIP is never shed).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import callgen
from prometheus_client import CollectorRegistry
from synth import CapturedPacket, Flow, ip_udp, link_frame, rtp_packet

from agent.calls.record import CallRecord
from agent.capture.batch import Batch
from agent.capture.overload import LoadShedder
from agent.capture.pcapfile import open_capture
from agent.config import load_config
from agent.daemon import Daemon
from agent.export.calllog import CallLogStats
from agent.export.metrics import ProbeMetrics

JUNK_FLOWS = 60
JUNK_PACKETS = 40  # per flow, 20 ms apart
LAG_S = 5.0  # behind: past the 2 s budget, under 4 budgets (level 1)


def test_constant_delay_is_no_lag() -> None:
    s = LoadShedder(2.0)
    for k in range(100):
        assert not s.observe(1000.0 + k, 1000.0 + k + 37.0)  # a 37 s offset, steady
    assert s.lag_s == 0.0


def test_growing_delay_sheds_with_hysteresis() -> None:
    s = LoadShedder(2.0)
    assert not s.observe(100.0, 100.1)
    assert not s.observe(101.0, 102.5)  # 1.4 s behind: within the budget
    assert s.observe(102.0, 104.5)  # 2.4 s behind
    assert s.observe(103.0, 104.6)  # 1.5 s: still above half the budget
    assert not s.observe(104.0, 104.9)  # 0.8 s: caught up
    assert s.episodes == 1
    assert LoadShedder(None).observe(0.0, 1e6) == 0


def test_far_behind_sheds_all_media_until_back_under_the_budget() -> None:
    s = LoadShedder(2.0)
    assert s.observe(100.0, 100.0) == 0
    assert s.observe(101.0, 104.0) == 1  # 3 s behind
    assert s.observe(102.0, 111.0) == 2  # 9 s: past 4 budgets
    assert s.observe(108.0, 112.0) == 2  # 4 s: still above the budget
    assert s.observe(110.5, 112.5) == 1  # 2 s (less the floor's slow rise)
    assert s.observe(112.4, 112.6) == 0


def test_wall_step_is_no_lag() -> None:
    s = LoadShedder(2.0)
    assert not s.observe(100.0, 100.2)
    assert not s.observe(3700.0, 3700.2)  # NTP stepped both by an hour
    assert not s.observe(3701.0, 3701.2)


class _Log:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def public(self, record: CallRecord) -> dict[str, object]:
        return record.to_json()

    def write(self, record: CallRecord, public: object = None) -> None:
        self.records.append(record)

    def retry(self) -> None:
        pass

    def reopen(self) -> None:
        pass

    def take_over(self, old: object) -> None:
        pass

    def stats(self) -> CallLogStats:
        return CallLogStats(records_written=len(self.records))

    def close(self) -> None:
        pass


class _LaggingSource:
    """One batch per poll; sets the fake wall clock to the batch's newest packet time
    plus the lag of its position (``lag(ts)``)."""

    def __init__(self, batches: list[Batch], wall: list[float], lag: Any) -> None:
        self.batches, self.wall, self.lag = list(batches), wall, lag

    def poll(self, timeout_s: float) -> list[Batch]:
        if not self.batches:
            return []
        b = self.batches.pop(0)
        ts = float(b.ts.max())
        self.wall[0] = ts + self.lag(ts)
        return [b]

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def _junk(t0_ns: int, t1_ns: int, seed: int) -> tuple[list[CapturedPacket], list[int]]:
    """RTP-looking flows that no SDP names, each starting in [t0, t1); returns the
    packets and each one's capture time."""
    rng = random.Random(seed)
    out = []
    for f in range(JUNK_FLOWS):
        flow = Flow(f"198.19.{f // 200}.{f % 200 + 1}", "198.19.250.1",
                    20000 + 2 * f, 40000 + 2 * f)
        start = rng.randrange(t0_ns, t1_ns)
        ssrc = rng.getrandbits(32)
        for k in range(JUNK_PACKETS):
            payload = rtp_packet(1000 + k, 160 * k, ssrc, 0, False, bytes(160))
            out.append(CapturedPacket(start + k * 20_000_000, link_frame(1, ip_udp(flow, payload))))
    return out, [p.ts_ns for p in out]


Run = tuple[Daemon, _Log, CollectorRegistry, callgen.ScenarioTruth, int, tuple[float, float]]


def _run(tmp_path: Path, shed_lag_s: float, lag_s: float = LAG_S) -> Run:
    packets, truth = callgen.many_calls(n=8, seed=5)
    t0, t1 = min(p.ts_ns for p in packets), max(p.ts_ns for p in packets)
    third = (t1 - t0) // 3
    lo, hi = t0 + third, t0 + 2 * third
    junk, _ = _junk(lo, hi - JUNK_PACKETS * 20_000_000, seed=9)
    in_third = sum(1 for p in junk if lo <= p.ts_ns < hi)
    assert in_third == len(junk)
    merged = sorted(packets + junk, key=lambda p: p.ts_ns)
    pcap = callgen.write(tmp_path / "shed.pcap", merged)
    with open_capture(pcap, chunk_packets=50) as reader:
        batches = list(reader)
    # the shedder sees a batch's newest packet: shed from the first batch reaching the
    # middle third to the last one inside it
    wall = [0.0]
    lag_lo, lag_hi = lo / 1e9, hi / 1e9

    def lag(ts: float) -> float:
        return lag_s if lag_lo <= ts < lag_hi else 0.0

    cfg = tmp_path / "config.yaml"
    cfg.write_text("exporter:\n  site: lab\ncalls:\n  media_idle_timeout_s: 20\n"
                   f"capture:\n  shed_lag_s: {shed_lag_s}\n")  # 0: never shed
    registry = CollectorRegistry()
    log = _Log()
    source = _LaggingSource(list(batches), wall, lag)
    d = Daemon(load_config(cfg), source=source, metrics=ProbeMetrics(registry, site="lab"),
               call_log=log, load=lambda: load_config(cfg), wall=lambda: wall[0])
    while source.batches:
        d.step(0)
    d.shutdown()
    d.test_batches = batches  # type: ignore[attr-defined]
    return d, log, registry, truth, len(junk), (lag_lo, lag_hi)


def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    total = 0.0
    for fam in registry.collect():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_behind_sheds_discovery_keeps_calls(tmp_path: Path) -> None:
    d, log, registry, truth, n_junk, (lo, hi) = _run(tmp_path, shed_lag_s=2.0)
    shed = d.engine.counters()["rtp_shed_rows"]
    # every junk packet lies in the lagging third, and none of it is announced
    assert shed == n_junk
    d._update_metrics()
    assert _metric(registry, "voipprobe_overload_shed_packets_total",
                   kind="rtp_candidate") == n_junk
    junk_streams = [r for r in log.records
                    if any(x.stream.src.startswith("198.19.") for x in r.directions)]
    assert junk_streams == []
    by_id = {r.call_id: r for r in log.records if r.call_id}
    assert len(by_id) == len(truth.calls), "a call went missing"
    for t in truth.calls:
        rec = by_id[t.call_id]
        assert rec.final_status == t.final_status
        if t.final_status == 200:
            got = {(x.stream.src, x.stream.dst, x.stream.ssrc): x.stream.packets
                   for x in rec.directions}
            assert got == {s.key: s.packets for s in t.streams}, t.call_id
        overlaps = t.invite_ts <= hi and (t.bye_ts or t.final_ts or t.invite_ts) + 20 >= lo
        if not overlaps:
            assert not rec.capture_lossy, t.call_id
    assert any(r.capture_lossy for r in by_id.values())


def test_without_shedding_the_junk_is_discovered(tmp_path: Path) -> None:
    d, log, _, _, _, _ = _run(tmp_path, shed_lag_s=0)
    assert d.engine.counters()["rtp_shed_rows"] == 0
    assert d.engine.counters()["rtp_streams_validated"] >= JUNK_FLOWS
    assert not any(r.capture_lossy for r in log.records)


def _rtp_rows(batch: Batch) -> int:
    """UDP rows of a batch whose payload starts like RTP, not to or from port 5060 (the
    generator's SIP): Ethernet + IPv4 parsed here, not by the probe."""
    n = 0
    for i in range(len(batch)):
        frame = batch.packet(i)
        if frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        udp = 14 + ihl
        sport, dport = int.from_bytes(frame[udp:udp + 2]), int.from_bytes(frame[udp + 2:udp + 4])
        if 5060 not in (sport, dport) and len(frame) > udp + 8 and frame[udp + 8] >> 6 == 2:
            n += 1
    return n


def test_far_behind_keeps_signalling_only(tmp_path: Path) -> None:
    d, log, registry, truth, _, (lo, hi) = _run(tmp_path, shed_lag_s=2.0, lag_s=20.0)
    batches = d.test_batches  # type: ignore[attr-defined]
    want = sum(_rtp_rows(b) for b in batches if lo <= float(b.ts.max()) < hi)
    assert want > 0
    assert d.engine.counters()["route_shed_media_rows"] == want
    d._update_metrics()
    assert _metric(registry, "voipprobe_overload_shed_packets_total", kind="media") == want
    by_id = {r.call_id: r for r in log.records if r.call_id}
    assert len(by_id) == len(truth.calls), "a call went missing"
    for t in truth.calls:
        assert by_id[t.call_id].final_status == t.final_status, t.call_id
        assert by_id[t.call_id].end_reason == t.end_reason, t.call_id
    assert any(r.capture_lossy for r in by_id.values())
