"""pcapng files (IETF draft-ietf-opsawg-pcapng): sections, interfaces, packet blocks.

Theory of operation: a file is a sequence of blocks (type u32, total length
u32, body, total length again), grouped in sections that each start with a
Section Header Block (SHB).  The SHB's byte-order magic fixes the byte order
of the section, and Interface Description Blocks (IDB) define interfaces
numbered from 0 within it, each with its link type, timestamp resolution
(if_tsresol) and offset (if_tsoffset).  Packets come in Enhanced Packet
Blocks (EPB), Simple Packet Blocks (SPB: interface 0, no timestamp) or the
obsolete Packet Block (PB); every other block is skipped by its length.

Hot path: the per-block Python work is one unpack of (type, length).  A batch
never spans a section boundary, so one byte order and one interface table
apply to all its packets, and their headers are decoded with numpy at once.
"""

from __future__ import annotations

import array
import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from agent.capture.batch import Batch, LinkType
from agent.capture.filebuffer import ByteWindow, CaptureFormatError, gather_rows
from agent.capture.points import cooked_points, point_id

SHB = 0x0A0D0D0A  # a palindrome: recognisable before the byte order is known
IDB = 0x00000001
PB = 0x00000002
SPB = 0x00000003
EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D

MAX_BLOCK = 16 << 20  # bytes; larger block lengths are treated as corruption
MAX_CAPLEN = 256 * 1024  # bytes, as for classic pcap
_SHB_MIN = 28  # type, len, magic, major, minor, section length, trailing len
_IDB_MIN = 20
_EPB_MIN = 32  # the 28-byte EPB/PB header plus trailing length
_HEAD_LEN = 28  # bytes of block header gathered per packet block
_OPT_IFNAME = 2
_OPT_TSRESOL = 9
_OPT_TSOFFSET = 14
_INT32_MAX = 2**31 - 1
_PACKET_BLOCKS = frozenset((EPB, SPB, PB))

_BLOCK_HEAD = {e: struct.Struct(e + "II") for e in "<>"}
_IDB_BODY = {e: struct.Struct(e + "HHI") for e in "<>"}
_OPTION = {e: struct.Struct(e + "HH") for e in "<>"}
_I64 = {e: struct.Struct(e + "q") for e in "<>"}
_MAGIC = {e: struct.Struct(e + "I") for e in "<>"}


class _Columns(NamedTuple):
    """Per-packet-block columns of one batch (all int64 unless noted)."""

    start: npt.NDArray[np.int64]  # window index of the packet bytes
    caplen: npt.NDArray[np.int64]  # bytes
    wirelen: npt.NDArray[np.int64]  # bytes
    length: npt.NDArray[np.int64]  # block total length, bytes
    iface: npt.NDArray[np.int64]  # interface id within the section
    spb: npt.NDArray[np.bool_]  # Simple Packet Block (no timestamp)
    u32: npt.NDArray[np.int64]  # the raw 28-byte header as 7 words

    def take(self, sel: slice | npt.NDArray[np.bool_]) -> _Columns:
        return _Columns._make(a[sel] for a in self)


@dataclass(frozen=True, slots=True)
class _Interface:
    linktype: int
    units_per_s: int  # timestamp units per second (from if_tsresol)
    offset_s: int  # if_tsoffset, seconds added to every timestamp
    point: int = 0  # observation point: the if_name option, else "if<N>"


class _Stop(NamedTuple):
    """Why a scan of the window stopped."""

    need: int  # bytes wanted from ``pos`` to go on (0: none, batch is full)
    corrupt: str | None = None  # the record at ``pos`` is corrupt, and why
    section: bool = False  # an SHB starts at ``pos``


def section_byte_order(buf: bytes | bytearray, off: int) -> str | None:
    """Byte order ('<' or '>') of the SHB at ``off``, or None if its magic is wrong."""
    for endian in "<>":
        if _MAGIC[endian].unpack_from(buf, off + 8)[0] == BYTE_ORDER_MAGIC:
            return endian
    return None


def check_first_section(window: ByteWindow, name: str) -> None:
    """Raise `CaptureFormatError` unless the window starts with a whole, sane SHB."""
    while window.available() < 12 and window.refill(12):
        pass
    endian = section_byte_order(window.buf, 0) if window.available() >= 12 else None
    if endian is None:
        raise CaptureFormatError(f"{name}: pcapng section header truncated or bad byte order")
    (length,) = _MAGIC[endian].unpack_from(window.buf, 4)
    if length % 4 or not _SHB_MIN <= length <= MAX_BLOCK:
        raise CaptureFormatError(f"{name}: pcapng section header length {length} is invalid")
    while window.available() < length and window.refill(length):
        pass
    if window.available() < length:
        raise CaptureFormatError(f"{name}: pcapng section header truncated")


def _tsresol_units(value: int) -> int:
    """Units per second for an if_tsresol byte: 10**v, or 2**v with the high bit set."""
    return 1 << (value & 0x7F) if value & 0x80 else int(10**value)


class PcapngParser:
    """Walks the blocks of a pcapng file held in a `ByteWindow`.

    `check_first_section` must have accepted the window's first block.
    """

    def __init__(self, window: ByteWindow, warnings: list[str]) -> None:
        self._win = window
        self._warnings = warnings
        self._endian = "<"
        self._ifaces: list[_Interface] = []
        self._last_ts = 0.0  # for SPBs, which carry no timestamp
        self._orphans = 0  # packets naming an interface that was never described
        self._done = False
        self.packets_read = 0

    def next_batch(self, max_packets: int) -> Batch | None:
        """The next batch of at most ``max_packets`` packets, or None at the end."""
        win = self._win
        while not self._done:
            offsets, pos, stop = self._scan(max_packets)
            win.pos = pos  # blocks before ``pos`` (IDBs included) are consumed
            if offsets:
                batch = self._build(offsets)
                if batch is not None:
                    self.packets_read += len(batch)
                    return batch
                continue
            if stop.corrupt is not None:
                self._corrupt(pos, stop.corrupt)
            elif stop.section:
                self._start_section()
            elif not win.refill(stop.need):
                self._finish(stop.need)
        return None

    def _scan(self, max_packets: int) -> tuple[list[int], int, _Stop]:
        """Find whole packet blocks from ``win.pos``; apply IDBs on the way.

        Returns (packet block offsets, position after the last whole block,
        why the scan stopped).  The EPB path is kept to the fewest operations
        (constants in locals, no bounds test before the unpack); an SHB is
        recognised on the slow paths, since its length may be in a new byte
        order, and packet blocks over `MAX_BLOCK` are caught in `_build`.
        """
        win = self._win
        buf, end, off = win.buf, win.end, win.pos
        unpack = _BLOCK_HEAD[self._endian].unpack_from
        epb, shb = EPB, SHB
        offsets: list[int] = []
        append = offsets.append
        n = 0
        try:
            while n < max_packets:
                typ, length = unpack(buf, off)
                nxt = off + length
                if length < 12 or length & 3 or nxt > end:
                    return offsets, off, self._stopped_at(typ, length)
                if typ == epb:
                    append(off)
                    n += 1
                elif typ == shb:
                    return offsets, off, _Stop(need=0, section=True)
                elif typ == IDB or length > MAX_BLOCK:
                    if length > MAX_BLOCK:
                        return offsets, off, self._stopped_at(typ, length)
                    self._add_interface(buf, off, length)
                elif typ in _PACKET_BLOCKS:
                    append(off)
                    n += 1
                off = nxt
        except struct.error:  # fewer than 8 bytes left: a partial block header
            return offsets, off, _Stop(need=12)
        return offsets, off, _Stop(need=0)

    @staticmethod
    def _stopped_at(typ: int, length: int) -> _Stop:
        """Why a block of this type and length cannot be taken from the window."""
        if typ == SHB:
            return _Stop(need=0, section=True)
        if length & 3 or length < 12 or length > MAX_BLOCK:
            return _Stop(need=0, corrupt=f"block length {length} is invalid")
        return _Stop(need=length)

    def _add_interface(self, buf: bytearray, off: int, length: int) -> None:
        """Append the interface described by the IDB at ``off``."""
        e = self._endian
        if length < _IDB_MIN:
            self._warnings.append(
                f"interface block at byte offset {self._win.offset_of(off)} too short"
            )
            self._ifaces.append(_Interface(0, 1_000_000, 0, self._point(None)))
            return
        linktype, _, _ = _IDB_BODY[e].unpack_from(buf, off + 8)
        units, offset_s = 1_000_000, 0  # defaults: microseconds, no offset
        name: str | None = None
        pos, stop = off + 16, off + length - 4
        while pos + 4 <= stop:
            code, olen = _OPTION[e].unpack_from(buf, pos)
            value = pos + 4
            if code == 0 or value + olen > stop:
                break
            if code == _OPT_TSRESOL and olen >= 1:
                units = _tsresol_units(buf[value])
            elif code == _OPT_TSOFFSET and olen >= 8:
                (offset_s,) = _I64[e].unpack_from(buf, value)
            elif code == _OPT_IFNAME and olen:
                name = _point_safe(bytes(buf[value:value + min(olen, 64)]))
            pos = value + ((olen + 3) & ~3)
        self._ifaces.append(_Interface(linktype, units, offset_s, self._point(name)))

    def _point(self, name: str | None) -> int:
        """An interface's point: its name; unnamed, the first is the file's default
        point (as a classic pcap's) and the others ``if<N>``."""
        n = len(self._ifaces)
        return point_id(name or (f"if{n}" if n else ""))

    def _start_section(self) -> None:
        """Enter the section whose SHB starts at ``win.pos`` (it may change byte order)."""
        win = self._win
        if win.available() < 12 and win.refill(12):
            return  # rescan with more data
        pos = win.pos
        endian = section_byte_order(win.buf, pos) if win.available() >= 12 else None
        if endian is None:
            if win.available() < 12:
                self._finish(12)
            else:
                self._corrupt(pos, "section header with a bad byte-order magic")
            return
        (length,) = _MAGIC[endian].unpack_from(win.buf, pos + 4)
        if length % 4 or not _SHB_MIN <= length <= MAX_BLOCK:
            self._corrupt(pos, f"section header length {length} is invalid")
            return
        if win.available() < length:
            if not win.refill(length):
                self._finish(length)
            return
        self._endian = endian
        self._ifaces = []
        win.pos = pos + length

    def _build(self, offsets: list[int]) -> Batch | None:
        """Decode the packet blocks at ``offsets`` into a batch over the window.

        Stops reading (with a warning) at the first block whose lengths are
        inconsistent; the batch then holds the packets before it.
        """
        data = self._win.array()
        offs = np.frombuffer(array.array("q", offsets), dtype=np.int64)
        cols = self._decode(gather_rows(data, offs, _HEAD_LEN), offs)
        bad = (
            (cols.caplen > MAX_CAPLEN)
            | (cols.caplen < 0)
            | (cols.length > MAX_BLOCK)
            | (~cols.spb & ((cols.length < _EPB_MIN) | (cols.caplen > cols.length - 32)))
        )
        if bad.any():
            first = int(np.argmax(bad))
            caplen, length = int(cols.caplen[first]), int(cols.length[first])
            why = f"captured length {caplen} does not fit block length {length}"
            self._corrupt(int(offs[first]), why)
            cols = cols.take(slice(0, first))
        known = cols.iface < len(self._ifaces)
        if not known.all():
            self._orphans += int((~known).sum())
            cols = cols.take(known)
        if not len(cols.start):
            return None
        linktypes = np.array([i.linktype for i in self._ifaces], dtype=np.uint16)
        points = np.array([i.point for i in self._ifaces], dtype=np.uint16)
        caplens = cols.caplen.astype(np.int32)
        lt = linktypes[cols.iface]
        return Batch(
            data=data,
            offset=cols.start,
            caplen=caplens,
            wirelen=np.clip(cols.wirelen, cols.caplen, _INT32_MAX).astype(np.int32),
            ts=self._timestamps(cols.u32, cols.iface, cols.spb),
            linktype=lt,
            point=cooked_points(data, cols.start, caplens, lt, points[cols.iface],
                                LinkType.LINUX_SLL, LinkType.LINUX_SLL2),
        )

    def _decode(self, rows: npt.NDArray[np.uint8], offs: npt.NDArray[np.int64]) -> _Columns:
        """Per-packet columns from the 28-byte headers of EPBs, PBs and SPBs.

        EPB: type, len, iface u32, ts hi, ts lo, caplen, origlen, data.
        PB: the same with iface u16 + drops u16.  SPB: type, len, origlen,
        data; captured length is what the block holds.
        """
        u32 = rows.view(self._endian + "u4").astype(np.int64)
        typ, length = u32[:, 0], u32[:, 1]
        spb, pb = typ == SPB, typ == PB
        iface = u32[:, 2].copy()
        if pb.any():
            iface[pb] = rows[pb].view(self._endian + "u2")[:, 4]
        iface[spb] = 0
        return _Columns(
            start=offs + np.where(spb, 12, 28),
            caplen=np.where(spb, np.minimum(u32[:, 2], length - 16), u32[:, 5]),
            wirelen=np.where(spb, u32[:, 2], u32[:, 6]),
            length=length,
            iface=iface,
            spb=spb,
            u32=u32,
        )

    def _timestamps(
        self, u32: npt.NDArray[np.int64], iface: npt.NDArray[np.int64], spb: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.float64]:
        """Epoch seconds per packet; SPBs take the previous packet's timestamp."""
        n = iface.shape[0]
        raw = (u32[:, 3].astype(np.uint64) << np.uint64(32)) | u32[:, 4].astype(np.uint64)
        ts = np.zeros(n, dtype=np.float64)
        if len(self._ifaces) == 1:  # the common case: no per-interface selection
            ts = _to_seconds(raw, self._ifaces[0])
        else:
            used = np.bincount(iface[~spb], minlength=len(self._ifaces))
            for i in np.flatnonzero(used).tolist():
                sel = (iface == i) & ~spb
                ts[sel] = _to_seconds(raw[sel], self._ifaces[i])
        if spb.any():
            # Forward-fill from the last timestamped packet (this batch or earlier).
            src = np.where(spb, -1, np.arange(n))
            np.maximum.accumulate(src, out=src)
            ts = np.where(src >= 0, ts[np.maximum(src, 0)], self._last_ts)
        if n:
            self._last_ts = float(ts[-1])
        return ts

    def _corrupt(self, pos: int, why: str) -> None:
        offset = self._win.offset_of(pos)
        self._stop(f"corrupt record at byte offset {offset}: {why}")

    def _finish(self, need: int) -> None:
        """End of stream: report a block cut short, if any."""
        win = self._win
        if win.stream_error:
            self._warnings.append(f"truncated: {win.stream_error}")
        have = win.available()
        if not have:
            self._stop(None)
            return
        missing = max(need - have, 1)
        typ = _BLOCK_HEAD[self._endian].unpack_from(win.buf, win.pos)[0] if have >= 8 else None
        if typ in (EPB, SPB, PB):
            where = f"packet record {self.packets_read + 1}"
        else:
            kind = "unknown type" if typ is None else f"type {typ:#x}"
            where = f"block ({kind}) at byte offset {win.offset_of(win.pos)}"
        self._stop(
            f"truncated: file ends inside {where} ({missing} bytes missing); "
            f"read {self.packets_read} packets"
        )

    def _stop(self, warning: str | None) -> None:
        """Stop reading, with a final warning and the count of orphan packets."""
        self._done = True
        if warning:
            self._warnings.append(warning)
        if self._orphans:
            self._warnings.append(
                f"skipped {self._orphans} packets that name an undescribed interface"
            )


def _to_seconds(raw: npt.NDArray[np.uint64], iface: _Interface) -> npt.NDArray[np.float64]:
    """Timestamps in ``iface`` units -> epoch seconds, exact to float64 rounding."""
    units = iface.units_per_s
    if units >= 2**63:  # beyond what uint64 divmod can take; ~1e-19 s resolution anyway
        secs = raw.astype(np.float64) / float(units)
    else:
        whole, frac = np.divmod(raw, np.uint64(units))
        secs = whole.astype(np.float64) + frac.astype(np.float64) / float(units)
    return secs + float(iface.offset_s)


def _point_safe(raw: bytes) -> str | None:
    """An interface name from a file: printable, no NULs, at most 64 characters."""
    text = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    text = "".join(c for c in text if c.isprintable()).strip()
    return text or None
