"""The classic-pcap record scan's fixed-caplen shortcut (`PcapReader._scan`): runs of
records of one captured length are taken by a vectorised check; the packets read must
be exactly the records written, whatever the runs, the window and the batch size."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synth import CapturedPacket, write_pcap

from agent.capture.pcapfile import open_capture

# runs of (frame length, count): long runs take the shortcut, short ones the walk
RUNS = st.lists(st.tuples(st.sampled_from([0, 1, 12, 60, 214, 1500]),
                          st.integers(1, 70)), min_size=1, max_size=8)


def _packets(runs: list[tuple[int, int]]) -> list[CapturedPacket]:
    out, n = [], 0
    for length, count in runs:
        for _ in range(count):
            out.append(CapturedPacket(1_000_000_000 + n * 1_000_000,
                                      bytes((n + j) % 251 for j in range(length))))
            n += 1
    return out


def _read(path: Path, **kwargs: int) -> tuple[list[bytes], list[float]]:
    data, ts = [], []
    with open_capture(path, **kwargs) as reader:
        for b in reader:
            data.extend(b.packet(i) for i in range(len(b)))
            ts.extend(float(t) for t in b.ts)
    return data, ts


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=RUNS, big=st.booleans(), chunk_packets=st.sampled_from([1, 7, 16, 50, 100_000]),
       chunk_bytes=st.sampled_from([64, 1000, 1 << 20]))
def test_runs_read_back_exactly(tmp_path: Path, runs: list[tuple[int, int]], big: bool,
                                chunk_packets: int, chunk_bytes: int) -> None:
    packets = _packets(runs)
    path = write_pcap(tmp_path / "runs.pcap", packets, big_endian=big)
    data, ts = _read(path, chunk_packets=chunk_packets, chunk_bytes=chunk_bytes)
    assert data == [p.frame for p in packets]
    assert ts == pytest.approx([p.ts_ns / 1e9 for p in packets], abs=1e-6)


def test_truncated_last_record_after_a_run(tmp_path: Path) -> None:
    packets = _packets([(214, 40)])
    path = write_pcap(tmp_path / "cut.pcap", packets)
    path.write_bytes(path.read_bytes()[:-100])  # the 40th record is cut short
    data, _ = _read(path)
    assert data == [p.frame for p in packets[:39]]
