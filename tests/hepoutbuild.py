"""HEP out driven by a capture (shared by tests/export/test_hepout.py and
tests/test_e2e_hepout.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.calls.events import CallEnded, Event
from agent.capture.pcapfile import open_capture
from agent.config import Config, HepCollectorConfig
from agent.engine import Engine, EngineConfig
from agent.export.hepout import HepOut
from agent.sip.events import EndReason

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "pcaps"
G711 = CORPUS / "wiki_SIP_CALL_RTP_G711.pcap"


class Recorder:
    """A socket stand-in that keeps what is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def close(self) -> None:
        pass


def collector(**kw: Any) -> HepCollectorConfig:
    return HepCollectorConfig(address="127.0.0.1", agent_id=4242, node_name="probe-a", **kw)


def run_probe(path: Path, hep: HepOut, eng: Engine | None = None) -> list[Event]:
    """``path`` through an engine (``eng``, else a new one) with ``hep`` as its tap, and
    each ended call's record handed to it, as the daemon does."""
    eng = eng or Engine(EngineConfig(config=Config(privacy="clear")))
    eng.tap = hep
    events: list[Event] = []
    with open_capture(path) as reader:
        for batch in reader:
            events += eng.feed(batch)
    events += eng.finish(EndReason.CAPTURE_END)
    for e in events:
        if isinstance(e, CallEnded):
            hep.call_ended(e.record)
    return events


