"""Test certificates made by the openssl command line (not by the code under test).

`make_certs(dir)` writes a self-signed server certificate for 127.0.0.1/localhost and
a self-signed client certificate (SAN ``prometheus.test``), each with its key, and a
second client certificate no CA of ours trusts. Self-signed certificates are their own
CA: ``ca_file`` / ``client_ca_file`` name the certificate itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True, slots=True)
class Certs:
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path
    stranger_crt: Path  # a client certificate the server's client CA did not issue
    stranger_key: Path


def require_openssl() -> None:
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("openssl (package openssl) is missing in CI")
        pytest.skip("needs the openssl command line (package openssl)")


def _self_signed(out: Path, name: str, cn: str, san: str) -> tuple[Path, Path]:
    crt, key = out / f"{name}.crt", out / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(crt),
         "-addext", f"subjectAltName={san}"],
        check=True, capture_output=True, timeout=30)
    return crt, key


def make_certs(out: Path) -> Certs:
    require_openssl()
    out.mkdir(parents=True, exist_ok=True)
    server = _self_signed(out, "server", "localhost", "IP:127.0.0.1,DNS:localhost")
    client = _self_signed(out, "client", "prometheus.test", "DNS:prometheus.test")
    stranger = _self_signed(out, "stranger", "stranger.test", "DNS:stranger.test")
    return Certs(*server, *client, *stranger)
