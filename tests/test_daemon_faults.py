"""Issue 12, item 5: the live loop survives faults. The real `Daemon` with its real call
log (`open_call_log`) runs 40 generated calls (tests/callgen.py) from a fake source, as
tests/test_daemon.py does, while:

- the call log's filesystem is full (a 256 KiB tmpfs, room for the 40 records of
  about 4 KB, that a filler file has filled): capture goes on, records wait and are
  written when space is back, none broken;
  with a small queue and no space ever, every call is written or counted as dropped;
- the call log file is removed while running: noticed before the next write, the
  path is recreated, no record goes to the deleted file after that;
- SIGHUP to a config whose state directory is read-only (a tmpfs remounted ro; root
  ignores permission bits), lies under a regular file, or holds a corrupt key, or whose
  call log directory is unusable: the reload is refused, the old config and call log
  go on, the reload metric is 0, stderr says why;
- a corrupt key at start-up: exit 2 with a message naming the file.

Mounting needs root: those tests skip (saying so) when not root, and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import callgen
import pytest
from prometheus_client import CollectorRegistry
from test_daemon import Clock, FakeSource, ended, serve_with_signals

from agent.capture.batch import Batch
from agent.cli import main
from agent.config import load_config
from agent.daemon import Daemon, open_call_log
from agent.export.calllog import CallLog
from agent.export.metrics import ProbeMetrics
from agent.export.privacy import Pseudonymiser, load_or_create_key

CALLS = 40


@pytest.fixture(scope="module")
def scenario() -> tuple[list[Batch], set[str]]:
    """40 overlapping calls as batches of 500 packets, and their Call-IDs."""
    packets, truth = callgen.many_calls(CALLS)
    batches = [Batch.from_packets([p.frame for p in packets[i:i + 500]],
                                  [p.ts_ns / 1e9 for p in packets[i:i + 500]])
               for i in range(0, len(packets), 500)]
    return batches, {c.call_id for c in truth.calls}


def packet_count(batches: list[Batch]) -> int:
    return sum(len(b) for b in batches)


def require_root(what: str) -> None:
    if os.geteuid() == 0:
        return
    reason = f"{what} needs root to mount a tmpfs (CI runs this as root)"
    if os.environ.get("CI"):
        pytest.fail(f"CI=true but not root: {reason}")
    pytest.skip(reason)


@contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (remounted read-only if asked)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                           "voipprobe-test", str(path)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        reason = f"cannot mount a tmpfs: {proc.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, leave_bytes: int) -> Path:
    """A file that takes all of ``directory``'s filesystem but ``leave_bytes``."""
    st = os.statvfs(directory)
    filler = directory / "filler"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - leave_bytes))
    return filler


def write_config(path: Path, tmp: Path, *, log: Path, state: Path,
                 privacy: str = "hash") -> Path:
    path.write_text(f"exporter:\n  site: lab\ncalls:\n  media_idle_timeout_s: 20\n"
                    f"privacy: {privacy}\nstate_dir: {state}\n"
                    f"call_log:\n  target: {log}\n")
    return path


def real_daemon(config_file: Path, source: FakeSource,
                call_log: CallLog | None = None) -> tuple[Daemon, CollectorRegistry]:
    """The daemon as `run` builds it (its call log from the config, reopened by reload),
    on a private registry and the fake clock."""
    config = load_config(config_file)
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry, site="lab", config=config)
    d = Daemon(config, source=source, metrics=metrics,
               call_log=call_log or open_call_log(config),
               load=lambda: load_config(config_file), open_call_log=open_call_log,
               clock=Clock())
    return d, registry


def run_out(d: Daemon, steps: int = 30) -> None:
    """Feed every queued batch, then idle steps: the calls end and linger out."""
    while isinstance(d.source, FakeSource) and d.source.batches:
        d.step()
    for _ in range(steps):
        d.step()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    v = registry.get_sample_value(name, {"site": "lab", **labels})
    assert v is not None, name
    return v


def reload_ok(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("voipprobe_config_last_reload_successful", {"site": "lab"})


def logged_ids(path: Path) -> list[str]:
    """The Call-IDs of the log's lines; every line must be whole JSON."""
    return [json.loads(line)["call_id"] for line in path.read_text().splitlines()]


# -- a full filesystem under the call log -------------------------------------------------


def test_full_filesystem_holds_records_and_writes_them_when_space_is_back(
    tmp_path: Path, scenario: tuple[list[Batch], set[str]],
    capsys: pytest.CaptureFixture[str]
) -> None:
    require_root("a full call log filesystem")
    batches, ids = scenario
    with tmpfs(tmp_path / "fs", "256k") as fs:
        log = fs / "calls.jsonl"
        cfg = write_config(tmp_path / "config.yaml", tmp_path, log=log, state=tmp_path / "st",
                           privacy="clear")
        d, registry = real_daemon(cfg, FakeSource(list(batches)))
        filler = fill(fs, leave_bytes=8192)
        run_out(d)
        # capture went on: every packet measured, every call ended and counted
        assert value(registry, "voipprobe_packets_total") == packet_count(batches)
        assert ended(registry) == CALLS
        written = logged_ids(log)  # only whole lines, however the space ran out
        pending = value(registry, "voipprobe_calllog_records_pending")
        assert 0 < len(written) < CALLS and len(written) + pending == CALLS
        assert value(registry, "voipprobe_calllog_records_written_total") == len(written)
        assert value(registry, "voipprobe_calllog_write_errors_total", errno="ENOSPC") >= 1
        assert value(registry, "voipprobe_calllog_records_dropped_total") == 0
        filler.unlink()  # the operator frees space
        for _ in range(3):
            d.step()  # a tick retries the queue
        assert value(registry, "voipprobe_calllog_records_pending") == 0
        d.shutdown()
        final = logged_ids(log)
    assert sorted(final) == sorted(ids) and final[:len(written)] == written
    err = capsys.readouterr().err
    assert err.count("cannot write (ENOSPC: No space left on device)") == 1
    assert err.count("writing again after") == 1
    assert f"{CALLS - len(written)} held record(s) written, 0 dropped" in err


def test_full_filesystem_to_the_end_counts_every_call_not_written(
    tmp_path: Path, scenario: tuple[list[Batch], set[str]],
    capsys: pytest.CaptureFixture[str]
) -> None:
    """No space ever comes back and the queue is small: each call is either a whole
    line in the file or counted as dropped (overflow, and what is left at exit)."""
    require_root("a full call log filesystem")
    batches, ids = scenario
    with tmpfs(tmp_path / "fs", "256k") as fs:
        path = fs / "calls.jsonl"
        cfg = write_config(tmp_path / "config.yaml", tmp_path, log=path,
                           state=tmp_path / "st", privacy="clear")
        fill(fs, leave_bytes=4096)
        d, registry = real_daemon(cfg, FakeSource(list(batches)),
                                  call_log=CallLog(path, "json", max_pending_bytes=8192))
        run_out(d)
        assert value(registry, "voipprobe_packets_total") == packet_count(batches)
        d.shutdown()
        written = logged_ids(path)
    st = d.call_log.stats()
    assert st.records_written == len(written) > 0
    assert st.records_dropped > 0 and st.records_pending == 0
    assert st.records_written + st.records_dropped == CALLS == ended(registry)
    assert set(written) <= ids
    err = capsys.readouterr().err
    assert err.count("cannot write (ENOSPC") == 1 and err.count("dropping the oldest") == 1
    assert err.count("still not writable at close are lost") == 1


# -- the call log removed while running ---------------------------------------------------


def test_call_log_removed_while_running_is_recreated(
    tmp_path: Path, scenario: tuple[list[Batch], set[str]],
    capsys: pytest.CaptureFixture[str]
) -> None:
    batches, ids = scenario
    path = tmp_path / "log" / "calls.jsonl"
    cfg = write_config(tmp_path / "config.yaml", tmp_path, log=path, state=tmp_path / "st",
                       privacy="clear")
    source = FakeSource(batches[: len(batches) // 2])
    d, registry = real_daemon(cfg, source)
    run_out(d, steps=0)
    with path.open() as deleted:  # keeps the removed file readable
        path.unlink()
        source.batches = batches[len(batches) // 2:]
        run_out(d)
        d.shutdown()
        before = [json.loads(line)["call_id"] for line in deleted.read().splitlines()]
    after = logged_ids(path)
    assert before and after, "records on both sides of the removal"
    assert sorted(before + after) == sorted(ids)
    assert value(registry, "voipprobe_calllog_reopens_total", reason="missing") == 1
    assert value(registry, "voipprobe_calllog_records_written_total") == CALLS
    err = capsys.readouterr().err
    assert err.count("the file was removed or renamed without a SIGHUP") == 1


# -- reloads to unusable paths ------------------------------------------------------------


@dataclass
class Running:
    """A daemon running on a config of a call log and a state directory in ``tmp``."""

    tmp: Path
    log: Path
    state: Path
    cfg: Path
    d: Daemon
    registry: CollectorRegistry

    def refuse(self, capsys: pytest.CaptureFixture[str], *, log: Path | None = None,
               state: Path | None = None) -> str:
        """SIGHUP's reload to the config with ``log``/``state`` instead: refused, the old
        config kept, metric 0; the stderr line that says why."""
        old, good = self.d.config, self.cfg.read_text()
        write_config(self.cfg, self.tmp, log=log or self.log, state=state or self.state)
        assert self.d.reload() is False
        assert self.d.config is old and self.d.engine.config.config is old
        assert reload_ok(self.registry) == 0
        self.cfg.write_text(good)
        (line,) = [x for x in capsys.readouterr().err.splitlines() if "reload" in x]
        assert line.startswith("voipprobe: reload refused, keeping the running configuration: ")
        return line


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    log, state = tmp_path / "calls.jsonl", tmp_path / "state"
    cfg = write_config(tmp_path / "config.yaml", tmp_path, log=log, state=state)
    d, registry = real_daemon(cfg, FakeSource([]))
    yield Running(tmp_path, log, state, cfg, d, registry)
    d.shutdown()


def test_sighup_to_a_read_only_state_directory_is_refused_and_capture_goes_on(
    tmp_path: Path, scenario: tuple[list[Batch], set[str]],
    capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the real signal path: SIGHUP mid-capture, then SIGTERM."""
    require_root("a read-only state directory")
    batches, ids = scenario
    log, state = tmp_path / "calls.jsonl", tmp_path / "state"
    cfg = write_config(tmp_path / "config.yaml", tmp_path, log=log, state=state)
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as ro:
        bad = write_config(tmp_path / "bad.yaml", tmp_path, log=log, state=ro).read_text()
        source = FakeSource(batches[: len(batches) // 2])
        d, registry = real_daemon(cfg, source)
        polls = [0]

        def on_empty() -> None:  # the source ran dry: act, as an operator would
            polls[0] += 1
            if polls[0] == 1:  # mid-capture, calls up: SIGHUP to the unusable config
                cfg.write_text(bad)
                os.kill(os.getpid(), signal.SIGHUP)
            elif polls[0] == 3:  # after the reload: the rest of the calls
                source.batches = batches[len(batches) // 2:]
            elif polls[0] == 40:
                os.kill(os.getpid(), signal.SIGTERM)

        source.on_empty = on_empty
        serve_with_signals(d)
    assert reload_ok(registry) == 0
    assert d.config.state_dir == state
    assert value(registry, "voipprobe_packets_total") == packet_count(batches)
    key = load_or_create_key(state)
    tokens = {str(Pseudonymiser("hash", key).call_id(i)) for i in ids}
    assert sorted(logged_ids(log)) == sorted(tokens), "every call, under the old key"
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "reload" in x]
    assert line == (f"voipprobe: reload refused, keeping the running configuration: "
                    f"{ro}/privacy.key: cannot create the privacy key (state_dir {ro}): "
                    "Read-only file system")


def test_reload_to_a_state_directory_under_a_file_is_refused(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    (running.tmp / "file").write_text("x")
    bad_state = running.tmp / "file" / "state"
    line = running.refuse(capsys, state=bad_state)
    assert line.endswith(f"{bad_state}/privacy.key: cannot create the privacy key (state_dir "
                         f"{bad_state}): Not a directory")
    assert running.d.reload() is True  # the good file again
    assert reload_ok(running.registry) == 1


def test_reload_to_a_corrupt_key_is_refused(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    other = running.tmp / "other"
    other.mkdir()
    (other / "privacy.key").write_bytes(b"12345")
    line = running.refuse(capsys, state=other)
    assert line.endswith(f"{other}/privacy.key: corrupt privacy key: 5 bytes, expected 32. "
                         "Restore it from a backup, or remove it to have a new one created "
                         "(pseudonyms then change)")


def test_reload_to_an_unusable_call_log_directory_is_refused(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    (running.tmp / "file").write_text("x")
    line = running.refuse(capsys, log=running.tmp / "file" / "calls.jsonl")
    assert line.endswith(f"call log {running.tmp}/file/calls.jsonl: cannot create its "
                         f"directory {running.tmp}/file: File exists")
    assert running.d.call_log.stats().reopens == {}  # the running log was not touched


def test_reload_to_a_read_only_call_log_directory_is_refused(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    require_root("a read-only call log directory")
    with tmpfs(running.tmp / "ro", "64k", read_only=True) as ro:
        line = running.refuse(capsys, log=ro / "calls.jsonl")
    assert line.endswith(f"call log {ro}/calls.jsonl: cannot open it: Read-only file system")


# -- a corrupt key at start-up ------------------------------------------------------------


def test_a_corrupt_key_at_start_up_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before capture starts: the interface does not even exist."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "privacy.key").write_bytes(b"12345")
    cfg = write_config(tmp_path / "config.yaml", tmp_path, log=tmp_path / "calls.jsonl",
                       state=state)
    cfg.write_text(cfg.read_text() + "capture:\n  interfaces: [vp-absent0]\n")
    assert main(["run", "--config", str(cfg), "--listen", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err == (f"voipprobe: error: {state}/privacy.key: corrupt privacy key: 5 bytes, "
                   "expected 32. Restore it from a backup, or remove it to have a new one "
                   "created (pseudonyms then change)\n")


def test_an_unusable_call_log_at_start_up_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    log = tmp_path / "file" / "calls.jsonl"
    cfg = write_config(tmp_path / "config.yaml", tmp_path, log=log, state=tmp_path / "st")
    cfg.write_text(cfg.read_text() + "capture:\n  interfaces: [vp-absent0]\n")
    assert main(["run", "--config", str(cfg), "--listen", "127.0.0.1:9"]) == 2
    assert capsys.readouterr().err == (f"voipprobe: error: call log {log}: cannot create its "
                                       f"directory {tmp_path}/file: File exists\n")
