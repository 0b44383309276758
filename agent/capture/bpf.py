"""Classic BPF in the kernel: keep only SIP/RTP/RTCP candidates, truncate media.

The built-in program (`builtin_program`) runs on every packet an AF_PACKET socket
sees, before the packet is copied to the ring, and returns how many bytes to keep
(0 = drop in the kernel).  Offsets are from the start of the captured frame, i.e.
the Ethernet header on Ethernet and loopback devices, the IP header on raw-IP
devices (tun, ipip, sit, wireguard: no link header).

==============================================  ==========================
packet                                          kept
==============================================  ==========================
UDP from/to a SIP port (default 5060-5061)      ``snaplen`` (whole)
UDP whose payload starts with 'A'..'Z'          ``snaplen`` (SIP on any port)
UDP from/to a ``sip_ports`` entry the daemon    ``snaplen`` (VXLAN, TZSP, HEP:
adds for mirrors and exporters                  tunnels carry SIP)
UDP, RTP version 2, second byte 200..207 (RTCP)  ``snaplen``
UDP, RTP version 2 otherwise (media), on any    up to the end of its RTP
port (RTP sent to a SIP port too)               header: 12 + 4 x CC bytes, plus
                                                the header extension when X is
                                                set; no payload byte
UDP, anything else (DNS, STUN, UDPTL ...)       ``media_snaplen`` (128)
IPv4 non-first fragment, IPv6 fragment of UDP   ``snaplen`` (SIP reassembly)
TCP from/to a SIP or ``sip_ports`` port        ``snaplen`` (SIP, HEP3 streams)
GRE (IP protocol 47: ERSPAN I/II/III, GRETAP,   ``snaplen`` (mirrored or
NVGRE), IP in IP (4), IPv6 in IPv4 (41), when   tunnelled traffic: SIP
``keep_gre`` (the default)                      inside must stay whole)
UDP to a ``skip_udp_ports`` entry (the agent's  0: a listener socket of the
own HEP/TZSP/VXLAN listeners), checked first    agent takes them, once
everything else (ARP, ICMP, other TCP, ...)     0: dropped in the kernel
==============================================  ==========================

IPv4 and IPv6 are understood, also behind one 802.1Q / 802.1ad tag in the frame.
(On receive Linux moves a VLAN tag out of the frame into metadata before the
filter runs, so the filter sees the untagged frame; `agent.capture.afpacket` puts
the tag back into the copy it hands on.)  An IPv6 packet whose first next-header is
an extension header other than a fragment header is dropped.  Media is cut where
its RTP header ends, computed per packet from the link header (VLAN tag
included), the IPv4 IHL or the IPv6 header, UDP, the CSRC count and the header
extension's own length: no audio byte reaches user space, and the probe takes the
payload length from the UDP header (`Frames.payload_sent`). An extension that
claims to run past the frame drops the packet. ``media_snaplen`` counts from the
start of the frame and applies only to UDP that is not RTP.

What still reaches user space whole: IPv4 non-first fragments and IPv6 fragments
of UDP (SIP reassembly needs them; no UDP header to tell media from SIP; media is
rarely fragmented, and a fragmented RTP datagram's first fragment is cut at its
RTP header, so it cannot be reassembled: its other fragments expire unread), and
tunnels (GRE, IP in IP), whose inner packets the kernel cannot see into.

A user expression (``capture.bpf`` in the config, libpcap syntax) is compiled with
libpcap through scapy (`compile_expression`) and ANDed in front of the built-in
program (`and_then`): a packet must match the expression, and the built-in program
then decides what is kept and how much.  ``combine_user_filter(expr, linktype,
builtin=None)`` uses the expression alone (truncation is then ``snaplen``).

`Assembler` is a small classic-BPF assembler with labels; `BpfProgram.attach`
installs a program with ``SO_ATTACH_FILTER``.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ANCILLARY_HATYPE",
    "DEFAULT_MEDIA_SNAPLEN",
    "DEFAULT_SIP_PORTS",
    "Assembler",
    "BpfError",
    "BpfProgram",
    "builtin_program",
    "compile_expression",
    "port_ranges",
]

# --- opcodes (linux/filter.h, linux/bpf_common.h) ---------------------------------
LD, LDX, ST, STX, ALU, JMP, RET, MISC = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
K, X = 0x00, 0x08
RET_A = 0x10
TAX, TXA = 0x00, 0x80

SKF_AD_OFF = -0x1000
SKF_AD_HATYPE = 28
#: ``ld [ANCILLARY_HATYPE]`` loads the ARPHRD_* type of the packet's device.
ANCILLARY_HATYPE = (SKF_AD_OFF + SKF_AD_HATYPE) & 0xFFFFFFFF

SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
BPF_MAXINSNS = 4096

ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772

DEFAULT_SIP_PORTS: tuple[int, ...] = (5060, 5061)
DEFAULT_MEDIA_SNAPLEN = 128
DEFAULT_SNAPLEN = 65535

_INSN = struct.Struct("=HBBI")


class BpfError(ValueError):
    """A program that cannot be built, compiled or attached."""


@dataclass(frozen=True, slots=True)
class BpfProgram:
    """A classic BPF program: ``(code, jt, jf, k)`` instructions."""

    insns: tuple[tuple[int, int, int, int], ...]

    def __len__(self) -> int:
        return len(self.insns)

    def pack(self) -> bytes:
        """The program as an array of ``struct sock_filter`` (host byte order)."""
        return b"".join(_INSN.pack(c, jt, jf, k & 0xFFFFFFFF) for c, jt, jf, k in self.insns)

    def attach(self, sock: socket.socket | int) -> None:
        """Install on a socket (``SO_ATTACH_FILTER``); the kernel validates it here.

        Raises `BpfError` (with the errno text) when the kernel rejects the program.
        """
        if not 0 < len(self.insns) <= BPF_MAXINSNS:
            raise BpfError(f"a program has 1..{BPF_MAXINSNS} instructions, not {len(self)}")
        code = self.pack()
        buf = ctypes.create_string_buffer(code, len(code))
        fprog = struct.pack("@HP", len(self.insns), ctypes.addressof(buf))
        s = sock if isinstance(sock, socket.socket) else socket.socket(fileno=sock)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        except OSError as e:
            raise BpfError(f"kernel rejected the BPF program: {e.strerror or e}") from e
        finally:
            if not isinstance(sock, socket.socket):
                s.detach()

    def and_then(self, nxt: BpfProgram) -> BpfProgram:
        """``self`` as a precondition of ``nxt``: where ``self`` would accept (``ret
        #k`` with k > 0) run ``nxt`` instead; where it drops, drop.

        Instructions are replaced one for one, so ``self``'s jumps stay valid.
        """
        out: list[tuple[int, int, int, int]] = []
        n = len(self.insns)
        for pc, (code, jt, jf, k) in enumerate(self.insns):
            if code == RET | K:
                out.append((JMP | JA, 0, 0, n - pc - 1) if k else (code, jt, jf, k))
            elif code & 0x07 == RET:
                raise BpfError("cannot chain after a program that returns A")
            else:
                out.append((code, jt, jf, k))
        return BpfProgram(tuple(out) + nxt.insns)

    def clamp(self, snaplen: int) -> BpfProgram:
        """Every ``ret #k`` with k > snaplen returns snaplen instead."""
        return BpfProgram(
            tuple(
                (c, jt, jf, min(k, snaplen)) if c == RET | K else (c, jt, jf, k)
                for c, jt, jf, k in self.insns
            )
        )


class Assembler:
    """Classic BPF with symbolic labels for jump targets.

    ``jump(JEQ, 17, "udp")`` jumps to label ``udp`` when A == 17 and falls through
    otherwise; ``None`` as a target means the next instruction.
    """

    def __init__(self) -> None:
        self._code: list[tuple[int, int | str | None, int | str | None, int | str]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        if name in self._labels:
            raise BpfError(f"label {name!r} defined twice")
        self._labels[name] = len(self._code)

    def op(self, code: int, k: int = 0) -> None:
        self._code.append((code, 0, 0, k))

    def jump(self, cond: int, k: int, jt: str | None, jf: str | None = None) -> None:
        self._code.append((JMP | cond | K, jt, jf, k))

    def goto(self, target: str) -> None:
        self._code.append((JMP | JA, None, None, target))

    def assemble(self) -> BpfProgram:
        out: list[tuple[int, int, int, int]] = []
        for pc, (code, jt, jf, k) in enumerate(self._code):

            def rel(target: int | str | None, short: bool, pc: int = pc) -> int:
                if target is None:
                    return 0
                if isinstance(target, int):
                    return target
                if target not in self._labels:
                    raise BpfError(f"undefined label {target!r}")
                off = self._labels[target] - pc - 1
                if off < 0 or (short and off > 255):
                    raise BpfError(f"jump to {target!r} out of range ({off})")
                return off

            if code == JMP | JA:
                out.append((code, 0, 0, rel(k if isinstance(k, str) else None, short=False)))
            else:
                assert isinstance(k, int)
                out.append((code, rel(jt, True), rel(jf, True), k & 0xFFFFFFFF))
        if not out or out[-1][0] & 0x07 != RET:
            raise BpfError("a program must end with a return")
        return BpfProgram(tuple(out))


def port_ranges(ports: Iterable[int | tuple[int, int]]) -> list[tuple[int, int]]:
    """Ports and (lo, hi) ranges merged into sorted, disjoint inclusive ranges."""
    spans: list[tuple[int, int]] = []
    for p in ports:
        lo, hi = (p, p) if isinstance(p, int) else p
        if not 0 <= lo <= hi <= 65535:
            raise BpfError(f"bad port or range: {p!r}")
        spans.append((lo, hi))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _port_test(a: Assembler, ranges: Sequence[tuple[int, int]], hit: str, tag: str) -> None:
    """With a port in A: jump to ``hit`` if it is in one of ``ranges``, else fall through."""
    for i, (lo, hi) in enumerate(ranges):
        miss = f"{tag}_miss{i}"
        if lo == hi:
            a.jump(JEQ, lo, hit)
            a.label(miss)
            continue
        a.jump(JGE, lo, None, miss)
        a.jump(JGT, hi, miss, hit)
        a.label(miss)


def builtin_program(
    sip_ports: Iterable[int | tuple[int, int]] = DEFAULT_SIP_PORTS,
    *,
    media_snaplen: int = DEFAULT_MEDIA_SNAPLEN,
    snaplen: int = DEFAULT_SNAPLEN,
    ascii_is_sip: bool = True,
    keep_gre: bool = True,
    skip_udp_ports: Iterable[int | tuple[int, int]] = (),
) -> BpfProgram:
    """The SIP/RTP/RTCP program described in the module docstring."""
    if not 0 < media_snaplen <= snaplen:
        raise BpfError("need 0 < media_snaplen <= snaplen")
    ranges = port_ranges(sip_ports)
    skip = port_ranges(skip_udp_ports)
    a = Assembler()
    # Link layer: Ethernet (also loopback, whose header is a zeroed Ethernet one) or
    # none (raw IP). X = offset of the IP header, A = ethertype.
    a.op(LD | W | ABS, ANCILLARY_HATYPE)
    a.jump(JEQ, ARPHRD_ETHER, "eth")
    a.jump(JEQ, ARPHRD_LOOPBACK, "eth")
    a.op(LDX | IMM, 0)
    a.op(LD | B | ABS, 0)
    a.op(ALU | RSH | K, 4)
    a.jump(JEQ, 4, "ip4")
    a.jump(JEQ, 6, "ip6", "drop")
    a.label("eth")
    a.op(LDX | IMM, 14)
    a.op(LD | H | ABS, 12)
    a.jump(JEQ, 0x8100, "vlan")
    a.jump(JEQ, 0x88A8, "vlan", "l3")
    a.label("vlan")
    a.op(LDX | IMM, 18)
    a.op(LD | H | ABS, 16)
    a.label("l3")
    a.jump(JEQ, 0x0800, "ip4")
    a.jump(JEQ, 0x86DD, "ip6", "drop")
    # IPv4: non-first fragments carry no UDP header, keep them whole (SIP reassembly).
    a.label("ip4")
    a.op(LD | H | IND, 6)
    a.jump(JSET, 0x1FFF, "ip4frag")
    a.op(LD | B | IND, 9)
    a.jump(JEQ, 17, "ip4udp")
    if keep_gre:
        for tunnel in (47, 4, 41):  # GRE, IP in IP, IPv6 in IPv4
            a.jump(JEQ, tunnel, "full")
    a.jump(JEQ, 6, "ip4tcp", "drop")
    a.label("ip4udp")
    a.op(LD | B | IND, 0)
    a.op(ALU | AND | K, 0x0F)
    a.op(ALU | LSH | K, 2)
    a.op(ALU | ADD | X)
    a.op(MISC | TAX)
    a.goto("udp")
    a.label("ip4tcp")
    a.op(LD | B | IND, 0)
    a.op(ALU | AND | K, 0x0F)
    a.op(ALU | LSH | K, 2)
    a.op(ALU | ADD | X)
    a.op(MISC | TAX)
    a.goto("tcp")
    a.label("ip4frag")
    a.op(LD | B | IND, 9)
    a.jump(JEQ, 17, "full", "drop")
    # IPv6: fixed 40-byte header; a fragment header first -> keep UDP fragments whole.
    a.label("ip6")
    a.op(LD | B | IND, 6)
    a.jump(JEQ, 17, "ip6udp")
    if keep_gre:
        for tunnel in (47, 4, 41):
            a.jump(JEQ, tunnel, "full")
    a.jump(JEQ, 6, "ip6tcp")
    a.jump(JEQ, 44, "ip6frag", "drop")
    a.label("ip6udp")
    a.op(MISC | TXA)
    a.op(ALU | ADD | K, 40)
    a.op(MISC | TAX)
    a.goto("udp")
    a.label("ip6tcp")
    a.op(MISC | TXA)
    a.op(ALU | ADD | K, 40)
    a.op(MISC | TAX)
    a.goto("tcp")
    a.label("ip6frag")
    a.op(LD | B | IND, 40)
    a.jump(JEQ, 17, "full", "drop")
    # UDP (X = UDP header offset).
    a.label("udp")
    if skip:
        a.op(LD | H | IND, 2)
        _port_test(a, skip, "drop", "skip")
    a.op(LD | H | IND, 0)
    _port_test(a, ranges, "kept", "usp")
    a.op(LD | H | IND, 2)
    _port_test(a, ranges, "kept", "udp")
    a.op(LD | B | IND, 8)  # first payload byte (none: the load fails, the packet drops)
    if ascii_is_sip:
        a.jump(JGE, ord("A"), None, "notascii")
        a.jump(JGT, ord("Z"), "notascii", "full")
        a.label("notascii")
    a.op(ALU | AND | K, 0xC0)
    a.jump(JEQ, 0x80, None, "media")  # not RTP version 2: not media the probe reads
    a.op(LD | B | IND, 9)  # RTCP packet types SR..XR = 200..207 (RFC 5761 section 4)
    a.jump(JGE, 200, None, "rtp")
    a.jump(JGT, 207, "rtp", "full")
    # A SIP/tunnel/HEP port: whole, unless the datagram is RTP (RTP sent to a SIP port
    # is media like any other). SIP starts with a letter or CR/LF, VXLAN with 0x08,
    # TZSP with 0x01, HEP with 'H' or 0x01/0x02: never RTP version 2.
    a.label("kept")
    a.op(LD | B | IND, 8)
    a.op(ALU | AND | K, 0xC0)
    a.jump(JEQ, 0x80, None, "full")
    a.op(LD | B | IND, 9)
    a.jump(JGE, 200, None, "rtp")
    a.jump(JGT, 207, "rtp", "full")
    # RTP (X = UDP header offset): keep exactly up to the end of the RTP header, the
    # 12 fixed bytes, 4 per CSRC and the header extension when X is set (RFC 3550
    # 5.1, 5.3.1): no payload byte reaches the ring.
    a.label("rtp")
    a.op(LD | B | IND, 8)
    a.op(ALU | AND | K, 0x0F)
    a.op(ALU | LSH | K, 2)
    a.op(ALU | ADD | K, 8 + 12)
    a.op(ALU | ADD | X)  # A = frame offset where the CSRC list ends
    a.op(ST, 0)
    a.op(LD | B | IND, 8)
    a.jump(JSET, 0x10, None, "rtpend")
    a.op(LDX | MEM, 0)  # X = the extension header: 16-bit profile, 16-bit length
    a.op(LD | H | IND, 2)  # in 32-bit words (beyond the frame: the load fails, drop)
    a.op(ALU | LSH | K, 2)
    a.op(ALU | ADD | K, 4)
    a.op(ALU | ADD | X)
    a.jump(JGT, snaplen, "full")
    a.op(RET | RET_A)
    a.label("rtpend")
    a.op(LD | MEM, 0)
    a.op(RET | RET_A)
    # TCP (X = TCP header offset): only SIP ports.
    a.label("tcp")
    a.op(LD | H | IND, 0)
    _port_test(a, ranges, "full", "tsp")
    a.op(LD | H | IND, 2)
    _port_test(a, ranges, "full", "tdp")
    a.label("drop")
    a.op(RET | K, 0)
    a.label("media")
    a.op(RET | K, media_snaplen)
    a.label("full")
    a.op(RET | K, snaplen)
    return a.assemble()


def compile_expression(expr: str, linktype: int = 1, snaplen: int = DEFAULT_SNAPLEN) -> BpfProgram:
    """Compile a libpcap filter expression for ``linktype`` (LINKTYPE_*: 1 Ethernet,
    101 raw IP) with libpcap through scapy.  Raises `BpfError` with libpcap's message."""
    try:
        from scapy.arch.common import compile_filter
        from scapy.data import DLT_RAW
    except ImportError as e:  # pragma: no cover - scapy is a dependency
        raise BpfError(f"cannot compile {expr!r}: {e}") from e
    dlt = DLT_RAW if linktype == 101 else linktype
    try:
        prog = compile_filter(expr, linktype=dlt)
    except Exception as e:  # scapy raises Scapy_Exception / OSError / ImportError
        raise BpfError(f"bad BPF expression {expr!r}: {e}") from e
    n = int(prog.bf_len)
    raw = ctypes.string_at(prog.bf_insns, n * _INSN.size)
    insns: list[tuple[int, int, int, int]] = []
    for i in range(n):
        code, jt, jf, k = _INSN.unpack_from(raw, i * _INSN.size)
        insns.append((code, jt, jf, k))
    return BpfProgram(tuple(insns)).clamp(snaplen)
