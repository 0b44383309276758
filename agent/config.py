"""The probe's configuration: one YAML file, validated by pydantic.

Sections: ``sla`` (local networks, peers, SLA profiles — `agent.sla`),
``quality`` (E-model, codec and jitter-buffer choices — `agent.quality`),
``calls`` (timeouts), ``privacy``, and for the live agent ``capture``,
``exporter``, ``call_log`` and ``state_dir``. Every error names the field path
and the bad value. ``voipprobe analyze --config F`` and the agent read the same
file; ``config/voipprobe.yaml`` shows every setting with its default.

Precedence, lowest first: built-in defaults, the file, ``VOIPPROBE_*``
environment variables (`env_overrides`), command-line flags. An override is an
`Override` (dotted path, value, origin); an error in a value that came from the
environment or a flag names that origin too, so the admin knows where to look.
"""

from __future__ import annotations

import ipaddress
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

# yaml is imported where a file, an override or the YAML dump needs it: `analyze`
# without --config reads none (start-up, bench/startup.py).
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.config_text import did_you_mean, unwrap, yaml_error
from agent.quality.model import QualityConfig
from agent.sla.config import SlaConfig, default_sla_config


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names field and value."""


class CallsConfig(BaseModel):
    """How calls are delimited in packet time."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    # An answered call whose media passes the probe ends (timed_out) when nothing of it,
    # signalling or media, is seen for this long; its end time is its last packet.
    media_idle_timeout_s: float = Field(default=30.0, gt=0)
    # The same for a call with no media at the probe (or on hold) and no RFC 4028 session
    # timer; with a timer, the call lives until it expires (session_expired). RFC 4028
    # §4 recommends 1800 s session intervals.
    signalling_idle_timeout_s: float = Field(default=1800.0, gt=0)
    setup_timeout_s: float = Field(default=180.0, gt=0)  # no final response (Timer C)
    # A call's record is built this long after its dialog ended, so late media and the
    # phones' RFC 6035 session reports (PUBLISH vq-rtcpxr, usually sent right after the
    # BYE; some phones take up to 30 s) still join it; a report after it is counted late.
    report_linger_s: float = Field(default=5.0, ge=0)
    interval_s: float = Field(default=10.0, gt=0)  # interval observations for mos_min
    max_calls: int = Field(default=3_000, gt=0)  # docs/floods.md "Memory": ~256 MB in all


KIB = 1024
MIB = 1024 * KIB


class TablesConfig(BaseModel):
    """Size caps of the tables keyed by what the network sends (DESIGN.md rule 4). A
    full table evicts its least recently active entry (an INVITE flood evicts its own
    kind first) and counts it (``voipprobe_table_evictions_total{table}``); every
    operation stays O(1) amortised, so a flood costs per packet what clean traffic
    does. The defaults bound the agent's memory (docs/floods.md); the call table's
    cap is ``calls.max_calls``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    rtp_streams: int = Field(default=6_000, gt=0)  # validated RTP streams
    rtp_candidates: int = Field(default=6_000, gt=0)  # flows on probation (not yet RTP)
    sip_dialogs: int = Field(default=3_000, gt=0)  # INVITE dialogs, by Call-ID
    # SDP bodies kept by the dialogs, all together (each dialog keeps its newest ones)
    sdp_bytes: int = Field(default=32 * MIB, ge=64 * KIB)
    loose_streams: int = Field(default=3_000, gt=0)  # ended unsignalled streams waiting
    interval_streams: int = Field(default=6_000, gt=0)  # per-stream interval state
    sdp_adverts_per_endpoint: int = Field(default=16, gt=0)  # calls advertising one address
    sdp_endpoints_per_call: int = Field(default=64, gt=0)  # addresses one call advertises
    tcp_streams: int = Field(default=4096, gt=0)  # SIP-over-TCP directions reassembled
    tcp_buffer_bytes: int = Field(default=256 * KIB, ge=4 * KIB)  # per direction
    tcp_total_bytes: int = Field(default=32 * MIB, ge=64 * KIB)  # all directions
    fragment_sets: int = Field(default=4096, gt=0)  # IP datagrams being reassembled
    fragment_total_bytes: int = Field(default=16 * MIB, ge=64 * KIB)
    rtcp_sources: int = Field(default=6_000, gt=0)  # SSRCs with an RTCP report kept


class SipLimitsConfig(BaseModel):
    """Work one SIP message may cost (`agent.sip.limits`); past a limit the message is
    dropped and counted by limit (``route_sip_over_<limit>``). The defaults are far
    above what deployed UAs and proxies send (docs/floods.md)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    max_header_bytes: int = Field(default=64 * KIB, ge=1 * KIB, le=1 * MIB)
    max_headers: int = Field(default=256, ge=8, le=10_000)
    max_header_line_bytes: int = Field(default=8 * KIB, ge=256, le=1 * MIB)
    max_content_length: int = Field(default=256 * KIB, ge=1 * KIB, le=16 * MIB)
    max_multipart_depth: int = Field(default=3, ge=1, le=16)
    max_sdp_media: int = Field(default=32, ge=1, le=1000)  # m= sections of one SDP
    max_sdp_bytes: int = Field(default=32 * KIB, ge=1 * KIB, le=1 * MIB)


# The exporter's default TCP port (why 9957: agent/export/http.py "Default port"). It
# lives here, not in agent.export: the config is read by the core and by analyze, which
# need no exporter, and agent.export imports this module.
DEFAULT_EXPORTER_PORT = 9957


Port = Annotated[int, Field(ge=1, le=65535)]


def _cidrs(v: list[str]) -> list[str]:
    for cidr in v:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"not an address or CIDR: {cidr!r}") from None
    return v


def _ip_address(v: str) -> str:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise ValueError(f"not an IP address: {v!r}") from None
    return v


SenderCidrs = Annotated[list[str], Field(min_length=1), AfterValidator(_cidrs)]
IpAddress = Annotated[str, AfterValidator(_ip_address)]


class HepListenerConfig(BaseModel):
    """A HEP collector socket (`agent.capture.hep_listener`): what Kamailio/OpenSIPS
    siptrace, Asterisk, FreeSWITCH, rtpengine or heplify send to HOMER. A plain socket:
    no CAP_NET_RAW. Datagrams/connections from outside ``allowed_senders`` are dropped
    and counted."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    address: IpAddress = "0.0.0.0"
    port: Port = 9060
    transport: Literal["udp", "tcp"] = "udp"
    allowed_senders: SenderCidrs  # CIDRs, e.g. ["198.18.7.10/32"]

    @property
    def label(self) -> str:
        """The listener's name in stats and metrics: ``hep:9060``, ``hep-tcp:9061``."""
        return f"hep:{self.port}" if self.transport == "udp" else f"hep-tcp:{self.port}"


POINT_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # a metric label value


class MirrorListenerConfig(BaseModel):
    """A mirror socket (`agent.capture.mirror_listener`) a router or switch sends its
    copy to: TZSP (MikroTik's packet sniffer stream) or VXLAN. A plain UDP socket: no
    CAP_NET_RAW. Datagrams from outside ``allowed_senders`` are dropped and counted;
    ``name`` is the ``listener`` label of its metrics (default ``tzsp:37008``)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    protocol: ClassVar[Literal["tzsp", "vxlan"]]

    name: str | None = Field(default=None, pattern=POINT_NAME.pattern)
    address: IpAddress = "0.0.0.0"
    port: Port
    allowed_senders: SenderCidrs  # CIDRs of the exporters, e.g. ["198.18.9.1/32"]

    @property
    def label(self) -> str:
        from agent.capture.mirror_listener import listener_label

        return listener_label(self.protocol, self.port, self.name)


class TzspListenerConfig(MirrorListenerConfig):
    protocol: ClassVar[Literal["tzsp", "vxlan"]] = "tzsp"
    port: Port = 37008  # MikroTik's streaming default


class VxlanListenerConfig(MirrorListenerConfig):
    protocol: ClassVar[Literal["tzsp", "vxlan"]] = "vxlan"
    port: Port = 4789  # RFC 7348 (IANA)


class CaptureConfig(BaseModel):
    """Live capture (AF_PACKET TPACKET_V3 ring, `agent.capture.afpacket`)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    # Interface names, or ["any"] for every interface (Linux cooked capture).
    interfaces: list[str] = Field(default_factory=lambda: ["any"], min_length=1)
    promisc: bool = False  # needed on a mirror (SPAN) port, not on the gateway itself
    # Ring geometry: block_count blocks of block_size bytes (a power of two, whole
    # pages); the kernel hands a block over when full or after block_timeout_ms.
    # 1000 ms: fewer, larger batches halve the CPU cost (bench/agent_bench.py at
    # 10,000 packets/s: 4.5 % of a core, was 9.6 % at 100 ms); a probe reports
    # per call and per scrape, so a second of latency costs nothing.
    block_size: int = Field(default=1 << 20, ge=4096, le=1 << 28)
    block_count: int = Field(default=32, ge=2, le=4096)
    block_timeout_ms: int = Field(default=1000, ge=1, le=10_000)
    snaplen: int = Field(default=65535, ge=128, le=262144)  # bytes kept of SIP/RTCP
    # Extra libpcap filter expression ANDed with the built-in SIP/RTP/RTCP filter.
    bpf: str | None = None
    sip_ports: list[Port] = Field(default_factory=lambda: [5060, 5061], min_length=1)
    # UDP ports whose datagrams are HEP (v1/v2/v3) to unwrap into the packets they
    # carry (`agent.decode.hep_unwrap`); [] turns the stage off.
    hep_ports: list[Port] = Field(default_factory=lambda: [9060])
    # HEP collector sockets of the live agent (none by default).
    hep_listeners: list[HepListenerConfig] = Field(default_factory=list)
    # Mirror sockets of the live agent: TZSP / VXLAN sent to the probe's own address
    # (none by default). The ring does not see the datagrams a listener takes.
    tzsp_listeners: list[TzspListenerConfig] = Field(default_factory=list)
    vxlan_listeners: list[VxlanListenerConfig] = Field(default_factory=list)
    # Mirrored traffic: UDP destination ports decoded as VXLAN (RFC 7348; Linux's
    # pre-IANA default is 8472) and as TZSP (MikroTik's sniffer stream) when the
    # header is valid; other datagrams to them stay plain UDP. Offline decode too.
    vxlan_ports: list[Port] = Field(default_factory=lambda: [4789])
    tzsp_ports: list[Port] = Field(default_factory=lambda: [37008])
    # Observation points by name (agent/capture/points.py: "eth0:in", "eth1:out",
    # "vxlan/198.18.9.1/vni42", "hep/2001", ...) -> the name records and the ``point``
    # metric label use: e.g. {"eth0:in": wan-in, "eth1:out": lan-out}. A point not
    # named here keeps its own name in records; in metrics an interface's name, a
    # remote exporter only its kind ("vxlan"), never an address.
    point_names: dict[str, str] = Field(default_factory=dict)
    # /health is not ok while a configured interface or listener has received nothing
    # for this long (agent/capture/health.py); 0: a source is never called silent.
    # Applies on SIGHUP without reopening the capture.
    silent_after_s: float = Field(default=300.0, ge=0)
    # Load shedding (agent/capture/overload.py): processing this many seconds behind the
    # capture sheds RTP discovery, four times it all media (SIP and RTCP kept); 0: never
    # shed (the kernel ring still drops what does not fit). Read at start.
    shed_lag_s: float = Field(default=2.0, ge=0)

    @field_validator("point_names")
    @classmethod
    def _point_names(cls, v: dict[str, str]) -> dict[str, str]:
        for raw, name in v.items():
            if not POINT_NAME.match(name):
                raise ValueError(f"point name for {raw!r} must match {POINT_NAME.pattern}: "
                                 f"{name!r}")
        return v

    @field_validator("interfaces")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            # IFNAMSIZ is 16 with the NUL; the kernel refuses '/' and whitespace, and
            # "eth0:1" is an address alias, not an interface AF_PACKET can bind to.
            if not name or len(name) > 15 or any(c in name for c in "/ \t\n:"):
                raise ValueError(f"not an interface name: {name!r}")
        if "any" in v and len(v) > 1:
            raise ValueError("'any' already covers every interface; list it alone")
        return v

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError("must be a power of two")
        return v

    @model_validator(mode="after")
    def _listeners_apart(self) -> CaptureConfig:
        """Two UDP listeners on one port would share its datagrams (SO_REUSEPORT), and
        two sources of one name would hide one another's counters."""
        udp: list[tuple[str, str, int]] = [
            *((f"hep_listeners[{i}]", h.address, h.port)
              for i, h in enumerate(self.hep_listeners) if h.transport == "udp"),
            *((f"tzsp_listeners[{i}]", m.address, m.port)
              for i, m in enumerate(self.tzsp_listeners)),
            *((f"vxlan_listeners[{i}]", m.address, m.port)
              for i, m in enumerate(self.vxlan_listeners))]
        for k, (where, address, port) in enumerate(udp):
            for other, addr2, port2 in udp[:k]:
                if port == port2 and (address == addr2 or _unspecified(address)
                                      or _unspecified(addr2)):
                    raise ValueError(f"{other} and {where} both listen on UDP port {port}")
        names = [*self.interfaces, *(h.label for h in self.hep_listeners),
                 *(m.label for m in (*self.tzsp_listeners, *self.vxlan_listeners))]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two capture sources are named {name!r}")
        return self

    def listener_udp_ports(self) -> list[int]:
        """UDP ports the agent's own listeners take (the ring skips them)."""
        return sorted({*(h.port for h in self.hep_listeners if h.transport == "udp"),
                       *(m.port for m in (*self.tzsp_listeners, *self.vxlan_listeners))})


def _unspecified(address: str) -> bool:
    return ipaddress.ip_address(address).is_unspecified


class ExporterConfig(BaseModel):
    """The Prometheus endpoint (``/metrics``, ``/``, ``/health``)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    # The loopback by default: nothing is served beyond the gateway until the admin
    # names the (LAN) address Prometheus reaches; README "Metrics and the exporter".
    listen: str = Field(default_factory=lambda: f"127.0.0.1:{DEFAULT_EXPORTER_PORT}")
    # The ``site`` label on every metric: one name per agent (bounded by the config).
    site: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # How many of the last call records ``/calls`` keeps (pseudonymised like the call
    # log; agent/export/recent.py); 0 turns the page off. Applies at start.
    recent_calls: int = Field(default=200, ge=0, le=10_000)
    # Prometheus exporter-toolkit web config (TLS, basic auth, headers):
    # agent/export/webconfig.py; re-read on SIGHUP. None: plain HTTP, no authentication.
    web_config: Path | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        split_listen(v)
        return v

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` or ``"[V6]:PORT"`` -> (host, port); raises ValueError."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError("expected HOST:PORT with a port 1..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not an IPv6 address: {host!r}") from None
    elif not host or ":" in host:
        raise ValueError("expected HOST:PORT (an IPv6 host goes in brackets: [::]:PORT)")
    return host, int(port_text)


def join_listen(host: str, port: int) -> str:
    """(host, port) -> ``"HOST:PORT"`` or ``"[V6]:PORT"`` (the inverse of `split_listen`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class CallLogConfig(BaseModel):
    """One record per ended call: to stdout (journald) or a file (reopened on SIGHUP)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    target: str = Field(default="-", min_length=1)  # "-" = stdout, else a file path
    format: Literal["json", "line"] = "json"  # JSON line, or one human-readable line


class EvidenceConfig(BaseModel):
    """Evidence pcaps (`agent.calls.evidence`, `agent.export.evidence`): a call's SIP
    messages and RTP/RTCP headers, never audio, written under ``state_dir/directory``
    when the call violates its SLA (or every call). Off by default."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    enabled: bool = False
    every_call: bool = False  # write every call's file, not only violated calls'
    directory: Path = Path("evidence")  # relative: under state_dir
    # what one call keeps in memory and writes: a quarter for its SIP messages, the
    # rest for its RTP/RTCP headers (so the BYE still fits when media filled its share)
    max_bytes_per_call: int = Field(default=256 * KIB, ge=4 * KIB)
    # memory of all running calls' buffers (each packet's object overhead counted)
    max_buffer_bytes: int = Field(default=64 * MIB, ge=64 * KIB)
    max_total_bytes: int = Field(default=256 * MIB, ge=64 * KIB)  # the directory
    max_files: int = Field(default=1000, gt=0)  # the oldest file goes first


class HepCollectorConfig(BaseModel):
    """One HEP v3 collector that HEP out (`agent.export.hepout`) sends to."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    address: str = Field(min_length=1)  # host name or IP literal of the collector
    port: int = Field(default=9060, ge=1, le=65535)
    transport: Literal["udp", "tcp", "tls"] = "udp"
    agent_id: int = Field(default=0, ge=0, le=0xFFFFFFFF)  # HEP capture agent id (chunk 12)
    node_name: str = Field(default="voipprobe", min_length=1, max_length=64)  # chunk 19
    queue_size: int = Field(default=10000, ge=1, le=1_000_000)  # packets; the rest is dropped
    sip: bool = True  # SIP messages (HEP type 1)
    rtcp: bool = True  # RTCP as the captured bytes (type 5)
    rtcp_json: bool = False  # RTCP as HOMER's JSON object (type 5 with a JSON payload)
    reports: bool = True  # one JSON quality report per call direction (type 34)
    # RTP (type 4) as captured: the headers only on a live ring (the kernel cuts the
    # audio off), so a HEP receiver measures the same streams; one HEP packet per RTP
    # packet (50/s each way per call): off unless the collector measures media
    rtp: bool = False
    tls_ca_file: Path | None = None  # tls: the CA bundle to verify the collector with
    tls_verify: bool = True  # tls: check the collector's certificate and name


class HepOutConfig(BaseModel):
    """HEP v3 out to HOMER collectors. Needs ``privacy: clear`` (see the README)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    collectors: list[HepCollectorConfig] = []


HEP_OUT_PRIVACY = (
    "HEP out sends SIP messages as captured, with numbers and URIs, and needs "
    "`privacy: clear` set explicitly (privacy is {mode!r}); a pseudonymised copy would "
    "not be the SIP HOMER exists to show, and a half-rewritten message breaks its "
    "dialogs (Via, Contact, tags, Content-Length)")


# Start-up (bench/startup.py): every model here is ``defer_build``, so its validator is
# built when something is first validated (a file, the environment, check-config), not
# when the module loads; `analyze` without --config validates nothing: it runs on
# `default_config()`. A section's default is its defaults unvalidated
# (``model_construct``): the same values validation would give, as no section has a
# validator that changes its defaults (tests/test_config.py holds it, section by
# section); so is the SLA default (`default_sla_config`, tests/sla/test_sla_config.py).


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    sla: SlaConfig = Field(default_factory=default_sla_config)
    quality: QualityConfig = Field(default_factory=QualityConfig.model_construct)
    calls: CallsConfig = Field(default_factory=CallsConfig.model_construct)
    tables: TablesConfig = Field(default_factory=TablesConfig.model_construct)
    sip_limits: SipLimitsConfig = Field(default_factory=SipLimitsConfig.model_construct)
    # How numbers and SIP URIs appear in records: in clear, as a keyed hash, or dropped.
    privacy: Literal["clear", "hash", "drop"] = "hash"
    # How IP addresses appear in records (stream ends, URI hosts, exporters in point
    # names) when privacy is not clear: as measured, a keyed hash, or their /24 (/48).
    addresses: Literal["clear", "hash", "prefix"] = "clear"
    capture: CaptureConfig = Field(default_factory=CaptureConfig.model_construct)
    exporter: ExporterConfig = Field(default_factory=ExporterConfig.model_construct)
    call_log: CallLogConfig = Field(default_factory=CallLogConfig.model_construct)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig.model_construct)
    hep_out: HepOutConfig = Field(default_factory=HepOutConfig.model_construct)
    # Where the pseudonymisation key lives (systemd: StateDirectory=voipprobe).
    state_dir: Path = Path("/var/lib/voipprobe")

    @model_validator(mode="after")
    def _hep_out_privacy(self) -> Config:
        if self.hep_out.collectors and self.privacy != "clear":
            raise ValueError("hep_out.collectors: " + HEP_OUT_PRIVACY.format(mode=self.privacy))
        return self

    def to_yaml(self) -> str:
        """The effective configuration as YAML (what ``check-config`` prints)."""
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def default_config() -> Config:
    """The built-in defaults (what ``Config()`` validates to), without validating them."""
    return Config.model_construct()


ENV_PREFIX = "VOIPPROBE_"
ENV_SEPARATOR = "__"  # VOIPPROBE_EXPORTER__LISTEN -> exporter.listen


@dataclass(frozen=True, slots=True)
class Override:
    """A value set over the file: ``path`` is dotted (``exporter.listen``); ``origin``
    says where it came from (``environment VOIPPROBE_EXPORTER__LISTEN``, ``--listen``)."""

    path: str
    value: Any
    origin: str


def _origin_of(loc: Sequence[int | str], overrides: Sequence[Override]) -> str | None:
    dotted = ".".join(str(p) for p in loc)
    for o in reversed(overrides):  # the last override of a path is the one that counts
        if dotted == o.path or dotted.startswith(o.path + "."):
            return o.origin
    return None


def _format(err: ValidationError, source: str, overrides: Sequence[Override] = ()) -> str:
    lines: list[str] = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        path = ".".join(str(p) for p in e["loc"])
        origin = _origin_of(e["loc"], overrides)
        tail = "" if origin is None else f" [from {origin}]"
        if e["type"] == "value_error" and isinstance(e["input"], dict) and path:
            # A section's own cross-field check: its lines name fields inside it.
            lines.extend(_within(path, problem) + tail for problem in msg.split("\n"))
            continue
        if e["type"] == "extra_forbidden":
            msg = "unknown setting"
            hint = did_you_mean(Config, e["loc"])
            msg += f"; {hint}" if hint else ""
        line = f"{path}: {msg}" + ("" if "\n" in msg else f" (got {e['input']!r})")
        lines.append(line + tail)
    return f"{source}: invalid configuration:\n  " + "\n  ".join(lines)


_RELATIVE_FIELD = re.compile(r"^[a-z_][a-z0-9_.\[\]]*: ")


def _within(section: str, problem: str) -> str:
    """``sla`` + ``default_profile: ...`` -> ``sla.default_profile: ...``."""
    problem = problem.strip()
    return f"{section}.{problem}" if _RELATIVE_FIELD.match(problem) else f"{section}: {problem}"


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[leaf] = value


def config_from_mapping(
    data: Any, source: str = "<config>", overrides: Sequence[Override] = ()
) -> Config:
    """Validate a parsed YAML document with ``overrides`` applied over it, in order."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    if overrides:
        import yaml

        data = yaml.safe_load(yaml.safe_dump(data))  # a deep copy the overrides may change
        for o in overrides:
            _set_path(data, o.path, o.value)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format(err, source, overrides)) from None


def read_config_file(path: str | Path) -> Any:
    """The parsed YAML document of ``path`` (not validated); raise `ConfigError`."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error(err, path)) from None


def load_config(path: str | Path, overrides: Sequence[Override] = ()) -> Config:
    """Read and validate a YAML config file, ``overrides`` over it; raise `ConfigError`."""
    return config_from_mapping(read_config_file(path), str(path), overrides)


# -- environment ------------------------------------------------------------------------


def _field_type(path: Sequence[str]) -> Any:
    """The annotation at a dotted path of `Config` (None when it is not a known field).

    A mapping field (``sla.profiles``) consumes one path element as its key."""
    annotation: Any = Config
    for key in path:
        annotation = unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(key)
            if info is None:
                return None
            annotation = info.annotation
        elif typing.get_origin(annotation) in (dict, Mapping):
            annotation = typing.get_args(annotation)[1]
        else:
            return None
    return unwrap(annotation)


def _env_value(raw: str, annotation: Any) -> Any:
    """An environment string as the field wants it.

    YAML flow syntax (``[a, b]``, ``{k: v}``) is parsed; a list field also takes a
    comma-separated list (``eth0,eth1``); ``null`` clears an optional field. Every
    other value stays a string that pydantic converts (``"true"`` -> True, ``"9"`` -> 9)
    — not YAML, whose 1.1 rules would turn ``1:30`` into 90."""
    text = raw.strip()
    if text in ("null", "~"):
        return None
    if text[:1] in ("[", "{"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return raw
    if typing.get_origin(annotation) in (list, tuple, set, frozenset):
        return [item.strip() for item in text.split(",") if item.strip()]
    return raw


def env_overrides(environ: Mapping[str, str]) -> list[Override]:
    """``VOIPPROBE_<SECTION>__<FIELD>=value`` settings, sorted by name.

    ``VOIPPROBE_EXPORTER__LISTEN=127.0.0.1:9999``, ``VOIPPROBE_CAPTURE__INTERFACES=eth0,eth1``,
    ``VOIPPROBE_PRIVACY=clear``, ``VOIPPROBE_QUALITY__JITTER_BUFFER__MODEL=fixed``. Names
    are case-insensitive; an unknown name is reported by validation like an unknown
    key in the file (extra keys are forbidden)."""
    out: list[Override] = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or len(name) == len(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split(ENV_SEPARATOR)]
        value = _env_value(environ[name], _field_type(parts))
        out.append(Override(".".join(parts), value, f"environment {name}"))
    return out
