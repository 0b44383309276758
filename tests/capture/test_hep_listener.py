"""`HepListener` with a real UDP socket on 127.0.0.1: records become packets at their HEP
time, senders outside the allowed CIDRs are dropped and counted, garbage and floods stay
bounded, and a re-encoded real capture sent over the socket gives analyze's calls."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from corpus_oracle import corpus_dir
from hepbuild import fields, records_of
from records import points_of, unplaced

from agent.calls.events import CallEnded
from agent.capture.batch import Batch
from agent.capture.hep_listener import HepListener, HepTcpListener
from agent.decode import Decoder
from agent.decode.frames import IPPROTO_UDP
from agent.decode.hep import HepRecord, encode_hep2, encode_hep3
from agent.engine import Engine
from agent.sip.events import EndReason

INVITE = b"OPTIONS sip:bob@198.18.8.2 SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
REC = HepRecord(version=3, ip_version=4, ip_proto=IPPROTO_UDP, src=bytes([198, 18, 7, 1]),
                dst=bytes([198, 18, 8, 2]), sport=5060, dport=5060, ts_sec=1_700_000_000,
                ts_usec=250_000, proto_type=1, capture_id=9, payload=INVITE)


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield s
    s.close()


def _drain(listener: HepListener, want: int, timeout_s: float = 5.0) -> list[Batch]:
    out: list[Batch] = []
    deadline = time.monotonic() + timeout_s
    while sum(len(b) for b in out) < want and time.monotonic() < deadline:
        out += listener.poll(0.2)
    return out


def test_records_become_packets_at_their_hep_time(sender: socket.socket) -> None:
    listener = HepListener("127.0.0.1", 0, ["127.0.0.0/8"])
    try:
        sender.sendto(encode_hep3(REC), ("127.0.0.1", listener.port))
        sender.sendto(encode_hep2(REC), ("127.0.0.1", listener.port))
        sender.sendto(encode_hep3(REC), ("127.0.0.1", listener.port))  # a copy: once
        sender.sendto(encode_hep2(REC, version=1), ("127.0.0.1", listener.port))
        batches = _drain(listener, 3)
        assert [len(b) for b in batches] and sum(len(b) for b in batches) == 3
        ts = [t for b in batches for t in b.ts.tolist()]
        assert ts[:2] == [REC.ts, REC.ts]
        assert abs(ts[2] - time.time()) < 60  # v1: no time in it, the receive time
        f = Decoder().decode(batches[0])
        assert f.payload(0) == INVITE
        assert (int(f.sport[0]), int(f.dport[0]), int(f.src_lo[0]) & 0xFFFFFFFF) == \
            (5060, 5060, int.from_bytes(REC.src, "big"))
        assert listener.hep.duplicates == 1
        assert (listener.hep.records_v3, listener.hep.records_v2, listener.hep.records_v1) == \
            (2, 1, 1)
        assert listener.stats()[f"hep:{listener.port}"].packets == 4
    finally:
        listener.close()


def test_senders_outside_the_allowed_cidrs_are_dropped_and_counted(
        sender: socket.socket) -> None:
    for allowed in ([], ["198.18.0.0/15"]):
        listener = HepListener("127.0.0.1", 0, allowed)
        try:
            for _ in range(5):
                sender.sendto(encode_hep3(REC), ("127.0.0.1", listener.port))
            deadline = time.monotonic() + 5
            while listener.counters.datagrams < 5 and time.monotonic() < deadline:
                assert listener.poll(0.2) == []
            assert listener.counters.denied == 5
            assert listener.hep.packets == 0
            assert listener.stats()[f"hep:{listener.port}"].drops == 5
        finally:
            listener.close()


def test_garbage_and_a_flood_stay_bounded(sender: socket.socket) -> None:
    listener = HepListener("127.0.0.1", 0, ["127.0.0.1/32"], max_batch=64)
    try:
        junk = [b"", b"HEP3", b"HEP3\xff\xff" + bytes(40), b"\x02" * 30, b"x" * 1400]
        for k in range(2000):
            sender.sendto(junk[k % len(junk)], ("127.0.0.1", listener.port))
        sender.sendto(encode_hep3(REC), ("127.0.0.1", listener.port))
        got = 0
        deadline = time.monotonic() + 10
        while listener.counters.datagrams < 2001 and time.monotonic() < deadline:
            for b in listener.poll(0.2):
                got += len(b)
        c = listener.hep
        assert listener.counters.datagrams == 2001  # loopback: nothing lost in the kernel
        assert got == 1
        assert c.not_hep == 800  # b"" and b"x"*1400
        assert c.errors_v3 == 800 and c.errors_v2 == 400
        assert listener.stats()[f"hep:{listener.port}"].drops == 2000
    finally:
        listener.close()


def test_a_capture_sent_over_the_socket_gives_analyzes_calls(sender: socket.socket,
                                                             tmp_path: Path) -> None:
    """wiki_SIP_CALL_RTP_G711 re-encoded as HEP v3 and sent to the listener, fed to an
    engine as a live agent would: the call records of analyze of the original."""

    original = corpus_dir() / "pcaps" / "wiki_SIP_CALL_RTP_G711.pcap"
    records = records_of(original)
    listener = HepListener("127.0.0.1", 0, ["127.0.0.1/32"], rcvbuf=16 << 20)
    engine = Engine()
    got = []
    try:
        received = 0
        for k in range(0, len(records), 200):  # paced: the socket buffer is finite
            for rec in records[k : k + 200]:
                sender.sendto(encode_hep3(rec), ("127.0.0.1", listener.port))
            for b in _drain(listener, min(200, len(records) - k)):
                received += len(b)
                got += [e.record.to_json() for e in engine.feed(b) if isinstance(e, CallEnded)]
        assert received == len(records)
    finally:
        listener.close()
    got += [e.record.to_json() for e in engine.finish(EndReason.CAPTURE_END)
            if isinstance(e, CallEnded)]
    out = subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "--json",
                          "--no-progress", str(original)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    want = [json.loads(line) for line in out.splitlines()][:-1]
    # seen at the HEP agent's point, not at the capture's (which names none)
    assert {p for r in got for p in points_of(r)} == {f"hep/{records[0].capture_id}"}
    assert {p for r in want for p in points_of(r)} == {None}
    assert sorted(map(unplaced, got), key=json.dumps) == sorted(map(unplaced, want),
                                                                key=json.dumps)


def _tcp(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_tcp_frames_split_and_joined_in_the_stream() -> None:
    listener = HepTcpListener("127.0.0.1", 0, ["127.0.0.1/32"])
    try:
        one, two = encode_hep3(REC), encode_hep3(HepRecord(**{**fields(REC), "ts_usec": 7}))
        conn = _tcp(listener.port)
        conn.sendall(one + two[:10])  # a whole frame and the start of the next
        batches = _drain(listener, 1)
        conn.sendall(two[10:] + one)  # the rest, and a copy of the first (counted once)
        batches += _drain(listener, 2, timeout_s=1.0)
        assert [t for b in batches for t in b.ts.tolist()] == [REC.ts, REC.ts_sec + 7e-6]
        assert listener.hep.duplicates == 1
        assert Decoder().decode(batches[0]).payload(0) == INVITE
        conn.sendall(b"GET / HTTP/1.1\r\n\r\n")  # the framing is lost: the stream is closed
        deadline = time.monotonic() + 5
        while listener.counters.desynced == 0 and time.monotonic() < deadline:
            listener.poll(0.2)
        assert listener.counters.desynced == 1
        assert conn.recv(10) == b""  # closed by the listener
        conn.close()
    finally:
        listener.close()


def test_tcp_sender_outside_the_allowed_cidrs_is_closed() -> None:
    listener = HepTcpListener("127.0.0.1", 0, ["198.18.0.0/15"])
    try:
        conn = _tcp(listener.port)
        deadline = time.monotonic() + 5
        while listener.counters.denied == 0 and time.monotonic() < deadline:
            listener.poll(0.2)
        assert listener.counters.denied == 1
        with pytest.raises(OSError):  # reset or closed: nothing gets through
            conn.sendall(encode_hep3(REC) * 100)
            time.sleep(0.2)
            conn.sendall(encode_hep3(REC) * 100)
            if conn.recv(10) == b"":
                raise ConnectionResetError
        assert listener.poll(0.2) == []
        conn.close()
    finally:
        listener.close()


def test_udp_datagrams_the_socket_buffer_had_no_room_for_are_socket_drops() -> None:
    listener = HepListener("127.0.0.1", 0, ["127.0.0.1/32"], rcvbuf=4096)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(300):  # not HEP, and most find the buffer full
                tx.sendto(b"\0" * 200, ("127.0.0.1", listener.port))
        while listener.poll(0.05) or listener.counters.datagrams < 1:
            pass
        st = listener.stats()[f"hep:{listener.port}"]
        assert st.socket_drops > 0 and st.packets + st.socket_drops == 300
        assert st.drops == 300  # the ones received are not HEP; the rest never arrived
    finally:
        listener.close()
