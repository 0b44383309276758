"""The start-up line of `voipprobe run` (agent/startup.py): what is captured, where
metrics are served and whether over TLS, where records go."""

from __future__ import annotations

import os
import signal
import socket
import ssl
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry
from test_daemon import FakeSource

from agent.cli import main
from agent.config import config_from_mapping
from agent.export.basicauth import BasicAuth
from agent.export.webconfig import PLAIN, WebSettings
from agent.startup import startup_line

LISTENERS = {
    "interfaces": ["eth0", "eth1"], "promisc": True,
    "hep_listeners": [{"address": "0.0.0.0", "port": 9060, "allowed_senders": ["10.0.0.0/8"]},
                      {"address": "::", "port": 9061, "transport": "tcp",
                       "allowed_senders": ["10.0.0.0/8"]}],
    "tzsp_listeners": [{"allowed_senders": ["198.18.9.1/32"]}],
    "vxlan_listeners": [{"address": "192.0.2.1", "allowed_senders": ["198.18.9.1/32"]}],
}


@pytest.fixture(autouse=True)
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """`start_exporter` registers on prometheus_client's default registry: one per test."""
    monkeypatch.setattr("prometheus_client.REGISTRY", CollectorRegistry())


def test_plain_defaults() -> None:
    cfg = config_from_mapping({})
    assert startup_line(cfg, PLAIN, None) == (
        "started: capturing on every interface (any); metrics on "
        "http://127.0.0.1:9957/metrics (plain HTTP, no authentication); "
        "call records (json) to stdout; config built-in defaults")


def test_interfaces_listeners_and_tls() -> None:
    cfg = config_from_mapping({
        "capture": LISTENERS, "exporter": {"listen": "[2001:db8::1]:9957"},
        "call_log": {"target": "/var/log/voipprobe/calls.log", "format": "line"}})
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.verify_mode = ssl.CERT_REQUIRED
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    web = WebSettings(source="web.yml", ssl_context=ctx, auth=BasicAuth({"prom": hashed}))
    assert startup_line(cfg, web, "/etc/voipprobe/config.yaml", lambda _n: True) == (
        "started: capturing on eth0, eth1 (promiscuous); HEP on 0.0.0.0:9060/udp; "
        "HEP on [::]:9061/tcp; TZSP on 0.0.0.0:37008/udp; VXLAN on 192.0.2.1:4789/udp; "
        "metrics on https://[2001:db8::1]:9957/metrics "
        "(TLS, client certificates, basic auth); "
        "call records (line) to /var/log/voipprobe/calls.log; "
        "config /etc/voipprobe/config.yaml")


def test_an_absent_interface_is_said_so() -> None:
    cfg = config_from_mapping({"capture": {"interfaces": ["eth0", "eth9"]}})
    line = startup_line(cfg, PLAIN, None, lambda name: name == "eth0")
    assert line.startswith("started: capturing on eth0, eth9 (absent, waiting for it); ")
    # the real check: lo exists on every Linux host, this name nowhere
    real = config_from_mapping({"capture": {"interfaces": ["lo", "vp-absent0"]}})
    assert startup_line(real, PLAIN, None).startswith(
        "started: capturing on lo, vp-absent0 (absent, waiting for it); ")


def test_tls_without_client_certificates() -> None:
    web = WebSettings(ssl_context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    line = startup_line(config_from_mapping({}), web, None)
    assert "metrics on https://127.0.0.1:9957/metrics (TLS);" in line


def test_run_logs_the_line_once_it_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = FakeSource([], on_empty=lambda: os.kill(os.getpid(), signal.SIGTERM))
    monkeypatch.setattr("agent.daemon.open_source", lambda _capture: source)
    monkeypatch.setattr("agent.daemon.sdnotify.watchdog_interval_s", lambda: None)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"privacy: clear\nstate_dir: {tmp_path}\n"
                   f"call_log: {{target: {tmp_path}/calls.jsonl}}\n")
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        code = main(["run", "--config", str(cfg), "-i", "vp-absent7",
                     "--listen", f"127.0.0.1:{port}"])
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert code == 0
    started = [ln for ln in capsys.readouterr().err.splitlines() if "started:" in ln]
    assert started == [
        "voipprobe: started: capturing on vp-absent7 (absent, waiting for it); "
        f"metrics on http://127.0.0.1:{port}/metrics (plain HTTP, no authentication); "
        f"call records (json) to {tmp_path}/calls.jsonl; config {cfg}"]
