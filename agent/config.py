"""The probe's configuration: one YAML file, validated by pydantic.

Sections: ``sla`` (local networks, peers, SLA profiles — `agent.sla`),
``quality`` (E-model, codec and jitter-buffer choices — `agent.quality`),
``calls`` (timeouts) and ``privacy``. Every error names the field path and
the bad value. ``voipprobe analyze --config F`` and the agent read the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.quality.model import QualityConfig
from agent.sla.config import SlaConfig, default_sla_config


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names field and value."""


class CallsConfig(BaseModel):
    """How calls are delimited in packet time."""

    model_config = ConfigDict(extra="forbid")

    media_idle_timeout_s: float = Field(default=30.0, gt=0)  # a call with no BYE ends then
    setup_timeout_s: float = Field(default=180.0, gt=0)  # no final response (Timer C)
    interval_s: float = Field(default=10.0, gt=0)  # interval observations for mos_min
    max_calls: int = Field(default=50000, gt=0)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sla: SlaConfig = Field(default_factory=default_sla_config)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    calls: CallsConfig = Field(default_factory=CallsConfig)
    # How numbers and SIP URIs appear in records: in clear, as a keyed hash, or dropped.
    privacy: Literal["clear", "hash", "drop"] = "hash"


def _format(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        path = ".".join(str(p) for p in e["loc"])
        lines.append(f"{path}: {msg}" + ("" if "\n" in msg else f" (got {e['input']!r})"))
    return f"{source}: invalid configuration:\n  " + "\n  ".join(lines)


def config_from_mapping(data: Any, source: str = "<config>") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; raise `ConfigError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return config_from_mapping(data, str(path))
