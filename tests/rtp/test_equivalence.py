"""The vectorised statistics (agent/rtp/batch.py) equal the reference (agent/rtp/reference.py)."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random

import numpy as np
import pytest
import synth
from hypothesis import given, settings
from hypothesis import strategies as st
from rtpgen import HEAD_MODES, disorder_head, random_stream

from agent.rtp.batch import BatchStats, affine_scan
from agent.rtp.columns import RtpColumns
from agent.rtp.model import StreamKey, StreamStats
from agent.rtp.reference import ReferenceStream, RtpPacket
from agent.rtp.rules import JitterBufferSpec, StreamMeta

SPECS = st.one_of(
    st.builds(JitterBufferSpec, st.just("fixed"), fixed_ms=st.sampled_from([0.0, 0.5, 2.0, 60.0])),
    st.builds(JitterBufferSpec, st.just("adaptive"),
              adaptive_min_ms=st.sampled_from([0.0, 0.5]),
              adaptive_max_ms=st.sampled_from([2.0, 200.0]),
              adaptive_k=st.sampled_from([1.0, 4.0])),
    st.just(JitterBufferSpec("none")),
)


def assert_same(a: StreamStats, b: StreamStats) -> None:
    for f in dataclasses.fields(StreamStats):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, float):
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), (f.name, x, y)
        else:
            assert x == y, (f.name, x, y)


def run_both(streams: list[list[RtpPacket]], cuts: list[int], clocks: list[int | None],
             spec: JitterBufferSpec | None = None
             ) -> tuple[list[StreamStats], list[StreamStats]]:
    metas = [StreamMeta(StreamKey(0, i, 1, 0, 2, 3, i), None, c) for i, c in enumerate(clocks)]
    refs = [ReferenceStream(m, spec) for m in metas]
    for ref, pkts in zip(refs, streams, strict=True):
        for p in pkts:
            ref.add(p)
        ref.finish()
    # interleave by arrival, keeping each stream's own order
    merged = list(heapq.merge(*[[(p.arrival_s, i, k, p) for k, p in enumerate(s)]
                                for i, s in enumerate(streams)]))
    bs = BatchStats(capacity=2, jb=spec)
    sids = [bs.open(m) for m in metas]
    bounds = sorted({0, len(merged), *[c % (len(merged) + 1) for c in cuts]})
    for lo, hi in itertools.pairwise(bounds):
        chunk = merged[lo:hi]
        bs.update(RtpColumns.build(
            sid=[sids[i] for _, i, _, _ in chunk], arrival_s=[p.arrival_s for *_, p in chunk],
            seq=[p.seq for *_, p in chunk], ts=[p.ts for *_, p in chunk],
            pt=[p.pt for *_, p in chunk], marker=[p.marker for *_, p in chunk],
            kind=[int(p.kind) for *_, p in chunk], dscp=[p.dscp for *_, p in chunk],
            vlan=[p.vlan for *_, p in chunk], pcp=[p.pcp for *_, p in chunk]))
    return [r.stats() for r in refs], [bs.close(s) for s in sids]


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nstreams=st.integers(1, 5),
       p=st.sampled_from([0.0, 0.01, 0.05, 0.15]),
       cuts=st.lists(st.integers(0, 10**6), max_size=12), spec=SPECS,
       longest=st.sampled_from([400, 1500]))
def test_batch_equals_reference(seed: int, nstreams: int, p: float, cuts: list[int],
                                spec: JitterBufferSpec, longest: int) -> None:
    rng = random.Random(seed)
    streams = [random_stream(rng, rng.randint(1, longest), 1.7e9 + rng.uniform(0, 2), p)
               for _ in range(nstreams)]
    clocks = [rng.choice([8000, 8000, 16000, None]) for _ in range(nstreams)]
    ref, vec = run_both(streams, cuts, clocks, spec)
    for a, b in zip(ref, vec, strict=True):
        assert_same(a, b)
        assert a.lost == sum_bursts(a)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nstreams=st.integers(1, 3),
       p=st.sampled_from([0.0, 0.01, 0.05]), modes=st.lists(st.sampled_from(HEAD_MODES),
                                                           min_size=3, max_size=3),
       cuts=st.lists(st.integers(0, 10**6), max_size=12), spec=SPECS,
       longest=st.sampled_from([5, 60, 400, 1500]))
def test_batch_equals_reference_reordered_start(
    seed: int, nstreams: int, p: float, modes: list[str], cuts: list[int],
    spec: JitterBufferSpec, longest: int,
) -> None:
    """Packets below the first arrival lower the base: both twins agree, whatever the cuts."""
    rng = random.Random(seed)
    streams = [disorder_head(rng, random_stream(rng, rng.randint(1, longest),
                                                1.7e9 + rng.uniform(0, 2), p), modes[i])
               for i in range(nstreams)]
    clocks = [rng.choice([8000, 16000, None]) for _ in range(nstreams)]
    ref, vec = run_both(streams, cuts, clocks, spec)
    for a, b in zip(ref, vec, strict=True):
        assert_same(a, b)
        assert a.lost == sum_bursts(a) >= 0
        assert a.expected - a.lost + a.duplicates <= a.packets  # strays, untracked: not distinct


def test_reordered_start_is_exercised() -> None:
    """The generator does what the property test relies on: bases lowered, across wraps."""
    lowered = wrapped_below = 0
    for seed in range(200):
        rng = random.Random(seed)
        pkts = disorder_head(rng, random_stream(rng, 80, 1.7e9, 0.0), "shuffle")
        if seed % 2:  # the first arrival at 0..3: what arrives below it wraps back
            shift = rng.randrange(4) - pkts[0].seq
            pkts = [dataclasses.replace(q, seq=(q.seq + shift) % 65536) for q in pkts]
        first = pkts[0].seq
        below = [q.seq for q in pkts if 0 < (first - q.seq) % 65536 < 100]
        lowered += bool(below)
        wrapped_below += any(q > first for q in below)
        ref, vec = run_both([pkts], [rng.randrange(80) for _ in range(3)], [8000])
        assert_same(ref[0], vec[0])
        assert ref[0].lost == 0 and ref[0].expected == 80
        ext = [first + (q.seq - first + 32768) % 65536 - 32768 for q in pkts]
        assert ref[0].seq_wraps == max(ext) // 65536 - min(ext) // 65536
    assert lowered > 50 and wrapped_below > 20, (lowered, wrapped_below)


START_CASES = [
    [101, 100, 102, 103], [102, 100, 101, 103], [105, 100, 106], [101, 100, 100, 102],
    [0, 65535, 1, 2], [65535, 65534, 0, 1], [1, 65534, 2], [0, 65535, 65534, 65533],
    [5, 3, 3, 4, 1, 2, 2, 6], [100, *range(1000, 19, -49), 1001],
    [100, *range(2100, 89, -49), 2101], [3, 2, 40000, 1, 0, 65535, 4],
]


@pytest.mark.parametrize("seqs", START_CASES)
def test_reordered_start_every_cut(seqs: list[int]) -> None:
    pkts = [RtpPacket(50.0 + 0.02 * i + 0.003 * (q % 3), q, 160 * q, 0)
            for i, q in enumerate(seqs)]
    for cuts in [[], list(range(len(seqs))), *([c] for c in range(1, len(seqs))),
                 *([c, c + 1] for c in range(1, len(seqs) - 1))]:
        ref, vec = run_both([pkts], cuts, [8000], JitterBufferSpec("fixed", fixed_ms=1.0))
        assert_same(ref[0], vec[0])


def test_synth_reordered_start_equal() -> None:
    """Generator streams whose first packets are reordered by jitter, interleaved, cut."""
    imp = synth.Impairments(loss=0.02, duplicate=0.02, reorder=0.02, jitter_ms=60.0,
                            jitter_head=True)
    for seed in range(12):
        rng = random.Random(seed)
        streams, truths = [], []
        for k in range(3):
            s = synth.make_stream(300, ssrc=k, seed=seed * 3 + k, impair=imp,
                                  start_seq=rng.choice([None, 65535, 65534, 0]))
            streams.append([RtpPacket(p.arrival_ns / 1e9, p.ext_seq % 65536,
                                      p.ext_ts % (1 << 32), p.pt, p.marker) for p in s.packets])
            truths.append(s.truth)
        cuts = [rng.randrange(1000) for _ in range(6)]
        ref, vec = run_both(streams, cuts, [8000, 8000, None])
        for a, b, t in zip(ref, vec, truths, strict=True):
            assert_same(a, b)
            assert (a.expected, a.lost, a.duplicates, a.reordered, a.seq_wraps) == (
                t.expected, t.lost, t.duplicates, t.reordered, t.seq_wraps)


def test_jitter_buffer_is_exercised_and_equal() -> None:
    """Not only zeros: long streams over several blocks, discards, waits and ptime agree."""
    discarded = played = 0
    for seed in range(40):
        rng = random.Random(seed)
        spec = rng.choice([JitterBufferSpec("fixed", fixed_ms=2.0),
                           JitterBufferSpec(adaptive_min_ms=0.5, adaptive_max_ms=3.0)])
        streams = [random_stream(rng, 1500, 1.7e9, rng.choice([0.0, 0.05])) for _ in range(3)]
        cuts = [rng.randrange(5000) for _ in range(8)]
        ref, vec = run_both(streams, cuts, [8000, 16000, 8000], spec)
        for a, b in zip(ref, vec, strict=True):
            assert_same(a, b)
            discarded += a.jb_discarded
            played += a.jb_packets - a.jb_discarded
            assert a.ptime_ms in (20.0, 10.0)
    assert discarded > 1000 and played > 1000


def sum_bursts(s: StreamStats) -> int:
    return round(s.loss_burst_mean * s.loss_bursts)


def test_single_packet_batches() -> None:
    rng = random.Random(7)
    streams = [random_stream(rng, 300, 1.7e9, 0.1) for _ in range(3)]
    n = sum(map(len, streams))
    ref, vec = run_both(streams, list(range(n)), [8000, 8000, 8000],
                        JitterBufferSpec("fixed", fixed_ms=1.0))
    for a, b in zip(ref, vec, strict=True):
        assert_same(a, b)


def test_affine_scan_long_and_exact() -> None:
    rng = np.random.default_rng(1)
    n = 70000
    a = np.full(n, 15 / 16)
    a[rng.random(n) < 0.01] = 1.0
    a[0] = 0.0
    b = rng.random(n) / 16 * (a != 1.0)
    x = affine_scan(a, b)
    j = 0.0
    for i in range(n):
        j = a[i] * j + b[i]
        if i % 9973 == 0:
            assert math.isclose(x[i], j, rel_tol=1e-12)
    assert math.isclose(x[-1], j, rel_tol=1e-12)
