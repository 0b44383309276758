"""Classic libpcap files (tcpdump.org pcap-savefile(5)): header and record walk.

File layout: a 24-byte file header (magic, version, thiszone, sigfigs,
snaplen, link type) then records of a 16-byte header (ts_sec, ts_frac,
incl_len, orig_len) followed by ``incl_len`` packet bytes.  The magic gives
byte order and timestamp unit (0xa1b2c3d4: µs, 0xa1b23c4d: ns); the
Kuznetsov "modified pcap" (0xa1b2cd34) has 24-byte record headers whose
first 16 bytes are the standard ones.

Hot path: the only per-packet Python work is reading ``incl_len`` to find
the next record.  Offsets collect in a list; the headers are then gathered
and decoded for the whole batch with numpy, and packet bytes are never
copied: batch offsets point past each record header inside the window.
"""

from __future__ import annotations

import array
import struct
from dataclasses import dataclass

import numpy as np

from agent.capture.batch import Batch, LinkType
from agent.capture.filebuffer import ByteWindow, CaptureFormatError, gather_rows
from agent.capture.points import cooked_points

FILE_HEADER_LEN = 24
MAX_CAPLEN = 256 * 1024  # bytes; larger than any real link MTU/snaplen in use (jumbo, TSO)
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class _Magic:
    endian: str  # struct/numpy byte-order character
    frac_per_s: int  # timestamp fraction units per second
    record_header_len: int  # bytes


MAGICS: dict[bytes, _Magic] = {
    b"\xd4\xc3\xb2\xa1": _Magic("<", 1_000_000, 16),
    b"\xa1\xb2\xc3\xd4": _Magic(">", 1_000_000, 16),
    b"\x4d\x3c\xb2\xa1": _Magic("<", 1_000_000_000, 16),
    b"\xa1\xb2\x3c\x4d": _Magic(">", 1_000_000_000, 16),
    b"\x34\xcd\xb2\xa1": _Magic("<", 1_000_000, 24),
    b"\xa1\xb2\xcd\x34": _Magic(">", 1_000_000, 24),
}

_HEADER = {e: struct.Struct(e + "4sHHiIII") for e in "<>"}
_U32 = {e: struct.Struct(e + "I") for e in "<>"}
# `_scan`: after _RUN_MIN records of one captured length the walk switches to
# strided numpy reads, _RUN_CHUNK records at first, growing 4x per chunk that
# holds only that length (so a run that ends costs at most one short chunk).
_RUN_MIN = 8
_RUN_CHUNK = 64
_RUN_CHUNK_MAX = 16384


class ClassicPcapParser:
    """Walks the records of a classic pcap file held in a `ByteWindow`.

    ``open`` has already checked the magic; the constructor reads the file
    header (raising `CaptureFormatError` when it is cut short).
    """

    def __init__(self, window: ByteWindow, warnings: list[str], name: str) -> None:
        self._win = window
        self._warnings = warnings
        while window.available() < FILE_HEADER_LEN and window.refill(FILE_HEADER_LEN):
            pass
        if window.available() < FILE_HEADER_LEN:
            raise CaptureFormatError(f"{name}: pcap file header truncated")
        magic = MAGICS[bytes(window.buf[0:4])]
        _, _, _, _, _, snaplen, network = _HEADER[magic.endian].unpack_from(window.buf, 0)
        window.pos = FILE_HEADER_LEN
        self._magic = magic
        # Upper bits of the link-type field carry FCS information (pcap-linktype(7)).
        self.linktype = network & 0xFFFF
        self.snaplen = snaplen
        # "Larger than the snaplen by a lot": writers sometimes exceed a small
        # snaplen slightly, so only twice the snaplen (and at least 64 KiB) is absurd.
        self._limit = min(MAX_CAPLEN, max(2 * snaplen, 65536))
        self._dtype = np.dtype(magic.endian + "u4")
        self._done = False
        self.packets_read = 0

    def next_batch(self, max_packets: int) -> Batch | None:
        """The next batch of at most ``max_packets`` packets, or None at the end."""
        win = self._win
        while not self._done:
            offsets, pos, need = self._scan(max_packets)
            if offsets:
                batch = self._build(offsets)
                win.pos = pos
                if len(batch):
                    self.packets_read += len(batch)
                    return batch
            elif need - self._magic.record_header_len > self._limit:
                self._corrupt(pos, need - self._magic.record_header_len)
            elif not win.refill(need):
                self._finish(need)
        return None

    def _scan(self, max_packets: int) -> tuple[list[int], int, int]:
        """Find whole records from ``win.pos``.

        Returns (record offsets, position after the last whole record, bytes
        needed from that position to see the next record).  Captured lengths
        are not checked here but in `_build`, to keep this loop minimal.

        Fixed-caplen shortcut: most captures (a snap length, or one frame size)
        repeat a record's captured length; from a record of length C the next
        records would start every ``hlen + C`` bytes, so once the walk has seen
        `_RUN_MIN` records of length C in a row, the captured lengths at the
        next places are read in one strided numpy view (a bounded chunk) and
        the run of them that equals C is taken at once (each is checked, so the
        offsets are the ones the record-by-record walk finds); the walk resumes
        after it.  Captures whose lengths vary (SIP among RTP) never pay for a
        numpy view on a run of one.
        """
        win = self._win
        buf, end, off = win.buf, win.end, win.pos
        unpack = _U32[self._magic.endian].unpack_from
        u32 = np.dtype(self._magic.endian + "u4")
        hlen = self._magic.record_header_len
        offsets: list[int] = []
        append = offsets.append
        left = max_packets
        prev, same, chunk = -1, 0, _RUN_CHUNK
        try:
            while left > 0:
                (caplen,) = unpack(buf, off + 8)
                stride = hlen + caplen
                nxt = off + stride
                if nxt > end:
                    return offsets, off, stride
                if caplen != prev:
                    prev, same = caplen, 0
                else:
                    same += 1
                    k = min(left, (end - off) // stride, chunk)
                    if same >= _RUN_MIN and k > 1:
                        lens = np.ndarray((k,), u32, buffer=buf, offset=off + 8, strides=(stride,))
                        differ = lens != caplen
                        if differ.any():
                            run, chunk, same = int(np.argmax(differ)), _RUN_CHUNK, 0
                        else:
                            run, chunk = k, min(4 * chunk, _RUN_CHUNK_MAX)
                        offsets.extend(range(off, off + run * stride, stride))
                        off += run * stride
                        left -= run
                        continue
                append(off)
                off = nxt
                left -= 1
        except struct.error:  # fewer than 12 bytes left: a partial record header
            return offsets, off, hlen
        return offsets, off, hlen

    def _build(self, offsets: list[int]) -> Batch:
        """Decode the record headers at ``offsets`` into a batch over the window.

        Stops reading (with a warning) at the first record whose captured
        length is absurd; the batch then holds the records before it.
        """
        data = self._win.array()
        offs = np.frombuffer(array.array("q", offsets), dtype=np.int64)
        fields = gather_rows(data, offs, 16).view(self._dtype)
        bad = fields[:, 2] > self._limit
        if bad.any():
            first = int(np.argmax(bad))
            self._corrupt(int(offs[first]), int(fields[first, 2]))
            offs, fields = offs[:first], fields[:first]
        n = offs.shape[0]
        caplen = fields[:, 2].astype(np.int32)
        # Batch promises wirelen >= caplen; some writers store orig_len 0.
        wirelen = np.clip(fields[:, 3], caplen, _INT32_MAX).astype(np.int32)
        ts = fields[:, 0].astype(np.float64) + fields[:, 1] / float(self._magic.frac_per_s)
        offset = offs + self._magic.record_header_len
        lt = np.full(n, self.linktype, dtype=np.uint16)
        return Batch(
            data=data,
            offset=offset,
            caplen=caplen,
            wirelen=wirelen,
            ts=ts,
            linktype=lt,
            point=cooked_points(data, offset, caplen, lt, np.zeros(n, np.uint16),
                                LinkType.LINUX_SLL, LinkType.LINUX_SLL2),
        )

    def _corrupt(self, pos: int, caplen: int) -> None:
        """Stop at the record at window index ``pos`` whose captured length is absurd."""
        self._warnings.append(
            f"corrupt record at byte offset {self._win.offset_of(pos)}: captured length "
            f"{caplen} exceeds {self._limit} bytes (snaplen {self.snaplen})"
        )
        self._done = True

    def _finish(self, need: int) -> None:
        """End of stream: report a record cut short, if any."""
        win = self._win
        self._done = True
        if win.stream_error:
            self._warnings.append(f"truncated: {win.stream_error}")
        have = win.available()
        if have:
            record = self.packets_read + 1
            self._warnings.append(
                f"truncated: file ends inside packet record {record} "
                f"({need - have} bytes missing); read {self.packets_read} packets"
            )
