"""Random RTP packet streams for tests: loss, reordering, duplicates, wraps, restarts,
strays, RFC 4733 DTMF, RFC 3389 CN with DTX gaps, timestamp discontinuities, and
streams whose first packets arrive out of order (`disorder_head`)."""

from __future__ import annotations

import dataclasses
import random

from agent.media.payloads import PayloadKind
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
HEAD_MODES = ("none", "shuffle", "late_first", "walk_back")


def disorder_head(rng: random.Random, pkts: list[RtpPacket], mode: str) -> list[RtpPacket]:
    """The stream with its start reordered, so packets arrive below the first arrival.

    ``shuffle``: the first up to 60 packets are reordered by a random delay of up to
    1.5..40 packet times; ``late_first``: the first 1..5 packets arrive after packet
    1..150 (past MAX_MISORDER: large jumps, strays); ``walk_back``: the stream opens
    with a packet 300..2500 ahead and walks back in steps of 1..99 to up to 300 below
    the first real packet, every one below the base (and, once HOLE_WINDOW behind the
    opening packet, untracked).
    Arrival times stay non-decreasing: the reordered packets take the sorted times.
    """
    if mode == "none" or len(pkts) < 2:
        return pkts
    if mode == "walk_back":
        p0 = pkts[0]
        seq, stop = p0.seq + rng.randint(300, 2500), p0.seq - rng.randint(0, 300)
        walk: list[RtpPacket] = []
        while seq > stop:
            ts = (p0.ts + 160 * (seq - p0.seq)) % (1 << 32)
            walk.append(dataclasses.replace(p0, seq=seq % 65536, ts=ts, marker=False))
            seq -= rng.randint(1, 99)
        head, rest = walk, pkts
    elif mode == "shuffle":
        k = rng.randint(2, min(len(pkts), 60))
        spread = rng.choice([1.5, 3.0, 8.0, 40.0])
        order = sorted(range(k), key=lambda i: i + rng.uniform(0, spread))
        head, rest = [pkts[i] for i in order], pkts[k:]
    elif mode == "late_first":
        m = rng.randint(1, min(5, len(pkts)))
        after = min(len(pkts), m + rng.randint(1, 150))
        head, rest = pkts[m:after] + pkts[:m], pkts[after:]
    else:
        raise ValueError(mode)
    if mode == "walk_back":  # squeezed in just before the first real packet
        times = [pkts[0].arrival_s - 0.0005 * (len(head) - i) for i in range(len(head))]
    else:
        times = sorted(p.arrival_s for p in head)
    return [dataclasses.replace(p, arrival_s=t) for p, t in zip(head, times, strict=True)] + rest
