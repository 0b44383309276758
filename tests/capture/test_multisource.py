"""The live agent's sources: the ring plus the configured HEP listeners, as one."""

from __future__ import annotations

import os
import socket
import time

import pytest
from pydantic import ValidationError

from agent.capture.batch import Batch
from agent.capture.hep_listener import HepListener
from agent.capture.multisource import MultiSource
from agent.config import CaptureConfig, HepListenerConfig
from agent.decode.hep import HepRecord, encode_hep3

REC = HepRecord(version=3, ip_version=4, ip_proto=17, src=bytes([198, 18, 7, 1]),
                dst=bytes([198, 18, 8, 2]), sport=5060, dport=5060, ts_sec=1_700_000_000,
                ts_usec=0, proto_type=1, capture_id=1, payload=b"OPTIONS sip:a SIP/2.0\r\n\r\n")


class Quiet:
    """A ring with nothing to say: waits its timeout, returns nothing."""

    def __init__(self) -> None:
        self.waited: list[float] = []
        self.closed = False

    def poll(self, timeout_s: float) -> list[Batch]:
        self.waited.append(timeout_s)
        return []

    def stats(self) -> dict[str, int]:
        return {"eth0": 1}

    def close(self) -> None:
        self.closed = True


def test_listeners_are_polled_without_waiting_beside_the_ring() -> None:
    ring = Quiet()
    udp = HepListener("127.0.0.1", 0, ["127.0.0.1/32"])
    both = MultiSource([ring, udp])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(encode_hep3(REC), ("127.0.0.1", udp.port))
        got: list[Batch] = []
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            got = both.poll(0.05)
    assert [len(b) for b in got] == [1] and got[0].ts.tolist() == [REC.ts]
    assert set(ring.waited) == {0.05}
    assert set(both.stats()) == {"eth0", f"hep:{udp.port}"}
    both.close()
    assert ring.closed and udp.poll(0.0) == []


def test_listener_config_is_validated() -> None:
    cfg = CaptureConfig(hep_listeners=[{"port": 9061, "transport": "tcp",
                                        "allowed_senders": ["198.18.7.0/24", "::1"]}])
    assert cfg.hep_listeners[0] == HepListenerConfig(
        address="0.0.0.0", port=9061, transport="tcp", allowed_senders=["198.18.7.0/24", "::1"])
    for bad in ({"allowed_senders": []}, {"allowed_senders": ["nowhere"]},
                {"allowed_senders": ["198.18.0.0/15"], "transport": "sctp"},
                {"allowed_senders": ["198.18.0.0/15"], "address": "any"}):
        with pytest.raises(ValidationError):
            CaptureConfig(hep_listeners=[bad])


def test_open_source_adds_the_configured_listeners() -> None:
    if os.geteuid() != 0:
        pytest.skip("the AF_PACKET ring needs CAP_NET_RAW")
    from agent.daemon import open_source, source_names
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = CaptureConfig(interfaces=["lo"], hep_listeners=[
        {"address": "127.0.0.1", "port": port, "allowed_senders": ["127.0.0.1/32"]},
        {"address": "127.0.0.1", "port": port, "transport": "tcp",
         "allowed_senders": ["127.0.0.1/32"]}])
    source = open_source(cfg)
    try:
        assert isinstance(source, MultiSource)
        assert {"lo", f"hep:{port}", f"hep-tcp:{port}"} <= set(source.stats())
        assert set(source_names(cfg)) <= set(source.stats())
    finally:
        source.close()
