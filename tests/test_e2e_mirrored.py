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

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def test_kernel_vxlan_mirror_gives_the_on_path_records(tmp_path: Path) -> None:
    """Three sipp calls with 5 % media loss in the gateway's forward chain; R's kernel
    mirrors its interface toward B over VXLAN to a probe off the path. `analyze` of the
    probe's capture (VXLAN datagrams only) gives the records of a capture on the path."""
    netlab.require_lab()
    rules = (f"{netlab.MEDIA} numgen random mod 100 < 5 drop",)
    from test_e2e_agent import _http, _log_tail, _wait_for

    config = tmp_path / "agent.yaml"
    state = tmp_path / "state"
    state.mkdir()
    config.write_text(f"state_dir: {state}\nprivacy: clear\n"
                      "calls:\n  media_idle_timeout_s: 3.0\n", encoding="utf-8")
    call_log, agent_log = tmp_path / "calls.jsonl", tmp_path / "agent.log"
    with netlab.Lab("v", tmp_path, gateway_rules=rules) as lab:
        ns_p = lab.mirror_over_vxlan("rb")
        mirrored = tmp_path / "mirrored.pcap"
        probe = lab.start_capture(mirrored, "p0", ns=ns_p)
        # the live agent off the path too: the kernel filter must keep VXLAN whole
        agent = lab._spawn(ns_p, [sys.executable, "-m", "agent.cli", "run", "--config",
                                  str(config), "-i", "p0", "--listen", "127.0.0.1:9957",
                                  "--call-log", str(call_log)], agent_log, cwd=REPO)

        def healthy() -> bool:
            assert agent.poll() is None, _log_tail(agent_log)
            return _http(ns_p, "http://127.0.0.1:9957/health")[0] == 200

        _wait_for("the agent's /health", healthy, 20.0)
        run = lab.run_calls(3)
        time.sleep(0.5)
        netlab.stop_process(probe)
        netlab.stop_process(agent)  # SIGTERM: every call flushed to the call log
    assert run.uac_returncode == 0, run.uac_log.read_text(errors="replace")[-2000:]
    on_path = [r for r in _analyze(run.capture) if r["kind"] == "call" and r["call_id"]]
    got = [r for r in _analyze(mirrored) if r["kind"] == "call" and r["call_id"]]
    summary = json.loads(subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", str(mirrored)],
        capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()[-1])
    # every UDP/TCP row came out of a tunnel (the rest is mirrored ARP, ICMPv6, ...)
    assert summary["decode_tunnels_decapsulated"] >= summary["decode_frames"] > 0
    assert len(on_path) == 3 and [r["call_id"] for r in got] == [r["call_id"] for r in on_path]
    lost = 0
    for want, have in zip(on_path, got, strict=True):
        for key in ("final_status", "end_reason", "codec", "media_seen", "signalling_dscp"):
            assert have[key] == want[key], key
        assert _direction_figures(have) == _direction_figures(want)
        jitter = {(d["stream"]["src"], d["stream"]["ssrc"]): d["stream"]["jitter_ms"]
                  for d in want["directions"]}
        for d in have["directions"]:
            s = d["stream"]
            assert abs(s["jitter_ms"] - jitter[(s["src"], s["ssrc"])]) <= JITTER_TOL_MS
            lost += s["lost"]
    assert lost > 0  # the impairment is there to be measured
    live = [json.loads(line) for line in call_log.read_text().splitlines() if line.strip()]
    live = sorted((r for r in live if r.get("kind") == "call" and r.get("call_id")),
                  key=lambda r: r["invite_ts"])
    assert [r["call_id"] for r in live] == [r["call_id"] for r in on_path], _log_tail(agent_log)
    for want, have in zip(on_path, live, strict=True):
        assert have["final_status"] == want["final_status"]
        assert _direction_figures(have) == _direction_figures(want)
