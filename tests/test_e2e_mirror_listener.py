"""A call mirrored to the probe's own TZSP/VXLAN listener gives the records of a probe on
the path.

Two calls (one answered with 5 % media loss and 0-4 ms network jitter, one refused
with 486) are generated with known truth (`callgen`); their frames are wrapped by
scapy's own TZSP (``scapy.contrib.tzsp``) or VXLAN (``scapy.layers.vxlan``) layers, as
MikroTik's sniffer or a switch would stream them, and a separate process sends the
datagrams to a `MirrorListener` on 127.0.0.1 at the pace they were captured (real
time: the listener stamps each datagram with its kernel receive time, so pacing is
what the engine measures). The listener's batches go through an `Engine` exactly as
the agent feeds them; the records must be those of a probe on the path: statuses and
per-direction packets and loss exact against the generated capture, jitter within
0.05 ms of the same frames at the times the sender sent them (what a probe on the
wire between sender and listener would stamp: on a busy machine the sender is now
and then a millisecond late, and the mirror carries that as any network would). A
capture of the mirror stream itself at the listener's times gives the very same
records, observation points included: the live listener and `analyze` agree."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import callgen
import pytest
from records import points_of
from scapy.contrib.tzsp import TZSP, TZSPTagEnd
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw
from synth import BASE_EPOCH_NS

from agent.calls.events import CallEnded
from agent.capture.batch import Batch
from agent.capture.mirror_listener import MirrorListener
from agent.engine import Engine
from agent.sip.events import EndReason

MS, S = callgen.MS, callgen.S
JITTER_TOL_MS = 0.05
_RECORD = struct.Struct("!dH")  # send offset (s), datagram length

# Sends the datagrams of a file of _RECORD-framed datagrams to 127.0.0.1:PORT, each at
# its offset from the start (busy-waiting the last stretch: sleep alone is ~0.1 ms off).
SENDER = r"""
import socket, struct, sys, time
rec = struct.Struct("!dH")
data = open(sys.argv[1], "rb").read()
port = int(sys.argv[2])
out = []
pos = 0
while pos < len(data):
    at, n = rec.unpack_from(data, pos)
    pos += rec.size
    out.append((at, data[pos:pos + n]))
    pos += n
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = []
start = time.perf_counter() + 0.2
for at, d in out:
    target = start + at
    while (left := target - time.perf_counter()) > 0.002:
        time.sleep(left - 0.002)
    while time.perf_counter() < target:
        pass
    sent.append(time.time())
    s.sendto(d, ("127.0.0.1", port))
open(sys.argv[3], "wb").write(struct.pack(f"!{len(sent)}d", *sent))
"""

WRAP = {
    "tzsp": lambda frame: bytes(TZSP(type=0, encapsulated_protocol=1) / TZSPTagEnd()
                                / Raw(frame)),
    "vxlan": lambda frame: bytes(VXLAN(vni=5001) / Raw(frame)),
}
POINT = {"tzsp": "tzsp/127.0.0.1", "vxlan": "vxlan/127.0.0.1/vni5001"}


def _calls() -> list[callgen.CapturedPacket]:
    rng = random.Random(23)
    cap = callgen._Capture()
    for plan in (
        callgen.CallPlan(call_id="mirror-a@198.18.1.1", start_ns=BASE_EPOCH_NS,
                         caller_ip="198.18.1.1", callee_ip="198.18.2.1", caller_media=20000,
                         callee_media=30000, codec=callgen.PCMA, outcome="answered",
                         setup_ns=300 * MS, talk_ns=3 * S,
                         delay=callgen.Delay(delay_ms=(0.0, 4.0), loss=0.05)),
        callgen.CallPlan(call_id="mirror-b@198.18.1.2", start_ns=BASE_EPOCH_NS + 500 * MS,
                         caller_ip="198.18.1.2", callee_ip="198.18.2.1", caller_media=20002,
                         callee_media=30002, codec=callgen.PCMU, outcome="failed",
                         setup_ns=400 * MS, rtp=False),
    ):
        callgen.emit_call(cap, rng, plan)
    return callgen._Capture.packets(cap.finish())


def _records(batches: list[Batch]) -> list[dict[str, Any]]:
    engine = Engine()
    events = [e for b in batches for e in engine.feed(b)]
    events += engine.finish(EndReason.CAPTURE_END)
    records = [e.record.to_json() for e in events if isinstance(e, CallEnded)]
    return sorted(records, key=lambda r: str(r["call_id"]))


def _figures(rec: dict[str, Any]) -> list[tuple[object, ...]]:
    out = []
    for d in rec["directions"]:
        s = d["stream"]
        out.append((d["direction"], s["src"], s["dst"], s["ssrc"], s["packets"], s["expected"],
                    s["lost"], s["duplicates"], s["reordered"], s["codec"]))
    return sorted(out, key=repr)


def _replay(protocol: str, packets: list[callgen.CapturedPacket], tmp_path: Path
            ) -> tuple[list[Batch], list[float]]:
    """The packets' frames sent to a listener in real time: the batches it hands on,
    and the times the sender sent each datagram."""
    listener = MirrorListener(protocol, "127.0.0.1", 0, ["127.0.0.1/32"],  # type: ignore[arg-type]
                              rcvbuf=8 << 20)
    t0 = packets[0].ts_ns
    blob = bytearray()
    for p in packets:
        d = WRAP[protocol](p.frame)
        blob += _RECORD.pack((p.ts_ns - t0) / S, len(d)) + d
    script, sent = tmp_path / "datagrams.bin", tmp_path / "sent.bin"
    script.write_bytes(bytes(blob))
    batches: list[Batch] = []
    try:
        sender = subprocess.Popen([sys.executable, "-c", SENDER, str(script),
                                   str(listener.port), str(sent)])
        deadline = time.monotonic() + (packets[-1].ts_ns - t0) / S + 20
        while listener.counters.datagrams < len(packets) and time.monotonic() < deadline:
            batches += listener.poll(0.05)
        assert sender.wait(10) == 0
        assert listener.counters.datagrams == len(packets)
        c = listener.counters
        assert (c.denied, c.invalid, c.not_ethernet) == (0, 0, 0)
    finally:
        listener.close()
    times = list(struct.unpack(f"!{len(packets)}d", sent.read_bytes()))
    return batches, times


@pytest.mark.parametrize("protocol", ["tzsp", "vxlan"])
def test_listener_records_equal_the_on_path_ones(protocol: str, tmp_path: Path) -> None:
    packets = _calls()
    on_path = _records([Batch.from_packets([p.frame for p in packets],
                                           [p.ts_ns / S for p in packets])])
    assert [(r["call_id"], r["final_status"]) for r in on_path] == [
        ("mirror-a@198.18.1.1", 200), ("mirror-b@198.18.1.2", 486)]
    lost = [d["stream"]["lost"] for d in on_path[0]["directions"]]
    assert len(lost) == 2 and all(n > 0 for n in lost)  # the impairment is there

    batches, sent = _replay(protocol, packets, tmp_path)
    got = _records(batches)
    # each frame at its kernel receive time: the send time plus the loopback's microseconds
    received = [float(t) for b in batches for t in b.ts]
    late = sorted(r - t for r, t in zip(received, sent, strict=True))
    assert late[0] > -0.0001 and late[len(late) // 2] < 0.0005 and late[-1] < 0.005
    on_wire = _records([Batch.from_packets([p.frame for p in packets], sent)])
    # a capture of the mirror stream itself at the same times (as `analyze` reads it):
    # the very records of the listener, observation points included
    port = {"tzsp": 37008, "vxlan": 4789}[protocol]
    assert _records([Batch.from_packets(
        [bytes(Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=40000, dport=port)
               / Raw(WRAP[protocol](p.frame))) for p in packets], received)]) == got

    assert [r["call_id"] for r in got] == [r["call_id"] for r in on_path]
    assert {p for r in got for p in points_of(r)} <= {POINT[protocol], None}
    assert {d["point"] for r in got for d in r["directions"]} <= {POINT[protocol]}
    for want, wire, have in zip(on_path, on_wire, got, strict=True):
        for key in ("final_status", "end_reason", "codec", "media_seen", "signalling_dscp"):
            assert have[key] == want[key], key
        assert _figures(have) == _figures(wire) == _figures(want)
        jitter = {(d["stream"]["src"], d["stream"]["ssrc"]): d["stream"]["jitter_ms"]
                  for d in wire["directions"]}
        for d in have["directions"]:
            s = d["stream"]
            assert abs(s["jitter_ms"] - jitter[(s["src"], s["ssrc"])]) <= JITTER_TOL_MS, \
                (s["jitter_ms"], jitter[(s["src"], s["ssrc"])])
