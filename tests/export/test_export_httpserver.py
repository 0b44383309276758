"""The exporter's bounded HTTP server: raw sockets against its limits and deadlines.

Small limits (a 1 s head deadline, 20 connections) make each bound show in a second;
the last test holds the default limits to 500 concurrent connections and slowloris
clients while a well-behaved client scrapes and a busy thread stands in for the
capture loop.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from agent.export.http import MetricsServer
from agent.export.httpserver import SWEEP_S, ServerLimits, ServerStats

SMALL = ServerLimits(max_connections=20, max_head_bytes=1024, max_headers=8,
                     head_timeout_s=1.0, idle_timeout_s=2.0, handshake_timeout_s=1.0)


def start(limits: ServerLimits | None = None) -> MetricsServer:
    reg = CollectorRegistry()
    Counter("voipprobe_test_events", "events", registry=reg).inc(3)
    server = MetricsServer(reg, lambda: (True, {}), limits=limits)
    server.start("127.0.0.1", 0)
    return server


@pytest.fixture
def small() -> Iterator[MetricsServer]:
    server = start(SMALL)
    yield server
    server.stop()


def connect(server: MetricsServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def exchange(server: MetricsServer, data: bytes) -> bytes:
    """Send ``data``, read until the server closes (or 5 s)."""
    with connect(server) as s:
        s.sendall(data)
        out = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                out += chunk
    return out


def closed_after(sock: socket.socket, limit_s: float) -> float:
    """Seconds until the server closes ``sock`` (reads return b'' or reset)."""
    t0 = time.monotonic()
    sock.settimeout(limit_s)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - t0


def server_stats(server: MetricsServer) -> ServerStats:
    return server.stats


def test_slowloris_is_cut_at_the_head_deadline(small: MetricsServer) -> None:
    """A byte every 0.2 s does not extend the deadline: the whole head is due 1 s after
    its first byte."""
    with connect(small) as s:
        s.sendall(b"G")
        t0 = time.monotonic()
        closed = False
        for byte in b"ET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 40:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - t0 > 4:
                break
        waited = time.monotonic() - t0 + (0 if closed else closed_after(s, 5))
    assert SMALL.head_timeout_s - 0.1 <= waited <= SMALL.head_timeout_s + 2 * SWEEP_S + 1.0
    assert server_stats(small).timed_out >= 1


def test_a_silent_connection_is_closed(small: MetricsServer) -> None:
    with connect(small) as s:
        waited = closed_after(s, 5)
    assert SMALL.head_timeout_s - 0.1 <= waited <= SMALL.head_timeout_s + 1.0


def test_keep_alive_and_pipelining(small: MetricsServer) -> None:
    with connect(small) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\n\r\n")
        time.sleep(0.3)
        first = s.recv(65536)
        assert first.count(b"HTTP/1.1 200 OK") == 1 and first.count(b"HTTP/1.1 404") == 1
        s.sendall(b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
    head, _, body = rest.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head
    assert body == b""  # HEAD: headers only
    assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) > 0
    # an idle kept-alive connection is closed after idle_timeout_s
    with connect(small) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        waited = closed_after(s, 5)
    assert SMALL.idle_timeout_s - 0.1 <= waited <= SMALL.idle_timeout_s + 1.0


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n", b"431"),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(9)) + b"\r\n", b"431"),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
    (b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", b"413"),
    (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"413"),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"505"),
    (b"GET metrics HTTP/1.1\r\n\r\n", b"400"),
    (b"GET /metrics HTTP/1.1\r\n folded\r\n\r\n", b"400"),
    (b"\x00\x01garbage\r\n\r\n", b"400"),
])
def test_refused_requests(small: MetricsServer, request_bytes: bytes, status: bytes) -> None:
    reply = exchange(small, request_bytes)
    assert reply.startswith(b"HTTP/1.1 " + status), reply[:80]
    assert b"Connection: close" in reply and b"voipprobe_test" not in reply
    if status == b"405":
        assert b"Allow: GET, HEAD" in reply


def test_a_full_server_evicts_the_longest_waiting_connection(small: MetricsServer) -> None:
    idle = [connect(small) for _ in range(SMALL.max_connections)]
    time.sleep(0.2)
    try:
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{small.port}/metrics", timeout=5) as r:
            assert r.status == 200 and b"voipprobe_test_events_total 3.0" in r.read()
        assert time.monotonic() - t0 < 1.0
        assert server_stats(small).evicted >= 1
        assert closed_after(idle[0], 2) < 2  # the oldest went first
    finally:
        for s in idle:
            s.close()


def test_stop_closes_every_connection(small: MetricsServer) -> None:
    idle = [connect(small) for _ in range(5)]
    port = small.port
    time.sleep(0.1)
    small.stop()
    assert all(closed_after(s, 2) < 2 for s in idle)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    for s in idle:
        s.close()


def test_500_connections_and_slowloris_do_not_stall_a_scrape_or_another_thread() -> None:
    """Default limits. 500 connections that never send, plus 20 slowloris clients
    trickling a header byte every 0.3 s (reconnecting when cut), for six scrapes a
    second apart: every scrape of a well-behaved client answers within a few seconds,
    and a busy thread (the capture loop's stand-in, sharing the interpreter) keeps
    counting every second."""
    server = start()
    stop = threading.Event()
    work = [0]

    def busy() -> None:  # pure Python: it needs the GIL like the capture loop does
        while not stop.is_set():
            sum(range(2000))
            work[0] += 1

    def slowloris() -> None:
        socks: list[socket.socket] = []
        while not stop.is_set():
            while len(socks) < 20:
                s = socket.create_connection(("127.0.0.1", server.port), timeout=2)
                s.sendall(b"GET /metrics HTTP/1.1\r\n")
                socks.append(s)
            for s in list(socks):
                try:
                    s.sendall(b"X")
                except OSError:
                    socks.remove(s)
                    s.close()
            time.sleep(0.3)
        for s in socks:
            s.close()

    crowd: list[socket.socket] = []
    threads = [threading.Thread(target=busy), threading.Thread(target=slowloris)]
    try:
        for t in threads:
            t.start()
        for _ in range(500):
            crowd.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        latencies, progress = [], []
        for _ in range(6):  # one scrape a second, while the crowd and slowloris go on
            before, t0 = work[0], time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics",
                                        timeout=5) as r:
                assert r.status == 200 and b"voipprobe_test_events_total 3.0" in r.read()
            latencies.append(time.monotonic() - t0)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
            progress.append(work[0] - before)
        stats = server_stats(server)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        for s in crowd:
            s.close()
        server.stop()
    # generous: a loaded CI machine; a stalled server would not answer for 10 s (the head
    # deadline) or at all
    assert len(latencies) == 6 and max(latencies) < 5.0, latencies
    assert min(progress) > 0, progress
    # the server held at most max_connections: the crowd was evicted, oldest first
    assert stats.evicted >= 500 - ServerLimits().max_connections, stats
