"""Link, network and transport decoding of a `Batch` into `Frames`."""

from agent.decode.frames import Frames

__all__ = ["Frames"]
