"""The call log: one line per ended call, JSON or a human-readable one-liner.

``target`` is ``"-"`` (standard output: under systemd every line becomes one
journald entry) or a file path opened in append mode. The daemon calls
`CallLog.reopen` on SIGHUP, so logrotate's rename-then-HUP works; a file
removed or renamed without a HUP is noticed too (below).

Theory of operation (faults). A write fault must never stop capture nor leave
a broken line, so `write` never raises an `OSError`:

- every record becomes one line (bytes) in a bounded in-memory queue, and the
  queue is written out in order, one whole line per ``write(2)`` loop;
- a write that fails (ENOSPC, EDQUOT, EIO, ...) leaves the line, and all later
  ones, queued; `retry` (the daemon calls it about once a second) tries again.
  A line the kernel took only part of is cut off again (``ftruncate`` to where
  it began); if even that fails, the next line starts with a newline, so the
  fragment stays a line of its own and every later line is whole. A file that
  does not end in a newline when opened (an older crash) is handled the same;
- the queue holds at most `MAX_PENDING_BYTES` of lines; past that the oldest
  are dropped and counted (`CallLogStats.records_dropped`), as are the lines
  still queued when the log closes at exit;
- before writing, the path is compared with the open file (``stat`` against
  ``fstat``: device and inode): a file removed, or renamed with another put in
  its place, is reopened at the path, so records never go to a deleted inode;
- one fault episode, from the first failure to the moment the queue is empty
  again, is logged twice: when it starts and when it ends (with what was
  written and dropped), never once per record. Every failed attempt is counted
  by errno name (`CallLogStats.write_errors`).

Formats:

- ``json``: ``CallRecord.to_json()`` after pseudonymisation, one object a line;
- ``line``: time, call, parties, outcome, codec, per direction MOS/loss/jitter,
  the SLA verdict and the thresholds crossed as ``quantity: value (min|max limit)``,
  e.g. ::

    2023-11-14T22:13:20.000Z call=h:1c2d3e4f5a6b sip:h:..@example.org -> sip:h:..@example.org
    peer=other 200 normal dur=3.2s setup=0.050s codec=PCMA media=both a_to_b[mos=4.38
    loss=0.00% jitter=0.0ms dscp=100%] b_to_a[...] sla=violated[jitter_ms: 41.27 (max 30),
    mos_cq: 3.41 (min 3.6)] profile=gold

  with ``one_way=a_to_b`` after ``media=a_to_b`` for a judged one-way call, and
  ``capture=lossy`` after it when the probe lost packets during the call.

Audio never reaches a record, so none can reach the log (DESIGN.md rule 7).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from agent.calls.record import CallRecord
from agent.export.privacy import Pseudonymiser
from agent.sla.policy import violation_reason

CallLogFormat = Literal["json", "line"]
STDOUT = "-"
# Lines held while the call log cannot be written: a record is 0.7-3 KB, so this is
# a few thousand calls (minutes of a busy gateway) in a bounded piece of memory.
MAX_PENDING_BYTES = 8 * 1024 * 1024
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
REOPEN_REASONS = ("signal", "missing", "replaced")


@dataclass(frozen=True, slots=True)
class CallLogStats:
    """What the call log did since the agent started (totals, survive a reload)."""

    records_written: int = 0
    records_dropped: int = 0  # never written: queue overflow, or still queued at exit
    records_pending: int = 0  # queued now, waiting for the file to take them
    pending_bytes: int = 0
    write_errors: Mapping[str, int] = field(default_factory=dict)  # errno name -> attempts
    reopens: Mapping[str, int] = field(default_factory=dict)  # REOPEN_REASONS -> count


@dataclass(slots=True)
class _Counts:
    written: int = 0
    dropped: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    reopens: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Episode:
    """A write fault, from its first failed write until the queue is empty again."""

    since: float
    errno_name: str
    written_before: int
    dropped: int = 0


class CallLogError(OSError):
    """The call log file cannot be opened: ``call log PATH: why``."""

    def __str__(self) -> str:
        return f"call log {self.filename}: {self.strerror}"


def errno_name(exc: OSError) -> str:
    """``ENOSPC`` for an OSError with that errno; ``other`` without one."""
    return errno.errorcode.get(exc.errno, "other") if exc.errno else "other"


def _stderr(text: str) -> None:
    print(f"voipprobe: {text}", file=sys.stderr, flush=True)


def _ends_in_newline(path: Path, size: int) -> bool:
    """Whether the file's last byte is a newline (unreadable: assume it is)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        return os.pread(fd, 1, size - 1) == b"\n"
    except OSError:
        return True
    finally:
        os.close(fd)


class CallLog:
    """Writes call records to stdout or a file; thread-safe, never raises on a write
    fault (see the theory of operation), `reopen` for logrotate.

    Opening the file at construction may raise `CallLogError` (directory not creatable,
    permission denied): the agent refuses to start, or a reload is refused."""

    def __init__(self, target: str | Path = STDOUT, fmt: CallLogFormat = "json",
                 pseudonymiser: Pseudonymiser | None = None, *,
                 max_pending_bytes: int = MAX_PENDING_BYTES,
                 log: Callable[[str], None] = _stderr,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if fmt not in ("json", "line"):
            raise ValueError(f"call log format must be 'json' or 'line', got {fmt!r}")
        self.target = str(target)
        self.fmt: CallLogFormat = fmt
        self.pseudonymiser = pseudonymiser or Pseudonymiser("clear")
        self.max_pending_bytes = max_pending_bytes
        self._log = log
        self._clock = clock
        # RLock: a caller may hold it across write() and reopen() in one thread.
        self._lock = threading.RLock()
        self._fd: int | None = None  # the open file (None: stdout, or a reopen failed)
        self._inode: tuple[int, int] | None = None  # (st_dev, st_ino) of self._fd
        self._torn = False  # the file ends inside a line: start the next one on a fresh line
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._counts = _Counts()
        self._episode: _Episode | None = None
        self._open()

    # -- the file ---------------------------------------------------------------------

    @property
    def _is_file(self) -> bool:
        return self.target != STDOUT

    def _open(self) -> None:
        if not self._is_file:
            return
        path = Path(self.target)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CallLogError(exc.errno, f"cannot create its directory {path.parent}: "
                               f"{exc.strerror}", self.target) from None
        try:
            fd = os.open(path, _OPEN_FLAGS, 0o666)
        except OSError as exc:
            raise CallLogError(exc.errno, f"cannot open it: {exc.strerror}",
                               self.target) from None
        st = os.fstat(fd)
        self._fd, self._inode = fd, (st.st_dev, st.st_ino)
        self._torn = st.st_size > 0 and not _ends_in_newline(path, st.st_size)

    def _close_fd(self) -> None:
        fd, self._fd, self._inode = self._fd, None, None
        if fd is not None:
            with contextlib.suppress(OSError):  # EIO on close: nothing left to do about it
                os.close(fd)

    def _check_file(self) -> None:
        """Reopen at the path when the open file is no longer there (removed, or renamed
        with another file in its place); raise `OSError` when that fails."""
        if not self._is_file:
            return
        if self._fd is None:  # a reopen failed: try again
            self._open()
            return
        try:
            st = os.stat(self.target)
        except (FileNotFoundError, NotADirectoryError):
            reason, what = "missing", "was removed or renamed"
        except OSError:
            return  # cannot tell (e.g. EACCES on the directory): keep the open file
        else:
            if (st.st_dev, st.st_ino) == self._inode:
                return
            reason, what = "replaced", "was replaced by another file"
        self._counts.reopens[reason] += 1
        self._log(f"call log {self.target}: the file {what} without a SIGHUP; "
                  "reopening the path")
        self._close_fd()
        self._open()

    def _raw_write(self, data: memoryview) -> int:
        if self._fd is not None:
            return os.write(self._fd, data)
        out = sys.stdout
        try:
            fd = out.fileno()
        except (AttributeError, ValueError, io.UnsupportedOperation):
            out.write(bytes(data).decode("utf-8"))  # a captured stdout (tests)
            out.flush()
            return len(data)
        out.flush()  # nothing of ours is buffered there, but keep the order if anything is
        return os.write(fd, data)

    def _write_line(self, line: bytes) -> None:
        """Write one line whole, or raise `OSError` leaving no fragment behind it."""
        data = b"\n" + line if self._torn else line
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                n = self._raw_write(view[done:])
                if n <= 0:
                    raise OSError(errno.EIO, "write(2) accepted nothing")
                done += n
        except OSError:
            if done:
                self._cut_fragment(data, done)
            raise
        self._torn = False

    def _cut_fragment(self, data: bytes, done: int) -> None:
        """After a partial write of ``data[:done]``: cut it off the end of the file (we
        opened it O_APPEND, so our bytes are the last ones), else remember that the file
        now ends inside a line."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - done)
                return
            except OSError:
                pass
        self._torn = not data[:done].endswith(b"\n")

    # -- the queue --------------------------------------------------------------------

    def _enqueue(self, line: bytes) -> None:
        self._pending.append(line)
        self._pending_bytes += len(line)
        dropped = 0
        while self._pending_bytes > self.max_pending_bytes and len(self._pending) > 1:
            self._pending_bytes -= len(self._pending.popleft())
            dropped += 1
        if not dropped:
            return
        self._counts.dropped += dropped
        ep = self._episode
        if ep is not None:
            if not ep.dropped:
                self._log(f"call log {self.target}: {self.max_pending_bytes // 1024} KiB of "
                          "records held and still not writable: dropping the oldest from now "
                          "on (voipprobe_calllog_records_dropped_total)")
            ep.dropped += dropped

    def _flush(self) -> None:
        """Write the queue out in order; on a failure keep the rest and start (or go on
        with) the fault episode."""
        try:
            self._check_file()
            while self._pending:
                line = self._pending[0]
                self._write_line(line)
                self._pending.popleft()
                self._pending_bytes -= len(line)
                self._counts.written += 1
        except OSError as exc:
            self._failed(exc)
            return
        ep, self._episode = self._episode, None
        if ep is not None:
            self._log(f"call log {self.target}: writing again after "
                      f"{self._clock() - ep.since:.0f} s of {ep.errno_name}: "
                      f"{self._counts.written - ep.written_before} held record(s) written, "
                      f"{ep.dropped} dropped")

    def _failed(self, exc: OSError) -> None:
        name = errno_name(exc)
        self._counts.errors[name] += 1
        if self._episode is not None:
            return
        self._episode = _Episode(self._clock(), name, self._counts.written)
        self._log(f"call log {self.target}: cannot write ({name}: {exc.strerror or exc}); "
                  f"holding up to {self.max_pending_bytes // 1024} KiB of records in memory "
                  "and retrying; capture goes on")

    # -- the sink ---------------------------------------------------------------------

    def public(self, record: CallRecord) -> dict[str, Any]:
        """``record`` as the log shows it (pseudonymised as ``privacy`` says): what
        the other sinks that show a call (``/calls``, exemplars) show too."""
        return self.pseudonymiser.apply(record.to_json())

    def format(self, record: CallRecord, public: dict[str, Any] | None = None) -> str:
        """The line (without newline) that `write` would write for ``record``
        (``public``: its `public` form, when already made)."""
        data = self.public(record) if public is None else public
        if self.fmt == "json":
            return json.dumps(data, separators=(",", ":"))
        return format_line(data)

    def write(self, record: CallRecord, public: dict[str, Any] | None = None) -> None:
        """Append one record as one line; during a fault it waits in the queue."""
        line = (self.format(record, public) + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            self._enqueue(line)
            if self._episode is None:  # during a fault, `retry` paces the attempts
                self._flush()

    def retry(self) -> None:
        """Try the queued records again (the daemon calls this about once a second)."""
        with self._lock:
            if self._pending:
                self._flush()

    def reopen(self) -> None:
        """Close and reopen the file at the configured path (after logrotate renamed it),
        then write what is queued. A failure to reopen is a write fault, retried."""
        with self._lock:
            if not self._is_file:
                return
            self._counts.reopens["signal"] += 1
            self._close_fd()
            try:
                self._open()
            except OSError as exc:
                self._failed(exc)
                return
            if self._pending:
                self._flush()

    def take_over(self, old: object) -> None:
        """Continue ``old`` (the call log a reload replaces): its counts go on, and the
        records it could not write are written here, first. Closes ``old``."""
        if old is self:
            return
        if not isinstance(old, CallLog):
            raise TypeError(f"a CallLog takes over a CallLog, not {type(old).__name__}")
        old.retry()
        with old._lock:
            lines, old._pending = list(old._pending), deque()
            old._pending_bytes = 0
            counts, episode = old._counts, old._episode
        old.close()
        with self._lock:
            counts.written += self._counts.written
            counts.dropped += self._counts.dropped
            counts.errors.update(self._counts.errors)
            counts.reopens.update(self._counts.reopens)
            self._counts = counts
            mine, self._pending, self._pending_bytes = list(self._pending), deque(), 0
            for line in (*lines, *mine):
                self._enqueue(line)
            self._episode = self._episode or episode
            if self._pending:
                self._flush()

    def stats(self) -> CallLogStats:
        with self._lock:
            c = self._counts
            return CallLogStats(c.written, c.dropped, len(self._pending), self._pending_bytes,
                                dict(c.errors), dict(c.reopens))

    def close(self) -> None:
        """Write what is queued (one last try), count what still is not as dropped, and
        close the file."""
        with self._lock:
            if self._pending:
                self._flush()
            if self._pending:
                n = len(self._pending)
                self._counts.dropped += n
                self._pending.clear()
                self._pending_bytes = 0
                self._log(f"call log {self.target}: {n} record(s) still not writable at "
                          "close are lost (voipprobe_calllog_records_dropped_total)")
            if self._is_file:
                self._close_fd()
            else:
                with contextlib.suppress(OSError):
                    sys.stdout.flush()


def _num(value: Any, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    if isinstance(value, int | float):
        return f"{value * scale:{fmt}}{unit}"
    return "-"


def _time(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def format_line(rec: dict[str, Any]) -> str:
    """The human-readable one-liner of a (pseudonymised) record's JSON."""
    start = rec.get("invite_ts") if rec.get("invite_ts") is not None else rec.get("end_ts")
    parts = [
        _time(start),
        f"call={rec.get('call_id') or '-'}",
        f"{rec.get('from') or '-'} -> {rec.get('to') or '-'}",
        f"peer={rec.get('peer')}",
        str(rec.get("final_status") or "-"),
        str(rec.get("end_reason")),
        f"dur={_num(rec.get('duration_s'), '.1f', unit='s')}",
        f"setup={_num(rec.get('setup_delay_s'), '.3f', unit='s')}",
        f"codec={rec.get('codec') or '-'}",
        f"media={rec.get('media_seen') or '-'}",
    ]
    if rec.get("one_way_media"):
        parts.append(f"one_way={rec['one_way_media']}")
    if rec.get("capture_lossy"):
        parts.append("capture=lossy")
    if rec.get("rtt_ms") is not None:
        parts.append(f"rtt={_num(rec.get('rtt_ms'), '.0f', unit='ms')}")
    for d in rec.get("directions", []):
        stream, quality = d.get("stream", {}), d.get("quality") or {}
        media = d.get("media", "audio")
        kind = "" if media == "audio" else f"{media} "
        parts.append(
            f"{d.get('direction')}[{kind}mos={_num(quality.get('mos_cq'), '.2f')}"
            f" loss={_num(stream.get('loss_ratio'), '.2f', 100.0, '%')}"
            f" jitter={_num(stream.get('jitter_ms'), '.1f', unit='ms')}"
            f" dscp={_num(d.get('dscp_compliance_ratio'), '.0f', 100.0, '%')}"
            f"{_endpoint(d.get('endpoint_report'))}]"
        )
    sla = rec.get("sla", {})
    # The call's violations hold every direction's (agent/calls/judge.py).
    crossed = sorted({v.get("reason") or violation_reason(v["threshold"], v["value"], v["limit"])
                      for v in sla.get("violations", [])})
    verdict = str(sla.get("verdict", "-"))
    parts.append(f"sla={verdict}" + (f"[{', '.join(crossed)}]" if crossed else ""))
    parts.append(f"profile={sla.get('profile', '-')}")
    if rec.get("evidence"):
        parts.append(f"evidence={rec['evidence']}")
    return " ".join(parts)


def _endpoint(rep: dict[str, Any] | None) -> str:
    """`` endpoint_mos=3.90`` when the endpoint's RFC 6035 report covered the direction."""
    if not rep:
        return ""
    return f" endpoint_mos={_num(rep.get('mos_cq'), '.2f')}"
