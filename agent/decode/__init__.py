"""Link, network and transport decoding of a `Batch` into `Frames`."""

from agent.decode.counters import DecodeCounters, DecodeLimits
from agent.decode.decoder import Decoder
from agent.decode.frames import Frames
from agent.decode.tunnels import TunnelPorts

__all__ = ["DecodeCounters", "DecodeLimits", "Decoder", "Frames", "TunnelPorts"]
