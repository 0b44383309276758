"""Flood test of the live agent (issue 4): random UDP and garbage SIP on a veth.

A veth pair with unique names (198.18.201.1/30 <-> 198.18.201.2/30, RFC 2544 space,
IPv6 off) in the root namespace; ``voipprobe run`` captures on end B while this test
sends pre-built Ethernet/IPv4/UDP frames on end A from an AF_PACKET socket as fast as
Python can, for a bounded time (FLOOD_S) and count (MAX_FRAMES): three quarters random
bytes to random UDP ports, one quarter garbage "SIP" to port 5060 (a valid-looking
request or status line, then random header lines, random bytes, bogus Content-Length).
Every frame is addressed to 198.18.201.2 (end B's MAC), so nothing leaves
198.18.0.0/15.

It proves: the agent survives the flood (still running, /health answers 200), its
resident memory stays under RSS_BOUND_MB, the flood shows in /metrics (capture packets
on the interface, SIP parse errors), and SIGTERM afterwards still exits 0 within 5 s.

Needs root (veth, AF_PACKET). Skipped with the reason otherwise, except under CI
(``CI`` set), where a skip would hide the test and it fails instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ADDR_A, ADDR_B = "198.18.201.1", "198.18.201.2"
FLOOD_S = 8.0  # flood duration
MAX_FRAMES = 5_000_000  # and count bound (Python sends well under 1 M/s)
# Peak VmRSS measured on a 2-vCPU AMD EPYC: ~120 MB idle (the interpreter with numpy,
# scapy, prometheus-client); 228-241 MB in three runs flooded with 1.4-1.8 M frames in
# 8 s (the 64 MiB ring is then fully touched, plus the batches copied out of it). The
# bound is that plus another ring's worth and slack for a faster sender in CI; a per-
# frame leak of ~100 bytes (a table or buffer growing with the flood) would exceed it.
RSS_BOUND_MB = 400
METRIC_RE = re.compile(r'^(voipprobe_[a-z_]+)\{([^}]*)\}\s+([0-9.eE+-]+)$')

SIP_METHODS = (b"INVITE", b"BYE", b"ACK", b"CANCEL", b"OPTIONS", b"REGISTER")
SIP_HEADERS = (b"Via", b"From", b"To", b"Call-ID", b"CSeq", b"Contact", b"Content-Length",
               b"Content-Type", b"Max-Forwards", b"X-\xff\xfe")


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (veth pair, AF_PACKET capture)"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


@pytest.fixture(autouse=True)
def _require_root() -> None:
    reason = _unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"flood test cannot run in CI: {reason}")
        pytest.skip(reason)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    tag = f"{os.getpid() % 100000}"
    a, b = f"vf{tag}a", f"vf{tag}b"
    _ip("link", "add", a, "type", "veth", "peer", "name", b)
    try:
        for name, addr in ((a, ADDR_A), (b, ADDR_B)):
            with contextlib.suppress(OSError):
                Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")
            _ip("addr", "add", f"{addr}/30", "dev", name)
            _ip("link", "set", name, "up")
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True, timeout=20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return int(r.status), r.read().decode()


def _metrics(port: int) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for line in _get(port, "/metrics")[1].splitlines():
        m = METRIC_RE.match(line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def _sum(samples: dict[tuple[str, str], float], name: str, label: str = "") -> float:
    return sum(v for (n, lab), v in samples.items() if n == name and label in lab)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture
def agent(veth: tuple[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = _free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"state_dir: {tmp_path / 'state'}\n")
    err = (tmp_path / "agent.stderr").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(cfg), "-i", veth[1],
         "--listen", f"127.0.0.1:{port}", "--call-log", "/dev/null"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "agent.stderr").read_text()[-2000:]
            with contextlib.suppress(OSError):
                if _get(port, "/health")[0] == 200:
                    break
            assert time.monotonic() < deadline, "agent did not answer /health within 20 s"
            time.sleep(0.2)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        err.close()


def _csum(data: bytes) -> int:
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _frame(dst_mac: bytes, src_mac: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload  # no UDP csum
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), random.getrandbits(16), 0, 64,
                     17, 0, socket.inet_aton(ADDR_A), socket.inet_aton(ADDR_B))
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + udp


def _garbage_sip(rng: random.Random) -> bytes:
    if rng.random() < 0.7:
        first = rng.choice(SIP_METHODS) + b" sip:%d@" % rng.getrandbits(32) + \
            ADDR_B.encode() + b" SIP/2.0\r\n"
    else:
        first = b"SIP/2.0 %d %s\r\n" % (rng.randrange(100, 700), rng.randbytes(6).hex().encode())
    lines = [first]
    for _ in range(rng.randrange(0, 12)):
        name = rng.choice(SIP_HEADERS)
        if name == b"Content-Length":
            value = str(rng.choice((-1, 0, 99999, rng.getrandbits(40)))).encode()
        else:
            value = rng.randbytes(rng.randrange(0, 60))
        lines.append(name + b": " + value + b"\r\n")
    if rng.random() < 0.5:
        lines.append(b"\r\n")
    lines.append(rng.randbytes(rng.randrange(0, 400)))
    return b"".join(lines)[:1400]


def _frames(dst_mac: bytes, src_mac: bytes, n: int) -> list[bytes]:
    rng = random.Random(4)
    out = []
    for i in range(n):
        if i % 4 == 0:
            out.append(_frame(dst_mac, src_mac, rng.randrange(1024, 65536), 5060,
                              _garbage_sip(rng)))
        else:
            out.append(_frame(dst_mac, src_mac, rng.randrange(1, 65536), rng.randrange(1, 65536),
                              rng.randbytes(rng.randrange(0, 1400))))
    return out


def _mac(iface: str) -> bytes:
    text = Path(f"/sys/class/net/{iface}/address").read_text()
    return bytes.fromhex(text.strip().replace(":", ""))


def flood(iface: str, frames: list[bytes]) -> int:
    """Send ``frames`` round-robin on ``iface`` for FLOOD_S s (at most MAX_FRAMES)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    sent = 0
    end = time.monotonic() + FLOOD_S
    try:
        while sent < MAX_FRAMES and time.monotonic() < end:
            for i in range(0, len(frames), 256):  # the time bound is checked every 256 frames
                for frame in frames[i:i + 256]:
                    with contextlib.suppress(OSError):  # ENOBUFS when the qdisc is full
                        s.send(frame)
                        sent += 1
                if time.monotonic() >= end:
                    break
    finally:
        s.close()
    return sent


def test_flood_does_not_crash_the_agent_and_shows_in_metrics(
    veth: tuple[str, str], agent: tuple[subprocess.Popen[bytes], int]
) -> None:
    end_a, end_b = veth
    proc, port = agent
    frames = _frames(_mac(end_b), _mac(end_a), 4096)
    before = _metrics(port)

    peak_rss = _rss_mb(proc.pid)
    sent = flood(end_a, frames)
    peak_rss = max(peak_rss, _rss_mb(proc.pid))
    assert sent > 10_000

    # Counters are exported about once a second: wait (bounded) until they show it.
    deadline = time.monotonic() + 10
    while True:
        time.sleep(1.0)
        assert proc.poll() is None, f"agent died under the flood (exit {proc.returncode})"
        peak_rss = max(peak_rss, _rss_mb(proc.pid))
        after = _metrics(port)
        captured = _sum(after, "voipprobe_capture_packets_total", f'interface="{end_b}"') - \
            _sum(before, "voipprobe_capture_packets_total", f'interface="{end_b}"')
        sip_errors = _sum(after, "voipprobe_parse_errors_total", 'protocol="sip"') - \
            _sum(before, "voipprobe_parse_errors_total", 'protocol="sip"')
        if (captured > 0 and sip_errors > 0) or time.monotonic() > deadline:
            break

    drops = _sum(after, "voipprobe_capture_kernel_drops_total", f'interface="{end_b}"')
    print(f"flood: sent {sent} frames in {FLOOD_S} s, captured {captured:.0f}, kernel drops "
          f"{drops:.0f}, SIP parse errors {sip_errors:.0f}, peak VmRSS {peak_rss:.0f} MB")
    status, body = _get(port, "/health")
    assert status == 200, body
    assert json.loads(body).get("status") == "ok", body
    assert peak_rss < RSS_BOUND_MB, f"VmRSS {peak_rss:.0f} MB >= {RSS_BOUND_MB} MB"
    assert captured > 0, f"capture packets did not move ({sent} frames sent)"
    assert sip_errors > 0, f"SIP parse errors did not move (captured {captured}, drops {drops})"
    # The kernel counts dropped packets in the captured ones: never more than were sent.
    assert captured <= sent + 1000  # + stray frames (ARP) on the link

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
