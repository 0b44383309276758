"""The live loop driven by a fake source over the bundled sample; sd_notify on a real socket."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent import sdnotify
from agent.calls.record import CallRecord
from agent.capture.batch import Batch
from agent.capture.pcapfile import open_capture
from agent.cli import bundled_sample
from agent.config import Config, ConfigError, load_config
from agent.daemon import (
    MAX_PIECE_ROWS,
    MIN_PIECE_ROWS,
    PIECE_BUDGET_S,
    Daemon,
    PacketClock,
    piece_rows,
)
from agent.export.calllog import CallLog, CallLogStats
from agent.export.metrics import ProbeMetrics

# -- sd_notify ----------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out


def test_notify_sends_one_datagram(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": path})
    assert sock.recv(100) == b"READY=1"


def test_notify_abstract_namespace() -> None:
    name = f"voipprobe-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert sdnotify.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"STOPPING=1"


def test_notify_is_a_noop_without_systemd(tmp_path: Path) -> None:
    assert not sdnotify.notify("READY=1", {})
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")})


def test_watchdog_interval() -> None:
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert sdnotify.watchdog_interval_s({}) is None
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "x"}) is None
    other = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert sdnotify.watchdog_interval_s(other) is None


def test_watchdog_kicks_at_most_every_half_interval() -> None:
    sent: list[str] = []
    t = [0.0]
    wd = sdnotify.Watchdog(10.0, sent.append, lambda: t[0])
    for step in range(21):  # 0..10 s in 0.5 s steps
        t[0] = step * 0.5
        wd.kick()
    assert sent == ["WATCHDOG=1"] * 3  # at 0, 5 and 10 s
    assert not sdnotify.Watchdog(None, sent.append).kick()


# -- packet time --------------------------------------------------------------------------


def test_packet_clock_extrapolates_only_without_packets() -> None:
    c = PacketClock()
    assert c.now(5.0) is None
    c.saw(1000.0, mono=5.0)
    assert c.now(5.0) == 1000.0
    assert c.now(12.5) == 1007.5  # 7.5 s without packets
    c.saw(999.0, mono=13.0)  # a late packet does not move packet time back
    assert c.now(13.0) == 1000.0


# -- the loop -----------------------------------------------------------------------------


def sample_batches() -> list[Batch]:
    with open_capture(bundled_sample(), chunk_packets=100) as reader:
        return list(reader)


class FakeSource:
    """Yields one batch per poll, then nothing; ``on_empty`` runs when it runs dry."""

    def __init__(self, batches: list[Batch], on_empty: Any = None) -> None:
        self.batches = list(batches)
        self.closed = False
        self.on_empty = on_empty
        self.polls = 0

    def poll(self, timeout_s: float) -> list[Batch]:
        self.polls += 1
        if self.batches:
            return [self.batches.pop(0)]
        if self.on_empty is not None:
            self.on_empty()
        return []

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.closed = True


class MemoryLog:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self.reopened = 0
        self.closed = False

    def public(self, record: CallRecord) -> dict[str, Any]:
        return record.to_json()

    def write(self, record: CallRecord, public: object = None) -> None:
        self.records.append(record)

    def retry(self) -> None:
        pass

    def reopen(self) -> None:
        self.reopened += 1

    def take_over(self, old: object) -> None:
        assert isinstance(old, MemoryLog)
        self.records[:0] = old.records
        old.close()

    def stats(self) -> CallLogStats:
        return CallLogStats(records_written=len(self.records))

    def close(self) -> None:
        self.closed = True


class Clock:
    """Monotonic time that advances 0.5 s per reading."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.5
        return self.t


def make_daemon(source: FakeSource, config_file: Path, **kw: Any) -> tuple[Daemon, Any]:
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry, site="lab")
    log = kw.pop("call_log", MemoryLog())
    d = Daemon(load_config(config_file), source=source, metrics=metrics, call_log=log,
               load=lambda: load_config(config_file), clock=Clock(), **kw)
    return d, registry


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    f = tmp_path / "config.yaml"
    f.write_text("exporter:\n  site: lab\ncalls:\n  media_idle_timeout_s: 20\n")
    return f


def ended(registry: CollectorRegistry) -> float:
    total = 0.0
    for fam in registry.collect():
        if fam.name == "voipprobe_calls_ended":
            total += sum(s.value for s in fam.samples if s.name.endswith("_total"))
    return total


def test_call_log_gets_one_json_record_per_call_and_metrics_count_it(
    tmp_path: Path, config_file: Path
) -> None:
    log_path = tmp_path / "calls.jsonl"
    source = FakeSource(sample_batches())
    d, registry = make_daemon(source, config_file, call_log=CallLog(str(log_path), "json"))
    for _ in range(len(source.batches)):
        d.step()
    # No more packets: packet time advances with the (fake) monotonic clock, so the
    # ended call leaves its linger period without any new packet arriving.
    for _ in range(30):
        d.step()
    lines = log_path.read_text().splitlines()
    assert len(lines) == 1, "the call ended on its BYE before shutdown"
    rec = json.loads(lines[0])
    assert rec["call_id"] == "5f1c7e2a9b@198.18.7.10" and rec["end_reason"] == "normal"
    assert ended(registry) == 1
    assert registry.get_sample_value("voipprobe_packets_total", {"site": "lab"}) == 1994
    d.shutdown()
    assert len(log_path.read_text().splitlines()) == 1 and source.closed


def test_mirror_sequence_gaps_reach_the_metrics(config_file: Path) -> None:
    """ERSPAN II copies with GRE sequence gaps, through the loop: the metrics say how many
    the exporter sent that never arrived, by point kind."""
    from scapy.contrib.erspan import ERSPAN_II
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import GRE, Ether
    from scapy.packet import Raw

    inner = Ether() / IP(src="198.18.7.1", dst="198.18.8.2") / UDP(sport=4000, dport=5000) \
        / Raw(b"\x80\x00" + bytes(30))
    frames = [bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2")
                    / GRE(proto=0x88BE, seqnum_present=1, sequence_number=n)
                    / ERSPAN_II(session_id=4) / inner) for n in (1, 2, 5, 6, 10, 3)]
    source = FakeSource([Batch.from_packets(frames[:3], [1.0, 1.02, 1.04]),
                         Batch.from_packets(frames[3:], [1.06, 1.08, 1.1])])
    d, registry = make_daemon(source, config_file)
    for _ in range(4):
        d.step()
    point = {"site": "lab", "point": "erspan"}
    assert registry.get_sample_value("voipprobe_mirror_sequence_lost_packets_total",
                                     point) == 2 + 3
    assert registry.get_sample_value("voipprobe_mirror_sequence_resets_total", point) == 1


def test_shutdown_mid_call_writes_the_record_with_end_reason_shutdown(config_file: Path) -> None:
    batches = sample_batches()
    sent: list[str] = []
    source = FakeSource(batches[: len(batches) // 2])
    d, registry = make_daemon(source, config_file, notify=sent.append)
    for _ in range(len(source.batches)):
        d.step()
    assert d.call_log.records == []  # type: ignore[attr-defined]
    d.shutdown()
    log = d.call_log
    assert isinstance(log, MemoryLog)
    assert [r.end_reason for r in log.records] == ["shutdown"]
    assert log.closed and source.closed and sent == ["STOPPING=1"]
    assert ended(registry) == 1


def test_reload_with_an_invalid_config_keeps_the_old_one(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sent: list[str] = []
    d, registry = make_daemon(FakeSource([]), config_file, notify=sent.append)
    old = d.config
    config_file.write_text("calls:\n  media_idle_timeout_s: -5\n")
    assert d.reload() is False
    assert d.config is old and d.engine.config.config is old
    assert registry.get_sample_value("voipprobe_config_last_reload_successful",
                                     {"site": "lab"}) == 0
    assert "calls.media_idle_timeout_s" in capsys.readouterr().err
    assert sent == []  # nothing to tell systemd: the service did not change


def test_reload_with_a_valid_config_applies_it_and_keeps_running_calls(config_file: Path) -> None:
    batches = sample_batches()
    sent: list[str] = []
    source = FakeSource(batches[:5])
    d, registry = make_daemon(source, config_file, notify=sent.append)
    for _ in range(5):
        d.step()
    calls_before = len(d.engine.calls)
    config_file.write_text("calls:\n  media_idle_timeout_s: 45\n  setup_timeout_s: 60\n")
    assert d.reload() is True
    assert registry.get_sample_value("voipprobe_config_last_reload_successful",
                                     {"site": "lab"}) == 1
    assert d.engine.config.config.calls.media_idle_timeout_s == 45
    assert d.engine.streams.config.idle_timeout_s == 45 and d.engine.sip.setup_timeout_s == 60
    assert len(d.engine.calls) == calls_before == 1
    assert [m.split("\n")[0] for m in sent] == ["RELOADING=1", "READY=1"]
    log = d.call_log
    assert isinstance(log, MemoryLog) and log.reopened == 1


def test_serve_notifies_ready_and_stopping_on_a_real_socket(
    config_file: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path}
    holder: list[Daemon] = []
    source = FakeSource(sample_batches(), on_empty=lambda: holder[0].request_stop())
    d, _ = make_daemon(source, config_file,
                       notify=lambda s: sdnotify.notify(s, env), watchdog_s=20.0)
    holder.append(d)
    d.serve()
    msgs = received(sock)
    assert msgs[0] == "READY=1" and msgs[-1] == "STOPPING=1"
    assert "WATCHDOG=1" in msgs
    log = d.call_log
    assert isinstance(log, MemoryLog) and len(log.records) == 1


def serve_with_signals(d: Daemon) -> None:
    """``d.serve()`` with the daemon's signal handlers, the test process's restored after."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        d.install_signal_handlers()
        d.serve()
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_signals_set_flags_the_loop_acts_on(config_file: Path) -> None:
    polls: list[int] = []

    def on_empty() -> None:
        polls.append(1)
        if len(polls) == 1:
            os.kill(os.getpid(), signal.SIGHUP)
        elif len(polls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    batches = sample_batches()
    source = FakeSource(batches[: len(batches) // 2], on_empty=on_empty)
    d, registry = make_daemon(source, config_file)
    serve_with_signals(d)
    log = d.call_log
    assert isinstance(log, MemoryLog)
    assert log.reopened == 1  # SIGHUP: reloaded, call log reopened
    assert [r.end_reason for r in log.records] == ["shutdown"]  # SIGTERM: flushed
    assert registry.get_sample_value("voipprobe_config_last_reload_successful",
                                     {"site": "lab"}) == 1


def test_a_missing_config_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        load_config("/nonexistent/voipprobe.yaml")
    assert Config().call_log.target == "-"


def test_pieces_grow_to_the_time_budget_and_shrink_under_a_costly_flood() -> None:
    # cheap packets (5 µs): the piece doubles per step up to what fits the budget
    rows, sizes = 4096, []
    for _ in range(8):
        rows = piece_rows(rows, rows * 5e-6, rows)
        sizes.append(rows)
    assert sizes[:3] == [8192, 16384, 20000] and sizes[-1] == round(PIECE_BUDGET_S / 5e-6)
    # an INVITE flood (250 µs a packet): halves per step down to the budget's 400 rows,
    # held at the floor
    rows = 20000
    for _ in range(8):
        rows = piece_rows(rows, rows * 250e-6, rows)
    assert rows == max(MIN_PIECE_ROWS, round(PIECE_BUDGET_S / 250e-6))
    # a piece that took no measurable time, or an empty one
    assert piece_rows(40000, 0.0, 40000) == MAX_PIECE_ROWS
    assert piece_rows(0, 0.0, 1234) == 1234
