"""`MirrorListener` (TZSP, VXLAN) with a real UDP socket on 127.0.0.1: the carried
Ethernet frames at their kernel receive time and at the point the decoder gives the
same datagrams sniffed; denied senders, bad headers and garbage are counted drops;
a flood stays bounded."""

from __future__ import annotations

import socket
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.tzsp import TZSP, TZSPTagEnd, TZSPTagRawRSSIByte
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from agent.capture.batch import Batch, LinkType
from agent.capture.mirror_listener import MirrorListener, MirrorStats
from agent.capture.points import point_name
from agent.decode import Decoder

SIP = b"OPTIONS sip:bob@198.18.8.2 SIP/2.0\r\nCall-ID: m1\r\nCSeq: 1 OPTIONS\r\n\r\n"
FRAME = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
              / IP(src="198.18.7.1", dst="198.18.8.2", tos=0xB8)
              / UDP(sport=5060, dport=5060) / Raw(SIP))
TZSP_DGRAM = bytes(TZSP(type=0, encapsulated_protocol=1) / TZSPTagEnd() / Raw(FRAME))
VXLAN_DGRAM = bytes(VXLAN(vni=42) / Raw(FRAME))
LOCAL = "127.0.0.1"


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield s
    s.close()


def _drain(listener: MirrorListener, datagrams: int, timeout_s: float = 5.0) -> list[Batch]:
    """Polls until ``datagrams`` were received (whatever became of them)."""
    out: list[Batch] = []
    deadline = time.monotonic() + timeout_s
    while listener.counters.datagrams < datagrams and time.monotonic() < deadline:
        out += listener.poll(0.1)
    return out


def test_tzsp_frames_at_their_receive_time_and_the_exporters_point(
        sender: socket.socket) -> None:
    listener = MirrorListener("tzsp", LOCAL, 0, ["127.0.0.0/8"])
    try:
        assert listener.label == f"tzsp:{listener.port}"
        # the kernel turns receive timestamps on a moment later (net_enable_timestamp
        # defers it); until then it stamps at the read, as a long-lived listener never sees
        time.sleep(0.1)
        before = time.time()
        sender.sendto(TZSP_DGRAM, (LOCAL, listener.port))
        sent = time.time()
        time.sleep(0.3)  # read late, as the daemon does after waiting on the ring
        [batch] = _drain(listener, 1)
        read = time.time()
        assert batch.linktype.tolist() == [LinkType.ETHERNET]
        assert batch.packet(0) == FRAME
        # the kernel's receive time, not the read time
        assert before - 0.001 <= float(batch.ts[0]) <= sent + 0.001
        assert read - float(batch.ts[0]) >= 0.29
        assert point_name(int(batch.point[0])) == "tzsp/127.0.0.1"
        f = Decoder().decode(batch)
        assert f.payload(0) == SIP
        assert (int(f.sport[0]), int(f.dport[0]), int(f.dscp[0])) == (5060, 5060, 46)
        assert listener.stats() == {listener.label: MirrorStats(
            "tzsp", datagrams=1, bytes=len(TZSP_DGRAM), denied=0, invalid=0,
            not_ethernet=0, up=True)}
    finally:
        listener.close()
    assert listener.stats()[listener.label].up is False
    assert listener.poll(0.0) == []


def test_listener_and_sniffed_datagrams_are_the_same_point(sender: socket.socket) -> None:
    """The VXLAN datagram the listener took, captured on the wire instead and decoded:
    the same inner packet at the same observation point (`analyze` agrees)."""
    listener = MirrorListener("vxlan", LOCAL, 0, [LOCAL], name="core-switch")
    try:
        sender.sendto(VXLAN_DGRAM, (LOCAL, listener.port))
        sender.sendto(bytes(VXLAN(vni=7) / Raw(FRAME)), (LOCAL, listener.port))
        batches = _drain(listener, 2)
        heard = Decoder().decode(Batch.from_packets(
            [b.packet(i) for b in batches for i in range(len(b))],
            [0.0, 0.0], point=[int(p) for b in batches for p in b.point]))
        wire = [bytes(Ether() / IP(src=LOCAL, dst=LOCAL) / UDP(sport=40000, dport=4789)
                      / VXLAN(vni=vni) / Raw(FRAME)) for vni in (42, 7)]
        sniffed = Decoder().decode(Batch.from_packets(wire, [0.0, 0.0]))
        assert [point_name(int(p)) for p in heard.point] == \
            ["vxlan/127.0.0.1/vni42", "vxlan/127.0.0.1/vni7"]
        assert heard.point.tolist() == sniffed.point.tolist()
        assert [heard.payload(i) for i in range(2)] == [sniffed.payload(i) for i in range(2)]
        assert set(listener.stats()) == {"core-switch"}
    finally:
        listener.close()


def test_senders_outside_the_allowed_cidrs_are_dropped_and_counted(
        sender: socket.socket) -> None:
    for allowed in ([], ["198.18.0.0/15"]):
        listener = MirrorListener("tzsp", LOCAL, 0, allowed)
        try:
            for _ in range(5):
                sender.sendto(TZSP_DGRAM, (LOCAL, listener.port))
            assert _drain(listener, 5) == []
            c = listener.counters
            assert (c.datagrams, c.denied, c.bytes) == (5, 5, 5 * len(TZSP_DGRAM))
            assert listener.stats()[listener.label].drops == 5
        finally:
            listener.close()


def test_datagrams_the_socket_buffer_had_no_room_for_are_socket_drops(
        sender: socket.socket) -> None:
    listener = MirrorListener("tzsp", LOCAL, 0, [LOCAL], rcvbuf=4096)
    try:
        for _ in range(300):  # nobody reads meanwhile: most find the buffer full
            sender.sendto(TZSP_DGRAM, (LOCAL, listener.port))
        while listener.poll(0.05):
            pass
        st = listener.stats()[listener.label]
        assert st.socket_drops > 0 and st.datagrams + st.socket_drops == 300
        assert st.drops == st.socket_drops  # nothing else went wrong
    finally:
        listener.close()


def test_bad_headers_and_other_encapsulations_are_counted_drops(
        sender: socket.socket) -> None:
    tzsp = MirrorListener("tzsp", LOCAL, 0, [LOCAL])
    vxlan = MirrorListener("vxlan", LOCAL, 0, [LOCAL])
    try:
        for dgram in (
            b"",
            bytes(TZSP(version=2, encapsulated_protocol=1) / TZSPTagEnd() / Raw(FRAME)),
            bytes(TZSP(type=4, encapsulated_protocol=1) / TZSPTagEnd() / Raw(FRAME)),
            TZSP_DGRAM[:4],  # no tag list
            TZSP_DGRAM[:4] + b"\x0a\x05\x01",  # a tag cut short, no END
        ):
            sender.sendto(dgram, (LOCAL, tzsp.port))
        # 802.11 (18) and a radio tag: a valid header, not an Ethernet frame
        sender.sendto(bytes(TZSP(type=0, encapsulated_protocol=18) / TZSPTagRawRSSIByte()
                            / TZSPTagEnd() / Raw(FRAME)), (LOCAL, tzsp.port))
        sender.sendto(TZSP_DGRAM, (LOCAL, tzsp.port))
        for dgram in (bytes(VXLAN(flags=0, vni=42) / Raw(FRAME)), VXLAN_DGRAM[:7], b"\x08"):
            sender.sendto(dgram, (LOCAL, vxlan.port))
        got = sum(len(b) for b in _drain(tzsp, 7)), sum(len(b) for b in _drain(vxlan, 3))
        assert got == (1, 0)
        t, v = tzsp.stats()[tzsp.label], vxlan.stats()[vxlan.label]
        assert (t.datagrams, t.invalid, t.not_ethernet, t.drops) == (7, 5, 1, 6)
        assert (v.datagrams, v.invalid, v.not_ethernet, v.drops) == (3, 3, 0, 3)
    finally:
        tzsp.close()
        vxlan.close()


_GARBAGE = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"\x01\x00\x00\x01" + b),  # a TZSP start
    st.binary(max_size=300).map(lambda b: b"\x01\x00\x00\x01\x01" + b),  # and END tag
    st.binary(max_size=300).map(lambda b: b"\x08\x00\x00\x00" + b),  # a VXLAN start
)


@pytest.mark.parametrize("protocol", ["tzsp", "vxlan"])
def test_garbage_never_raises_and_every_datagram_is_accounted(protocol: str) -> None:
    listener = MirrorListener(protocol, LOCAL, 0, [LOCAL])  # type: ignore[arg-type]
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    emitted = [0]

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(_GARBAGE, min_size=1, max_size=8))
    def run(datagrams: list[bytes]) -> None:
        want = listener.counters.datagrams + len(datagrams)
        for d in datagrams:
            out.sendto(d, (LOCAL, listener.port))
        for b in _drain(listener, want):
            assert b.linktype.tolist() == [LinkType.ETHERNET] * len(b)
            emitted[0] += len(b)
        assert listener.counters.datagrams == want

    try:
        run()
        c = listener.counters
        assert c.denied == 0
        assert c.datagrams == emitted[0] + c.invalid + c.not_ethernet
        assert c.invalid > 0 and emitted[0] > 0  # both ways were taken
    finally:
        out.close()
        listener.close()


def test_a_flood_keeps_memory_bounded(sender: socket.socket) -> None:
    """100,000 datagrams (valid and not), read in bounded polls: nothing is held between
    polls, so memory after the flood is what it was after its first tenth."""
    listener = MirrorListener("vxlan", LOCAL, 0, [LOCAL], max_batch=256, rcvbuf=8 << 20)
    rows = 0
    biggest = 0
    try:
        tracemalloc.start()
        baseline = 0
        for k in range(100):
            for j in range(1000):
                sender.sendto(VXLAN_DGRAM if j % 4 else b"junk", (LOCAL, listener.port))
            for b in _drain(listener, (k + 1) * 1000):
                rows += len(b)
                biggest = max(biggest, len(b))
            if k == 9:
                baseline = tracemalloc.get_traced_memory()[0]
        grown = tracemalloc.get_traced_memory()[0] - baseline
        tracemalloc.stop()
        c = listener.counters
        assert c.datagrams == 100_000  # loopback, paced: nothing lost in the kernel
        assert rows == 75_000 and c.invalid == 25_000
        assert biggest <= 256  # max_batch holds
        assert grown < 256 << 10
    finally:
        listener.close()


def test_only_tzsp_and_vxlan() -> None:
    with pytest.raises(ValueError, match="not a mirror protocol"):
        MirrorListener("erspan", LOCAL, 0, [LOCAL])  # type: ignore[arg-type]
