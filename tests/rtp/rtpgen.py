"""Random RTP packet streams for tests: loss, reordering, duplicates, wraps, restarts,
strays, RFC 4733 DTMF, RFC 3389 CN with DTX gaps, timestamp discontinuities."""

from __future__ import annotations

import random

from agent.rtp.payload_types import PayloadKind
from agent.rtp.reference import RtpPacket


def random_stream(rng: random.Random, n: int, t0: float, p: float) -> list[RtpPacket]:
    """About ``n`` packets of one 8 kHz, 20 ms stream; ``p`` scales how often things go wrong."""
    seq = rng.choice([rng.randrange(65536), 65536 - rng.randrange(1, 40)])
    ts = rng.randrange(1 << 32)
    t = t0
    out: list[RtpPacket] = []
    dscp = rng.choice([0, 46])

    def emit(pt: int = 0, marker: bool = False, kind: PayloadKind = PayloadKind.MEDIA,
             s: int | None = None, stamp: int | None = None) -> None:
        out.append(RtpPacket(t + rng.uniform(0, 0.004) * (rng.random() < p * 5),
                             (seq if s is None else s) % 65536,
                             (ts if stamp is None else stamp) % (1 << 32), pt, marker, kind,
                             dscp if rng.random() > p else 0))

    while len(out) < n:
        r = rng.random()
        if r < p:  # loss of 1..5
            seq += rng.randint(1, 5)
        elif r < 2 * p and out:  # duplicate of the last packet
            out.append(out[-1])
            continue
        elif r < 3 * p and len(out) > 2:  # reorder the last two
            out[-1], out[-2] = out[-2], out[-1]
        elif r < 3.3 * p:  # restart: large jump, then consecutive
            seq += rng.randint(MIN_JUMP, 60000)
            ts = rng.randrange(1 << 32)
        elif r < 3.6 * p:  # a stray packet far away
            emit(s=seq + rng.randint(MIN_JUMP, 60000))
            t += 0.001
        elif r < 4 * p:  # DTMF: event packets share the onset timestamp; end sent 3 times
            onset = ts
            for _ in range(rng.randint(1, 4)):
                emit(101, kind=PayloadKind.TELEPHONE_EVENT, stamp=onset)
                seq, t, ts = seq + 1, t + 0.05, ts + 400
            for _ in range(3):
                emit(101, kind=PayloadKind.TELEPHONE_EVENT, stamp=onset)
                t += 0.01
            seq += 1
        elif r < 4.4 * p:  # CN then a DTX gap: consecutive seq, marker on the talkspurt
            emit(13, kind=PayloadKind.COMFORT_NOISE)
            seq += 1
            gap = rng.uniform(0.1, 3.0)
            t, ts = t + gap, ts + int(gap * 8000)
            emit(0, marker=True)
            seq, t, ts = seq + 1, t + 0.02, ts + 160
            continue
        elif r < 4.6 * p:  # timestamp discontinuity
            ts += rng.randint(20000, 1 << 31)
        emit()
        seq, t, ts = seq + 1, t + 0.02 + rng.uniform(-0.003, 0.003) * (rng.random() < 0.5), ts + 160
    return out


MIN_JUMP = 3000
