"""The exporter's web configuration: Prometheus exporter-toolkit's ``web-config.yml``.

One file format for every Prometheus exporter (github.com/prometheus/exporter-toolkit,
``docs/web-configuration.md``), so an admin who secured node_exporter secures the probe
with the same file: ``tls_server_config`` (certificate and key, client certificates,
TLS versions, cipher suites), ``basic_auth_users`` (user: bcrypt hash),
``http_server_config`` (response headers) and ``rate_limit``. It is named by
``--web.config.file`` or ``exporter.web_config`` and read at start and on SIGHUP
(the toolkit re-reads it on every request; a reload is the daemon's way, and a bad
new file is refused while the old one keeps serving).

Where Python's ``ssl`` module cannot do what Go's ``crypto/tls`` does, the file is
refused with the reason rather than half-honoured:

* ``client_auth_type`` ``RequestClientCert`` and ``RequireAnyClientCert`` ask for a
  certificate without verifying it; OpenSSL through ``ssl`` always verifies one it
  asks for. ``NoClientCert``, ``VerifyClientCertIfGiven`` and
  ``RequireAndVerifyClientCert`` are supported.
* ``curve_preferences`` can name one curve (``SSLContext.set_ecdh_curve``), not an
  ordered list; without it OpenSSL's default groups apply.
* ``http2`` is accepted and has no effect: the server speaks HTTP/1.1 only and says
  so in ALPN, so an HTTP/2 client falls back (Prometheus scrapes over HTTP/1.1
  unless told otherwise).

``cipher_suites`` take Go's (IANA) names, mapped to OpenSSL's; like Go, they apply to
TLS 1.2 and below (TLS 1.3 suites are not configurable there either). Relative file
names are relative to the web config file's directory, as in the toolkit.
"""

from __future__ import annotations

import re
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.config import ConfigError
from agent.config_text import yaml_error
from agent.export.basicauth import BasicAuth

ClientAuth = Literal["NoClientCert", "RequestClientCert", "RequireAnyClientCert",
                     "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"]
TlsVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]

TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's crypto/tls names (tls.CipherSuites(), RFC 8446/5289/7905 IANA names) -> OpenSSL's.
# The TLS 1.3 suites map to None: Go and OpenSSL both leave them out of this setting.
CIPHER_SUITES: Mapping[str, str | None] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    # Go's older aliases of the two above.
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}

# Go's tls.CurveID names -> OpenSSL's group names.
CURVES: Mapping[str, str] = {"CurveP256": "prime256v1", "CurveP384": "secp384r1",
                             "CurveP521": "secp521r1", "X25519": "X25519"}

# The headers the toolkit lets a config set, and the values it allows for two of them.
HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options",
           "X-XSS-Protection", "Strict-Transport-Security")
HEADER_VALUES: Mapping[str, tuple[str, ...]] = {
    "X-Frame-Options": ("deny", "sameorigin"), "X-Content-Type-Options": ("nosniff",)}

# A bcrypt hash in modular crypt format: $2a$/$2b$/$2y$, two-digit cost, 53 characters
# of salt and checksum (htpasswd -B writes $2y$; Python's bcrypt reads all three).
BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")

# A Prometheus duration ("1s", "500ms", "1m30s"), as rate_limit.interval takes it.
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsServerConfig(_Strict):
    cert: str | None = None  # PEM, inline
    key: str | None = Field(default=None, repr=False)  # PEM, inline (a secret)
    client_ca: str | None = None  # PEM, inline
    cert_file: Path | None = None
    key_file: Path | None = None
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: Path | None = None
    client_allowed_sans: list[str] = Field(default_factory=list)
    min_version: TlsVersionName = "TLS12"
    max_version: TlsVersionName = "TLS13"
    cipher_suites: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] = Field(default_factory=list)

    @field_validator("client_auth_type")
    @classmethod
    def _python_can_do_it(cls, v: str) -> str:
        if v in ("RequestClientCert", "RequireAnyClientCert"):
            raise ValueError(f"{v} (a client certificate asked for but not verified) is not "
                             "possible with Python's ssl; use RequireAndVerifyClientCert "
                             "or VerifyClientCertIfGiven")
        return v

    @field_validator("cipher_suites")
    @classmethod
    def _known_suites(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in CIPHER_SUITES:
                raise ValueError(f"unknown cipher suite {name!r}; expected Go's names: "
                                 + ", ".join(n for n, o in CIPHER_SUITES.items() if o))
        return v

    @field_validator("curve_preferences")
    @classmethod
    def _one_known_curve(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in CURVES:
                raise ValueError(f"unknown curve {name!r}; expected one of "
                                 + ", ".join(CURVES))
        if len(v) > 1:
            raise ValueError("Python's ssl sets one curve, not an ordered list: name one "
                             "(or none, for OpenSSL's defaults)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TlsServerConfig:
        for inline, file in (("cert", "cert_file"), ("key", "key_file"),
                             ("client_ca", "client_ca_file")):
            if getattr(self, inline) is not None and getattr(self, file) is not None:
                raise ValueError(f"give {inline} or {file}, not both")
        if self.cert is None and self.cert_file is None:
            raise ValueError("TLS needs a certificate: cert_file (or cert) is missing")
        if self.key is None and self.key_file is None:
            raise ValueError("TLS needs the certificate's key: key_file (or key) is missing")
        has_ca = self.client_ca is not None or self.client_ca_file is not None
        verifying = self.client_auth_type != "NoClientCert"
        if verifying and not has_ca:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file "
                             "(the CA that signs the client certificates)")
        if has_ca and not verifying:
            raise ValueError("client_ca_file is set but client_auth_type is NoClientCert: "
                             "set client_auth_type: RequireAndVerifyClientCert")
        if self.client_allowed_sans and self.client_auth_type != "RequireAndVerifyClientCert":
            raise ValueError("client_allowed_sans needs client_auth_type: "
                             "RequireAndVerifyClientCert")
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version "
                             f"{self.max_version}")
        return self


class HttpServerConfig(_Strict):
    http2: bool = True  # accepted, without effect: HTTP/1.1 only (see the module doc)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, v: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        canonical = {h.lower(): h for h in HEADERS}
        for name, value in v.items():
            known = canonical.get(str(name).lower())
            if known is None:
                raise ValueError(f"header {name!r} cannot be configured; expected one of "
                                 + ", ".join(HEADERS))
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {known}: the value must be one line of text")
            allowed = HEADER_VALUES.get(known)
            if allowed and value.lower() not in allowed:
                raise ValueError(f"header {known}: {value!r} is not one of "
                                 + ", ".join(allowed))
            if value:  # blank means unset, as in the toolkit
                out[known] = value
        return out


class RateLimitConfig(_Strict):
    interval: str = "0s"  # between two requests; 0 turns the limiter off
    burst: int = Field(default=0, ge=0)

    @field_validator("interval")
    @classmethod
    def _duration(cls, v: str) -> str:
        if not v or not DURATION.match(str(v)):
            raise ValueError(f"not a duration like 1s, 500ms, 1m: {v!r}")
        return v

    @property
    def interval_s(self) -> float:
        m = DURATION.match(self.interval)
        assert m is not None
        h, mi, s, ms = (int(g or 0) for g in m.groups())
        return h * 3600.0 + mi * 60.0 + s + ms / 1000.0


class WebConfigFile(_Strict):
    """The file as written; `load_web_config` turns it into `WebSettings`."""

    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = Field(default_factory=HttpServerConfig)
    basic_auth_users: dict[str, str] = Field(default_factory=dict)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, v: dict[str, str]) -> dict[str, str]:
        for user, hashed in v.items():
            if not user or ":" in str(user):
                raise ValueError(f"user {user!r}: a basic-auth user name is not empty and "
                                 "has no ':'")
            if not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed):
                raise ValueError(f"user {user!r}: the password must be a bcrypt hash "
                                 "($2y$10$..., from htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        return v


@dataclass(frozen=True, slots=True)
class WebSettings:
    """A loaded web config: what the server applies to every connection and request.

    ``ssl_context`` None serves plain HTTP; ``auth`` None requires no authentication;
    ``allowed_sans`` empty accepts every verified client certificate; ``rate_interval_s``
    0 turns the rate limiter off. ``notes`` are warnings to log once at load."""

    source: str = "<none>"
    ssl_context: ssl.SSLContext | None = None
    allowed_sans: frozenset[str] = frozenset()
    auth: BasicAuth | None = None
    headers: tuple[tuple[str, str], ...] = ()
    rate_interval_s: float = 0.0
    rate_burst: int = 0
    notes: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    @property
    def client_certificates(self) -> bool:
        """Every connection needs a client certificate the CA signed."""
        return self.ssl_context is not None and self.ssl_context.verify_mode == ssl.CERT_REQUIRED


PLAIN = WebSettings()  # no web config: plain HTTP, no authentication


def _format(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown field{_expected(e['loc'])}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "literal_error":
            msg += f" (got {e['input']!r})"
        lines.append(f"{path}: {msg}" if path else msg)
    return f"{source}: invalid web config:\n  " + "\n  ".join(lines)


def _expected(loc: tuple[int | str, ...]) -> str:
    """The keys a section allows, for an 'unknown field' error at ``loc``."""
    model: type[BaseModel] = WebConfigFile
    for key in loc[:-1]:
        annotation = model.model_fields[str(key)].annotation
        nested = next((a for a in (annotation, *getattr(annotation, "__args__", ()))
                       if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nested is None:
            return ""
        model = nested
    return "; expected one of " + ", ".join(model.model_fields)


def parse_web_config(data: Any, source: str = "<web config>") -> WebConfigFile:
    """Validate a parsed web config document; raise `ConfigError` naming the field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return WebConfigFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None


def load_web_config(path: str | Path) -> WebSettings:
    """Read, validate and apply ``path``: certificates and keys are loaded now, so a bad
    file fails here (at start, or on SIGHUP while the old settings keep serving)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the web config: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error(err, path, "web config is")) from None
    return settings_from(parse_web_config(data, str(path)), path.parent, str(path))


def settings_from(cfg: WebConfigFile, base: Path, source: str) -> WebSettings:
    """`WebSettings` of a validated file whose relative paths are under ``base``."""
    notes: list[str] = []
    context = None
    tls = cfg.tls_server_config
    if tls is not None:
        context = _ssl_context(tls, base, source)
    if cfg.basic_auth_users and context is None:
        notes.append("basic_auth_users without tls_server_config: passwords cross the "
                     "network in clear")
    if "http2" in cfg.http_server_config.model_fields_set and cfg.http_server_config.http2:
        notes.append("http_server_config.http2 is ignored: the exporter serves HTTP/1.1")
    limit = cfg.rate_limit
    return WebSettings(
        source=source, ssl_context=context,
        allowed_sans=frozenset(tls.client_allowed_sans) if tls else frozenset(),
        auth=BasicAuth(cfg.basic_auth_users) if cfg.basic_auth_users else None,
        headers=tuple(cfg.http_server_config.headers.items()),
        rate_interval_s=limit.interval_s if limit.burst > 0 else 0.0,
        rate_burst=limit.burst, notes=tuple(notes))


def _ssl_context(tls: TlsServerConfig, base: Path, source: str) -> ssl.SSLContext:
    field = "tls_server_config"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    ctx.set_alpn_protocols(["http/1.1"])
    for name in ("cert_file", "key_file", "client_ca_file"):
        file = getattr(tls, name)
        if file is not None:
            try:
                (base / file).open("rb").close()
            except OSError as err:
                raise ConfigError(f"{source}: {field}.{name}: cannot read {base / file}: "
                                  f"{err.strerror}") from None
    try:
        if tls.cert_file is not None and tls.key_file is not None:
            ctx.load_cert_chain(base / tls.cert_file, base / tls.key_file)
        else:
            _load_inline_chain(ctx, tls, base)
    except (OSError, ssl.SSLError) as err:
        which = "cert_file/key_file" if tls.cert_file else "cert/key"
        raise ConfigError(f"{source}: {field}.{which}: cannot load the certificate and key: "
                          f"{_reason(err)}") from None
    if tls.client_auth_type != "NoClientCert":
        try:
            if tls.client_ca_file is not None:
                ctx.load_verify_locations(cafile=base / tls.client_ca_file)
            else:
                ctx.load_verify_locations(cadata=tls.client_ca)
        except (OSError, ssl.SSLError) as err:
            which = "client_ca_file" if tls.client_ca_file else "client_ca"
            raise ConfigError(f"{source}: {field}.{which}: cannot load the CA: "
                              f"{_reason(err)}") from None
        ctx.verify_mode = (ssl.CERT_REQUIRED if tls.client_auth_type ==
                           "RequireAndVerifyClientCert" else ssl.CERT_OPTIONAL)
    suites = [s for s in (CIPHER_SUITES[n] for n in tls.cipher_suites) if s]
    for name, openssl_name in ((n, CIPHER_SUITES[n]) for n in tls.cipher_suites):
        if openssl_name and not _cipher_available(openssl_name):
            raise ConfigError(f"{source}: {field}.cipher_suites: {name} is not available in "
                              f"this OpenSSL ({ssl.OPENSSL_VERSION})")
    if suites:
        ctx.set_ciphers(":".join(suites))
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    for curve in tls.curve_preferences:
        try:
            ctx.set_ecdh_curve(CURVES[curve])
        except (ValueError, ssl.SSLError):
            raise ConfigError(f"{source}: {field}.curve_preferences: {curve} is not "
                              "available in this OpenSSL") from None
    return ctx


def _load_inline_chain(ctx: ssl.SSLContext, tls: TlsServerConfig, base: Path) -> None:
    """``cert``/``key`` given inline (or one inline, one a file): OpenSSL loads a chain
    from files only, so they pass through a private temporary directory, removed at
    once."""
    with tempfile.TemporaryDirectory(prefix="voipprobe-tls-") as tmp:
        cert = base / tls.cert_file if tls.cert_file else Path(tmp, "cert.pem")
        key = base / tls.key_file if tls.key_file else Path(tmp, "key.pem")
        if tls.cert is not None:
            cert.write_text(tls.cert, encoding="utf-8")
        if tls.key is not None:
            key.touch(mode=0o600)
            key.write_text(tls.key, encoding="utf-8")
        ctx.load_cert_chain(cert, key)


def _cipher_available(openssl_name: str) -> bool:
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.set_ciphers(openssl_name)
    except ssl.SSLError:
        return False
    return any(c["name"] == openssl_name for c in probe.get_ciphers())


def _reason(err: OSError | ssl.SSLError) -> str:
    if isinstance(err, ssl.SSLError):
        return err.reason or str(err)
    name = f" {err.filename}" if err.filename else ""
    return f"{err.strerror or err}{name}"
