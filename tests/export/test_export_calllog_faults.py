"""Call log write faults, injected: ENOSPC/EIO from write(2), partial writes, a failing
ftruncate, a path that cannot be reopened. The log never raises, never leaves a broken
line before a whole one, holds records in a bounded queue, counts what it drops, and
says once when a fault starts and once when it ends (agent/export/calllog.py)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from exportbuild import record
from prometheus_client import CollectorRegistry

from agent.calls.record import CallRecord
from agent.export import calllog
from agent.export.calllog import CallLog
from agent.export.metrics import ProbeMetrics


class FaultyOs:
    """Stands in for the ``os`` module inside agent.export.calllog: ``write`` on the
    log's file follows a script (``ok`` writes, ``ENOSPC``/``EIO`` raise, an int writes
    that many bytes and returns), ``ftruncate`` raises EIO when ``truncate_fails``."""

    def __init__(self, real: ModuleType) -> None:
        self._real = real
        self.script: list[str | int] = []
        self.truncate_fails = False
        self.writes = 0  # attempts on any fd, scripted or not

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def write(self, fd: int, data: memoryview) -> int:
        self.writes += 1
        step = self.script.pop(0) if self.script else "ok"
        if step == "ok":
            return int(self._real.write(fd, data))
        if isinstance(step, int):
            return int(self._real.write(fd, data[:step]))
        code = getattr(errno, step)
        raise OSError(code, os.strerror(code))

    def ftruncate(self, fd: int, size: int) -> None:
        if self.truncate_fails:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self._real.ftruncate(fd, size)


@pytest.fixture
def fake_os(monkeypatch: pytest.MonkeyPatch) -> FaultyOs:
    fake = FaultyOs(os)
    monkeypatch.setattr(calllog, "os", fake)
    return fake


@pytest.fixture(scope="module")
def base() -> CallRecord:
    return record()


def recs(base: CallRecord, n: int) -> list[CallRecord]:
    return [base.model_copy(update={"call_id": f"call-{i}@pbx.example"}) for i in range(n)]


def call_ids(path: Path) -> list[str]:
    return [json.loads(x)["call_id"] for x in path.read_text().splitlines()]


class Said:
    """What the call log logged."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str) -> None:
        self.lines.append(text)

    def count(self, part: str) -> int:
        return sum(part in line for line in self.lines)


def test_enospc_holds_records_and_retry_writes_them_in_order(
    tmp_path: Path, fake_os: FaultyOs, base: CallRecord
) -> None:
    path, said = tmp_path / "calls.log", Said()
    log = CallLog(path, "json", log=said)
    r = recs(base, 4)
    log.write(r[0])
    fake_os.script = ["ENOSPC"]
    log.write(r[1])  # fails: held
    attempts = fake_os.writes
    log.write(r[2])
    log.write(r[3])
    assert fake_os.writes == attempts, "during a fault only retry() tries again"
    st = log.stats()
    assert (st.records_written, st.records_pending, st.records_dropped) == (1, 3, 0)
    assert st.write_errors == {"ENOSPC": 1}
    assert call_ids(path) == ["call-0@pbx.example"]
    fake_os.script = ["ENOSPC"]
    log.retry()  # still full
    assert log.stats().write_errors == {"ENOSPC": 2} and log.stats().records_pending == 3
    log.retry()  # space again
    assert call_ids(path) == [f"call-{i}@pbx.example" for i in range(4)]
    st = log.stats()
    assert (st.records_written, st.records_pending, st.pending_bytes) == (4, 0, 0)
    assert said.count("cannot write (ENOSPC: No space left on device)") == 1
    assert said.count("writing again after") == 1
    assert said.count("3 held record(s) written, 0 dropped") == 1
    assert len(said.lines) == 2
    log.close()


def test_a_partial_write_is_cut_off_again(tmp_path: Path, fake_os: FaultyOs,
                                          base: CallRecord) -> None:
    path = tmp_path / "calls.log"
    log = CallLog(path, "json", log=Said())
    r = recs(base, 3)
    log.write(r[0])
    before = path.read_bytes()
    fake_os.script = [100, "ENOSPC"]  # the kernel takes 100 bytes, then the disk is full
    log.write(r[1])
    assert path.read_bytes() == before, "the 100 bytes of the broken line are gone"
    log.retry()
    log.write(r[2])
    assert call_ids(path) == [f"call-{i}@pbx.example" for i in range(3)]
    log.close()


def test_a_fragment_that_cannot_be_cut_stays_a_line_of_its_own(
    tmp_path: Path, fake_os: FaultyOs, base: CallRecord
) -> None:
    """ftruncate fails too (EIO): the next line starts on a fresh line, so only the
    fragment itself is broken and every line after it is whole."""
    path = tmp_path / "calls.log"
    log = CallLog(path, "json", log=Said())
    r = recs(base, 3)
    log.write(r[0])
    fake_os.script, fake_os.truncate_fails = [100, "EIO"], True
    log.write(r[1])
    log.retry()
    log.write(r[2])
    log.close()
    first, fragment, *rest = path.read_text().splitlines()
    assert json.loads(first)["call_id"] == "call-0@pbx.example"
    assert len(fragment) == 100 and log.format(r[1]).startswith(fragment)
    assert [json.loads(x)["call_id"] for x in rest] == ["call-1@pbx.example",
                                                         "call-2@pbx.example"]
    assert log.stats().write_errors == {"EIO": 1}


def test_a_file_left_without_a_final_newline_gets_one_before_the_next_line(
    tmp_path: Path, base: CallRecord
) -> None:
    path = tmp_path / "calls.log"
    path.write_text('{"kind":"call","call_id":"old"}\n{"kind":"ca')  # an older crash
    log = CallLog(path, "json")
    log.write(recs(base, 1)[0])
    log.close()
    lines = path.read_text().splitlines()
    assert lines[1] == '{"kind":"ca' and json.loads(lines[2])["call_id"] == "call-0@pbx.example"


def test_the_queue_is_bounded_drops_the_oldest_and_counts_them(
    tmp_path: Path, fake_os: FaultyOs, base: CallRecord
) -> None:
    path, said = tmp_path / "calls.log", Said()
    r = recs(base, 10)
    size = len(CallLog(tmp_path / "probe.log").format(r[0])) + 1
    log = CallLog(path, "json", max_pending_bytes=3 * size, log=said)
    fake_os.script = ["EIO"]
    for x in r:
        log.write(x)
    st = log.stats()
    assert (st.records_pending, st.records_dropped, st.records_written) == (3, 7, 0)
    assert st.pending_bytes == 3 * size
    assert said.count("dropping the oldest") == 1
    log.retry()
    assert call_ids(path) == [f"call-{i}@pbx.example" for i in (7, 8, 9)]
    assert said.count("3 held record(s) written, 7 dropped") == 1
    log.close()


def test_close_counts_what_still_cannot_be_written(
    tmp_path: Path, fake_os: FaultyOs, base: CallRecord
) -> None:
    said = Said()
    log = CallLog(tmp_path / "calls.log", "json", log=said)
    fake_os.script = ["ENOSPC", "ENOSPC"]
    for x in recs(base, 2):
        log.write(x)
    log.close()  # one last try: still full
    st = log.stats()
    assert (st.records_written, st.records_dropped, st.records_pending) == (0, 2, 0)
    assert said.count("2 record(s) still not writable at close are lost") == 1


def test_a_path_that_cannot_be_reopened_is_retried(tmp_path: Path, base: CallRecord) -> None:
    """The log's directory is removed and a file takes its name: reopening fails (a
    write fault, retried), and succeeds once the directory is back."""
    logdir = tmp_path / "log"
    path, said = logdir / "calls.log", Said()
    log = CallLog(path, "json", log=said)
    r = recs(base, 3)
    log.write(r[0])
    path.unlink()
    logdir.rmdir()
    logdir.write_text("not a directory")
    log.write(r[1])
    st = log.stats()
    assert st.records_pending == 1 and st.reopens == {"missing": 1}
    assert st.write_errors == {"EEXIST": 1}  # mkdir of the log directory
    logdir.unlink()
    log.retry()
    log.write(r[2])
    assert call_ids(path) == ["call-1@pbx.example", "call-2@pbx.example"]
    assert said.count("the file was removed or renamed without a SIGHUP") == 1
    assert said.count(f"cannot write (EEXIST: cannot create its directory {logdir}: File "
                      "exists)") == 1
    assert said.count("writing again") == 1
    log.close()


def test_take_over_writes_the_old_queue_first_and_keeps_counting(
    tmp_path: Path, fake_os: FaultyOs, base: CallRecord
) -> None:
    """A reload that moves the call log: what the old file would not take is written to
    the new one, before the new records; the counts go on."""
    old = CallLog(tmp_path / "old.log", "json", log=Said())
    r = recs(base, 4)
    old.write(r[0])
    fake_os.script = ["ENOSPC", "ENOSPC"]  # the write, and take_over's last try
    old.write(r[1])
    old.write(r[2])
    new = CallLog(tmp_path / "new.log", "json", log=Said())
    new.take_over(old)
    new.write(r[3])
    assert call_ids(tmp_path / "old.log") == ["call-0@pbx.example"]
    assert call_ids(tmp_path / "new.log") == [f"call-{i}@pbx.example" for i in (1, 2, 3)]
    st = new.stats()
    assert (st.records_written, st.records_pending, st.records_dropped) == (4, 0, 0)
    assert st.write_errors == {"ENOSPC": 2}
    assert old.stats().records_pending == 0
    new.close()


def test_write_fault_metrics(tmp_path: Path, fake_os: FaultyOs, base: CallRecord) -> None:
    log = CallLog(tmp_path / "calls.log", "json", log=Said())
    fake_os.script = ["EIO", "ENOMEM"]  # ENOMEM: not a log fault we name: "other"
    log.write(recs(base, 1)[0])
    log.retry()
    registry = CollectorRegistry()
    m = ProbeMetrics(registry, site="lab")
    assert registry.get_sample_value("voipprobe_calllog_records_pending", {"site": "lab"}) == 0
    m.update_call_log(log.stats())

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"voipprobe_calllog_{name}", {"site": "lab", **labels})

    assert value("write_errors_total", errno="EIO") == 1
    assert value("write_errors_total", errno="other") == 1
    assert value("write_errors_total", errno="ENOSPC") == 0
    assert value("records_pending") == 1 and value("records_written_total") == 0
    log.retry()
    m.update_call_log(log.stats())
    assert value("records_pending") == 0 and value("records_written_total") == 1
    assert value("records_dropped_total") == 0
    assert value("reopens_total", reason="missing") == 0
    log.close()


def test_stdout_closed_by_its_reader_is_a_write_fault_not_an_exit(tmp_path: Path) -> None:
    """``call_log.target: -`` and the reader of stdout goes away (EPIPE): the writer
    goes on, holding the records, instead of dying of BrokenPipeError."""
    script = (
        "import sys, time\n"
        "from exportbuild import record\n"
        "from agent.export.calllog import CallLog\n"
        "time.sleep(0.5)  # the reader has closed its end by now\n"
        "log = CallLog('-', 'json')\n"
        "for _ in range(3):\n"
        "    log.write(record())\n"
        "st = log.stats()\n"
        "print('stats', st.records_written, st.records_pending, dict(st.write_errors),\n"
        "      file=sys.stderr, flush=True)\n"
    )
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parent)])}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stats 0 3 {'EPIPE': 1}" in err
    assert err.count("cannot write (EPIPE: Broken pipe)") == 1
