"""The exporter's HTTP server: ``/metrics``, ``/health`` and a landing page at ``/``.

Default port
------------
`DEFAULT_PORT` is 9957. Prometheus keeps a list of default ports for exporters
(the "Default port allocations" page of the prometheus/prometheus wiki), in
the range 9100-9999 allotted to exporters; that range has been fully allocated
since 2023, so no number in it is free of an entry. 9957 sits in the tail of
the list, far from every exporter commonly found on a Linux gateway: node
(9100), HAProxy (9101), StatsD (9102), MySQL (9104), nginx (9113),
Elasticsearch (9114), blackbox (9115), SNMP (9116), Apache (9117), BIND (9119),
Redis (9121), PostgreSQL (9187), Windows (9182), process (9256), and
Prometheus' own 9090-9094. It is configurable (``--listen HOST:PORT``).

Server
------
stdlib `ThreadingHTTPServer` in a daemon thread: one scrape never waits for
another, and the process exits without joining it. The body of ``/metrics``
comes from prometheus_client's encoders (text format 0.0.4, or OpenMetrics
when the scraper asks for it in ``Accept``). ``/health`` calls the daemon's
``health()`` callback: ``(ok, details)``; 200 with ``{"status": "ok", ...}``
when the capture loop is alive, 503 with ``{"status": "stalled", ...}`` when
not (or when the callback fails).
"""

from __future__ import annotations

import html
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from agent import __version__

DEFAULT_PORT = 9957
DEFAULT_HOST = ""  # every address (IPv4; use "::" for dual stack)

HealthCheck = Callable[[], tuple[bool, Mapping[str, Any]]]

log = logging.getLogger(__name__)

_LANDING = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>voipprobe</title></head>
<body><h1>voipprobe {version}</h1>
<p>VoIP call-quality probe (SIP/RTP, E-model MOS, DSCP and SLA verdicts).</p>
<ul><li><a href="metrics">/metrics</a> &mdash; Prometheus metrics</li>
<li><a href="health">/health</a> &mdash; capture loop health</li></ul>
</body></html>
"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry,
                 health: HealthCheck | None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.registry = registry
        self.health = health
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"voipprobe/{__version__}"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path == "/health":
            self._health()
        elif path in ("/", "/index.html"):
            body = _LANDING.format(version=html.escape(__version__)).encode()
            self._send(200, "text/html; charset=utf-8", body)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(self.server.registry)
        except Exception:  # a collector failed: say so, never kill the server thread
            log.exception("collecting metrics failed")
            self._send(500, "text/plain; charset=utf-8", b"collecting metrics failed\n")
            return
        self._send(200, content_type, body)

    def _health(self) -> None:
        ok: bool = True
        details: Mapping[str, Any] = {}
        check = self.server.health
        if check is not None:
            try:
                ok, details = check()
            except Exception as err:  # the check itself failing is unhealthy
                ok, details = False, {"error": f"{type(err).__name__}: {err}"}
        doc = {"status": "ok" if ok else "stalled", **details}
        body = (json.dumps(doc, default=str) + "\n").encode()
        self._send(200 if ok else 503, "application/json", body)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class MetricsServer:
    """Serves ``registry`` and the ``health`` callback over HTTP until `stop`."""

    def __init__(self, registry: CollectorRegistry, health: HealthCheck | None = None) -> None:
        self.registry = registry
        self.health = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> ThreadingHTTPServer:
        """Bind ``(host, port)`` (port 0: any free port) and serve in a daemon thread.
        Raises `OSError` when the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        server = _Server((host, port), self.registry, self.health)
        thread = threading.Thread(target=server.serve_forever, name="voipprobe-http",
                                  kwargs={"poll_interval": 0.5}, daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        return server

    @property
    def port(self) -> int:
        """The bound port (useful after ``start(port=0)``)."""
        if self._server is None:
            raise RuntimeError("metrics server not started")
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
