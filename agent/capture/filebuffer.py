"""Incremental reading of a capture file into a sliding window of whole-record buffers.

Theory of operation: a capture file is read in windows of about ``read_size``
bytes.  A format parser walks the whole records inside the current window and
hands out `Batch`es whose ``data`` is a read-only view of that window, so the
packet bytes are copied exactly once (file -> window) and never per packet.
When the parser reaches a record that does not fit, `ByteWindow.refill` starts
a *new* window holding the unparsed tail plus the next read; the old window is
never written again, so batches already handed out stay valid.  Memory is
therefore bounded by one window plus the largest record a parser accepts,
whatever the file size.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import numpy.typing as npt


class CaptureFormatError(Exception):
    """The file is not a capture this reader understands (the message says why)."""


class ByteWindow:
    """A window of consecutive bytes of a (possibly decompressed) capture stream.

    ``buf[pos:end]`` are the bytes not yet consumed; ``base`` is the stream
    offset (bytes from the start of the decompressed stream) of ``buf[0]``.
    """

    def __init__(
        self,
        stream: io.BufferedIOBase,
        read_size: int,
        *,
        compressed: bool,
        stream_size: int | None = None,
    ) -> None:
        self._stream = stream
        # Known length of an uncompressed stream: a garbage length field near
        # the end of a small file then never makes us allocate a big window.
        self._stream_size = stream_size
        self._read_size = max(1, read_size)
        self._compressed = compressed
        self.buf = bytearray()
        self.base = 0
        self.pos = 0
        self.end = 0
        self.eof = False
        #: Why the stream ended early (a broken gzip member), or None.
        self.stream_error: str | None = None

    def available(self) -> int:
        """Bytes in the window not yet consumed."""
        return self.end - self.pos

    def offset_of(self, index: int) -> int:
        """Stream offset (bytes) of ``buf[index]``, for messages."""
        return self.base + index

    def refill(self, need: int) -> bool:
        """Start a new window with the unconsumed tail plus at least one more read.

        ``need`` is the number of unconsumed bytes the parser wants to see;
        the new window is at least that large.  Returns False when the
        stream had nothing more to give (end of file).
        """
        if self.eof:
            return False
        tail = self.end - self.pos
        size = max(self._read_size, need, tail + 1)
        if self._stream_size is not None:
            left = self._stream_size - (self.base + self.end)
            size = min(size, tail + max(left, 1))
        unread = memoryview(self.buf)[self.pos : self.end]
        if self._compressed:
            new = bytearray(unread)
            got = self._inflate_onto(new, size - tail)
        else:
            new = bytearray(size)
            new[:tail] = unread
            got = self._read_into(memoryview(new)[tail:])
        self.base += self.pos
        self.buf, self.pos, self.end = new, 0, tail + got
        return got > 0

    def _read_into(self, view: memoryview) -> int:
        """Fill ``view`` as far as the file allows; return the byte count."""
        filled = 0
        while filled < len(view):
            got = self._stream.readinto(view[filled:])
            if not got:
                self.eof = True
                break
            filled += got
        return filled

    def _inflate_onto(self, window: bytearray, want: int) -> int:
        """Append up to ``want`` inflated bytes to ``window``; return the byte count.

        The inflated length is not known ahead, so the window grows by what comes
        rather than being a zeroed ``read_size`` buffer: a small file's analysis
        then does not clear and fault in 16 MiB per window (~10 ms each, start-up)."""
        got = 0
        while got < want:
            # read1 inflates piecewise: a gzip error then loses only the last
            # piece, where read would drop everything inflated in this call.
            try:
                piece = self._stream.read1(want - got)
            except (OSError, EOFError, zlib.error) as exc:
                # A cut or damaged gzip member: keep what inflated cleanly.
                self.stream_error = f"gzip stream broken ({exc})"
                piece = b""
            if not piece:
                self.eof = True
                break
            window += piece
            got += len(piece)
        return got

    def array(self) -> npt.NDArray[np.uint8]:
        """The valid part of the window as a read-only uint8 array (no copy).

        Read-only because batches from several calls share it.
        """
        arr = np.frombuffer(self.buf, dtype=np.uint8, count=self.end)
        arr.flags.writeable = False
        return arr


def gather_rows(
    data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64], width: int
) -> npt.NDArray[np.uint8]:
    """Copy ``width`` bytes at each offset into a C-contiguous (n, width) array.

    Bytes past the end of ``data`` read as zero: callers read fixed-size
    headers from records that may be shorter (a pcapng SPB at the end of a
    window) and ignore the columns that do not apply to them.
    """
    size = data.shape[0]
    if size < 2 * width:  # tiny window: pad it whole, cheaply
        padded = np.zeros(2 * width, dtype=np.uint8)
        padded[:size] = data
        data, size = padded, 2 * width
    starts = size - width + 1
    # Overlapping items of `width` bytes starting at every byte: fancy
    # indexing this 1-D view copies one fixed-size item per offset, several
    # times faster than gathering (n, width) byte indices.
    items = np.ndarray(shape=(starts,), dtype=np.dtype(f"V{width}"), buffer=data, strides=(1,))
    picked = items[np.minimum(offsets, starts - 1)]
    rows: npt.NDArray[np.uint8] = picked.view(np.uint8).reshape(offsets.shape[0], width)
    over = offsets >= starts
    if over.any():  # records within `width` of the end: redo them zero-padded
        tail = np.zeros(2 * width, dtype=np.uint8)
        tail[:width] = data[size - width :]
        idx = (offsets[over] - (size - width))[:, None] + np.arange(width)
        rows[over] = tail[idx]
    return rows
