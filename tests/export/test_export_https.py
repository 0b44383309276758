"""The exporter behind a web config (exporter-toolkit format), over real sockets.

Certificates come from the openssl command line (tests/tlscerts.py); the clients are
the standard library's http.client and ssl, which share no code with the server's
request handling. Every case checks status, headers and body, not just "it answered".
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import yaml
from exportbuild import sample_metrics
from prometheus_client import CollectorRegistry
from tlscerts import Certs, make_certs

from agent.config import ConfigError
from agent.export.http import MetricsServer, exposure_warning
from agent.export.webconfig import PLAIN, WebSettings, load_web_config

PASSWORD = "s3cret-scrape"
# cost 4 (bcrypt's least): these tests are about the protocol, not the hash's cost
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
Serve = Callable[[WebSettings], MetricsServer]
METRIC = 'voipprobe_calls_ended_total{end_reason="normal",peer="carrier",site="hq",'


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    reg, _ = sample_metrics()
    return reg


def write_web(dir_: Path, doc: dict[str, object], name: str = "web.yml") -> Path:
    path = dir_ / name
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def tls_doc(certs: Certs, **extra: object) -> dict[str, object]:
    # relative names: resolved against the web config's directory, as in the toolkit
    return {"tls_server_config": {"cert_file": certs.server_crt.name,
                                  "key_file": certs.server_key.name, **extra}}


@pytest.fixture
def serve(registry: CollectorRegistry) -> Iterator[Serve]:
    servers: list[MetricsServer] = []

    def start(web: WebSettings) -> MetricsServer:
        server = MetricsServer(registry, lambda: (True, {}), web)
        server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def client_context(certs: Certs, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.server_crt))
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


def fetch(port: int, path: str = "/metrics", *, ctx: ssl.SSLContext | None = None,
          user: str | None = None, password: str = PASSWORD,
          host: str = "127.0.0.1") -> tuple[int, http.client.HTTPMessage, str]:
    conn: http.client.HTTPConnection
    if ctx is not None:
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=5)
    headers = {}
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, r.headers, r.read().decode()
    finally:
        conn.close()


def test_https_with_a_self_signed_certificate(certs: Certs, serve: Serve) -> None:
    web = load_web_config(write_web(certs.server_crt.parent, tls_doc(certs)))
    server = serve(web)
    status, headers, body = fetch(server.port, ctx=client_context(certs))
    assert status == 200 and METRIC in body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    # the hostname is checked too: the certificate names 127.0.0.1 and localhost
    status, _, body = fetch(server.port, "/health", ctx=client_context(certs), host="localhost")
    assert (status, body) == (200, '{"status": "ok"}\n')


def test_plain_http_to_the_tls_port_is_refused(certs: Certs, serve: Serve) -> None:
    server = serve(load_web_config(write_web(certs.server_crt.parent, tls_doc(certs))))
    status, headers, body = fetch(server.port)
    assert status == 400 and headers["Connection"] == "close"
    assert body == "Client sent an HTTP request to an HTTPS server.\n"
    assert "voipprobe_" not in body


def test_a_client_that_does_not_trust_the_certificate_fails(certs: Certs, serve: Serve) -> None:
    server = serve(load_web_config(write_web(certs.server_crt.parent, tls_doc(certs))))
    with pytest.raises(ssl.SSLCertVerificationError):
        fetch(server.port, ctx=ssl.create_default_context())  # system CAs only


def test_basic_auth(certs: Certs, serve: Serve) -> None:
    doc = {**tls_doc(certs), "basic_auth_users": {"prom": HASH, "other": HASH}}
    server = serve(load_web_config(write_web(certs.server_crt.parent, doc)))
    ctx = client_context(certs)
    for user, password in ((None, PASSWORD), ("prom", "wrong"), ("nobody", PASSWORD),
                           ("prom", PASSWORD + "x"), ("prom", "")):
        status, headers, body = fetch(server.port, ctx=ctx, user=user, password=password)
        assert status == 401, (user, password)
        assert headers["WWW-Authenticate"] == 'Basic realm="voipprobe", charset="UTF-8"'
        assert "voipprobe_" not in body
    for path in ("/", "/health", "/nope"):  # every page, not only /metrics
        assert fetch(server.port, path, ctx=ctx)[0] == 401
    status, _, body = fetch(server.port, ctx=ctx, user="prom")
    assert status == 200 and METRIC in body
    status, _, body = fetch(server.port, ctx=ctx, user="prom")  # now from the cache
    assert status == 200 and METRIC in body
    assert fetch(server.port, "/nope", ctx=ctx, user="other")[0] == 404


def test_malformed_authorization_headers_get_401(certs: Certs, serve: Serve) -> None:
    doc = {"basic_auth_users": {"prom": HASH}}  # plain HTTP, to write raw heads
    server = serve(load_web_config(write_web(certs.server_crt.parent, doc, "plain.yml")))
    for value in ("Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                  "Basic"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(f"GET /metrics HTTP/1.1\r\nAuthorization: {value}\r\n\r\n".encode())
            head = s.recv(4096).decode()
        assert head.startswith("HTTP/1.1 401 Unauthorized\r\n"), value
        assert "WWW-Authenticate: Basic" in head


def test_configured_headers_on_every_response(certs: Certs, serve: Serve) -> None:
    doc = {**tls_doc(certs), "http_server_config": {"headers": {
        "X-Frame-Options": "deny", "x-content-type-options": "nosniff",
        "Strict-Transport-Security": "max-age=31536000", "X-XSS-Protection": ""}}}
    server = serve(load_web_config(write_web(certs.server_crt.parent, doc)))
    for path, want in (("/metrics", 200), ("/nope", 404)):
        status, headers, _ = fetch(server.port, path, ctx=client_context(certs))
        assert status == want
        assert headers["X-Frame-Options"] == "deny"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Strict-Transport-Security"] == "max-age=31536000"
        assert "X-XSS-Protection" not in headers  # blank: unset, as in the toolkit


def test_client_certificates_required_and_verified(certs: Certs, serve: Serve) -> None:
    doc = tls_doc(certs, client_auth_type="RequireAndVerifyClientCert",
                  client_ca_file=str(certs.client_crt))
    server = serve(load_web_config(write_web(certs.server_crt.parent, doc)))
    status, _, body = fetch(server.port, ctx=client_context(
        certs, (certs.client_crt, certs.client_key)))
    assert status == 200 and METRIC in body
    for cert in (None, (certs.stranger_crt, certs.stranger_key)):
        # TLS 1.3: the server's alert arrives after the client's side of the handshake
        with pytest.raises((ssl.SSLError, ConnectionError)):
            fetch(server.port, ctx=client_context(certs, cert))


def test_client_certificate_san_must_be_allowed(certs: Certs, serve: Serve) -> None:
    both = f"{certs.client_crt.read_text()}{certs.stranger_crt.read_text()}"
    doc = tls_doc(certs, client_auth_type="RequireAndVerifyClientCert", client_ca=both,
                  client_allowed_sans=["prometheus.test"])
    server = serve(load_web_config(write_web(certs.server_crt.parent, doc)))
    ok = fetch(server.port, ctx=client_context(certs, (certs.client_crt, certs.client_key)))
    assert ok[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        fetch(server.port, ctx=client_context(certs, (certs.stranger_crt, certs.stranger_key)))


def test_verify_client_cert_if_given(certs: Certs, serve: Serve) -> None:
    doc = tls_doc(certs, client_auth_type="VerifyClientCertIfGiven",
                  client_ca_file=str(certs.client_crt))
    server = serve(load_web_config(write_web(certs.server_crt.parent, doc)))
    assert fetch(server.port, ctx=client_context(certs))[0] == 200
    assert fetch(server.port, ctx=client_context(
        certs, (certs.client_crt, certs.client_key)))[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        fetch(server.port, ctx=client_context(certs, (certs.stranger_crt, certs.stranger_key)))


def test_tls_versions(certs: Certs, serve: Serve) -> None:
    server = serve(load_web_config(write_web(
        certs.server_crt.parent, tls_doc(certs, min_version="TLS13"))))
    ctx = client_context(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        fetch(server.port, ctx=ctx)
    ctx = client_context(certs)
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=5)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    assert conn.sock.version() == "TLSv1.3"  # type: ignore[union-attr]
    conn.close()


def test_cipher_suites_limit_tls12(certs: Certs, serve: Serve) -> None:
    doc = tls_doc(certs, max_version="TLS12",
                  cipher_suites=["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"])
    server = serve(load_web_config(write_web(certs.server_crt.parent, doc)))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port,
                                       context=client_context(certs), timeout=5)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    assert conn.sock.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"  # type: ignore[union-attr]
    conn.close()
    ctx = client_context(certs)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")  # not the one the server allows
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        fetch(server.port, ctx=ctx)


def test_rate_limit(certs: Certs, serve: Serve) -> None:
    doc = {"rate_limit": {"interval": "1m", "burst": 3}}
    server = serve(load_web_config(write_web(certs.server_crt.parent, doc, "rate.yml")))
    statuses = [fetch(server.port, "/health")[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


def test_new_settings_apply_to_the_next_request(certs: Certs, serve: Serve) -> None:
    server = serve(PLAIN)
    assert fetch(server.port)[0] == 200
    web = load_web_config(write_web(certs.server_crt.parent,
                                    {**tls_doc(certs), "basic_auth_users": {"prom": HASH}}))
    server.set_web(web)
    assert fetch(server.port)[0] == 400  # plain HTTP now meets TLS
    assert fetch(server.port, ctx=client_context(certs))[0] == 401
    assert fetch(server.port, ctx=client_context(certs), user="prom")[0] == 200
    server.set_web(PLAIN)
    assert fetch(server.port)[0] == 200


def test_a_bad_certificate_file_is_a_config_error(certs: Certs, tmp_path: Path) -> None:
    (tmp_path / "garbage.crt").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as err:
        load_web_config(write_web(tmp_path, {"tls_server_config": {
            "cert_file": "garbage.crt", "key_file": str(certs.server_key)}}))
    assert "tls_server_config.cert_file/key_file: cannot load" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_web_config(write_web(tmp_path, {"tls_server_config": {
            "cert_file": str(certs.server_crt), "key_file": str(certs.client_key)}}))
    assert "KEY_VALUES_MISMATCH" in str(err.value) or "mismatch" in str(err.value).lower()
    with pytest.raises(ConfigError) as err:
        load_web_config(write_web(tmp_path, {"tls_server_config": {
            "cert_file": "absent.crt", "key_file": "absent.key"}}))
    assert "tls_server_config.cert_file: cannot read" in str(err.value)
    assert "absent.crt: No such file or directory" in str(err.value)


def test_inline_certificate_and_key(certs: Certs, serve: Serve, tmp_path: Path) -> None:
    doc = {"tls_server_config": {"cert": certs.server_crt.read_text(),
                                 "key": certs.server_key.read_text()}}
    server = serve(load_web_config(write_web(tmp_path, doc)))
    assert fetch(server.port, ctx=client_context(certs))[0] == 200


def test_exposure_warning() -> None:
    assert exposure_warning("127.0.0.1", PLAIN) is None
    assert exposure_warning("192.168.1.10", PLAIN) is None  # a LAN address: the admin's pick
    assert exposure_warning("gateway.lan", PLAIN) is None
    assert "every address" in (exposure_warning("0.0.0.0", PLAIN) or "")
    assert "every address" in (exposure_warning("::", PLAIN) or "")
    assert "public address 8.8.8.8" in (exposure_warning("8.8.8.8", PLAIN) or "")
