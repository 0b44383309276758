"""Builders for the export tests: one SIP call with RTP both ways, run through the engine.

The caller (A, office LAN) calls the carrier (B); the B -> A stream loses every
``lose_every``-th packet and carries DSCP ``dscp_b`` (46 = EF is compliant).
"""

from __future__ import annotations

import struct

import packetbuild
from packetbuild import rtp, sdp, udp
from prometheus_client import CollectorRegistry

from agent.calls.events import CallEnded, Event
from agent.calls.record import CallRecord
from agent.capture.batch import Batch, LinkType
from agent.config import Config, config_from_mapping
from agent.counters import CounterSnapshot
from agent.engine import Engine, EngineConfig
from agent.export.metrics import ProbeMetrics

T0 = 1_700_000_000.0
A, B = "10.1.2.3", "198.19.8.20"
CALL_ID = "a84b4c76e66710@10.1.2.3"
FROM = "sip:+15551230001@pbx.example"
TO = "sip:+442071234567@carrier.example"


def config(**calls: float) -> Config:
    return config_from_mapping({
        "sla": {
            "local_networks": ["10.0.0.0/8"],
            "peers": [{"name": "carrier", "networks": ["198.19.0.0/16"], "profile": "gold"}],
            "default_profile": "default",
            "profiles": {
                "default": {"min_mos_cq": 3.6},
                "gold": {"min_mos_cq": 4.0, "max_loss_ratio": 0.01, "max_jitter_ms": 30,
                         "media_dscp": [46], "signalling_dscp": [24, 26, 40]},
            },
        },
        "calls": {"interval_s": 2.5, **calls},
    })


def sip(first: str, cseq: str, to_tag: str = "", body: bytes = b"") -> bytes:
    return packetbuild.sip(first, cseq, to_tag, body, via=A, from_uri=FROM, to_uri=TO,
                           call_id=CALL_ID)


def packets(lose_every: int = 0, dscp_b: int = 46, n: int = 400, *, cs0_every: int = 0,
            dtmf: int = 0) -> tuple[list[bytes], list[float]]:
    """The call; B->A marked ``dscp_b`` but every ``cs0_every``-th packet CS0; with
    ``dtmf``, that many RFC 4733 event packets A->B on their own SSRC (PT 101)."""
    out: list[tuple[float, bytes]] = [
        (T0, udp(A, 5060, B, 5060, sip(f"INVITE {TO} SIP/2.0", "1 INVITE", body=sdp(A, 40000)),
                 24)),
        (T0 + 0.25, udp(B, 5060, A, 5060, sip("SIP/2.0 180 Ringing", "1 INVITE", ";tag=b1"),
                        24)),
        (T0 + 1.0, udp(B, 5060, A, 5060, sip("SIP/2.0 200 OK", "1 INVITE", ";tag=b1",
                                             sdp(B, 50000)), 24)),
        (T0 + 1.01, udp(A, 5060, B, 5060, sip(f"ACK {TO} SIP/2.0", "1 ACK", ";tag=b1"), 24)),
    ]
    for i in range(n):
        t = T0 + 1.1 + 0.02 * i
        out.append((t, udp(A, 40000, B, 50000, rtp(i, 160 * i, 0xA), 46)))
        if not (lose_every and i % lose_every == lose_every - 1):
            mark = 0 if cs0_every and i % cs0_every == cs0_every - 1 else dscp_b
            out.append((t + 0.001, udp(B, 50000, A, 40000, rtp(500 + i, 160 * i, 0xB), mark)))
        if i < dtmf:  # event 1, volume 10, growing duration; end bit on the last
            event = struct.pack("!BBH", 1, 10 | (0x80 if i == dtmf - 1 else 0), 160 * (i + 1))
            head = struct.pack("!BBHII", 0x80, 101, 900 + i, 8000, 0xE)
            out.append((t + 0.002, udp(A, 40000, B, 50000, head + event, 46)))
    end = T0 + 1.2 + 0.02 * n
    out.append((end, udp(A, 5060, B, 5060, sip(f"BYE {TO} SIP/2.0", "2 BYE", ";tag=b1"), 24)))
    out.append((end + 0.01, udp(B, 5060, A, 5060, sip("SIP/2.0 200 OK", "2 BYE", ";tag=b1"),
                                24)))
    out += [(end + 100.0 + i, udp(A, 53000, "10.0.0.53", 53, b"\x12\x34" + b"\x00" * 30))
            for i in range(3)]
    return [p for _, p in out], [t for t, _ in out]


def run(cfg: Config | None = None, *, lose_every: int = 0, dscp_b: int = 46,
        batch: int = 50, cs0_every: int = 0,
        dtmf: int = 0) -> tuple[list[Event], CounterSnapshot]:
    """Feed the call in batches of ``batch`` packets (so intervals fire); finish."""
    frames, ts = packets(lose_every, dscp_b, cs0_every=cs0_every, dtmf=dtmf)
    engine = Engine(EngineConfig(config=cfg or config()))
    events: list[Event] = []
    for i in range(0, len(frames), batch):
        events += engine.feed(Batch.from_packets(frames[i:i + batch], ts[i:i + batch],
                                                 LinkType.RAW))
    events += engine.finish()
    return events, engine.snapshot()


def record(cfg: Config | None = None, **kw: int) -> CallRecord:
    events, _ = run(cfg, **kw)
    (rec,) = [e.record for e in events if isinstance(e, CallEnded)]
    return rec


def sample_metrics(cfg: Config | None = None) -> tuple[CollectorRegistry, ProbeMetrics]:
    """A private registry whose `ProbeMetrics` saw the sample call (site ``hq``)."""
    cfg = cfg or config()
    reg = CollectorRegistry()
    m = ProbeMetrics(reg, site="hq", config=cfg)
    events, counters = run(cfg)
    m.observe_all(events)
    m.update(counters)
    return reg, m
