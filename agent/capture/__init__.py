"""Packet sources: capture files, live rings and remote listeners, all yielding `Batch`."""

from agent.capture.batch import Batch, LinkType

__all__ = ["Batch", "LinkType"]
