"""SLA configuration: local networks, peers and threshold profiles (pydantic v2, YAML).

Every model forbids unknown keys. :func:`parse_sla_config` and
:func:`load_sla_config` raise one error type, :class:`SlaConfigError`, whose
message names each bad field by its dotted path and shows the bad value, e.g.
``profiles.gold.max_jitter_ms: Input should be a valid number (got 'abc')``.

Units: ``*_ms`` milliseconds, ``*_s`` seconds, ``*_ratio`` a ratio 0..1.
Ratios also accept a percent string (``"1%"`` == 0.01) for convenience; they
are stored, compared and reported as ratios. A threshold left out (or null) is
not judged.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.config_text import did_you_mean, yaml_error

DEFAULT_PROFILE = "default"
OTHER_PEER = "other"  # the peer name of an address no configured peer covers
_LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # names become metric labels


# The built-in ``default`` profile: the shipped default, and what an ``sla`` section
# that names no profiles judges against.
DEFAULT_THRESHOLDS: dict[str, Any] = {
    "min_mos_cq": 3.6,  # G.107 Annex B "some users dissatisfied" floor
    "max_jitter_ms": 30.0,
    "max_loss_ratio": 0.01,
    "max_one_way_delay_ms": 150.0,  # ITU-T G.114 planning limit
    "media_dscp": [46],  # EF (RFC 4594)
    "signalling_dscp": [24, 26, 40],  # CS3, AF31, CS5
    "min_dscp_compliance_ratio": 0.95,
}


# The shipped default SLA section; `default_sla_config` is what it validates to.
DEFAULT_SLA: dict[str, Any] = {
    "local_networks": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
    "peers": [],
    "default_profile": DEFAULT_PROFILE,
    "profiles": {DEFAULT_PROFILE: DEFAULT_THRESHOLDS},
}


class SlaConfigError(ValueError):
    """Invalid SLA configuration; the message lists ``field.path: problem (got value)``."""


def _percent_to_ratio(value: Any) -> Any:
    """Accept '1%' / '0.5 %' as a ratio; leave everything else to pydantic."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100.0
        except ValueError:
            return value
    return value


Ratio = Annotated[float, BeforeValidator(_percent_to_ratio), Field(ge=0.0, le=1.0)]
Dscp = Annotated[int, Field(ge=0, le=63)]
NonNegative = Annotated[float, Field(ge=0.0)]


class SlaProfile(BaseModel):
    """Thresholds of one SLA profile. ``None`` = not judged."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    name: str = DEFAULT_PROFILE  # set from the key under ``profiles``
    min_mos_cq: Annotated[float, Field(ge=1.0, le=4.5)] | None = None
    max_jitter_ms: NonNegative | None = None
    max_loss_ratio: Ratio | None = None
    max_rtt_ms: NonNegative | None = None
    max_one_way_delay_ms: NonNegative | None = None
    max_setup_delay_s: NonNegative | None = None
    media_dscp: tuple[Dscp, ...] | None = None  # accepted DSCP values for RTP
    signalling_dscp: tuple[Dscp, ...] | None = None  # accepted DSCP values for SIP
    min_dscp_compliance_ratio: Ratio = 0.95  # share of packets that must carry one
    # Media seen in both directions (agent/calls/media_seen.py); judged only for a call
    # answered at least ``two_way_media_after_s`` before its end, with media at the probe.
    require_two_way_media: bool = False
    two_way_media_after_s: NonNegative = 5.0


class Peer(BaseModel):
    """A remote party (carrier SBC / trunk) by address ranges, bound to a profile."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    name: str
    networks: tuple[IPvAnyNetwork, ...]
    profile: str = DEFAULT_PROFILE

    @field_validator("networks")
    @classmethod
    def _some(cls, v: tuple[IPvAnyNetwork, ...]) -> tuple[IPvAnyNetwork, ...]:
        if not v:
            raise ValueError("a peer needs at least one network (CIDR)")
        return v

    @field_validator("name")
    @classmethod
    def _label(cls, v: str) -> str:
        if not _LABEL.match(v) or v == OTHER_PEER:
            raise ValueError(f"peer name must match {_LABEL.pattern} and not be {OTHER_PEER!r}")
        return v


class SlaConfig(BaseModel):
    """Local networks, peers and profiles. Every peer's profile must exist."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    local_networks: tuple[IPvAnyNetwork, ...] = ()
    peers: tuple[Peer, ...] = ()
    profiles: dict[str, SlaProfile] = Field(default_factory=dict)
    default_profile: str = DEFAULT_PROFILE

    @model_validator(mode="before")
    @classmethod
    def _name_profiles(cls, data: Any) -> Any:
        """A profile's name is its key under ``profiles``; a section that names no
        profiles (``sla: {local_networks: [...]}``) keeps the built-in default one."""
        if isinstance(data, dict) and data.get("profiles") is None:
            data = {**data, "profiles": {DEFAULT_PROFILE: DEFAULT_THRESHOLDS}}
        if isinstance(data, dict) and isinstance(data.get("profiles"), dict):
            profiles = {
                key: ({"name": key, **value} if isinstance(value, dict) else value)
                for key, value in data["profiles"].items()
            }
            data = {**data, "profiles": profiles}
        return data

    @field_validator("profiles")
    @classmethod
    def _profile_keys(cls, v: dict[str, SlaProfile]) -> dict[str, SlaProfile]:
        for key, profile in v.items():
            if not _LABEL.match(key):
                raise ValueError(f"profile name {key!r} must match {_LABEL.pattern}")
            if profile.name != key:
                raise ValueError(f"profile {key!r} has name {profile.name!r}; leave name out")
        return v

    @model_validator(mode="after")
    def _references(self) -> SlaConfig:
        known = sorted(self.profiles)

        def unknown(field: str, name: str) -> str:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return f"{field}: {name!r} is not among profiles {known}{hint}"

        problems = []
        if self.default_profile not in self.profiles:
            problems.append(unknown("default_profile", self.default_profile))
        names: set[str] = set()
        for i, peer in enumerate(self.peers):
            if peer.profile not in self.profiles:
                problems.append(unknown(f"peers.{i}.profile", peer.profile))
            if peer.name in names:
                problems.append(f"peers.{i}.name: duplicate peer name {peer.name!r}")
            names.add(peer.name)
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    def profile_for_peer(self, peer_name: str) -> SlaProfile:
        """The profile bound to ``peer_name``; the default profile for ``other``/unknown."""
        for peer in self.peers:
            if peer.name == peer_name:
                return self.profiles[peer.profile]
        return self.profiles[self.default_profile]


def default_sla_config() -> SlaConfig:
    """The shipped default (config/sla-default.yaml): usual carrier figures, STANDARDS.md.

    Built without validating (``model_construct``), so `analyze` without --config
    builds no SLA validator (start-up, bench/startup.py): the values below are what
    validating `DEFAULT_SLA` gives, DSCP lists as tuples and networks as
    `ipaddress` networks (tests/sla/test_sla_config.py holds the two equal)."""
    thresholds: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in DEFAULT_THRESHOLDS.items()}
    profile = SlaProfile.model_construct(name=DEFAULT_PROFILE, **thresholds)
    return SlaConfig.model_construct(
        local_networks=tuple(ipaddress.ip_network(n) for n in DEFAULT_SLA["local_networks"]),
        peers=(),
        default_profile=DEFAULT_PROFILE,
        profiles={DEFAULT_PROFILE: profile},
    )


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:  # cross-field checks name their own field path
            lines.append(msg)
            continue
        path = ".".join(str(part) for part in e["loc"])
        if e["type"] == "extra_forbidden":
            hint = did_you_mean(SlaConfig, e["loc"])
            msg = "unknown setting" + (f"; {hint}" if hint else "")
        lines.append(f"{path}: {msg} (got {e['input']!r})")
    return f"{source}: invalid SLA configuration:\n  " + "\n  ".join(lines)


def sla_config_from_mapping(data: Any, source: str = "<config>") -> SlaConfig:
    """Validate an already-parsed mapping; raise :class:`SlaConfigError` on any problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SlaConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return SlaConfig.model_validate(data)
    except ValidationError as err:
        raise SlaConfigError(_format_errors(err, source)) from None


def parse_sla_config(text: str, source: str = "<string>") -> SlaConfig:
    """Parse YAML text into an :class:`SlaConfig`; raise :class:`SlaConfigError`."""
    import yaml  # only a YAML source needs it (start-up: analyze reads none)

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SlaConfigError(yaml_error(err, source)) from None
    return sla_config_from_mapping(data, source)


def load_sla_config(path: str | Path) -> SlaConfig:
    """Read and parse a YAML SLA config file; raise :class:`SlaConfigError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise SlaConfigError(f"{path}: cannot read: {err.strerror}") from None
    return parse_sla_config(text, str(path))
