"""The TPACKET_V3 block walk (`frame_offsets`) against a frame-by-frame chain walk.

No ring, no root: blocks are laid out in memory as the kernel lays them out."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.afpacket import frame_offsets


def _walk_chain(block: bytes, first: int, num: int) -> list[int]:
    """The reference: follow tp_next_offset frame by frame (what the kernel ABI says)."""
    out, off = [], first
    for _ in range(num):
        out.append(off)
        (nxt,) = struct.unpack_from("=I", block, off)
        if not nxt:
            break
        off += nxt
    return out


def _block(sizes: list[int], first: int, last_next_zero: bool) -> bytes:
    """A block whose frames (16-byte aligned, like TPACKET_ALIGN) are ``sizes`` long."""
    buf = bytearray(first + sum(sizes) + 64)
    off = first
    for k, size in enumerate(sizes):
        nxt = 0 if (last_next_zero and k == len(sizes) - 1) else size
        struct.pack_into("=I", buf, off, nxt)
        struct.pack_into("=I", buf, off + 4, 0xDEADBEEF)  # not an offset: never read as one
        off += size
    return bytes(buf)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([64, 96, 128, 1504, 2048]),
                          st.integers(min_value=1, max_value=40)),
                min_size=1, max_size=8),
       st.booleans(), st.integers(min_value=-3, max_value=3))
def test_frame_offsets_is_the_chain_walk(runs: list[tuple[int, int]], zero_end: bool,
                                         num_delta: int) -> None:
    """Runs of equal frames (the vectorised stride), changes of length, a zero next at
    the end or not, and ``num`` below, at or above the frames there are."""
    sizes = [size for size, count in runs for _ in range(count)]
    first = 48
    block = _block(sizes, first, zero_end)
    num = max(0, len(sizes) + num_delta) if zero_end else min(len(sizes), len(sizes) + num_delta)
    want = _walk_chain(block, first, max(num, 0))
    got = frame_offsets(block, 0, first, max(num, 0), len(block))
    assert got.tolist() == want
    assert got.dtype == np.int64


def test_frame_offsets_of_a_uniform_block_reads_a_run_at_once() -> None:
    sizes = [256] * 5000
    block = _block(sizes, 48, True)
    got = frame_offsets(block, 0, 48, 5000, len(block))
    assert got.tolist() == [48 + 256 * k for k in range(5000)]
