"""The vectorised statistics (agent/rtp/batch.py) equal the reference (agent/rtp/reference.py)."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rtpgen import random_stream

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
