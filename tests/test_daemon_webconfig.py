"""The web config in the agent: ``--web.config.file`` / ``exporter.web_config``, checked
by check-config, read before the capture opens, re-read on SIGHUP (a bad file is
refused, the running one kept and the reason logged), over a real socket."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from agent.cli import main
from agent.config import load_config
from agent.daemon import Daemon, Exporter, load_web
from agent.export.http import MetricsServer
from agent.export.metrics import ProbeMetrics


def hash4(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


class NoSource:
    def poll(self, timeout_s: float) -> list[Any]:
        return []

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class NoLog:
    def public(self, record: Any) -> dict[str, Any]:
        return {}

    def write(self, record: Any, public: object = None) -> None:
        pass

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  alice: {hash4('one')}\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"exporter:\n  site: lab\n  web_config: {web}\n")
    return cfg, web


@pytest.fixture
def agent(files: tuple[Path, Path]) -> Iterator[tuple[Daemon, MetricsServer, CollectorRegistry]]:
    cfg_path, _ = files
    config = load_config(cfg_path)
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry, site="lab", config=config)
    server = MetricsServer(registry, None, load_web(config))
    server.start("127.0.0.1", 0)
    exporter = Exporter(metrics, server)
    d = Daemon(config, source=NoSource(), metrics=metrics, call_log=NoLog(),
               load=lambda: load_config(cfg_path), reload_exporter=exporter.reload,
               notify=lambda _m: None)
    yield d, server, registry
    server.stop()


def status(server: MetricsServer, user: str | None = None, password: str = "") -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics")
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            assert b"voipprobe_build_info" in r.read()
            return int(r.status)
    except urllib.error.HTTPError as err:
        assert err.headers["WWW-Authenticate"].startswith("Basic")
        return int(err.code)


def test_sighup_reloads_the_web_config_and_refuses_a_bad_one(
    agent: tuple[Daemon, MetricsServer, CollectorRegistry], files: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    d, server, registry = agent
    _, web = files
    assert status(server) == 401 and status(server, "alice", "one") == 200

    web.write_text("basic_auth_users:\n  bob: two\n")  # a clear password, not a hash
    assert d.reload() is False
    err = capsys.readouterr().err
    assert "reload refused, keeping the running configuration" in err
    assert f"{web}: invalid web config" in err and "user 'bob'" in err
    assert registry.get_sample_value("voipprobe_config_last_reload_successful",
                                     {"site": "lab"}) == 0
    assert status(server) == 401 and status(server, "alice", "one") == 200  # old one serves

    web.write_text(f"basic_auth_users:\n  bob: {hash4('two')}\n")
    assert d.reload() is True
    assert registry.get_sample_value("voipprobe_config_last_reload_successful",
                                     {"site": "lab"}) == 1
    assert status(server, "alice", "one") == 401 and status(server, "bob", "two") == 200
    assert "apply after a restart" not in capsys.readouterr().err  # the web config did

    web.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    assert d.reload() is False
    assert "tls_server_config.cert_file: cannot read" in capsys.readouterr().err
    assert status(server, "bob", "two") == 200


def test_dropping_the_web_config_on_reload_serves_plain(
    agent: tuple[Daemon, MetricsServer, CollectorRegistry], files: tuple[Path, Path],
) -> None:
    d, server, _ = agent
    cfg, _ = files
    cfg.write_text("exporter:\n  site: lab\n")
    assert d.reload() is True
    assert status(server) == 200


def test_check_config_validates_the_web_config(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _ = files
    assert main(["check-config", str(cfg)]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.yml"
    bad.write_text("tls_server_config:\n  cert_file: a\n  key_file: b\n  verify: yes\n")
    assert main(["check-config", str(cfg), "--web.config.file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "tls_server_config.verify: unknown field" in err and str(bad) in err


def test_run_refuses_a_bad_web_config_before_capturing(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No capture is opened (no root needed): the web config is read first."""
    cfg, _ = files
    bad = tmp_path / "bad.yml"
    bad.write_text("basic_auth_users: {prom: hunter2}\n")
    assert main(["run", "--config", str(cfg), "--web.config.file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "basic_auth_users: user 'prom': the password must be a bcrypt hash" in err
