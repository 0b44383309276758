"""Regenerate agent/data/sample.pcap.gz, the capture `voipprobe analyze` reads by default.

A 20-second G.711 A-law call between two phones on 198.18.0.0/15, both directions,
built with the test suite's independent generator (tests/synth.py), seeded so the
file is reproducible:
- caller -> callee: clean, one DTMF digit (RFC 4733, PT 101), marked EF;
- callee -> caller: 2 % loss, up to 12 ms of jitter, a few reordered packets, and
  10 % of packets re-marked to DSCP 0 by some misconfigured hop.

    python3 scripts/make_sample.py
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import synth  # noqa: E402  (the generator lives with the tests)

OUT = ROOT / "agent" / "data" / "sample.pcap.gz"
SLOTS = 1000  # 20 ms each


def main() -> None:
    caller = synth.Flow("198.18.7.10", "198.19.8.20", 16384, 20000, dscp=46)
    callee = synth.Flow("198.19.8.20", "198.18.7.10", 20000, 16384, dscp=46)
    fwd = synth.make_stream(
        SLOTS, ssrc=0x5A17C0DE, seed=11, pt=synth.PT_PCMA,
        impair=synth.Impairments(jitter_ms=1.0), dtmf=[synth.DtmfEvent(at=400, event=7)],
    )
    back = synth.make_stream(
        SLOTS, ssrc=0x0BADCAFE, seed=12, pt=synth.PT_PCMA,
        start_ns=synth.BASE_EPOCH_NS + 35_000_000,
        impair=synth.Impairments(loss=0.02, jitter_ms=12.0, reorder=0.003),
    )
    rng = random.Random(13)
    remark = [0 if rng.random() < 0.10 else 46 for _ in back.packets]
    packets = synth.merge(
        synth.stream_frames(fwd, caller),
        synth.stream_frames(back, callee, dscp_per_packet=remark),
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    synth.write_pcap(OUT, packets, compress=True)
    print(f"wrote {OUT}: {len(packets)} packets, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
