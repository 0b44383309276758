"""The allowed senders every collector socket shares: verdicts and addresses as the
decoder holds them, a bounded cache; the socket's own drop count."""

from __future__ import annotations

import contextlib
import ipaddress
import socket

from agent.capture.listen import AllowedSenders, socket_drops


def test_allowed_senders_give_the_decoders_address() -> None:
    s = AllowedSenders(["198.18.7.0/24", "2001:db8::/32"])
    v4 = int(ipaddress.IPv6Address("::ffff:198.18.7.10"))
    assert s.address("198.18.7.10") == v4
    assert s.address("::ffff:198.18.7.10") == v4  # a dual-stack socket's view of it
    assert s.address("2001:db8::5%eth0") == int(ipaddress.IPv6Address("2001:db8::5"))
    assert s.address("198.18.8.1") is None and not s.allowed("198.18.8.1")
    assert s.address("not an address") is None
    assert AllowedSenders([]).address("198.18.7.10") is None  # nobody unless named


def test_the_verdict_cache_is_bounded() -> None:
    s = AllowedSenders(["10.0.0.0/8"])
    for i in range(10_000):
        assert s.allowed(f"10.{i >> 8 & 255}.{i & 255}.1")
    assert len(s._verdicts) <= 4096


def test_socket_drops_count_what_the_receive_buffer_had_no_room_for() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # room for a few
        rx.bind(("127.0.0.1", 0))
        assert socket_drops(rx) == 0
        for _ in range(400):  # loopback delivers at once: what does not fit is dropped
            tx.sendto(b"x" * 200, rx.getsockname())
        rx.setblocking(False)
        received = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                rx.recv(2048)
                received += 1
        drops = socket_drops(rx)
        assert drops > 0 and received + drops == 400
    assert socket_drops(rx) == 0  # closed
