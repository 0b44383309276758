"""SLA: configuration (profiles, peers, local networks) and the policy that judges calls.

Pure library code apart from :func:`agent.sla.config.load_sla_config`, which reads a file.
"""

from agent.sla.config import (
    Peer,
    SlaConfig,
    SlaConfigError,
    SlaProfile,
    default_sla_config,
    load_sla_config,
    parse_sla_config,
)
from agent.sla.policy import Measured, Verdict, Violation, direction_of, evaluate, peer_of

__all__ = [
    "Measured",
    "Peer",
    "SlaConfig",
    "SlaConfigError",
    "SlaProfile",
    "Verdict",
    "Violation",
    "default_sla_config",
    "direction_of",
    "evaluate",
    "load_sla_config",
    "parse_sla_config",
    "peer_of",
]
