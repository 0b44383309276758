"""The built-in classic BPF program: run in a small interpreter over crafted packets,
and loaded by the kernel."""

from __future__ import annotations

import os
import socket

import pytest
from bpfinterp import kept
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw

from agent.capture import bpf
from agent.capture.bpf import (
    Assembler,
    BpfError,
    BpfProgram,
    builtin_program,
    compile_expression,
    port_ranges,
)

E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
A4 = IP(src="198.18.7.1", dst="198.18.8.2")
A6 = IPv6(src="::1", dst="::1")  # loopback only: tests never name other addresses
RTP = b"\x80\x08\x12\x34" + b"\x00" * 8 + b"\xd5" * 160  # v2, PCMA, 160 samples
RTCP_SR = b"\x80\xc8\x00\x06" + b"\x00" * 24
RTCP_RR = b"\x81\xc9\x00\x07" + b"\x00" * 28
INVITE = (
    b"INVITE sip:bob@198.18.8.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.7.1:5061\r\n"
    + b"X-Pad: " + b"x" * 600 + b"\r\n\r\n"
)
DNS = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"

PROG = builtin_program()
FULL = 65535


AUDIO = b"\xd5" * 160


def rtp_header(cc: int = 0, ext_words: int | None = None) -> bytes:
    """An RTP header (PCMA) with ``cc`` CSRCs and, unless None, a header extension of
    ``ext_words`` 32-bit words (RFC 3550 5.3.1)."""
    x = 0x10 if ext_words is not None else 0
    head = bytes([0x80 | x | cc, 8]) + b"\x12\x34" + b"\x00" * 8 + b"\x00\x00\x00\x01" * cc
    if ext_words is not None:
        head += b"\xbe\xde" + ext_words.to_bytes(2, "big") + b"\x11" * 4 * ext_words
    return head


def rtp(payload: bytes = RTP) -> Packet:
    return E / A4 / UDP(sport=40000, dport=40002) / Raw(payload)


CASES: list[tuple[str, Packet, int | str]] = [
    ("rtp to 40000", E / A4 / UDP(sport=40002, dport=40000) / Raw(RTP), 14 + 20 + 8 + 12),
    ("rtp, 1 csrc", rtp(rtp_header(cc=1) + AUDIO), 42 + 12 + 4),
    ("rtp, 15 csrcs", rtp(rtp_header(cc=15) + AUDIO), 42 + 12 + 60),
    ("rtp, empty extension", rtp(rtp_header(ext_words=0) + AUDIO), 42 + 12 + 4),
    ("rtp, 2 csrcs + 3-word extension", rtp(rtp_header(cc=2, ext_words=3) + AUDIO),
     42 + 12 + 8 + 4 + 12),
    ("rtp, extension beyond the frame", rtp(rtp_header(ext_words=1)[:14]), 0),
    ("rtp to a sip port", E / A4 / UDP(sport=40000, dport=5060) / Raw(RTP), 42 + 12),
    ("sip keepalive on 5060", E / A4 / UDP(sport=5061, dport=5060) / Raw(b"\r\n\r\n"), "full"),
    ("rtp marker + pt 72 is still media", rtp(b"\x80\xc8" + RTP[2:]), "rtcp"),
    ("sip invite on 5060", E / A4 / UDP(sport=5061, dport=5060) / Raw(INVITE), "full"),
    ("sip response from 5060", E / A4 / UDP(sport=5060, dport=33000) / Raw(b"SIP/2.0 200 OK\r\n\r\n"
                                                                        + b"y" * 300), "full"),
    ("sip on other port (ascii)", E / A4 / UDP(sport=5080, dport=5080) / Raw(INVITE), "full"),
    ("rtcp sr", E / A4 / UDP(sport=40001, dport=40003) / Raw(RTCP_SR + b"\x00" * 200), "full"),
    ("rtcp rr", E / A4 / UDP(sport=40001, dport=40003) / Raw(RTCP_RR + b"\x00" * 200), "full"),
    ("dns", E / A4 / UDP(sport=33333, dport=53) / Raw(DNS + b"\x00" * 200), 128),
    ("arp", E / ARP(psrc="198.18.7.1", pdst="198.18.7.254"), 0),
    ("icmp", E / A4 / ICMP() / Raw(b"x" * 200), 0),
    ("vlan rtp", E / Dot1Q(vlan=42, prio=5) / A4 / UDP(sport=40000, dport=40002) / Raw(RTP),
     18 + 20 + 8 + 12),
    ("vlan sip", E / Dot1Q(vlan=42) / A4 / UDP(sport=5061, dport=5060) / Raw(INVITE), "full"),
    ("qinq outer 88a8 sip", Ether(type=0x88A8) / Dot1Q(vlan=7) / A4 / UDP(dport=5060)
     / Raw(INVITE), "full"),
    ("ipv6 rtp", E / A6 / UDP(sport=40000, dport=40002) / Raw(RTP), 14 + 40 + 8 + 12),
    ("ipv6 sip", E / A6 / UDP(sport=5060, dport=5060) / Raw(INVITE), "full"),
    ("ipv6 tcp sip", E / A6 / TCP(sport=40123, dport=5060) / Raw(INVITE), "full"),
    ("ipv6 udp fragment", E / A6 / IPv6ExtHdrFragment(nh=17, offset=100) / Raw(b"z" * 300),
     "full"),
    ("ipv6 hop-by-hop", E / A6 / IPv6ExtHdrHopByHop() / UDP(dport=5060) / Raw(INVITE), 0),
    ("tcp sip", E / A4 / TCP(sport=40123, dport=5060, flags="PA") / Raw(INVITE), "full"),
    ("tcp sip from 5061", E / A4 / TCP(sport=5061, dport=40123, flags="PA") / Raw(b"\x17" * 300),
     "full"),
    ("tcp 443", E / A4 / TCP(sport=40123, dport=443, flags="PA") / Raw(b"\x17" * 300), 0),
    ("ipv4 options + rtp", E / IP(src="198.18.7.1", dst="198.18.8.2", options=b"\x01" * 8)
     / UDP(sport=40000, dport=40002) / Raw(RTP), 14 + 28 + 8 + 12),
    ("ipv4 non-first fragment", E / IP(src="198.18.7.1", dst="198.18.8.2", proto=17, frag=185)
     / Raw(b"y" * 500), "full"),
    ("ipv4 first fragment of sip", E / IP(src="198.18.7.1", dst="198.18.8.2", flags="MF")
     / UDP(sport=5061, dport=5060) / Raw(INVITE), "full"),
    ("empty udp", E / A4 / UDP(sport=40000, dport=40002), 0),
    ("truncated ip header", bytes(E / A4)[:20], 0),
]


@pytest.mark.parametrize(("name", "pkt", "want"), CASES, ids=[c[0] for c in CASES])
def test_builtin_program_verdicts(name: str, pkt: Packet, want: int | str) -> None:
    raw = bytes(pkt)
    if want in ("full", "rtcp"):
        assert kept(PROG, raw) == len(raw), name
    else:
        assert kept(PROG, raw) == want, name
    if isinstance(want, int) and want:
        assert len(raw) > want  # really truncated


def test_raw_ip_devices() -> None:
    """tun/wireguard (ARPHRD_NONE 65534): the frame starts with the IP header."""
    rtp4 = bytes(A4 / UDP(sport=40000, dport=40002) / Raw(RTP))
    sip6 = bytes(A6 / UDP(sport=5061, dport=5060) / Raw(INVITE))
    assert kept(PROG, rtp4, hatype=65534) == 20 + 8 + 12
    assert kept(PROG, sip6, hatype=65534) == len(sip6)
    assert kept(PROG, b"\x00" * 100, hatype=65534) == 0
    # loopback (772) has a zeroed Ethernet header
    lo = bytes(Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") / A4 / UDP(dport=5060)
               / Raw(INVITE))
    assert kept(PROG, lo, hatype=772) == len(lo)


def test_configurable_ports_and_snaplens() -> None:
    prog = builtin_program([5080, (5060, 5062)], media_snaplen=96, snaplen=1000,
                           ascii_is_sip=False)
    sip = bytes(E / A4 / UDP(sport=40000, dport=5080) / Raw(INVITE))
    assert len(sip) < 1000
    assert kept(prog, sip) == len(sip)
    sip2 = bytes(E / A4 / UDP(sport=5062, dport=9) / Raw(INVITE))
    assert kept(prog, sip2) == len(sip2)
    assert kept(prog, bytes(E / A4 / UDP(sport=5063, dport=5079) / Raw(INVITE))) == 96
    assert kept(prog, bytes(E / A4 / UDP(dport=40000) / Raw(RTP))) == 42 + 12  # exact
    assert kept(prog, bytes(E / A4 / UDP(dport=53) / Raw(DNS + bytes(200)))) == 96
    big = bytes(E / A4 / UDP(dport=5061) / Raw(INVITE * 3))
    assert kept(prog, big) == 1000
    tcp = bytes(E / A4 / TCP(dport=5062) / Raw(INVITE))
    assert kept(prog, tcp) == len(tcp)


def test_hep_ports_are_kept_whole() -> None:
    """HEP3 starts with 'H' (kept as text anyway); HEP v2 starts with 0x02 and would be
    cut to 128 bytes like media but for capture.hep_ports joining the SIP ports."""
    from agent.config import CaptureConfig
    from agent.daemon import kept_ports
    from agent.decode.hep import HepRecord, encode_hep2, encode_hep3
    rec = HepRecord(version=2, ip_version=4, ip_proto=17, src=bytes(4), dst=bytes(4),
                    sport=5060, dport=5060, ts_sec=1, ts_usec=2, proto_type=1, capture_id=3,
                    payload=INVITE)
    prog = builtin_program(kept_ports(CaptureConfig()))
    for hep in (encode_hep2(rec), encode_hep3(rec)):
        pkt = bytes(E / A4 / UDP(sport=40000, dport=9060) / Raw(hep))
        assert kept(prog, pkt) == len(pkt)
    assert kept(PROG, bytes(E / A4 / UDP(sport=40000, dport=9060) / Raw(encode_hep2(rec)))) \
        == bpf.DEFAULT_MEDIA_SNAPLEN


def test_the_agents_own_listener_ports_are_skipped() -> None:
    """UDP to a port a listener of the agent takes (HEP, TZSP, VXLAN) is dropped in the
    kernel: the listener measures it once; the ring would measure it again."""
    from agent.config import CaptureConfig
    from agent.daemon import kept_ports
    cfg = CaptureConfig(tzsp_listeners=[{"allowed_senders": ["198.18.9.1"]}],
                        hep_listeners=[{"port": 9061, "allowed_senders": ["198.18.9.1"]},
                                       {"port": 9062, "transport": "tcp",
                                        "allowed_senders": ["198.18.9.1"]}])
    assert cfg.listener_udp_ports() == [9061, 37008]
    prog = builtin_program(kept_ports(cfg), skip_udp_ports=cfg.listener_udp_ports())
    tzsp = b"\x01\x00\x00\x01\x01" + bytes(E / A4 / UDP(sport=5060, dport=5060) / Raw(INVITE))
    for dport in (37008, 9061):
        assert kept(prog, bytes(E / A4 / UDP(sport=5060, dport=dport) / Raw(tzsp))) == 0
        assert kept(prog, bytes(E / A6 / UDP(sport=40000, dport=dport) / Raw(INVITE))) == 0
    # the same datagrams from the port (the probe's own replies: none) and other ports
    # are what they were
    sip = bytes(E / A4 / UDP(sport=5060, dport=5060) / Raw(INVITE))
    assert kept(prog, sip) == len(sip)
    back = bytes(E / A4 / UDP(sport=37008, dport=40000) / Raw(tzsp))
    assert kept(prog, back) == len(back)  # a kept tunnel port (tzsp_ports), not skipped
    vx = bytes(E / A4 / UDP(sport=40000, dport=4789) / Raw(b"\x08" + bytes(7) + sip))
    assert kept(prog, vx) == len(vx)  # no VXLAN listener: sniffed as before


def test_port_ranges_merge() -> None:
    assert port_ranges([5061, 5060, (5070, 5080), 5081, 6000]) == [(5060, 5061), (5070, 5081),
                                                                    (6000, 6000)]
    with pytest.raises(BpfError):
        port_ranges([(10, 5)])


def test_assembler_errors() -> None:
    a = Assembler()
    a.jump(bpf.JEQ, 1, "nowhere")
    a.op(bpf.RET | bpf.K, 0)
    with pytest.raises(BpfError, match="undefined"):
        a.assemble()
    b = Assembler()
    b.op(bpf.LD | bpf.IMM, 1)
    with pytest.raises(BpfError, match="return"):
        b.assemble()


def test_kernel_accepts_builtin_program_on_udp_socket() -> None:
    """The kernel's classic BPF checker is the same for every socket type."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        PROG.attach(s)
        builtin_program([5060, 5061, (6000, 6100)], media_snaplen=200).attach(s)


def test_kernel_rejects_malformed_program() -> None:
    bad = BpfProgram(((bpf.JMP | bpf.JEQ, 9, 0, 0), (bpf.RET | bpf.K, 0, 0, 0)))  # off the end
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(BpfError):
        bad.attach(s)


@pytest.mark.skipif(os.geteuid() != 0, reason="AF_PACKET needs CAP_NET_RAW (root)")
def test_kernel_accepts_builtin_program_on_packet_socket() -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
        PROG.attach(s)


def test_user_expression_compiled_with_libpcap() -> None:
    user = compile_expression("udp and net 198.18.0.0/15", linktype=1)
    inside = bytes(E / A4 / UDP(sport=40000, dport=40002) / Raw(RTP))
    outside = bytes(E / IP(src="198.51.100.1", dst="198.51.100.2") / UDP(dport=40002) / Raw(RTP))
    assert kept(user, inside) == len(inside)  # alone: whole packets (snaplen)
    assert kept(user, outside) == 0
    both = user.and_then(PROG)
    assert kept(both, inside) == 42 + 12  # ANDed: the built-in program truncates media
    assert kept(both, outside) == 0
    sip = bytes(E / A4 / UDP(dport=5060) / Raw(INVITE))
    assert kept(both, sip) == len(sip)
    tcp = bytes(E / A4 / TCP(dport=5060) / Raw(INVITE))
    assert kept(both, tcp) == 0  # the expression says udp
    raw = compile_expression("udp", linktype=101)
    assert kept(raw, bytes(A4 / UDP() / Raw(RTP)), hatype=65534) > 0
    assert max(k for c, _, _, k in compile_expression("udp", snaplen=200).insns
               if c == bpf.RET | bpf.K) == 200
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        both.attach(s)
    with pytest.raises(BpfError, match="bad BPF expression"):
        compile_expression("udp and and", linktype=1)


def test_gre_mirrors_are_kept_whole() -> None:
    """ERSPAN/GRETAP mirrors arrive as IP protocol 47: SIP inside must reach the decoder
    whole (issue 9); ``keep_gre=False`` drops them in the kernel as before."""
    from scapy.layers.l2 import GRE

    inner = bytes(E / A4 / UDP(sport=5060, dport=5060) / Raw(INVITE))
    outers = (IP(src="198.18.7.1", dst="198.18.8.2"), IPv6(src="2001:db8::1", dst="2001:db8::2"))
    for outer in outers:
        gretap = E / outer / GRE(proto=0x6558) / Raw(inner)
        erspan2 = E / outer / GRE(seqnum_present=1, proto=0x88BE, sequence_number=7) \
            / Raw(b"\x10\x00\x00\x01\x00\x00\x00\x00" + inner)
        for pkt in (gretap, erspan2):
            raw = bytes(pkt)
            assert len(raw) > 300 and kept(PROG, raw) == len(raw)
            assert kept(bpf.builtin_program(keep_gre=False), raw) == 0
