"""A real Prometheus scrapes the exporter over HTTPS with ``tls_config`` and
``basic_auth`` (issue 10, acceptance): Debian's ``prometheus`` on the loopback, three
jobs against two exporters made from web config files:

* ``basic``: TLS (self-signed certificate as ``ca_file``) and basic auth -> up;
* ``mtls``: the same plus a client certificate the exporter requires
  (RequireAndVerifyClientCert) -> up;
* ``wrong``: a wrong password -> down, 401 in the target's last error.

Then the TSDB holds the exporter's ``voipprobe_calls_ended_total`` for both good jobs
(Prometheus' HTTP API). Skipped without the prometheus binary, failed under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from exportbuild import sample_metrics
from tlscerts import Certs, make_certs

from agent.export.http import MetricsServer
from agent.export.webconfig import load_web_config

pytestmark = [pytest.mark.slow]
PASSWORD = "scrape-me-over-tls"


@pytest.fixture(autouse=True)
def _require_prometheus() -> None:
    if shutil.which("prometheus") is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus (Debian package prometheus) is missing in CI")
        pytest.skip("needs the prometheus binary (Debian package prometheus)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]


def wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture
def exporters(tmp_path: Path) -> Iterator[tuple[Certs, int, int]]:
    certs = make_certs(tmp_path / "certs")
    reg, _ = sample_metrics()
    users = {"prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()}
    tls = {"cert_file": str(certs.server_crt), "key_file": str(certs.server_key)}
    docs = {
        "basic.yml": {"tls_server_config": tls, "basic_auth_users": users},
        "mtls.yml": {"tls_server_config": {**tls, "client_ca_file": str(certs.client_crt),
                                           "client_auth_type": "RequireAndVerifyClientCert"},
                     "basic_auth_users": users},
    }
    servers = []
    for name, doc in docs.items():
        (tmp_path / name).write_text(yaml.safe_dump(doc))
        server = MetricsServer(reg, None, load_web_config(tmp_path / name))
        server.start("127.0.0.1", 0)
        servers.append(server)
    yield certs, servers[0].port, servers[1].port
    for s in servers:
        s.stop()


def test_prometheus_scrapes_over_tls_with_basic_auth(
    exporters: tuple[Certs, int, int], tmp_path: Path
) -> None:
    certs, basic_port, mtls_port = exporters
    tls = {"ca_file": str(certs.server_crt)}
    auth = {"username": "prometheus", "password": PASSWORD}

    def job(name: str, port: int, tls_config: dict[str, str],
            basic_auth: dict[str, str]) -> dict[str, Any]:
        return {"job_name": name, "scheme": "https", "tls_config": tls_config,
                "basic_auth": basic_auth, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}

    prom_cfg = tmp_path / "prometheus.yml"
    prom_cfg.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            job("basic", basic_port, tls, auth),
            job("mtls", mtls_port, {**tls, "cert_file": str(certs.client_crt),
                                    "key_file": str(certs.client_key)}, auth),
            job("wrong", basic_port, tls, {**auth, "password": "not-it"}),
        ]}))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        targets: dict[str, dict[str, Any]] = {}

        def scraped() -> bool:
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            active = api(port, "targets")["activeTargets"]
            targets.update({t["labels"]["job"]: t for t in active})
            return (len(targets) == 3 and all(t["health"] != "unknown"
                                              for t in targets.values()))

        wait_for("three scraped targets", scraped, 30)
        wait_for("both good targets up", lambda: scraped() and all(
            targets[j]["health"] == "up" for j in ("basic", "mtls")), 15)
        assert targets["wrong"]["health"] == "down"
        assert "401" in targets["wrong"]["lastError"], targets["wrong"]

        def stored() -> bool:
            result = api(port, "query", query="voipprobe_calls_ended_total")["result"]
            return {r["metric"]["job"] for r in result} >= {"basic", "mtls"}

        wait_for("voipprobe_calls_ended_total in the TSDB", stored, 15)
        result = api(port, "query", query='voipprobe_calls_ended_total{job="basic",'
                                         'end_reason="normal",peer="carrier"}')["result"]
        assert [float(r["value"][1]) for r in result] == [1.0]
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=10)
        except subprocess.TimeoutExpired:
            prom.kill()
        log.close()
