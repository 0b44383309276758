"""The evidence sink: a call's kept packets (`agent.calls.evidence`) as a pcap file.

`EvidenceWriter.process` takes a `CallEnded` event and, when the call violated its SLA
(or for every call, ``evidence.every_call``) and the core kept packets of it, writes
them as a classic pcap (nanosecond timestamps, LINKTYPE_RAW) into the evidence
directory (``state_dir/evidence`` by default) and returns the event with the record
naming the file (``evidence``). The file is named by the call's reference as the call
log shows it (the keyed hash of the Call-ID, agent/export/privacy.py, or the Call-ID
itself in clear mode) so the log line leads to the file; characters outside
``[A-Za-z0-9._-]`` become ``_``.

The directory is bounded: ``max_files`` files and ``max_total_bytes`` bytes; the
oldest files go first (those found at start-up count too, oldest by modification
time). A file is written to a temporary name, mode 0600, then renamed: a reader never
sees half of one. A write that fails is counted (``write_errors``) and the record goes
on without evidence; capture never stops for it. The files hold SIP in clear (numbers,
URIs): they are evidence for the operator, kept as private as the state directory.
"""

from __future__ import annotations

import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from agent.calls.events import CallEnded
from agent.calls.evidence import LINKTYPE_RAW, EvidencePacket
from agent.config import Config, EvidenceConfig
from agent.export.privacy import Pseudonymiser, load_or_create_key

PCAP_NS_MAGIC = 0xA1B23C4D  # classic pcap, nanosecond timestamps
SNAPLEN = 0xFFFF
SUFFIX = ".pcap"
_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_STEM = 120


@dataclass(slots=True)
class EvidenceStats:
    written: int = 0
    bytes_written: int = 0
    write_errors: int = 0
    removed: int = 0  # rotated out (oldest first)
    files: int = 0  # in the directory now (gauges)
    bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in EvidenceStats.__dataclass_fields__}


def pcap_bytes(packets: Iterable[EvidencePacket]) -> bytes:
    """A classic pcap file (little-endian, ns) of raw-IP packets."""
    out = [_FILE_HEADER.pack(PCAP_NS_MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW)]
    for p in packets:
        ns = round(p.ts * 1e9)
        sec, frac = divmod(ns, 1_000_000_000)
        out.append(_RECORD_HEADER.pack(sec & 0xFFFFFFFF, frac, len(p.data),
                                       max(p.orig_len, len(p.data))))
        out.append(p.data)
    return b"".join(out)


def file_stem(reference: str) -> str:
    """A file-system-safe name for a call reference (``h:0123abcd`` -> ``h_0123abcd``)."""
    stem = _UNSAFE.sub("_", reference)[:MAX_STEM].lstrip(".")
    return stem or "call"


class EvidenceWriter:
    """Writes evidence pcaps into ``directory``, bounded (module docstring).

    ``reference`` turns a clear Call-ID into what the call log shows (the call log's
    `Pseudonymiser.call_id`)."""

    def __init__(self, config: EvidenceConfig, directory: Path,
                 reference: Callable[[str], str | None]) -> None:
        self.config = config
        self.directory = directory
        self.reference = reference
        self.stats = EvidenceStats()
        self._files: OrderedDict[str, int] = OrderedDict()  # name -> size, oldest first
        self._scanned = False

    def process(self, event: CallEnded) -> CallEnded:
        """The event, its record naming the file written for it (if any)."""
        ev, rec = event.evidence, event.record
        if ev is None or not ev.packets or rec.call_id is None:
            return event
        if not (self.config.every_call or rec.sla.verdict == "violated"):
            return event
        name = self._write(rec.call_id, ev.packets)
        if name is None:
            return event
        return replace(event, record=rec.model_copy(update={"evidence": name}),
                       evidence=None)

    def _write(self, call_id: str, packets: tuple[EvidencePacket, ...]) -> str | None:
        data = pcap_bytes(packets)
        try:
            self._scan()
            stem = file_stem(self.reference(call_id) or "call")
            name, n = stem + SUFFIX, 1
            while name in self._files or (self.directory / name).exists():
                n += 1
                name = f"{stem}-{n}{SUFFIX}"
            tmp = self.directory / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, self.directory / name)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
        except OSError:
            self.stats.write_errors += 1
            return None
        self._files[name] = len(data)
        self.stats.written += 1
        self.stats.bytes_written += len(data)
        self._rotate()
        return name

    def _scan(self) -> None:
        """Create the directory and learn the files already in it (once)."""
        if self._scanned:
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        found = []
        for p in self.directory.iterdir():
            if p.suffix == SUFFIX and p.is_file():
                st = p.stat()
                found.append((st.st_mtime, p.name, st.st_size))
        for _, name, size in sorted(found):
            self._files[name] = size
        self._scanned = True
        self._rotate()

    def _rotate(self) -> None:
        """Oldest files out until both caps hold (the newest always stays)."""
        while len(self._files) > 1 and (
                len(self._files) > self.config.max_files
                or sum(self._files.values()) > self.config.max_total_bytes):
            name, _ = self._files.popitem(last=False)
            try:
                (self.directory / name).unlink(missing_ok=True)
                self.stats.removed += 1
            except OSError:
                self.stats.write_errors += 1
        self.stats.files = len(self._files)
        self.stats.bytes = sum(self._files.values())


def evidence_directory(config: Config) -> Path:
    """The evidence directory: ``evidence.directory``, under ``state_dir`` if relative."""
    return config.state_dir / config.evidence.directory


def open_evidence(config: Config) -> EvidenceWriter | None:
    """The live agent's writer (None when evidence is off), naming files as the call log
    names calls. Raise `PrivacyError` for a key that cannot be read or created."""
    if not config.evidence.enabled:
        return None
    key = b"" if config.privacy == "clear" else load_or_create_key(config.state_dir)
    names = Pseudonymiser(config.privacy, key, config.addresses)
    return EvidenceWriter(config.evidence, evidence_directory(config), names.call_id)
