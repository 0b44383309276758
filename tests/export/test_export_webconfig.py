"""The web config file: exporter-toolkit's format, every bad value named by its field;
basic auth's parsing, bcrypt check, cache and constant time for unknown users."""

from __future__ import annotations

import base64
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import bcrypt
import pytest
import yaml

from agent.config import ConfigError
from agent.export.basicauth import BasicAuth, parse_basic
from agent.export.webconfig import CIPHER_SUITES, parse_web_config

ROOT = Path(__file__).resolve().parents[2]
HASH4 = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
TLS = {"cert_file": "a.crt", "key_file": "a.key"}


def error_of(doc: object) -> str:
    with pytest.raises(ConfigError) as err:
        parse_web_config(doc, "web.yml")
    return str(err.value)


def test_the_shipped_example_parses() -> None:
    doc = yaml.safe_load((ROOT / "config" / "web-config.yml").read_text())
    cfg = parse_web_config(doc)
    assert cfg.tls_server_config is not None
    assert cfg.tls_server_config.cert_file == Path("tls.crt")
    assert cfg.http_server_config.headers == {"X-Content-Type-Options": "nosniff",
                                              "X-Frame-Options": "deny"}
    assert list(cfg.basic_auth_users) == ["prometheus"]


def test_the_toolkits_documented_example_parses() -> None:
    # docs/web-config.yml of prometheus/exporter-toolkit, with our own hashes
    doc = {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
           "basic_auth_users": {"alice": HASH4, "bob": HASH4.replace("$2b$", "$2y$")},
           "rate_limit": {"interval": "1s", "burst": 20}}
    cfg = parse_web_config(doc)
    assert cfg.rate_limit.interval_s == 1.0 and cfg.rate_limit.burst == 20


def test_empty_file_means_plain_http() -> None:
    cfg = parse_web_config(None)
    assert cfg.tls_server_config is None and cfg.basic_auth_users == {}


@pytest.mark.parametrize(("doc", "expected"), [
    ({"tls_config": {}}, "tls_config: unknown field; expected one of tls_server_config, "
                         "http_server_config, basic_auth_users, rate_limit"),
    ({"tls_server_config": {**TLS, "cert_fil": "x"}},
     "tls_server_config.cert_fil: unknown field; expected one of cert, key, client_ca, "
     "cert_file"),
    ({"http_server_config": {"header": {}}}, "http_server_config.header: unknown field"),
    ({"rate_limit": {"intervall": "1s"}}, "rate_limit.intervall: unknown field"),
    ({"tls_server_config": {"key_file": "a.key"}},
     "tls_server_config: TLS needs a certificate: cert_file (or cert) is missing"),
    ({"tls_server_config": {"cert_file": "a.crt"}},
     "tls_server_config: TLS needs the certificate's key: key_file (or key) is missing"),
    ({"tls_server_config": {**TLS, "cert": "PEM"}}, "give cert or cert_file, not both"),
    ({"tls_server_config": {**TLS, "client_auth_type": "RequireAnyClientCert",
                            "client_ca_file": "ca"}},
     "tls_server_config.client_auth_type: RequireAnyClientCert (a client certificate asked "
     "for but not verified) is not possible with Python's ssl"),
    ({"tls_server_config": {**TLS, "client_auth_type": "RequestClientCert"}},
     "RequestClientCert (a client certificate asked for but not verified)"),
    ({"tls_server_config": {**TLS, "client_auth_type": "RequireAndVerifyClientCert"}},
     "client_auth_type RequireAndVerifyClientCert needs client_ca_file"),
    ({"tls_server_config": {**TLS, "client_auth_type": "Yes"}},
     "tls_server_config.client_auth_type: Input should be 'NoClientCert'"),
    ({"tls_server_config": {**TLS, "client_ca_file": "ca.crt"}},
     "client_ca_file is set but client_auth_type is NoClientCert"),
    ({"tls_server_config": {**TLS, "client_allowed_sans": ["x"],
                            "client_auth_type": "VerifyClientCertIfGiven",
                            "client_ca_file": "ca"}},
     "client_allowed_sans needs client_auth_type: RequireAndVerifyClientCert"),
    ({"tls_server_config": {**TLS, "min_version": "TLS13", "max_version": "TLS12"}},
     "min_version TLS13 is above max_version TLS12"),
    ({"tls_server_config": {**TLS, "min_version": "SSL3"}},
     "tls_server_config.min_version: Input should be 'TLS10', 'TLS11', 'TLS12' or 'TLS13' "
     "(got 'SSL3')"),
    ({"tls_server_config": {**TLS, "cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256"]}},
     "tls_server_config.cipher_suites: unknown cipher suite 'ECDHE-RSA-AES128-GCM-SHA256'; "
     "expected Go's names"),
    ({"tls_server_config": {**TLS, "curve_preferences": ["P256"]}},
     "tls_server_config.curve_preferences: unknown curve 'P256'"),
    ({"tls_server_config": {**TLS, "curve_preferences": ["X25519", "CurveP256"]}},
     "Python's ssl sets one curve, not an ordered list"),
    ({"http_server_config": {"headers": {"Server": "x"}}},
     "http_server_config.headers: header 'Server' cannot be configured"),
    ({"http_server_config": {"headers": {"X-Frame-Options": "allow"}}},
     "header X-Frame-Options: 'allow' is not one of deny, sameorigin"),
    ({"http_server_config": {"headers": {"Content-Security-Policy": "a\r\nSet-Cookie: x"}}},
     "header Content-Security-Policy: the value must be one line of text"),
    ({"basic_auth_users": {"prom": "plaintext-password"}},
     "basic_auth_users: user 'prom': the password must be a bcrypt hash"),
    ({"basic_auth_users": {"a:b": HASH4}}, "user 'a:b': a basic-auth user name"),
    ({"rate_limit": {"interval": "soon", "burst": 1}},
     "rate_limit.interval: not a duration like 1s, 500ms, 1m: 'soon'"),
    ([1, 2], "web.yml: top level must be a mapping, got list"),
])
def test_errors_name_the_field(doc: object, expected: str) -> None:
    message = error_of(doc)
    assert expected in message
    assert message.startswith("web.yml")


def test_an_inline_key_is_never_printed() -> None:
    message = error_of({"tls_server_config": {"cert": "C", "key": "TOP-SECRET-KEY",
                                              "cert_file": "x"}})
    assert "TOP-SECRET-KEY" not in message


def test_http2_is_accepted() -> None:
    for value in (True, False):
        assert parse_web_config({"http_server_config": {"http2": value}}).http_server_config


def test_durations() -> None:
    for text, seconds in (("0s", 0.0), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0)):
        cfg = parse_web_config({"rate_limit": {"interval": text, "burst": 1}})
        assert cfg.rate_limit.interval_s == seconds


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_cipher_names_agree_with_openssl() -> None:
    """Our Go (IANA) -> OpenSSL table, against OpenSSL's own: ``openssl ciphers
    -stdname`` prints both names of every suite it knows."""
    out = subprocess.run(["openssl", "ciphers", "-stdname", "ALL:@SECLEVEL=0"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    theirs = {}
    for line in out.splitlines():
        iana, _, rest = line.partition(" - ")
        theirs[iana.strip()] = rest.split()[0]
    checked = 0
    for go_name, openssl_name in CIPHER_SUITES.items():
        iana = go_name if go_name.endswith(("SHA", "SHA256", "SHA384")) else go_name + "_SHA256"
        if openssl_name is None:
            assert theirs[iana] == go_name  # TLS 1.3: one name for both
        else:
            assert theirs[iana] == openssl_name, go_name
        checked += 1
    assert checked == len(CIPHER_SUITES) == 19


# -- basic auth -------------------------------------------------------------------------


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_parse_basic() -> None:
    assert parse_basic(basic(b"prom:pa:ss")) == (b"prom", b"pa:ss")  # RFC 7617: first colon
    assert parse_basic("basic " + base64.b64encode(b"u:").decode()) == (b"u", b"")
    assert parse_basic(basic("jörg:pw".encode())) == ("jörg".encode(), b"pw")
    for bad in (None, "", "Basic", "Bearer eyJ", basic(b"nocolon"), "Basic ***", "Basic a"):
        assert parse_basic(bad) is None, bad


def test_verify_and_cache() -> None:
    auth = BasicAuth({"prom": HASH4})
    good = (b"prom", b"pw")
    assert not auth.cached(good)
    assert auth.verify(good) and auth.cached(good)
    for wrong in ((b"prom", b"pW"), (b"prom", b"pw "), (b"Prom", b"pw"), (b"x", b"pw")):
        assert not auth.verify(wrong) and not auth.cached(wrong)  # failures never cached
    assert not auth.verify((b"prom", b"pw" + b"x" * 80))  # longer than bcrypt reads
    # htpasswd writes $2y$: the same algorithm as $2b$
    assert BasicAuth({"u": HASH4.replace("$2b$", "$2y$")}).verify((b"u", b"pw"))
    # a new hash for the same user (a reloaded file) misses the old cache
    other = BasicAuth({"prom": bcrypt.hashpw(b"new", bcrypt.gensalt(4)).decode()})
    assert not other.cached(good) and not other.verify(good)


def test_unknown_users_cost_a_bcrypt_too() -> None:
    """The time of a 401 does not tell a known user from an unknown one: both run one
    bcrypt of the configured cost (cost 10: ~70 ms here; median of five each)."""
    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(10)).decode()})

    def median_s(user: bytes) -> float:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            assert not auth.verify((user, b"wrong"))
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    known, unknown = median_s(b"prom"), median_s(b"nobody")
    assert known > 0.01  # a real bcrypt ran
    assert 0.7 < unknown / known < 1.4, (known, unknown)
