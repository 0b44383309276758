"""SIP over TCP: segments in, exactly the original messages out."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from sip_callflow import ANSWER, CallFlow

from agent.sip.message import parse_message
from agent.sip.tcpstream import TCP_FIN, TCP_RST, TCP_SYN, SipTcpReassembler, StreamKey

KEY: StreamKey = (0, 0xFFFF_C000_020A, 40000, 0, 0xFFFF_C633_6414, 5060)
ACK, PSH = 0x10, 0x08
SEQ = 4_294_967_000  # close to the 32-bit wrap, which every stream below crosses
CALL = CallFlow()
INVITE = CALL.invite()
RINGING = CALL.response(180)
OK = CALL.response(200, body=ANSWER)


def segments(data: bytes, cuts: list[int], seq: int = SEQ) -> list[tuple[int, bytes]]:
    """(sequence number, payload) of ``data`` cut at the given offsets."""
    bounds = [0, *cuts, len(data)]
    return [((seq + a) % (1 << 32), data[a:b]) for a, b in pairwise(bounds)]


def feed_all(
    r: SipTcpReassembler, segs: list[tuple[int, bytes]], key: StreamKey = KEY
) -> list[bytes]:
    out: list[bytes] = []
    for i, (seq, payload) in enumerate(segs):
        out += r.feed(key, seq, ACK | PSH, payload, 100.0 + i)
    return out


def test_two_messages_in_one_segment() -> None:
    r = SipTcpReassembler()
    assert r.feed(KEY, SEQ, ACK | PSH, INVITE + RINGING, 1.0) == [INVITE, RINGING]
    assert r.counters.messages == 2 and r.bytes_held == 0


def test_one_message_across_three_segments() -> None:
    r = SipTcpReassembler()
    segs = segments(INVITE, [60, 200])
    assert r.feed(KEY, segs[0][0], ACK, segs[0][1], 1.0) == []
    assert r.feed(KEY, segs[1][0], ACK, segs[1][1], 1.1) == []
    assert r.bytes_held == 200
    assert r.feed(KEY, segs[2][0], ACK | PSH, segs[2][1], 1.2) == [INVITE]
    assert parse_message(INVITE).sdp is not None  # body framed by Content-Length, intact


def test_syn_then_data_and_keepalives() -> None:
    r = SipTcpReassembler()
    assert r.feed(KEY, SEQ - 1, TCP_SYN, b"", 0.9) == []
    assert r.feed(KEY, SEQ, ACK, b"\r\n\r\n", 1.0) == []  # RFC 5626 keep-alive before data
    assert r.feed(KEY, SEQ + 4, ACK, INVITE + b"\r\n\r\n", 1.1) == [INVITE]
    assert r.feed(KEY, SEQ + 8 + len(INVITE), ACK, RINGING, 1.2) == [RINGING]
    assert r.bytes_held == 0


def test_retransmitted_and_overlapping_segments() -> None:
    r = SipTcpReassembler()
    data = INVITE + RINGING
    (s0, p0), (s1, p1), (s2, p2) = segments(data, [100, len(INVITE) + 50])
    assert r.feed(KEY, s0, ACK, p0, 1) == []
    assert r.feed(KEY, s0, ACK, p0, 2) == []  # exact retransmission
    # A repacketised retransmission overlapping old and new data: only the tail is new.
    assert r.feed(KEY, (s0 + 50) % (1 << 32), ACK, data[50:len(INVITE)], 3) == [INVITE]
    assert r.feed(KEY, s1, ACK, p1, 4) == []  # mostly old: its last 50 bytes are new
    assert r.feed(KEY, s2, ACK, p2, 5) == [RINGING]
    assert r.counters.retransmitted_segments == 3
    assert r.counters.messages == 2


def test_out_of_order_segments_wait_for_the_gap() -> None:
    r = SipTcpReassembler()
    segs = segments(INVITE + RINGING + OK, [100, 400, len(INVITE) + 20, len(INVITE) + len(RINGING)])
    order = [0, 3, 2, 4, 1]
    out = feed_all(r, [segs[i] for i in order])
    assert out == [INVITE, RINGING, OK]
    assert r.counters.out_of_order == 3 and r.counters.resyncs == 0 and r.bytes_held == 0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_cut_and_local_reordering_gives_the_same_messages(data: st.DataObject) -> None:
    stream = b"\r\n".join([INVITE, RINGING, OK, CALL.request("ACK", to_tag="a6c85cf")])
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=20))))
    segs = segments(stream, cuts)
    order = list(range(len(segs)))
    for _ in range(data.draw(st.integers(0, 5))):  # swap neighbours: reordering within the cap
        i = data.draw(st.integers(0, max(0, len(order) - 2)))
        order[i : i + 2] = order[i : i + 2][::-1]
    dup = data.draw(st.lists(st.integers(0, len(segs) - 1), max_size=3))
    r = SipTcpReassembler()
    r.feed(KEY, SEQ - 1, TCP_SYN, b"", 99.0)  # the start is known, whatever comes first
    out = feed_all(r, [segs[i] for i in order] + [segs[i] for i in dup])
    assert [parse_message(m).status_code for m in out] == [None, 180, 200, None]
    assert r.bytes_held == 0 and r.counters.resyncs == 0


def test_lost_segment_resyncs_at_next_message() -> None:
    r = SipTcpReassembler(max_pending_segments=4)
    first = segments(INVITE, [100, 200, 300, 400, 500])
    after = (SEQ + len(INVITE)) % (1 << 32)
    feed_all(r, [first[0], *first[2:]])  # first[1] is never seen; 4 segments held
    assert r.counters.resyncs == 0 and r.counters.out_of_order == 4
    # The next message does not fit the cap: the hole is given up and the stream restarts.
    assert r.feed(KEY, after, ACK, RINGING, 200.0) == [RINGING]
    assert r.counters.resyncs == 1
    assert r.feed(KEY, (after + len(RINGING)) % (1 << 32), ACK, OK, 201.0) == [OK]


def test_resync_skips_the_middle_of_a_message() -> None:
    r = SipTcpReassembler(max_pending_segments=1)
    r.feed(KEY, SEQ, ACK, INVITE[:50], 1.0)
    r.feed(KEY, SEQ + 100, ACK, INVITE[100:150], 1.1)  # held
    # Ahead again with one held: resync at this segment, which is mid-message: skipped.
    assert r.feed(KEY, SEQ + 200, ACK, INVITE[200:], 1.2) == []
    assert r.counters.resyncs == 1 and r.bytes_held == 0
    assert r.feed(KEY, SEQ + len(INVITE), ACK, RINGING, 1.3) == [RINGING]


def test_non_sip_stream_is_given_up() -> None:
    r = SipTcpReassembler()
    tls = bytes([0x16, 0x03, 0x01, 0x02, 0x00]) + bytes(range(256)) * 4
    r.feed(KEY, 0, TCP_SYN, b"", 0.9)
    assert r.feed(KEY, 1, ACK, tls, 1.0) == []
    assert r.counters.not_sip == 1 and r.bytes_held == 0
    assert r.feed(KEY, 1 + len(tls), ACK, INVITE, 1.1) == []  # the stream stays given up
    assert r.bytes_held == 0
    http = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
    other: StreamKey = (0, 1, 80, 0, 2, 5060)
    r.feed(other, 6, TCP_SYN, b"", 1.2)
    assert r.feed(other, 7, ACK, http, 1.2) == [] and r.counters.not_sip == 2


def test_joined_mid_connection_syncs_on_the_next_message() -> None:
    r = SipTcpReassembler(max_sync_segments=3)
    # The probe starts inside a long-lived trunk connection, mid-INVITE.
    assert r.feed(KEY, SEQ, ACK, INVITE[100:], 1.0) == []
    after = SEQ + len(INVITE) - 100
    assert r.feed(KEY, after, ACK, RINGING, 1.1) == [RINGING]
    assert r.counters.not_sip == 0
    # Mid-connection TCP that never starts a SIP message is given up after the limit.
    other: StreamKey = (0, 1, 443, 0, 2, 50000)
    for i in range(4):
        r.feed(other, 1000 * i, ACK, bytes(1000), 2.0 + i)
    assert r.counters.not_sip == 1 and r.bytes_held == 0
    assert r.feed(other, 4000, ACK, INVITE, 7.0) == []  # given up for good


def test_short_first_segment_is_not_judged_too_early() -> None:
    r = SipTcpReassembler()
    r.feed(KEY, SEQ - 1, TCP_SYN, b"", 0.9)
    assert r.feed(KEY, SEQ, ACK, INVITE[:10], 1.0) == []  # "INVITE sip" alone proves nothing
    assert r.counters.not_sip == 0
    assert r.feed(KEY, SEQ + 10, ACK, INVITE[10:], 1.1) == [INVITE]


def test_fin_and_rst_close_the_direction() -> None:
    r = SipTcpReassembler()
    r.feed(KEY, SEQ, ACK, INVITE[:100], 1.0)
    assert r.feed(KEY, SEQ + 100, ACK | TCP_FIN, INVITE[100:], 1.1) == [INVITE]
    assert len(r) == 0
    r.feed(KEY, SEQ, ACK, INVITE[:100], 2.0)
    assert r.feed(KEY, SEQ + 100, TCP_RST, b"", 2.1) == [] and len(r) == 0
    assert r.counters.closed == 2 and r.bytes_held == 0


def test_per_stream_cap_drops_a_message_that_never_ends() -> None:
    r = SipTcpReassembler(max_buffer_bytes=4096)
    head = INVITE.split(b"\r\n\r\n")[0].replace(b"Content-Length: ", b"X-Old: ") + b"\r\n"
    r.feed(KEY, 1, ACK, head, 1.0)
    assert r.feed(KEY, 1 + len(head), ACK, b"X-Pad: " + b"a" * 5000 + b"\r\n", 1.1) == []
    assert r.counters.oversize == 1 and r.bytes_held == 0
    big = INVITE.replace(b"Content-Length: ", b"Content-Length: 9999")  # body beyond the cap
    r2 = SipTcpReassembler(max_buffer_bytes=4096)
    assert r2.feed(KEY, 1, ACK, big, 1.0) == [] and r2.counters.oversize == 1


def test_stream_table_and_byte_caps() -> None:
    r = SipTcpReassembler(max_streams=8, max_total_bytes=2000)
    for port in range(100):
        r.feed((0, 1, port, 0, 2, 5060), 1, ACK, INVITE[:300], float(port))
        assert len(r) <= 8 and r.bytes_held <= 2000
    assert r.counters.streams == 100
    assert r.counters.evicted == 100 - 2000 // 300  # the byte cap bites before the table cap
    assert r.expire(99.0 + 300.0) == 6 and len(r) == 0 and r.bytes_held == 0
