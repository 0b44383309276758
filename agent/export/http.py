"""The exporter's HTTP server: ``/metrics``, ``/health``, ``/calls`` (recent calls,
`agent.export.recent`) and a landing page at ``/``.

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
Prometheus' own 9090-9094. It is configurable (``--listen HOST:PORT``, ``exporter.listen``).

Default address
---------------
`DEFAULT_HOST` is the loopback: a fresh install serves nobody but the gateway itself
until the admin names the address Prometheus should reach (the LAN side, usually).
A gateway has a WAN side, and "every address" would publish call volumes, peers and
SLA verdicts there; an admin who wants that writes ``0.0.0.0`` (or ``[::]``) himself.

Server
------
`agent.export.httpserver.HttpServer` in a daemon thread: one selector loop does all
socket I/O off the capture thread, a fixed pool of workers builds the pages, and
connections, heads and waits are bounded (see there). The web config
(`agent.export.webconfig`: TLS, basic auth, headers) applies to every page. The body
of ``/metrics`` comes from prometheus_client's encoders (text format 0.0.4, or
OpenMetrics when the scraper asks for it in ``Accept``). ``/health`` calls the
daemon's ``health()`` callback: ``(ok, details)``; 200 with ``{"status": "ok", ...}``
when the capture loop is alive and every source captures, 503 when not (or when the
callback fails) with ``{"status": "stalled", ...}``, or the ``status`` the details
name (the daemon's ``degraded``: a source down or silent, listed in ``problems``).
"""

from __future__ import annotations

import html
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from agent import __version__
from agent.config import DEFAULT_EXPORTER_PORT
from agent.export.httphead import Request, Response
from agent.export.httpserver import HttpServer, ServerLimits, ServerStats
from agent.export.recent import RecentCalls, query_filters, render_html, render_json
from agent.export.webconfig import PLAIN, WebSettings

DEFAULT_PORT = DEFAULT_EXPORTER_PORT  # agent/config.py holds it: the config names it too
DEFAULT_HOST = "127.0.0.1"  # the loopback: see "Default address"

HealthCheck = Callable[[], tuple[bool, Mapping[str, Any]]]

log = logging.getLogger(__name__)

_LANDING = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>voipprobe</title></head>
<body><h1>voipprobe {version}</h1>
<p>VoIP call-quality probe (SIP/RTP, E-model MOS, DSCP and SLA verdicts).</p>
<ul><li><a href="metrics">/metrics</a> &mdash; Prometheus metrics</li>
<li><a href="health">/health</a> &mdash; capture loop health</li>
<li><a href="calls">/calls</a> &mdash; recent calls, worst first</li></ul>
</body></html>
"""


class _Routes:
    """The pages: ``/metrics``, ``/health``, ``/calls``, ``/calls.json``, ``/``; 404
    for the rest."""

    def __init__(self, registry: CollectorRegistry, health: HealthCheck | None,
                 recent: RecentCalls | None = None) -> None:
        self.registry = registry
        self.health = health
        self.recent = recent

    def __call__(self, request: Request) -> Response:
        if request.path == "/metrics":
            return self._metrics(request)
        if request.path == "/health":
            return self._health()
        if request.path in ("/calls", "/calls.json") and self.recent is not None:
            return self._calls(request)
        if request.path in ("/", "/index.html"):
            body = _LANDING.format(version=html.escape(__version__)).encode()
            return _page(200, "text/html; charset=utf-8", body)
        return _page(404, "text/plain; charset=utf-8", b"not found\n")

    def _metrics(self, request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        try:
            body = encoder(self.registry)
        except Exception:  # a collector failed: say so, never kill the server thread
            log.exception("collecting metrics failed")
            return _page(500, "text/plain; charset=utf-8", b"collecting metrics failed\n")
        return _page(200, content_type, body)

    def _calls(self, request: Request) -> Response:
        recent = self.recent
        assert recent is not None
        filters = query_filters(request.query)
        if isinstance(filters, str):
            return _page(400, "text/plain; charset=utf-8", f"{filters}\n".encode())
        peer, verdict, limit = filters
        rows = recent.rows(peer, verdict, limit)
        if request.path == "/calls.json":
            return _page(200, "application/json", render_json(rows))
        body = render_html(rows, held=len(recent.rows()), capacity=recent.capacity,
                           peer=peer, verdict=verdict)
        return _page(200, "text/html; charset=utf-8", body)

    def _health(self) -> Response:
        ok: bool = True
        details: Mapping[str, Any] = {}
        check = self.health
        if check is not None:
            try:
                ok, details = check()
            except Exception as err:  # the check itself failing is unhealthy
                ok, details = False, {"error": f"{type(err).__name__}: {err}"}
        doc = {"status": "ok" if ok else "stalled", **details}
        body = (json.dumps(doc, default=str) + "\n").encode()
        return _page(200 if ok else 503, "application/json", body)


def _page(status: int, content_type: str, body: bytes) -> Response:
    return Response(status, content_type, body, (("Cache-Control", "no-store"),))


def exposure_warning(host: str, web: WebSettings) -> str | None:
    """What to warn about when ``host`` may be reachable from beyond the LAN (every
    address, or a public one) without TLS and basic auth or client certificates."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name: where it points is the admin's business
        return None
    if not (address.is_unspecified or address.is_global):
        return None
    guarded = web.tls and (web.auth is not None or web.client_certificates)
    if guarded:
        return None
    where = "every address" if address.is_unspecified else f"public address {host}"
    return (f"metrics are served on {where} without TLS and authentication; set "
            "exporter.listen to the LAN address, or use a web config "
            "(README: Metrics and the exporter)")


class MetricsServer:
    """Serves ``registry`` and the ``health`` callback over HTTP(S) until `stop`."""

    def __init__(self, registry: CollectorRegistry, health: HealthCheck | None = None,
                 web: WebSettings = PLAIN, limits: ServerLimits | None = None,
                 recent: RecentCalls | None = None) -> None:
        self.registry = registry
        self.health = health
        self.recent = recent
        self._web = web
        self._limits = limits
        self._server: HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    def start(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> HttpServer:
        """Bind ``(host, port)`` (port 0: any free port) and serve in a daemon thread.
        Raises `OSError` when the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family, backlog=socket.SOMAXCONN)
        self._port = int(listener.getsockname()[1])
        server = HttpServer(listener, _Routes(self.registry, self.health, self.recent), self._web,
                            self._limits, server_name=f"voipprobe/{__version__}")
        thread = threading.Thread(target=server.serve, name="voipprobe-http", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        return server

    @property
    def port(self) -> int:
        """The bound port (useful after ``start(port=0)``)."""
        if self._server is None:
            raise RuntimeError("metrics server not started")
        return self._port

    @property
    def stats(self) -> ServerStats:
        """What the server refused, cut or evicted since `start`."""
        if self._server is None:
            raise RuntimeError("metrics server not started")
        return self._server.stats

    @property
    def web(self) -> WebSettings:
        return self._web

    def set_web(self, web: WebSettings) -> None:
        """Apply a reloaded web config (TLS from the next connection, the rest from the
        next request)."""
        self._web = web
        if self._server is not None:
            self._server.set_settings(web)

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.stop()
        if thread is not None:
            thread.join(timeout=5.0)
