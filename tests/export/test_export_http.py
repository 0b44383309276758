"""The exporter's HTTP server on 127.0.0.1, a random port: /metrics, /, /health, 404."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from exportbuild import sample_metrics

from agent.export.http import DEFAULT_PORT, MetricsServer


class Health:
    def __init__(self) -> None:
        self.ok = True
        self.fail = False

    def __call__(self) -> tuple[bool, Mapping[str, Any]]:
        if self.fail:
            raise RuntimeError("capture thread gone")
        return self.ok, {"last_batch_age_s": 0.2 if self.ok else 42.0}


@pytest.fixture
def served() -> Iterator[tuple[str, Health, MetricsServer]]:
    reg, _ = sample_metrics()
    health = Health()
    server = MetricsServer(reg, health)
    server.start("127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.port}", health, server
    server.stop()


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def test_metrics(served: tuple[str, Health, MetricsServer]) -> None:
    base, _, _ = served
    status, ctype, body = get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert 'voipprobe_calls_ended_total{end_reason="normal",peer="carrier",site="hq",' \
           'status_class="2xx"} 1.0' in body
    assert "# TYPE voipprobe_call_mos histogram" in body
    status, ctype, body = get(base + "/metrics", "application/openmetrics-text; version=1.0.0")
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_landing_page_and_404(served: tuple[str, Health, MetricsServer]) -> None:
    base, _, _ = served
    status, ctype, body = get(base + "/")
    assert status == 200 and ctype.startswith("text/html")
    assert 'href="metrics"' in body and 'href="health"' in body
    assert get(base + "/nope")[0] == 404


def test_health(served: tuple[str, Health, MetricsServer]) -> None:
    base, health, _ = served
    status, ctype, body = get(base + "/health")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body) == {"status": "ok", "last_batch_age_s": 0.2}
    health.ok = False
    status, _, body = get(base + "/health")
    assert status == 503 and json.loads(body) == {"status": "stalled", "last_batch_age_s": 42.0}
    health.fail = True
    status, _, body = get(base + "/health")
    assert status == 503 and "capture thread gone" in json.loads(body)["error"]


def test_stop_frees_the_port(served: tuple[str, Health, MetricsServer]) -> None:
    base, _, server = served
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base + "/health", timeout=2)
    server.stop()  # idempotent


def test_default_port_in_exporter_range() -> None:
    assert 9100 <= DEFAULT_PORT <= 9999
    assert DEFAULT_PORT not in (9100, 9101, 9102, 9104, 9113, 9115, 9116, 9117, 9182, 9187)
