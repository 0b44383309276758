"""The live agent's sources: the ring plus the configured HEP, TZSP and VXLAN listeners,
as one."""

from __future__ import annotations

import os
import re
import socket
import time

import pytest
from pydantic import ValidationError
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from agent.capture.batch import Batch
from agent.capture.hep_listener import HepListener
from agent.capture.multisource import MultiSource
from agent.capture.points import point_name
from agent.config import (
    CaptureConfig,
    ConfigError,
    HepListenerConfig,
    TzspListenerConfig,
    config_from_mapping,
)
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


def test_mirror_listener_config_is_validated() -> None:
    cfg = CaptureConfig(tzsp_listeners=[{"allowed_senders": ["198.18.9.1/32"]}],
                        vxlan_listeners=[{"name": "dc-switch", "address": "::",
                                          "allowed_senders": ["2001:db8::/32"]}])
    assert cfg.tzsp_listeners[0] == TzspListenerConfig(
        name=None, address="0.0.0.0", port=37008, allowed_senders=["198.18.9.1/32"])
    assert (cfg.vxlan_listeners[0].port, cfg.vxlan_listeners[0].label) == (4789, "dc-switch")
    assert cfg.tzsp_listeners[0].label == "tzsp:37008"
    bad_fields = {
        "allowed_senders": ({"allowed_senders": []}, {"allowed_senders": ["nowhere"]},
                            {}),
        "address": ({"allowed_senders": ["::1"], "address": "any"},),
        "port": ({"allowed_senders": ["::1"], "port": 0},),
        "name": ({"allowed_senders": ["::1"], "name": "a b"},
                 {"allowed_senders": ["::1"], "name": "x" * 65}),
        "transport": ({"allowed_senders": ["::1"], "transport": "tcp"},),  # UDP only
    }
    for field, cases in bad_fields.items():
        for bad in cases:
            with pytest.raises(ConfigError, match=rf"capture\.vxlan_listeners\.0\.{field}"):
                config_from_mapping({"capture": {"vxlan_listeners": [bad]}})


def test_listeners_may_not_share_a_udp_port_or_a_name() -> None:
    one = {"allowed_senders": ["198.18.9.1"]}
    for capture, says in (
        ({"tzsp_listeners": [one], "vxlan_listeners": [{**one, "port": 37008}]},
         "tzsp_listeners[0] and vxlan_listeners[0] both listen on UDP port 37008"),
        ({"hep_listeners": [{**one, "port": 4789}], "vxlan_listeners": [
            {**one, "address": "127.0.0.1"}]},
         "hep_listeners[0] and vxlan_listeners[0] both listen on UDP port 4789"),
        ({"tzsp_listeners": [{**one, "name": "edge"}, {**one, "name": "edge", "port": 1}]},
         "two capture sources are named 'edge'"),
        ({"interfaces": ["eth0"], "tzsp_listeners": [{**one, "name": "eth0"}]},
         "two capture sources are named 'eth0'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(says)):
            config_from_mapping({"capture": capture})
    # the same port on two addresses, and HEP over TCP beside a UDP listener: fine
    config_from_mapping({"capture": {
        "tzsp_listeners": [{**one, "address": "127.0.0.1"}, {**one, "address": "127.0.0.2",
                                                             "name": "second"}],
        "hep_listeners": [{**one, "port": 37008, "transport": "tcp"}]}})


def test_open_source_adds_the_configured_listeners() -> None:
    if os.geteuid() != 0:
        pytest.skip("the AF_PACKET ring needs CAP_NET_RAW")
    from agent.daemon import open_source, source_names
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    local = {"address": "127.0.0.1", "allowed_senders": ["127.0.0.1/32"]}
    cfg = CaptureConfig(interfaces=["lo"], hep_listeners=[
        {**local, "port": port}, {**local, "port": port, "transport": "tcp"}],
        tzsp_listeners=[{**local, "port": port + 1}],
        vxlan_listeners=[{**local, "port": port + 2, "name": "lab-switch"}])
    source = open_source(cfg)
    try:
        assert isinstance(source, MultiSource)
        assert set(source.stats()) == {"lo", f"hep:{port}", f"hep-tcp:{port}",
                                       f"tzsp:{port + 1}", "lab-switch"}
        assert set(source_names(cfg)) == set(source.stats())
        # the ring skips what a listener takes: a TZSP datagram to the listener is
        # measured once, by the listener, at the exporter's point
        frame = bytes(Ether() / IP(src="198.18.7.1", dst="198.18.8.2") / UDP(sport=5060,
                                                                             dport=5060)
                      / Raw(REC.payload))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x01\x00\x00\x01\x01" + frame, ("127.0.0.1", port + 1))
            got: list[Batch] = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not got:
                got = [b for b in source.poll(0.2) if len(b)]
            got += source.poll(1.5)  # the ring's block timeout has passed
        rows = [(point_name(int(b.point[i])), b.packet(i)) for b in got for i in range(len(b))]
        assert rows == [("tzsp/127.0.0.1", frame)]
    finally:
        source.close()
