"""The line `voipprobe run` logs once it is up: what it captures, where metrics are
served and how (TLS, authentication), where call records go. An admin reading the
journal after ``systemctl start`` sees the probe's reach without opening the config.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from agent.config import Config, join_listen
from agent.export.webconfig import WebSettings


def interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def capture_text(config: Config, exists: Callable[[str], bool] = interface_exists) -> str:
    """``capturing on eth0, eth1 (promiscuous); HEP on 0.0.0.0:9060/udp``; an interface
    that does not exist (yet) is ``eth9 (absent, waiting for it)``: the ring retries."""
    c = config.capture
    ifaces = "every interface (any)" if c.interfaces == ["any"] else ", ".join(
        n if exists(n) else f"{n} (absent, waiting for it)" for n in c.interfaces)
    parts = [f"capturing on {ifaces}" + (" (promiscuous)" if c.promisc else "")]
    listeners = [
        *(f"HEP on {join_listen(h.address, h.port)}/{h.transport}" for h in c.hep_listeners),
        *(f"TZSP on {join_listen(m.address, m.port)}/udp" for m in c.tzsp_listeners),
        *(f"VXLAN on {join_listen(m.address, m.port)}/udp" for m in c.vxlan_listeners),
    ]
    return "; ".join(parts + listeners)


def metrics_text(config: Config, web: WebSettings) -> str:
    """``metrics on https://192.0.2.1:9957/metrics (TLS, client certificates, basic auth)``."""
    scheme = "https" if web.tls else "http"
    how = [w for w, on in (("TLS", web.tls), ("client certificates", web.client_certificates),
                           ("basic auth", web.auth is not None)) if on]
    return (f"metrics on {scheme}://{config.exporter.listen}/metrics "
            f"({', '.join(how) if how else 'plain HTTP, no authentication'})")


def startup_line(config: Config, web: WebSettings, config_path: str | Path | None,
                 exists: Callable[[str], bool] = interface_exists) -> str:
    """The whole start-up line (without the ``voipprobe:`` prefix)."""
    target = config.call_log.target
    log = "stdout" if target == "-" else target
    source = config_path if config_path is not None else "built-in defaults"
    return (f"started: {capture_text(config, exists)}; {metrics_text(config, web)}; "
            f"call records ({config.call_log.format}) to {log}; config {source}")
