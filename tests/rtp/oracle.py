"""Read the corpus oracle (tshark per-packet RTP rows and rtp,streams tables) for tests."""

from __future__ import annotations

import csv
from pathlib import Path

from tshark_table import TsharkStream, parse_rtp_streams

from agent.media.payloads import PayloadInfo, PayloadKind, estimate_clock_rate, lookup
from agent.rtp.model import StreamKey
from agent.rtp.reference import RtpPacket
from agent.rtp.rules import StreamMeta

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

def read_streams(path: Path) -> list[TsharkStream]:
    return parse_rtp_streams(path.read_text())


Flow = tuple[str, int, str, int, int]


def read_packets(path: Path) -> dict[Flow, list[tuple[float, int, int, int, int]]]:
    """Per (src, sport, dst, dport, ssrc): (epoch, seq, ts, pt, dscp) rows in file order.

    Tunnelled or ICMP-quoted rows carry ``outer,inner`` addresses: the inner (last) one
    is the RTP packet's own.
    """
    flows: dict[Flow, list[tuple[float, int, int, int, int]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if not row["rtp.ssrc"] or "," in (row.get("ip.src") or ""):
                continue  # ICMP-quoted copies: not stream packets (tshark's tap skips them too)
            src = (row.get("ip.src") or row.get("ipv6.src") or "").split(",")[-1]
            dst = (row.get("ip.dst") or row.get("ipv6.dst") or "").split(",")[-1]
            key = (src, int(row["udp.srcport"].split(",")[-1]), dst,
                   int(row["udp.dstport"].split(",")[-1]), int(row["rtp.ssrc"].split(",")[-1], 16))
            dscp = row.get("ip.dsfield.dscp") or "0"
            flows.setdefault(key, []).append((
                float(row["frame.time_epoch"]), int(row["rtp.seq"].split(",")[-1]),
                int(row["rtp.timestamp"].split(",")[-1]), int(row["rtp.p_type"].split(",")[-1]),
                int(dscp.split(",")[-1])))
    return flows


def to_packets(rows: list[tuple[float, int, int, int, int]], hints: dict[int, PayloadInfo]
               ) -> tuple[StreamMeta, list[RtpPacket]]:
    """Packets and meta the way the tracker would derive them (clock from the first packets)."""
    pkts = []
    for t, seq, ts, pt, dscp in rows:
        info = lookup(pt, hints)
        kind = info.kind if info else PayloadKind.MEDIA
        pkts.append(RtpPacket(t, seq, ts, pt, False, kind, dscp))
    media = [p for p in pkts if p.kind == PayloadKind.MEDIA][:4]
    main = media[0].pt if media else pkts[0].pt
    info = lookup(main, hints)
    clock, est = (info.clock_rate if info else None), False
    if info is None and len(media) >= 2:
        clock = estimate_clock_rate((media[-1].ts - media[0].ts) % (1 << 32),
                                    media[-1].arrival_s - media[0].arrival_s)
        est = clock is not None
    key = StreamKey(0, 0, 0, 0, 0, 0, 0)
    return StreamMeta(key, info.name if info else None, clock, est), pkts
