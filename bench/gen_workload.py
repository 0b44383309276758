#!/usr/bin/env python3
"""Write a large pcap of concurrent G.711 calls for throughput benchmarks.

    python3 bench/gen_workload.py --calls 100 --packets 1000000 --out bench/out/w.pcap

Each call is two RTP streams (A->B and B->A), 20 ms ptime, 160-byte G.711
payload (172-byte RTP packet, 214-byte Ethernet/IPv4/UDP frame), EF-marked,
addresses from 198.18.0.0/15 (RFC 2544 benchmarking space) and distinct ports.
Every packet gets uniform(0, --jitter-ms) of network delay and --loss of them
are dropped (never the first few of a stream, so RTP detection sees a clean
start), timestamps are in arrival order. ``--packets`` is the exact number of
packets in the file.

The file is built with numpy record arrays, a chunk at a time, because a
per-packet Python loop (or scapy) would take minutes for a million packets and
the benchmark should measure the analyser, not wait for its input.
``--truth FILE.json`` writes per-stream packets/expected/lost for checking.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

PTIME_NS = 20_000_000
TS_STEP = 160  # 8 kHz * 20 ms
PAYLOAD_LEN = 160
FRAME_LEN = 14 + 20 + 8 + 12 + PAYLOAD_LEN  # 214
CLEAN_HEAD = 4  # first packets of each stream are never dropped
BASE_EPOCH_S = 1_700_000_000
CHUNK = 262_144  # records written per numpy batch: bounds memory at ~60 MB

RECORD = np.dtype(
    [
        ("ts_sec", "<u4"),
        ("ts_usec", "<u4"),
        ("incl_len", "<u4"),
        ("orig_len", "<u4"),
        ("l2l4", "u1", (42,)),  # Ethernet + IPv4 + UDP, constant per stream
        ("rtp_vpxcc", "u1"),
        ("rtp_mpt", "u1"),
        ("rtp_seq", ">u2"),
        ("rtp_ts", ">u4"),
        ("rtp_ssrc", ">u4"),
        ("payload", "u1", (PAYLOAD_LEN,)),
    ]
)
assert RECORD.itemsize == 16 + FRAME_LEN


def _checksum(hdr: bytes) -> int:
    total = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def l2l4_template(src: int, dst: int, sport: int, dport: int, dscp: int = 46) -> bytes:
    """Ethernet/IPv4/UDP header bytes of one stream (IP id 0 + DF, so the checksum is constant)."""
    eth = bytes.fromhex("02000000b000") + bytes.fromhex("02000000a000") + b"\x08\x00"
    udp_len = 8 + 12 + PAYLOAD_LEN
    ip = struct.pack("!BBHHHBBHII", 0x45, dscp << 2, 20 + udp_len, 0, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0)  # checksum 0: allowed over IPv4
    return eth + ip + udp


def stream_endpoints(calls: int) -> list[tuple[int, int, int, int]]:
    """(src, dst, sport, dport) per stream; stream 2i is A->B of call i, 2i+1 is B->A."""
    if calls > 65000:
        raise ValueError("at most 65000 calls fit the address plan")
    a_net = int.from_bytes(bytes([198, 18, 0, 0]), "big")
    b_net = int.from_bytes(bytes([198, 19, 0, 0]), "big")
    out = []
    for i in range(calls):
        a, b = a_net + 1 + i, b_net + 1 + i
        pa, pb = 16384 + 2 * (i % 8192), 40000 + 2 * (i % 8192)  # even RTP ports
        out += [(a, b, pa, pb), (b, a, pb, pa)]
    return out


def generate(
    out: Path,
    *,
    calls: int = 100,
    packets: int = 1_000_000,
    loss: float = 0.005,
    jitter_ms: float = 2.0,
    seed: int = 1,
) -> dict[str, object]:
    """Write the workload; returns its truth (per-stream packets/expected/lost)."""
    rng = np.random.default_rng(seed)
    endpoints = stream_endpoints(calls)
    n_streams = len(endpoints)
    per_stream = math.ceil(packets / (n_streams * (1.0 - loss)))
    if per_stream <= CLEAN_HEAD:
        raise ValueError("too few packets per stream")
    sent = n_streams * per_stream
    n_drop = sent - packets
    if n_drop < 0:
        raise ValueError("internal: fewer packets than requested")

    # Arrival time of every sent packet, (stream, k) row-major, in integer µs.
    offset_us = rng.integers(0, PTIME_NS // 1000, n_streams)[:, None]
    k = np.arange(per_stream, dtype=np.int64)[None, :]
    delay_us = rng.integers(0, int(jitter_ms * 1000) + 1, (n_streams, per_stream))
    arrival_us = (offset_us + k * (PTIME_NS // 1000) + delay_us).ravel()

    keep = np.ones((n_streams, per_stream), dtype=bool)
    droppable = np.flatnonzero(np.tile(np.arange(per_stream) >= CLEAN_HEAD, n_streams))
    keep.ravel()[rng.choice(droppable, n_drop, replace=False)] = False
    idx = np.flatnonzero(keep.ravel())
    idx = idx[np.argsort(arrival_us[idx], kind="stable")]

    templates = np.frombuffer(
        b"".join(l2l4_template(*e) for e in endpoints), dtype=np.uint8
    ).reshape(n_streams, 42)
    ssrc = rng.integers(1, 2**32, n_streams, dtype=np.uint64).astype(np.uint32)
    seq0 = rng.integers(0, 2**16, n_streams, dtype=np.int64)
    ts0 = rng.integers(0, 2**32, n_streams, dtype=np.int64)
    pt = np.where(np.arange(n_streams) // 2 % 2 == 0, 0, 8).astype(np.uint8)  # PCMU / PCMA
    pool = rng.integers(0, 256, (64, PAYLOAD_LEN), dtype=np.uint8)  # payload is never parsed

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for lo in range(0, idx.size, CHUNK):
            _write_chunk(
                f,
                idx[lo : lo + CHUNK],
                per_stream,
                arrival_us,
                templates,
                ssrc,
                seq0,
                ts0,
                pt,
                pool,
            )

    last_kept = per_stream - 1 - np.argmax(keep[:, ::-1], axis=1)
    got = keep.sum(axis=1)
    streams = [
        {
            "src": f"{_ip(e[0])}:{e[2]}",
            "dst": f"{_ip(e[1])}:{e[3]}",
            "ssrc": int(ssrc[s]),
            "packets": int(got[s]),
            "expected": int(last_kept[s] + 1),
            "lost": int(last_kept[s] + 1 - got[s]),
        }
        for s, e in enumerate(endpoints)
    ]
    return {"file": str(out), "packets": int(idx.size), "calls": calls, "streams": streams}


def _write_chunk(
    f: object,
    idx: npt.NDArray[np.int64],
    per_stream: int,
    arrival_us: npt.NDArray[np.int64],
    templates: npt.NDArray[np.uint8],
    ssrc: npt.NDArray[np.uint32],
    seq0: npt.NDArray[np.int64],
    ts0: npt.NDArray[np.int64],
    pt: npt.NDArray[np.uint8],
    pool: npt.NDArray[np.uint8],
) -> None:
    s, k = np.divmod(idx, per_stream)
    rec = np.empty(idx.size, dtype=RECORD)
    t = arrival_us[idx]
    rec["ts_sec"] = BASE_EPOCH_S + t // 1_000_000
    rec["ts_usec"] = t % 1_000_000
    rec["incl_len"] = FRAME_LEN
    rec["orig_len"] = FRAME_LEN
    rec["l2l4"] = templates[s]
    rec["rtp_vpxcc"] = 0x80
    rec["rtp_mpt"] = pt[s] | np.where(k == 0, 0x80, 0).astype(np.uint8)  # M on first packet
    rec["rtp_seq"] = (seq0[s] + k) & 0xFFFF
    rec["rtp_ts"] = (ts0[s] + k * TS_STEP) & 0xFFFFFFFF
    rec["rtp_ssrc"] = ssrc[s]
    rec["payload"] = pool[k % pool.shape[0]]
    f.write(rec.tobytes())  # type: ignore[attr-defined]


def _ip(v: int) -> str:
    return ".".join(str(b) for b in v.to_bytes(4, "big"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100, help="concurrent calls (2 streams each)")
    ap.add_argument("--packets", type=int, default=1_000_000, help="packets in the file")
    ap.add_argument("--loss", type=float, default=0.005, help="fraction of packets dropped")
    ap.add_argument("--jitter-ms", type=float, default=2.0, help="max random network delay")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--truth", type=Path, help="write per-stream truth as JSON here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    truth = generate(
        args.out,
        calls=args.calls,
        packets=args.packets,
        loss=args.loss,
        jitter_ms=args.jitter_ms,
        seed=args.seed,
    )
    if args.truth:
        args.truth.write_text(json.dumps(truth, indent=1) + "\n")
    print(
        f"wrote {args.out}: {truth['packets']} packets, {2 * args.calls} streams, "
        f"{time.perf_counter() - t0:.2f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
