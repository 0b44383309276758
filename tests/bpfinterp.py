"""A classic BPF interpreter with the Linux semantics the kernel applies: what the
built-in program keeps of a frame, without a kernel (tests/capture/test_afpacket.py
holds the kernel to it)."""

from __future__ import annotations

from scapy.packet import Packet

from agent.capture import bpf
from agent.capture.bpf import ANCILLARY_HATYPE, BpfProgram


class OutOfBounds(Exception):
    pass


def run(prog: BpfProgram, pkt: bytes, hatype: int = 1) -> int:
    """Classic BPF semantics (Linux): a load outside the packet returns 0 (drop)."""
    a = x = 0
    mem = [0] * 16
    pc = 0

    def load(off: int, size: int) -> int:
        if off == ANCILLARY_HATYPE and size == 4:
            return hatype
        if off < 0 or off + size > len(pkt):
            raise OutOfBounds
        return int.from_bytes(pkt[off : off + size], "big")

    sizes = {bpf.W: 4, bpf.H: 2, bpf.B: 1}
    try:
        for _ in range(10_000):
            code, jt, jf, k = prog.insns[pc]
            pc += 1
            cls = code & 0x07
            if cls == bpf.LD:
                mode = code & 0xE0
                if mode == bpf.IMM:
                    a = k
                elif mode == bpf.ABS:
                    a = load(k, sizes[code & 0x18])
                elif mode == bpf.IND:
                    a = load((x + k) & 0xFFFFFFFF, sizes[code & 0x18])
                elif mode == bpf.MEM:
                    a = mem[k]
                elif mode == bpf.LEN:
                    a = len(pkt)
                else:
                    raise AssertionError(f"ld mode {mode:#x}")
            elif cls == bpf.LDX:
                mode = code & 0xE0
                if mode == bpf.IMM:
                    x = k
                elif mode == bpf.MEM:
                    x = mem[k]
                elif mode == bpf.LEN:
                    x = len(pkt)
                elif mode == bpf.MSH:
                    x = (load(k, 1) & 0x0F) * 4
                else:
                    raise AssertionError(f"ldx mode {mode:#x}")
            elif cls == bpf.ST:
                mem[k] = a
            elif cls == bpf.STX:
                mem[k] = x
            elif cls == bpf.ALU:
                src = x if code & bpf.X else k
                op = code & 0xF0
                if op == bpf.ADD:
                    a = a + src
                elif op == bpf.SUB:
                    a = a - src
                elif op == bpf.AND:
                    a = a & src
                elif op == bpf.OR:
                    a = a | src
                elif op == bpf.LSH:
                    a = a << src
                elif op == bpf.RSH:
                    a = a >> src
                elif op == bpf.MUL:
                    a = a * src
                else:
                    raise AssertionError(f"alu op {op:#x}")
                a &= 0xFFFFFFFF
            elif cls == bpf.JMP:
                op = code & 0xF0
                if op == bpf.JA:
                    pc += k
                    continue
                src = x if code & bpf.X else k
                cond = {
                    bpf.JEQ: a == src,
                    bpf.JGT: a > src,
                    bpf.JGE: a >= src,
                    bpf.JSET: bool(a & src),
                }[op]
                pc += jt if cond else jf
            elif cls == bpf.RET:
                return a if code & bpf.RET_A else k
            elif cls == bpf.MISC:
                if code & 0xF8 == bpf.TXA:
                    a = x
                else:
                    x = a
        raise AssertionError("program did not return")
    except OutOfBounds:
        return 0


def kept(prog: BpfProgram, pkt: Packet | bytes, hatype: int = 1) -> int:
    """Bytes the kernel would keep: the program's answer, at most the packet length."""
    raw = bytes(pkt)
    return min(run(prog, raw, hatype), len(raw))
