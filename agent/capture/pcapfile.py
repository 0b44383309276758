"""Capture files -> bounded `Batch` chunks: classic pcap and pcapng, plain or gzipped.

`open_capture` sniffs the file by its magic bytes (never by its name), so a
file that is not a capture fails at once with `CaptureFormatError`; gzip
wrapping (1f 8b) is undone by streaming through the gzip module.  Iterating
the returned `CaptureReader` yields batches of at most ``chunk_packets``
packets whose data is about ``chunk_bytes`` of the file; memory does not grow
with file size.  Damage found while reading (a cut file, a corrupt record)
never raises: reading stops there, what came before is kept, and the reason is
appended to `CaptureReader.warnings`.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from types import TracebackType
from typing import Protocol

from agent.capture.batch import Batch
from agent.capture.filebuffer import ByteWindow, CaptureFormatError
from agent.capture.pcapclassic import MAGICS, ClassicPcapParser
from agent.capture.pcapng import SHB, PcapngParser, check_first_section

__all__ = ["CaptureFormatError", "CaptureReader", "open_capture"]

_GZIP_MAGIC = b"\x1f\x8b"
_PCAPNG_MAGIC = SHB.to_bytes(4, "big")


class _Parser(Protocol):
    packets_read: int

    def next_batch(self, max_packets: int) -> Batch | None: ...


class CaptureReader:
    """An open capture file; iterate it for `Batch`es.  A context manager.

    Attributes:
        warnings: why reading stopped early or skipped data, in order.
        packets: packets yielded so far.
    """

    def __init__(
        self,
        path: str,
        files: tuple[io.BufferedReader, io.BufferedIOBase],
        parser: _Parser,
        warnings: list[str],
        chunk_packets: int,
    ) -> None:
        self.path = path
        self.warnings = warnings
        self.packets = 0
        self._raw, self._stream = files  # the file on disk, the (decompressed) byte stream
        self._parser = parser
        self._chunk_packets = chunk_packets
        self._size = os.fstat(self._raw.fileno()).st_size
        self._closed = False

    def __iter__(self) -> Iterator[Batch]:
        while not self._closed:
            batch = self._parser.next_batch(self._chunk_packets)
            if batch is None:
                return
            self.packets += len(batch)
            yield batch

    def progress(self) -> tuple[int, int]:
        """(bytes of the file on disk consumed so far, file size on disk).

        For gzip files both count compressed bytes.
        """
        if self._closed:
            return self._size, self._size
        return min(self._raw.tell(), self._size), self._size

    def close(self) -> None:
        """Release the file; further iteration yields nothing."""
        if not self._closed:
            self._closed = True
            self._stream.close()
            self._raw.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_capture(
    path: str | os.PathLike[str],
    *,
    chunk_packets: int = 65536,
    chunk_bytes: int = 16 << 20,
) -> CaptureReader:
    """Open a pcap or pcapng file (optionally gzip-compressed) for batch reading.

    ``chunk_packets`` caps the packets per batch; ``chunk_bytes`` is the read
    size in bytes (of decompressed data), which bounds a batch's buffer (a
    single larger record still fits).  Raises `CaptureFormatError` if the file
    is not a capture; OS errors (missing file, permissions) propagate.
    """
    if chunk_packets < 1 or chunk_bytes < 1:
        raise ValueError("chunk_packets and chunk_bytes must be positive")
    name = os.fspath(path)
    raw = open(name, "rb")  # noqa: SIM115 - owned and closed by the reader
    try:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream: io.BufferedIOBase = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        size = None if compressed else os.fstat(raw.fileno()).st_size
        window = ByteWindow(stream, chunk_bytes, compressed=compressed, stream_size=size)
        warnings: list[str] = []
        parser = _make_parser(name, window, compressed, warnings)
        return CaptureReader(name, (raw, stream), parser, warnings, chunk_packets)
    except BaseException:
        raw.close()
        raise


def _make_parser(name: str, window: ByteWindow, compressed: bool, warnings: list[str]) -> _Parser:
    """Sniff the magic at the start of ``window`` and build the matching parser."""
    what = "gzip-compressed file" if compressed else "file"
    while window.available() < 4 and window.refill(4):
        pass
    if window.available() < 4:
        if window.stream_error:
            raise CaptureFormatError(f"{name}: {window.stream_error}")
        if window.available() == 0:
            raise CaptureFormatError(f"{name}: {what} is empty")
        raise CaptureFormatError(f"{name}: {what} is too short to be a capture")
    magic = bytes(window.buf[0:4])
    if magic in MAGICS:
        return ClassicPcapParser(window, warnings, name)
    if magic == _PCAPNG_MAGIC:
        check_first_section(window, name)
        return PcapngParser(window, warnings)
    raise CaptureFormatError(
        f"{name}: {what} is not a pcap or pcapng capture (starts with {magic.hex(' ')})"
    )
