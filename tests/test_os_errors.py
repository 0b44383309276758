"""OS errors at start-up name the setting, the address or interface, and what to do
(agent/os_errors.py, agent/daemon.py): no raw ``[Errno N]``."""

from __future__ import annotations

import errno
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from test_daemon import FakeSource

from agent.cli import main
from agent.config import CaptureConfig
from agent.os_errors import StartupError, capture_error, listen_error, reason

NEEDS_CAP = ('capturing on eth0 needs CAP_NET_RAW (run as root or give the unit '
             'AmbientCapabilities=CAP_NET_RAW), see README "Running the agent"')


@pytest.fixture(autouse=True)
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """`start_exporter` registers on prometheus_client's default registry: one per test."""
    monkeypatch.setattr("prometheus_client.REGISTRY", CollectorRegistry())


def test_reason_drops_errno_and_file_name() -> None:
    exc = FileNotFoundError(errno.ENOENT, "No such file or directory", "/x.pcap")
    assert str(exc).startswith("[Errno 2]")
    assert reason(exc) == "no such file or directory"


@pytest.mark.parametrize(("exc", "text"), [
    (PermissionError(errno.EPERM, "Operation not permitted"), NEEDS_CAP),
    (PermissionError(errno.EACCES, "Permission denied"), NEEDS_CAP),
    (OSError(errno.ENODEV, "bind to eth0: No such device"),
     "capture.interfaces: no such interface: eth0"),
    (OSError(errno.ENOMEM, "Cannot allocate memory"),
     "capturing on eth0: cannot allocate memory"),
])
def test_capture_errors(exc: OSError, text: str) -> None:
    err = capture_error(exc, ["eth0"])
    assert isinstance(err, OSError) and str(err) == text


def test_listen_errors() -> None:
    in_use = OSError(errno.EADDRINUSE, "Address already in use")
    assert str(listen_error(in_use, "exporter.listen", "127.0.0.1:9957")) == (
        "exporter.listen 127.0.0.1:9957: address already in use")
    denied = PermissionError(errno.EACCES, "Permission denied")
    assert str(listen_error(denied, "exporter.listen", "0.0.0.0:80")) == (
        "exporter.listen 0.0.0.0:80: permission denied "
        "(a port below 1024 needs CAP_NET_BIND_SERVICE)")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A TCP and a UDP socket on one loopback port, both bound (TCP listening)."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind(("127.0.0.1", port))
    except OSError:
        tcp.close()
        pytest.skip("the UDP twin of the port is taken")
    yield port
    tcp.close()
    udp.close()


def _config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"privacy: clear\nstate_dir: {tmp_path}\n"
                   f"call_log: {{target: {tmp_path}/calls.jsonl}}\n{extra}")
    return cfg


def test_run_with_the_exporter_address_in_use_names_address_and_setting(
        tmp_path: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = FakeSource([])
    monkeypatch.setattr("agent.daemon.open_source", lambda _capture: source)
    code = main(["run", "--config", str(_config(tmp_path)), "--listen",
                 f"127.0.0.1:{busy_port}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"voipprobe: error: exporter.listen 127.0.0.1:{busy_port}: "
                   "address already in use\n")
    assert source.closed


def test_run_without_cap_net_raw_says_what_to_grant(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def denied(_capture: CaptureConfig) -> FakeSource:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr("agent.daemon.open_ring", denied)
    code = main(["run", "--config", str(_config(tmp_path)), "-i", "eth0",
                 "--listen", "127.0.0.1:9"])
    assert code == 2
    assert capsys.readouterr().err == f"voipprobe: error: {NEEDS_CAP}\n"


class DeniedLater(FakeSource):
    """The ring of an interface absent at start, opened once it appears: refused."""

    def poll(self, timeout_s: float) -> list[object]:  # type: ignore[override]
        raise PermissionError(errno.EPERM, "Operation not permitted")


def test_a_capture_refused_after_start_says_what_to_grant(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = DeniedLater([])
    monkeypatch.setattr("agent.daemon.open_source", lambda _capture: source)
    monkeypatch.setattr("agent.daemon.sdnotify.watchdog_interval_s", lambda: None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        code = main(["run", "--config", str(_config(tmp_path)), "-i", "eth0",
                     "--listen", f"127.0.0.1:{port}"])
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"voipprobe: error: {NEEDS_CAP}"


def test_a_hep_listener_on_a_port_in_use_is_named(
        tmp_path: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    ring = FakeSource([])
    monkeypatch.setattr("agent.daemon.open_ring", lambda _capture: ring)
    extra = ("capture:\n  hep_listeners:\n    - {address: 127.0.0.1, port: " + str(busy_port)
             + ", transport: tcp, allowed_senders: [127.0.0.1/32]}\n")
    code = main(["run", "--config", str(_config(tmp_path, extra)), "--listen", "127.0.0.1:9"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"voipprobe: error: capture.hep_listeners[0] 127.0.0.1:{busy_port}: "
        "address already in use\n")
    assert ring.closed


def test_startup_error_is_an_oserror_with_its_message_only() -> None:
    err = StartupError("exporter.listen 127.0.0.1:1: address already in use")
    assert isinstance(err, OSError) and str(err) == err.args[0]
