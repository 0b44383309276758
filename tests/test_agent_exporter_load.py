"""The live agent's exporter under a crowd (issue 10, acceptance): ``voipprobe run``
with a web config (TLS, basic auth) captures on the loopback while this test

* sends UDP datagrams to the loopback (RTP-shaped, ~300/s: the packets to count),
* holds 500 TCP connections that never send a byte (reconnecting when cut),
* runs 20 slowloris clients trickling a TLS record a byte every 0.3 s, and 10 that
  finish the handshake and trickle request headers,

and meanwhile scrapes ``/metrics`` like Prometheus (HTTPS, basic auth, a new
connection each second) for 12 s: every scrape answers within 3 s, and
``voipprobe_capture_packets_total{interface="lo"}`` keeps growing with the datagrams
sent. The slowloris clients are cut (by the whole-head deadline or by eviction).
SIGTERM then still exits 0.

Needs root (AF_PACKET capture on lo). Skipped with the reason otherwise, failed
instead under CI (``CI`` set), where the tests run as root.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import multiprocessing
import os
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tlscerts import Certs, make_certs

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "crowd-proof"
CROWD = 500
WINDOW_S = 12.0
# Datagrams per second. Modest: on this 2-core VM the agent's capture loop spends about
# half a core on 600 captured datagrams/s of this shape (lo shows each twice), with or
# without the crowd (per-thread CPU from /proc: the exporter's thread took 2.5 % of a
# core under the crowd), and the test is about the exporter, not that cost.
SEND_RATE = 100
CATCH_UP_S = 8.0

pytestmark = [pytest.mark.slow]


@pytest.fixture(autouse=True)
def _require_root() -> None:
    if os.geteuid() != 0:
        reason = "needs root (AF_PACKET capture on lo)"
        if os.environ.get("CI"):
            pytest.fail(f"exporter load test cannot run in CI: {reason}")
        pytest.skip(reason)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Scraper:
    def __init__(self, port: int, certs: Certs) -> None:
        self.port = port
        self.ctx = ssl.create_default_context(cafile=str(certs.server_crt))
        token = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}

    def get(self, path: str = "/metrics") -> tuple[int, str]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=10)
        try:
            conn.request("GET", path, headers=self.headers)
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def packets(self) -> tuple[float, float]:
        """(seconds the scrape took, voipprobe_capture_packets_total on lo)."""
        t0 = time.monotonic()
        status, body = self.get()
        took = time.monotonic() - t0
        assert status == 200, body[:200]
        total = sum(s.value for f in text_string_to_metric_families(body) for s in f.samples
                    if s.name == "voipprobe_capture_packets_total"
                    and s.labels.get("interface") == "lo")
        return took, total


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Scraper, Path]]:
    certs = make_certs(tmp_path / "certs")
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": str(certs.server_crt),
                              "key_file": str(certs.server_key)},
        "basic_auth_users": {
            "prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()}}))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"state_dir: {tmp_path / 'state'}\n")
    port = free_port()
    log_path = tmp_path / "agent.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(cfg), "-i", "lo",
         "--listen", f"127.0.0.1:{port}", "--web.config.file", str(web),
         "--call-log", "/dev/null"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    scraper = Scraper(port, certs)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            with contextlib.suppress(OSError):
                if scraper.get("/health")[0] == 200:
                    break
            assert time.monotonic() < deadline, "agent did not serve /health within 20 s"
            time.sleep(0.3)
        yield proc, scraper, log_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


class Crowd:
    """The 500 silent connections and the slowloris clients, in one selector loop of
    a process of its own (in this one, its churn would hold this process' interpreter
    lock and delay the scraper: the test would measure itself)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = multiprocessing.Event()
        self.cut = 0  # connections the server closed
        self.slow_lifetimes: list[float] = []  # seconds a slowloris lasted before its cut
        self._results: multiprocessing.Queue[tuple[int, list[float]]] = multiprocessing.Queue()
        self.process = multiprocessing.Process(target=self._main, daemon=True)

    def _main(self) -> None:
        self._run()
        self._results.put((self.cut, self.slow_lifetimes))

    def start(self) -> None:
        self.process.start()

    def finish(self) -> None:
        self.stop.set()
        self.cut, self.slow_lifetimes = self._results.get(timeout=30)
        self.process.join(timeout=10)

    def _open(self, sel: selectors.BaseSelector, kind: str) -> None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=3)
        except OSError:
            return
        if kind == "tls-head":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            try:
                s = ctx.wrap_socket(s)  # a finished handshake, then a trickled head
                s.sendall(b"GET /metrics HTTP/1.1\r\n")
            except OSError:
                s.close()
                return
        elif kind == "tls-record":
            s.sendall(b"\x16\x03\x01")  # a TLS record header, its body never finished
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, (kind, time.monotonic()))

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        want = {"silent": CROWD, "tls-record": 20, "tls-head": 10}
        next_trickle = time.monotonic()
        while not self.stop.is_set():
            have = {k: 0 for k in want}
            for key in sel.get_map().values():
                have[key.data[0]] += 1
            for kind, n in want.items():
                for _ in range(n - have[kind]):
                    self._open(sel, kind)
            for key, _ in sel.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with contextlib.suppress(OSError, ssl.SSLError):
                    if sock.recv(4096):
                        continue  # a TLS post-handshake message, or an answer: keep it
                self._cut(sel, sock, key.data)
            if time.monotonic() >= next_trickle:
                next_trickle = time.monotonic() + 0.3
                for key in list(sel.get_map().values()):
                    if key.data[0] != "silent":
                        try:
                            key.fileobj.send(b"X")  # type: ignore[union-attr]
                        except (OSError, ssl.SSLError):
                            self._cut(sel, key.fileobj, key.data)  # type: ignore[arg-type]
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]

    def _cut(self, sel: selectors.BaseSelector, sock: socket.socket,
             data: tuple[str, float]) -> None:
        self.cut += 1
        if data[0] != "silent":
            self.slow_lifetimes.append(time.monotonic() - data[1])
        sel.unregister(sock)
        sock.close()


def send_datagrams(stop: threading.Event, sent: list[int], port: int) -> None:
    """RTP-shaped datagrams (version 2, PT 0) to the loopback at SEND_RATE per second."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        seq = 0
        t0 = time.monotonic()
        while not stop.is_set():
            header = bytes([0x80, 0x00]) + seq.to_bytes(2, "big") + bytes(8)
            with contextlib.suppress(OSError):
                s.sendto(header + bytes(160), ("127.0.0.1", port))
            seq = (seq + 1) & 0xFFFF
            sent[0] += 1
            time.sleep(max(0.0, t0 + sent[0] / SEND_RATE - time.monotonic()))


def test_a_crowd_does_not_stall_capture_nor_a_scrape(
    agent: tuple[subprocess.Popen[bytes], Scraper, Path]
) -> None:
    proc, scraper, log_path = agent
    stop = threading.Event()
    sent = [0]
    sender = threading.Thread(target=send_datagrams,
                              args=(stop, sent, free_port(socket.SOCK_DGRAM) & ~1))
    crowd = Crowd(scraper.port)
    sender.start()
    crowd.start()
    samples: list[tuple[float, float, int]] = []  # (took s, packets counted, datagrams sent)
    try:
        time.sleep(3.0)  # the crowd is in place
        deadline = time.monotonic() + WINDOW_S
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            took, counted = scraper.packets()
            samples.append((took, counted, sent[0]))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        stop.set()
        sender.join(timeout=10)
        # Still under the crowd: capture catches up with every datagram sent (lo shows
        # each one twice, leaving and arriving) within a few metric updates.
        caught_up = time.monotonic() + CATCH_UP_S
        while (counted := scraper.packets()[1]) < sent[0] and time.monotonic() < caught_up:
            time.sleep(0.5)
    finally:
        stop.set()
        sender.join(timeout=10)
        crowd.finish()
    assert proc.poll() is None, log_path.read_text()[-2000:]
    took = [t for t, _, _ in samples]
    assert len(samples) >= WINDOW_S / 3 and max(took) < 3.0, took
    # Packets keep being counted through the window. The counter moves in steps of a
    # few seconds even without a crowd (the capture's stats reach the metrics on the
    # loop's once-a-second tick, after the ring's 1 s block timeout): measured here
    # without the crowd, a step every 2-4 s.
    steps = [b for a, b in itertools.pairwise(samples) if b[1] > a[1]]
    assert len(steps) >= WINDOW_S / 6, samples
    assert counted >= sent[0], (counted, sent[0], samples)
    # the crowd was held to the limits: connections cut, no slowloris outlived the
    # 10 s whole-head deadline (plus the 0.25 s sweep and this test's 0.3 s trickle)
    assert crowd.cut > 0
    assert crowd.slow_lifetimes and max(crowd.slow_lifetimes) < 10.0 + 1.0, \
        sorted(crowd.slow_lifetimes)[-5:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, log_path.read_text()[-2000:]
