"""A call mirrored to the probe gives the records of a probe on the path.

Real captures (a SIPp call over SIP/TCP with G.711A and RFC 2833 events, and the
Wireshark sample call over SIP/UDP), impaired by removing every 20th RTP packet,
are wrapped frame by frame with scapy's own layers (VXLAN, TZSP, ERSPAN I/II/III,
GRETAP, NVGRE) as a switch or router would mirror them. `voipprobe analyze --json`
of a wrapped capture must give the same call records as of the unwrapped one, and
tshark's dissectors must see the same SIP and RTP inside the wrapped file (so the
wrapping is the protocol, not our reading of it).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hepbuild
import netlab
import pytest
from corpus_oracle import corpus_dir
from records import points_of, unplaced
from scapy.contrib.erspan import ERSPAN_I, ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.tzsp import TZSP, TZSPTagEnd, TZSPTagRawRSSIByte
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import GRE, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw
from scapy.utils import RawPcapReader
from tshark_table import parse_rtp_streams

from agent.config import Config
from agent.decode import TunnelPorts
from agent.decode.hep import encode_hep3
from agent.engine import Engine

CAPTURES = ["sipp_sip-tcp_pcma_dtmf.pcap", "wiki_SIP_CALL_RTP_G711.pcap"]
OUTER = {"src": "198.18.0.1", "dst": "198.18.0.2"}  # RFC 2544 addresses: the mirror session


def _gre(proto: int, **fields: int) -> Packet:
    return Ether() / IP(**OUTER) / GRE(proto=proto, **fields)


# Mirroring method -> outer headers of frame number n (scapy builds every byte).
WRAPPERS: dict[str, Callable[[int], Packet]] = {
    "vxlan": lambda n: Ether() / IP(**OUTER) / UDP(sport=49152 + n % 1000, dport=4789)
    / VXLAN(vni=5001),
    "tzsp": lambda n: Ether() / IP(**OUTER) / UDP(sport=40000, dport=37008)
    / TZSP(type=0, encapsulated_protocol=1) / TZSPTagRawRSSIByte(raw_rssi=216) / TZSPTagEnd(),
    "erspan_i": lambda n: _gre(0x88BE) / ERSPAN_I(),
    "erspan_ii": lambda n: _gre(0x88BE, seqnum_present=1, sequence_number=n)
    / ERSPAN_II(session_id=7, index=3),
    "erspan_iii": lambda n: _gre(0x22EB, seqnum_present=1, sequence_number=n)
    / ERSPAN_III(session_id=9, timestamp=n * 200, o=1) / ERSPAN_PlatformSpecific(platf_id=3),
    "gretap": lambda n: _gre(0x6558),
    "nvgre": lambda n: _gre(0x6558, key_present=1, key=(5001 << 8) | 1),
}


def _tools_or_skip() -> None:
    if shutil.which("tshark") is None:
        if os.environ.get("CI"):
            pytest.fail("tshark missing in CI (scripts/test.sh installs it)")
        pytest.skip("tshark not installed")
    if not (corpus_dir() / "pcaps").is_dir():
        pytest.skip("corpus not found")


def _is_rtp(frame: bytes) -> bool:
    # Ethernet/IPv4 (no options in these captures)/UDP, RTP version 2, PT not RTCP
    if len(frame) < 14 + 20 + 8 + 12 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return False
    rtp = frame[42:]
    return rtp[0] >> 6 == 2 and not 200 <= rtp[1] <= 207 and frame[42:45] != b"SIP"


def _impaired(src: Path, out: Path) -> list[tuple[bytes, int, int]]:
    """The capture without every 20th RTP packet (5 % loss on the path), written out."""
    frames: list[tuple[bytes, int, int]] = []
    rtp_seen = 0
    with RawPcapReader(str(src)) as reader:
        assert reader.linktype == 1
        for data, meta in reader:
            if _is_rtp(data):
                rtp_seen += 1
                if rtp_seen % 20 == 0:
                    continue
            frames.append((data, meta.sec, meta.usec))
    _write(out, frames)
    return frames


def _write(path: Path, frames: list[tuple[bytes, int, int]]) -> None:
    """Classic pcap, microseconds, Ethernet (the original captures' own format)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for data, sec, usec in frames:
        out.append(struct.pack("<IIII", sec, usec, len(data), len(data)) + data)
    path.write_bytes(b"".join(out))


def _wrapped(frames: list[tuple[bytes, int, int]], method: str, out: Path) -> None:
    wrap = WRAPPERS[method]
    _write(out, [(bytes(wrap(n) / Raw(data)), sec, usec)
                 for n, (data, sec, usec) in enumerate(frames)])


# The observation point each method gives (agent/capture/points.py), from OUTER's source.
POINTS = {"vxlan": "vxlan/{src}/vni5001", "tzsp": "tzsp/{src}", "erspan_i": "erspan/{src}",
          "erspan_ii": "erspan/{src}/s7", "erspan_iii": "erspan/{src}/s9",
          "gretap": "gretap/{src}", "nvgre": f"gretap/{{src}}/k{(5001 << 8) | 1}"}
POINTS = {k: v.format(src=OUTER["src"]) for k, v in POINTS.items()}


def _unplaced(r: dict[str, Any]) -> dict[str, Any]:
    if r["kind"] == "call":
        return unplaced(r)
    return {k: v for k, v in r.items() if k != "point"}


def _analyze(path: Path, *extra: str) -> list[dict[str, object]]:
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "--json", *extra,
                           str(path)], capture_output=True, text=True, timeout=120, check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return [r for r in rows if r.get("kind") in ("call", "stream")]


def _tshark(path: Path, *args: str) -> str:
    cmd = ["tshark", "-r", str(path), "-d", "udp.port==37008,tzsp", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def _tshark_view(path: Path) -> tuple[list[tuple[object, ...]], list[str]]:
    """tshark's RTP streams (addresses, SSRC, packets, lost, jitter) and SIP messages."""
    streams = sorted((s.src_endpoint, s.dst_endpoint, s.ssrc, s.packets, s.lost,
                      s.max_jitter_ms, s.mean_jitter_ms)
                     for s in parse_rtp_streams(_tshark(path, "-q", "-z", "rtp,streams")))
    sip = _tshark(path, "-Y", "sip", "-T", "fields", "-e", "sip.CSeq").split("\n")
    return streams, [line.split(",")[-1] for line in sip if line]


@pytest.fixture(scope="module", params=CAPTURES)
def impaired(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, list[tuple[bytes, int, int]], list[dict[str, object]]]:
    _tools_or_skip()
    name: str = request.param
    out = tmp_path_factory.mktemp("mirror") / f"impaired_{name}"
    frames = _impaired(corpus_dir() / "pcaps" / name, out)
    return out, frames, _analyze(out, "--streams")


@pytest.mark.parametrize("method", sorted(WRAPPERS))
def test_mirrored_call_records_equal_the_on_path_ones(
    method: str, impaired: tuple[Path, list[tuple[bytes, int, int]], list[dict[str, object]]],
    tmp_path: Path,
) -> None:
    on_path, frames, want = impaired
    answered = [r for r in want if r["kind"] == "call" and r["final_status"] == 200]
    assert len(answered) == 1
    directions: list[dict[str, dict[str, int]]] = answered[0]["directions"]  # type: ignore[assignment]
    assert len(directions) == 2
    assert all(d["stream"]["lost"] > 0 for d in directions)  # the impairment is visible
    mirrored = tmp_path / f"{method}.pcap"
    _wrapped(frames, method, mirrored)
    got = _analyze(mirrored, "--streams")
    # Same packets, same times: nothing differs but where they were seen, the mirror's
    # exporter (its address and session) instead of the capture's unnamed point.
    assert {r["point"] for r in got if r["kind"] == "stream"} == {POINTS[method]}
    assert {p for r in got if r["kind"] == "call" for p in points_of(r)} == {POINTS[method]}
    assert [_unplaced(r) for r in got] == [_unplaced(r) for r in want]
    # tshark, with its own dissectors, sees the same SIP and RTP inside the tunnel.
    streams, sip = _tshark_view(on_path)
    assert len(streams) >= 2 and "INVITE" in {cseq.split()[-1] for cseq in sip}
    assert _tshark_view(mirrored) == (streams, sip)


def test_tzsp_port_comes_from_the_config(tmp_path: Path) -> None:
    """The corpus TZSP capture streams to UDP 31337: plain UDP by default, its mirrored
    packets with ``capture.tzsp_ports`` naming that port."""
    _tools_or_skip()
    path = corpus_dir() / "pcaps" / "tzsp_http_nonvoip.pcapng"
    config = tmp_path / "voipprobe.yaml"
    config.write_text("capture:\n  tzsp_ports: [31337]\n")

    def summary(*extra: str) -> dict[str, int]:
        proc = subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "--json", *extra,
                               str(path)], capture_output=True, text=True, timeout=120,
                              check=True)
        last: dict[str, int] = json.loads(proc.stdout.splitlines()[-1])
        assert last["kind"] == "summary"
        return last

    default, configured = summary(), summary("--config", str(config))
    assert default["decode_frames"] == 5 and default["decode_tunnels_decapsulated"] == 0
    assert configured["decode_frames"] == 5 and configured["decode_tunnels_decapsulated"] == 5
    assert configured["route_sip_tcp_segments"] == 5 and configured["sip_messages"] == 0  # HTTP


def test_reload_applies_tunnel_ports() -> None:
    engine = Engine()
    assert engine.decoder.tunnel_ports == TunnelPorts.of(vxlan=[4789], tzsp=[37008])
    changed = Config.model_validate({"capture": {"tzsp_ports": [31337], "vxlan_ports": []}})
    assert engine.reconfigure(changed) == []  # applies at once, no restart
    assert engine.decoder.tunnel_ports == TunnelPorts.of(vxlan=[], tzsp=[31337])


# -- the Linux kernel as the mirroring router --------------------------------------------

#: Jitter may differ by the few microseconds the kernel takes to mirror each packet.
REPO = Path(__file__).resolve().parents[1]
JITTER_TOL_MS = 0.05


def _direction_figures(record: dict[str, Any]) -> list[tuple[object, ...]]:
    out = []
    for d in record["directions"]:
        s = d["stream"]
        out.append((d["direction"], s["src"], s["dst"], s["ssrc"], s["packets"], s["expected"],
                    s["lost"], s["duplicates"], s["reordered"], s["codec"]))
    return sorted(out, key=repr)


@dataclass
class MirrorLabRun:
    """What the mirroring lab produced (`mirror_lab`)."""

    run: netlab.CallRun  # run.capture: the capture on the path (R's interface toward B)
    mirrored: Path  # the probe's capture of the kernel's VXLAN mirror
    call_log: Path  # the live agent's on the kernel mirror
    agent_log: Path
    replayed: Path  # P's capture of every other method at once (HEP aside)
    replay_log: Path  # its agent's call log (ring: ERSPAN I/II/III, GRETAP, NVGRE;
    replay_agent_log: Path  # TZSP and VXLAN listeners)
    hep: Path  # P's capture of the HEP sent to it
    hep_log: Path  # the HEP listeners' agent's call log (HEP3 UDP/TCP, plain/zlib)
    hep_agent_log: Path


#: The methods replayed onto the probe's wire (kept whole by its kernel filter) and the
#: ones sent to its listener sockets (dropped by the kernel filter, taken by a listener).
RING_METHODS = ("erspan_i", "erspan_ii", "erspan_iii", "gretap", "nvgre")
LISTENER_METHODS = ("tzsp", "vxlan")
#: HEP3 capture agent id -> (transport, compressed), sent by one process at the pace
#: the packets were captured.
HEP_SENDS = {201: ("udp", False), 202: ("udp", True), 203: ("tcp", False),
             204: ("tcp", True)}

# Sends HEP packets to ADDR:9060, each at its offset from the start: UDP datagrams, and
# one TCP connection per capture id (the HEP3 stream). Reads (offset, id, transport,
# bytes) records framed by !dIBH.
HEP_SENDER = r"""
import socket, struct, sys, time
rec = struct.Struct("!dIBH")
data = open(sys.argv[1], "rb").read()
addr = (sys.argv[2], 9060)
out, pos = [], 0
while pos < len(data):
    at, cid, tcp, n = rec.unpack_from(data, pos)
    pos += rec.size
    out.append((at, cid, tcp, data[pos:pos + n]))
    pos += n
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
conns = {}
for _, cid, tcp, _ in out:
    if tcp and cid not in conns:
        conns[cid] = socket.create_connection(addr, timeout=10)
start = time.monotonic() + 0.2
for at, cid, tcp, d in out:
    left = start + at - time.monotonic()
    if left > 0:
        time.sleep(left)
    if tcp:
        conns[cid].sendall(d)
    else:
        udp.sendto(d, addr)
for c in conns.values():
    c.close()
"""


def _mac(ns: str, dev: str) -> str:
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", dev], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    return str(json.loads(out)[0]["address"])


def _replay_capture(frames: list[tuple[bytes, int, int]], out: Path, src_mac: str,
                    dst_mac: str) -> None:
    """Every frame of the on-path capture, at its time, once per ring and listener method,
    from R's address on its link to the probe to the probe's (P's MAC: delivered)."""
    link = Ether(src=src_mac, dst=dst_mac)
    outer = IP(src=netlab.R_ADDR_P, dst=netlab.P_ADDR)
    rows = []
    for n, (data, sec, usec) in enumerate(frames):
        for method in (*RING_METHODS, *LISTENER_METHODS):
            pkt = WRAPPERS[method](n)  # Ether / IP(OUTER) / ...: re-addressed here
            rows.append((bytes(link / outer / pkt[IP].payload / Raw(data)), sec, usec))
    _write(out, rows)


def _hep_sends(capture: Path, out: Path) -> None:
    """The on-path capture's packets as HEP3, once per `HEP_SENDS` entry, framed for
    `HEP_SENDER` at their offsets from the first packet."""
    recs = hepbuild.records_of(capture)
    t0 = recs[0].ts
    rows = []
    for rec in recs:
        for cid, (transport, zlib_) in HEP_SENDS.items():
            hep = encode_hep3(replace(rec, capture_id=cid), compress=zlib_)
            rows.append(struct.pack("!dIBH", rec.ts - t0, cid, transport == "tcp", len(hep))
                        + hep)
    out.write_bytes(b"".join(rows))


@pytest.fixture(scope="module")
def mirror_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MirrorLabRun]:
    """Three sipp calls with 5 % media loss in the gateway's forward chain; R's kernel
    mirrors its interface toward B over VXLAN to a probe P off the path, where a live
    agent and tcpdump take it. Then R replays the on-path capture to P in every other
    method at once, as routers would mirror it: ERSPAN I/II/III, GRETAP and NVGRE on
    P's wire to an agent's ring, TZSP and VXLAN to that agent's listeners, and HEP3
    (UDP, TCP, plain and zlib) to a second agent's HEP listeners, each at the pace the
    packets were captured."""
    netlab.require_lab()
    if shutil.which("tcpreplay") is None:
        if os.environ.get("CI"):
            pytest.fail("tcpreplay missing in CI (scripts/test.sh installs it)")
        pytest.skip("tcpreplay not installed")
    from test_e2e_agent import _http, _log_tail, _wait_for

    tmp = tmp_path_factory.mktemp("mirrorlab")
    rules = (f"{netlab.MEDIA} numgen random mod 100 < 5 drop",)
    logs = {k: tmp / f"{k}.jsonl" for k in ("calls", "replay", "hep")}
    with netlab.Lab("v", tmp, gateway_rules=rules) as lab:
        ns_p = lab.mirror_over_vxlan("rb")

        def agent(name: str, capture: dict[str, Any], iface: str, port: int
                  ) -> tuple[subprocess.Popen[bytes], Path]:
            state = tmp / f"state-{name}"
            state.mkdir()
            config = tmp / f"{name}.yaml"
            config.write_text(json.dumps({
                "state_dir": str(state), "privacy": "clear", "capture": capture,
                "calls": {"media_idle_timeout_s": 3.0}}), encoding="utf-8")
            log = tmp / f"agent-{name}.log"
            proc = lab._spawn(ns_p, [sys.executable, "-m", "agent.cli", "run", "--config",
                                     str(config), "-i", iface, "--listen",
                                     f"127.0.0.1:{port}", "--call-log", str(logs[name])],
                              log, cwd=REPO)

            def healthy() -> bool:
                assert proc.poll() is None, _log_tail(log)
                return _http(ns_p, f"http://127.0.0.1:{port}/health")[0] == 200

            _wait_for(f"the {name} agent's /health", healthy, 20.0)
            return proc, log

        mirrored = tmp / "mirrored.pcap"
        probe = lab.start_capture(mirrored, "p0", ns=ns_p)
        # the live agent off the path too: the kernel filter must keep VXLAN whole
        first, agent_log = agent("calls", {}, "p0", 9957)
        run = lab.run_calls(3)
        time.sleep(0.5)
        netlab.stop_process(probe)
        netlab.stop_process(first)  # SIGTERM: every call flushed to the call log

        # -- the same calls replayed in every other mirroring method -----------------
        for ns, dev in ((lab.ns_r, "rp"), (ns_p, "p0")):  # room for the outer headers
            netlab._run(["ip", "-n", ns, "link", "set", dev, "mtu", "9000"])
        replay = tmp / "replay.pcap"
        with RawPcapReader(str(run.capture)) as reader:
            frames = [(d, m.sec, m.usec) for d, m in reader]
        _replay_capture(frames, replay, _mac(lab.ns_r, "rp"), _mac(ns_p, "p0"))
        hep_sends = tmp / "hep.sends"
        _hep_sends(run.capture, hep_sends)
        senders = [f"{netlab.R_ADDR_P}/32"]
        ring, replay_agent_log = agent("replay", {
            "hep_ports": [],  # HEP is the other agent's (its times are the calls' own)
            "tzsp_listeners": [{"address": netlab.P_ADDR, "allowed_senders": senders}],
            "vxlan_listeners": [{"address": netlab.P_ADDR, "allowed_senders": senders}],
        }, "p0", 9958)
        hep, hep_agent_log = agent("hep", {"hep_listeners": [
            {"address": netlab.P_ADDR, "transport": t, "allowed_senders": senders}
            for t in ("udp", "tcp")]}, "lo", 9959)
        replayed, hep_capture = tmp / "replayed.pcap", tmp / "hep.pcap"
        captures = [lab.start_capture(replayed, "p0", ns=ns_p, bpf=["not", "port", "9060"]),
                    lab.start_capture(hep_capture, "p0", ns=ns_p, bpf=["port", "9060"])]
        sender = lab._spawn(lab.ns_r, [sys.executable, "-c", HEP_SENDER, str(hep_sends),
                                       netlab.P_ADDR], tmp / "hep-sender.log")
        sent = subprocess.run(["ip", "netns", "exec", lab.ns_r, "tcpreplay", "-q", "-i",
                                   "rp", str(replay)], capture_output=True, text=True,
                                  timeout=run.seconds + 60, check=False)
        assert sender.wait(timeout=60) == 0, (tmp / "hep-sender.log").read_text()
        time.sleep(1.0)
        for proc in captures:
            netlab.stop_process(proc)
        netlab.stop_process(ring)
        netlab.stop_process(hep)
        assert sent.returncode == 0, sent.stdout + sent.stderr
    yield MirrorLabRun(run, mirrored, logs["calls"], agent_log, replayed, logs["replay"],
                       replay_agent_log, hep_capture, logs["hep"], hep_agent_log)


def _live_calls(path: Path) -> list[dict[str, Any]]:
    return _calls([json.loads(line) for line in path.read_text().splitlines()
                   if line.strip()])


def _calls(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for r in rows if r.get("kind") == "call" and r.get("call_id")),
                  key=lambda r: r["invite_ts"])


@functools.cache
def _on_path_rows(capture: Path) -> list[dict[str, object]]:
    """`analyze --json --streams` of the on-path capture (once per module)."""
    return _analyze(capture, "--streams")


def _on_path(lab: MirrorLabRun) -> list[dict[str, Any]]:
    calls = [r for r in _on_path_rows(lab.run.capture)
             if r["kind"] == "call" and r["call_id"]]
    assert lab.run.uac_returncode == 0, lab.run.uac_log.read_text(errors="replace")[-2000:]
    assert len(calls) == 3
    assert sum(d["stream"]["lost"] for r in calls for d in r["directions"]) > 0  # impaired
    return calls


def _same_calls(want: list[dict[str, Any]], have: list[dict[str, Any]], why: str,
                jitter_ref: list[dict[str, Any]] | None = None) -> None:
    """Statuses, per-direction packets and loss exact as ``want``'s, jitter within
    `JITTER_TOL_MS` of ``jitter_ref``'s (default ``want``'s)."""
    assert [r["call_id"] for r in have] == [r["call_id"] for r in want], why
    jitter = _jitters(jitter_ref or want)
    for w, h in zip(want, have, strict=True):
        for key in ("final_status", "end_reason", "codec", "media_seen", "signalling_dscp"):
            assert h[key] == w[key], key
        assert _direction_figures(h) == _direction_figures(w)
        for d in h["directions"]:
            s = d["stream"]
            ref = jitter[(h["call_id"], s["src"], s["ssrc"], None)]
            assert abs(s["jitter_ms"] - ref) <= JITTER_TOL_MS, (why, s["jitter_ms"], ref)


def _jitters(calls: list[dict[str, Any]]) -> dict[tuple[str, str, int, str | None], float]:
    """(call, stream source, SSRC, point or None for the judged one) -> jitter (ms)."""
    out = {}
    for r in calls:
        for d in r["directions"]:
            s = d["stream"]
            out[(r["call_id"], s["src"], s["ssrc"], None)] = s["jitter_ms"]
            for p in d["points"]:
                out[(r["call_id"], s["src"], s["ssrc"], p["point"])] = p["jitter_ms"]
    return out


def test_kernel_vxlan_mirror_gives_the_on_path_records(mirror_lab: MirrorLabRun) -> None:
    """`analyze` of the probe's capture (VXLAN datagrams only) and the live agent beside
    it give the records of a capture on the path."""
    from test_e2e_agent import _log_tail

    on_path = _on_path(mirror_lab)
    got = [r for r in _analyze(mirror_lab.mirrored) if r["kind"] == "call" and r["call_id"]]
    summary = json.loads(subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", str(mirror_lab.mirrored)],
        capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()[-1])
    # every UDP/TCP row came out of a tunnel (the rest is mirrored ARP, ICMPv6, ...)
    assert summary["decode_tunnels_decapsulated"] >= summary["decode_frames"] > 0
    _same_calls(on_path, got, "analyze")
    _same_calls(on_path, _live_calls(mirror_lab.call_log), _log_tail(mirror_lab.agent_log))


def _wrapped_capture(capture: Path, method: str, out: Path) -> Path:
    if method.startswith("hep3"):
        return hepbuild.hep_capture(capture, out, method.removeprefix("hep3_"))
    with RawPcapReader(str(capture)) as reader:
        frames = [(d, m.sec, m.usec) for d, m in reader]
    _wrapped(frames, method, out)
    return out


@pytest.mark.parametrize("method", [*sorted(WRAPPERS), "hep3_v3", "hep3_zlib", "hep3_tcp",
                                    "hep3_tcp_zlib"])
def test_sipp_calls_in_every_method_analyze_like_on_path(
    method: str, mirror_lab: MirrorLabRun, tmp_path: Path
) -> None:
    """The lab's on-path capture wrapped in each method (HEP: over UDP or as a TCP stream
    cut across packets) as a router or PBX would send it: `analyze` gives the on-path
    records, all but where they were seen."""
    want = _on_path_rows(mirror_lab.run.capture)
    got = _analyze(_wrapped_capture(mirror_lab.run.capture, method, tmp_path / "m.pcap"),
                   "--streams")
    if method.startswith("hep3"):
        calls = [hepbuild.comparable(r, True) for r in got if r["kind"] == "call"]
        diffs = hepbuild.close(calls, [hepbuild.comparable(r, True) for r in want
                                       if r["kind"] == "call"])
        assert len(calls) == 3 and not diffs, diffs
        return
    assert {r["point"] for r in got if r["kind"] == "stream"} == {POINTS[method]}
    assert [_unplaced(r) for r in got] == [_unplaced(r) for r in want]


def _points_like_on_path(want: list[dict[str, Any]], have: list[dict[str, Any]],
                         points: set[str], why: str,
                         jitter_ref: list[dict[str, Any]] | None = None) -> None:
    """Each direction was seen at every one of ``points`` with the on-path (``want``)
    packets, loss and duplicates, and nothing was lost between them; jitter at each point
    within `JITTER_TOL_MS` of ``jitter_ref``'s at that point (default: ``want``'s)."""
    _same_calls(want, have, why, jitter_ref)
    jitter = _jitters(jitter_ref or want)
    for w, h in zip(want, have, strict=True):
        by_src = {(d["stream"]["src"], d["stream"]["ssrc"]): d["stream"]
                  for d in w["directions"]}
        for d in h["directions"]:
            s = by_src[(d["stream"]["src"], d["stream"]["ssrc"])]
            assert {p["point"] for p in d["points"]} == points, why
            for p in d["points"]:
                assert (p["packets"], p["lost"], p["duplicates"]) == \
                    (s["packets"], s["lost"], s["duplicates"]), p["point"]
                ref = jitter[(h["call_id"], s["src"], s["ssrc"],
                              p["point"] if jitter_ref else None)]
                assert abs(p["jitter_ms"] - ref) <= JITTER_TOL_MS, (why, p, ref)
            assert {x["lost"] for x in d["loss_between_points"]} == {0}
            assert len(d["loss_between_points"]) == len(points) - 1


def test_sipp_calls_replayed_in_every_method_live_like_on_path(
    mirror_lab: MirrorLabRun
) -> None:
    """The live agents: the ring (ERSPAN I/II/III, GRETAP, NVGRE kept whole by the kernel
    filter) with the TZSP and VXLAN listeners in one, HEP3 over UDP and TCP, plain and
    compressed, in the other. Every method is an observation point of each direction,
    each with the on-path packets and loss; SIP seen at every point is one message.

    Jitter: HEP carries the capture times, so HEP jitter is the on-path jitter. The
    replayed mirrors are measured at their arrival at the probe, and tcpreplay on a busy
    machine is now and then a millisecond late, which any network between a router and
    its probe may be too: their jitter is held to `analyze` of the probe's own capture
    of them (the same arrival times), and that capture's packets and loss to on-path."""
    from test_e2e_agent import _log_tail

    on_path = _on_path(mirror_lab)
    src = netlab.R_ADDR_P
    mirrors = {f"erspan/{src}", f"erspan/{src}/s7", f"erspan/{src}/s9", f"gretap/{src}",
               f"gretap/{src}/k{(5001 << 8) | 1}", f"tzsp/{src}", f"vxlan/{src}/vni5001"}
    heps = {f"hep/{cid}" for cid in HEP_SENDS}
    arrived = _calls(_analyze(mirror_lab.replayed))
    _points_like_on_path(on_path, arrived, mirrors, "analyze", jitter_ref=arrived)
    _points_like_on_path(on_path, _live_calls(mirror_lab.replay_log), mirrors,
                         _log_tail(mirror_lab.replay_agent_log), jitter_ref=arrived)
    _points_like_on_path(on_path, _live_calls(mirror_lab.hep_log), heps,
                         _log_tail(mirror_lab.hep_agent_log))
    _points_like_on_path(on_path, _calls(_analyze(mirror_lab.hep)), heps, "analyze HEP")
