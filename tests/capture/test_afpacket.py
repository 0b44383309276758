"""Live capture through the TPACKET_V3 ring on a veth pair (root only).

The capture end ``vpc<pid>a`` (198.18.200.1/30) stays in this process's namespace;
its peer ``vpc<pid>b`` (198.18.200.2/30) lives in a namespace of its own, where a
helper process sends a bounded burst, so every packet really crosses the veth.
IPv6 is disabled on both ends (no router solicitations in the counts).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from agent.capture.afpacket import AfPacketSource, CaptureStats, interface_linktype
from agent.capture.batch import Batch, LinkType
from agent.capture.fallback import batch_from_scapy, open_live_source

IS_ROOT = os.geteuid() == 0


@pytest.fixture
def root() -> None:
    """Live tests need root and iproute2; in CI they must run, so there they fail."""
    why = None
    if not IS_ROOT:
        why = "live capture needs root (CAP_NET_RAW, CAP_NET_ADMIN)"
    elif shutil.which("ip") is None:
        why = "iproute2 (ip) is not installed"
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)

CAP_ADDR = "198.18.200.1"
SEND_ADDR = "198.18.200.2"
ETH, IP4, UDP = 14, 20, 8
RTP_PORT = 40000
SIP_PORT = 5060
N_RTP, RTP_PAYLOAD = 2000, 200
N_SIP, SIP_PAYLOAD = 20, 800


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=20)


@dataclass
class Veth:
    cap: str  # in our namespace
    peer: str  # in `ns`
    ns: str


@pytest.fixture
def veth(root: None) -> Iterator[Veth]:
    tag = f"{os.getpid() % 10000}{int(time.time() * 1000) % 100:02d}"
    v = Veth(cap=f"vpc{tag}a", peer=f"vpc{tag}b", ns=f"vpc-test-{tag}")
    try:
        sh("ip", "netns", "add", v.ns)
        sh("ip", "link", "add", v.cap, "type", "veth", "peer", "name", v.peer, "netns", v.ns)
        for args in (
            ("sysctl", "-qw", f"net.ipv6.conf.{v.cap}.disable_ipv6=1"),
            ("ip", "addr", "add", f"{CAP_ADDR}/30", "dev", v.cap),
            ("ip", "link", "set", v.cap, "up"),
        ):
            sh(*args)
        for args in (
            ("sysctl", "-qw", f"net.ipv6.conf.{v.peer}.disable_ipv6=1"),
            ("ip", "addr", "add", f"{SEND_ADDR}/30", "dev", v.peer),
            ("ip", "link", "set", v.peer, "up"),
            ("ip", "link", "set", "lo", "up"),
        ):
            sh("ip", "netns", "exec", v.ns, *args)
        yield v
    finally:
        sh("ip", "link", "del", v.cap, check=False)
        sh("ip", "netns", "del", v.ns, check=False)


SENDER = textwrap.dedent(
    """
    import socket, sys, time
    dev, src, dst, n_rtp, rtp_len, n_sip, sip_len = sys.argv[1:]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
    s.bind((src, 40002))
    hdr = bytes([0x80, 0x08])
    for i in range(int(n_rtp)):
        pkt = hdr + (i & 0xFFFF).to_bytes(2, "big") + bytes(8)
        s.sendto(pkt + b"\\xd5" * (int(rtp_len) - len(pkt)), (dst, 40000))
        if i % 100 == 99:
            time.sleep(0.002)   # stay below the veth backlog (netdev_max_backlog)
    sip = b"OPTIONS sip:probe@" + dst.encode() + b" SIP/2.0\\r\\n"
    sip += b"X-Pad: " + b"x" * (int(sip_len) - len(sip) - 11) + b"\\r\\n\\r\\n"
    assert len(sip) == int(sip_len), len(sip)
    for i in range(int(n_sip)):
        s.sendto(sip, (dst, 5060))
    """
)


def send_burst(v: Veth, n_rtp: int = N_RTP, n_sip: int = N_SIP) -> None:
    subprocess.run(
        ["ip", "netns", "exec", v.ns, sys.executable, "-c", SENDER, v.peer, SEND_ADDR, CAP_ADDR,
         str(n_rtp), str(RTP_PAYLOAD), str(n_sip), str(SIP_PAYLOAD)],
        check=True, timeout=30,
    )


def udp_dport(b: Batch, i: int) -> int:
    start = int(b.offset[i])
    if int(b.caplen[i]) < ETH + IP4 + UDP or b.data[start + 12] != 0x08 or b.data[start + 13]:
        return -1
    if b.data[start + ETH + 9] != 17:
        return -1
    return int(b.data[start + ETH + IP4 + 2]) << 8 | int(b.data[start + ETH + IP4 + 3])


def collect(src: AfPacketSource, want: int, deadline_s: float = 5.0) -> list[Batch]:
    batches: list[Batch] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        batches += src.poll(0.2)
        got = sum(sum(udp_dport(b, i) in (RTP_PORT, SIP_PORT) for i in range(len(b)))
                  for b in batches)
        if got >= want:
            break
    return batches


def test_capture_burst_truncates_media_keeps_sip(veth: Veth) -> None:
    assert interface_linktype(veth.cap) is LinkType.ETHERNET
    t0 = time.time()
    with AfPacketSource([veth.cap], block_size=1 << 16, block_count=16) as src:
        assert src.filenos() and src.fileno() >= 0
        send_burst(veth)
        batches = collect(src, N_RTP + N_SIP)
        t1 = time.time()
        stats = src.stats()

    rtp_caplen: list[int] = []
    rtp_wirelen: list[int] = []
    sip_frames: list[tuple[int, int, bytes]] = []
    ts: list[float] = []
    for b in batches:
        assert b.data.dtype == np.uint8 and len(b.ts) == len(b)
        assert (b.linktype == LinkType.ETHERNET).all()
        assert (np.diff(b.ts) >= 0).all(), "timestamps within a batch are monotonic"
        for i in range(len(b)):
            port = udp_dport(b, i)
            if port == RTP_PORT:
                rtp_caplen.append(int(b.caplen[i]))
                rtp_wirelen.append(int(b.wirelen[i]))
                ts.append(float(b.ts[i]))
            elif port == SIP_PORT:
                sip_frames.append((int(b.caplen[i]), int(b.wirelen[i]), b.packet(i)))
                ts.append(float(b.ts[i]))

    assert len(rtp_caplen) == N_RTP
    assert len(sip_frames) == N_SIP
    # caplen counts from the first byte of the Ethernet header: the kernel filter
    # keeps media up to the end of its RTP header (12 bytes, no CSRC): no audio byte.
    assert set(rtp_caplen) == {ETH + IP4 + UDP + 12}
    assert set(rtp_wirelen) == {ETH + IP4 + UDP + RTP_PAYLOAD}
    for caplen, wirelen, frame in sip_frames:
        assert caplen == wirelen == ETH + IP4 + UDP + SIP_PAYLOAD
        assert frame[ETH + IP4 + UDP :].startswith(b"OPTIONS sip:probe@")
        assert frame.endswith(b"\r\n\r\n")
    assert (np.diff(ts) >= 0).all()
    assert t0 - 0.01 <= ts[0] and ts[-1] <= t1 + 0.01
    st = stats[veth.cap]
    assert isinstance(st, CaptureStats)
    assert st.packets >= N_RTP + N_SIP
    assert st.drops == 0
    assert st.up and st.downs == 0


def test_rtp_sequence_survives_in_order(veth: Veth) -> None:
    """The 74 bytes of RTP kept carry the header: sequence numbers arrive 0..n-1."""
    with AfPacketSource([veth.cap]) as src:
        send_burst(veth, n_rtp=300, n_sip=0)
        batches = collect(src, 300)
    seqs = [int.from_bytes(b.packet(i)[ETH + IP4 + UDP + 2 : ETH + IP4 + UDP + 4], "big")
            for b in batches for i in range(len(b)) if udp_dport(b, i) == RTP_PORT]
    assert seqs == list(range(300))


def test_interface_deleted_mid_capture_keeps_running(veth: Veth) -> None:
    with AfPacketSource([veth.cap, "lo"]) as src:
        send_burst(veth, n_rtp=50, n_sip=1)
        assert sum(len(b) for b in collect(src, 51)) >= 51
        sh("ip", "link", "del", veth.cap)
        t = time.monotonic()
        for k in range(5):  # the error shows up on the next poll; must not raise
            src.poll(0.05, now=t + 0.1 * k)
        st = src.stats()
        assert st[veth.cap].up is False and st[veth.cap].downs == 1
        assert st[veth.cap].packets >= 51  # counted before it went away
        assert st["lo"].up is True
        assert veth.cap not in [n for n in src.interfaces if st[n].up]
        # it does not exist: looked for again every second, without raising
        src.poll(0.0, now=t + 1.5)
        src.poll(0.0, now=t + 4.0)
        assert src.stats()[veth.cap].up is False
        # it comes back (same name, new ifindex): reopened at the next retry
        sh("ip", "link", "add", veth.cap, "type", "veth", "peer", "name", veth.peer,
           "netns", veth.ns)
        sh("sysctl", "-qw", f"net.ipv6.conf.{veth.cap}.disable_ipv6=1")
        sh("ip", "addr", "add", f"{CAP_ADDR}/30", "dev", veth.cap)
        sh("ip", "link", "set", veth.cap, "up")
        sh("ip", "netns", "exec", veth.ns, "ip", "addr", "add", f"{SEND_ADDR}/30", "dev",
           veth.peer)
        sh("ip", "netns", "exec", veth.ns, "ip", "link", "set", veth.peer, "up")
        src.poll(0.0, now=t + 120.0)
        st2 = src.stats()[veth.cap]
        assert st2.up and st2.reopens == 1
        send_burst(veth, n_rtp=20, n_sip=0)
        got = collect(src, 20)
        assert sum(udp_dport(b, i) == RTP_PORT for b in got for i in range(len(b))) == 20


def test_interface_down_then_up(veth: Veth) -> None:
    with AfPacketSource([veth.cap]) as src:
        sh("ip", "link", "set", veth.cap, "down")
        t = time.monotonic()
        src.poll(0.2, now=t)
        assert src.stats()[veth.cap].up is False
        sh("ip", "link", "set", veth.cap, "up")
        src.poll(0.0, now=t + 1.01)
        assert src.stats()[veth.cap].up is True


def test_missing_interface_at_start_is_retried(root: None) -> None:
    with AfPacketSource(["vpcnothere0"], now=0.0) as src:
        st = src.stats()["vpcnothere0"]
        assert st.up is False and st.downs == 1
        assert src.poll(0.0, now=0.5) == []
        assert src.filenos() == [] and src.fileno() == -1


def test_missing_interface_is_looked_for_every_second_and_says_why(root: None) -> None:
    name = f"vph{os.getpid() % 100000}"
    with AfPacketSource([name], now=0.0) as src:
        for k in range(1, 120):  # two minutes missing: no backoff grows meanwhile
            src.poll(0.0, now=float(k))
        st = src.stats()[name]
        assert (st.up, st.down_reason) == (False, "no such interface")
        try:
            # (a veth pair: not every kernel here has the dummy module)
            sh("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
            src.poll(0.0, now=120.0)
            assert src.stats()[name].down_reason == "interface is down"
            sh("ip", "link", "set", name, "up")
            src.poll(0.0, now=121.0)  # found at the next second's look
            st = src.stats()[name]
            assert (st.up, st.down_reason, st.reopens) == (True, "", 1)
        finally:
            sh("ip", "link", "del", name, check=False)


def test_any_interface_sees_loopback(root: None) -> None:
    import socket

    with AfPacketSource(["any"]) as src, contextlib.closing(
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ) as s:
        for _ in range(5):
            s.sendto(b"INVITE sip:x@127.0.0.1 SIP/2.0\r\n\r\n", ("127.0.0.1", 5060))
        end = time.monotonic() + 3
        found = 0
        while time.monotonic() < end and found < 5:
            for b in src.poll(0.2):
                for i in range(len(b)):
                    if b"INVITE sip:x@127.0.0.1" in b.packet(i):
                        assert b.linktype[i] == LinkType.ETHERNET
                        found += 1
        assert found >= 5  # 5 on lo (both directions of lo are one packet each: "outgoing")


INJECT = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((sys.argv[1], 0))
    for line in sys.stdin:
        s.send(bytes.fromhex(line.strip()))
    """
)


def _inject(veth: Veth, frames: list[bytes], expect: int,
            min_wire: int = 0) -> list[tuple[bytes, int]]:
    """``frames`` injected on the peer: what the ring holds of them, (bytes, wire length),
    once ``expect`` of at least ``min_wire`` bytes arrived (or after 3 s)."""
    with AfPacketSource([veth.cap]) as src:
        subprocess.run(
            ["ip", "netns", "exec", veth.ns, sys.executable, "-c", INJECT, veth.peer],
            input="\n".join(f.hex() for f in frames), text=True, check=True, timeout=30,
        )
        end = time.monotonic() + 3
        seen: list[tuple[bytes, int]] = []
        while time.monotonic() < end and len(seen) < expect:
            for b in src.poll(0.2):
                seen += [(b.packet(i), int(b.wirelen[i])) for i in range(len(b))
                         if int(b.wirelen[i]) >= min_wire]
    return seen


def test_kernel_filter_agrees_with_interpreter(veth: Veth) -> None:
    """Every crafted frame of test_bpf, injected on the peer: the ring holds exactly the
    prefix the interpreter predicts (VLAN tags, taken out of the frame by the kernel on
    receive, are put back), or nothing when it predicts 0.  Frames carry a foreign
    destination MAC, so the stack drops them after the capture taps see them."""
    from test_bpf import CASES, PROG, kept

    frames = [bytes(pkt) for _, pkt, _ in CASES]

    def vlan(f: bytes) -> bool:
        return f[12:14] in (b"\x81\x00", b"\x88\xa8")

    # the kernel runs the filter on the frame without its (outer) tag
    want = {f: kept(PROG, f[:12] + f[16:] if vlan(f) else f) for f in frames}
    seen = _inject(veth, frames, sum(1 for f in frames if want[f]))
    for (name, _, _), f in zip(CASES, frames, strict=True):
        hits = [(p, w) for p, w in seen if w == len(f) and f.startswith(p)]
        if want[f]:
            assert len(hits) == 1, name
            # the tag is put back into what the filter kept
            assert len(hits[0][0]) == (min(want[f] + 4, len(f)) if vlan(f) else want[f]), name
        else:
            assert not [p for p, w in hits if len(p) > 14], name


def test_media_reaches_the_ring_up_to_the_end_of_its_rtp_header(veth: Veth) -> None:
    """RTP with 0, 1 and 15 CSRCs, with no header extension, an empty one and one of
    3 words, over IPv4, IPv6 and behind a VLAN tag, injected on the peer: every frame
    in the ring ends exactly where its RTP header ends (no payload byte reaches user
    space); SIP and RTCP arrive whole."""
    from scapy.layers.inet import IP
    from scapy.layers.inet import UDP as UDPLayer
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether
    from scapy.packet import Raw
    from test_bpf import INVITE, RTCP_SR, rtp_header

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    nets = {"ipv4": (eth, IP(src=SEND_ADDR, dst=CAP_ADDR), ETH + IP4),
            "ipv6": (eth, IPv6(src="::1", dst="::1"), ETH + 40),  # loopback addresses only
            "vlan": (eth / Dot1Q(vlan=42, prio=5), IP(src=SEND_ADDR, dst=CAP_ADDR),
                     ETH + 4 + IP4)}
    frames: dict[bytes, tuple[str, int]] = {}  # frame -> (what, bytes the ring must hold)
    for net, (link, ip, l3_end) in nets.items():
        for cc in (0, 1, 15):
            for ext in (None, 0, 3):
                head = rtp_header(cc=cc, ext_words=ext)
                f = bytes(link / ip / UDPLayer(sport=40002, dport=40000)
                          / Raw(head + b"\xd5" * 160))
                frames[f] = (f"{net} cc={cc} ext={ext}", l3_end + UDP + len(head))
        for what, l4 in (("sip", UDPLayer(sport=5061, dport=5060) / Raw(INVITE)),
                         ("rtcp", UDPLayer(sport=40003, dport=40001)
                          / Raw(RTCP_SR + bytes(64)))):
            f = bytes(link / ip / l4)
            frames[f] = (f"{net} {what}", len(f))
    seen = [(p, w) for p, w in _inject(veth, list(frames), len(frames), min_wire=61)]
    got = {}
    for f, (what, _) in frames.items():
        hits = [p for p, w in seen if w == len(f) and f.startswith(p) and len(p) > 14]
        assert len(hits) == 1, what
        got[what] = len(hits[0])
    assert got == {what: n for what, n in frames.values()}
    assert all(n < len(f) for f, (what, n) in frames.items() if "cc=" in what)


def test_batch_from_scapy_packets() -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    pkts = [Ether() / IP(src=SEND_ADDR, dst=CAP_ADDR) / UDP(dport=5060) / Raw(b"x" * n)
            for n in (10, 300)]
    for i, p in enumerate(pkts):
        p.time = 1700000000.0 + i
    b = batch_from_scapy(pkts)
    assert len(b) == 2
    assert b.packet(1) == bytes(pkts[1])
    assert list(b.caplen) == list(b.wirelen) == [len(bytes(p)) for p in pkts]
    assert list(b.ts) == [1700000000.0, 1700000001.0]
    assert (b.linktype == LinkType.ETHERNET).all()


def test_open_live_source_builtin_and_user_filter(veth: Veth) -> None:
    src = open_live_source([veth.cap], bpf=f"udp and host {SEND_ADDR}", block_size=1 << 16)
    try:
        assert isinstance(src, AfPacketSource)
        send_burst(veth, n_rtp=30, n_sip=2)
        batches = collect(src, 32)
        caps = sorted(int(b.caplen[i]) for b in batches for i in range(len(b))
                      if udp_dport(b, i) in (RTP_PORT, SIP_PORT))
        assert caps == [ETH + IP4 + UDP + 12] * 30 + [ETH + IP4 + UDP + SIP_PAYLOAD] * 2
    finally:
        src.close()


def test_scapy_source_accepts_the_ring_keywords(root: None) -> None:
    """The daemon opens either source with the same keywords; scapy sniffs lo here."""
    import socket

    from agent.capture.fallback import ScapySource

    src = ScapySource(["lo"], block_size=1 << 20, block_count=8, promisc=False,
                      snaplen=65535, filter="udp port 5060")
    try:
        time.sleep(0.5)  # the sniffer thread opens its socket
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as s:
            for _ in range(3):
                s.sendto(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n", ("127.0.0.1", 5060))
        found, end = 0, time.monotonic() + 3
        while time.monotonic() < end and found < 3:
            for b in src.poll(0.2):
                found += sum(b"OPTIONS sip:x@" in b.packet(i) for i in range(len(b)))
        assert found >= 3
        assert sum(st.packets for st in src.stats().values()) >= 3
    finally:
        src.close()
