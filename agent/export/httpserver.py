"""A small bounded HTTP/1.1 server for the exporter: one selector thread, a few workers.

Theory of operation. The capture loop must never wait for HTTP, and one scraper must
never wait for another client, however slow or numerous. So all socket I/O happens in
one thread (`HttpServer.serve`, a `selectors` loop over non-blocking sockets): it
accepts, runs TLS handshakes, reads request heads, writes responses. A connection
costs a few hundred bytes and no thread while it dawdles, so a slowloris client that
trickles its headers, or 500 idle connections, only hold sockets. Complete requests go
to a small fixed pool of worker threads that build the response (the metrics text);
the response comes back to the loop, which writes it as the client reads.

Each connection is in one state, with a deadline the loop enforces (checked every
`SWEEP_S`)::

    SNIFF      TLS configured, nothing read yet: a first byte 0x16 is a TLS record,
               anything else plain HTTP, answered 400 and closed        (handshake_timeout_s)
    HANDSHAKE  TLS handshake, then the client certificate's SANs        (handshake_timeout_s)
    HEAD       reading the request head: the whole head must arrive within
               head_timeout_s of its first byte (not of the last one: a byte every
               few seconds does not keep a slowloris alive); a kept-alive connection
               waits idle_timeout_s for that first byte
    BUSY       a worker builds the response                              (none: bounded work)
    WRITE      sending the response                                       (write_timeout_s)

Limits: `ServerLimits.max_connections` open at once; when full, a new connection
evicts the one that has waited longest for its request head (an attacker holding
every slot loses them to newcomers, so a scraper still gets in), and when none is
waiting the newcomer is closed. Heads are capped in bytes and header count (431),
bodies refused (413), methods other than GET/HEAD refused (405).

CPU budget. The capture loop and this one share the interpreter lock. A thread
that keeps the lock busy (a flood of connections, each accepted, evicted, closed)
would not just take its share: every time the capture thread waits for the lock
(after each poll, each numpy call that released it) it waits out the switch
interval (5 ms), so capture would crawl. The loop therefore sleeps after each
burst of work in proportion to it (`ServerLimits.max_cpu_share`): under a flood it
serves less, later, and capture keeps the interpreter. The burst is measured in the
thread's own CPU time: time spent waiting for the lock (while capture holds it) is
not work, and counting it made a busy capture loop throttle scrapes for seconds.

The web config (`agent.export.webconfig.WebSettings`) is swapped atomically by
`set_settings`: a reload applies to the next connection (TLS) and the next request
(authentication, headers, rate limit). Basic-auth credentials seen before are
answered by the fast pool; a bcrypt check goes to one dedicated worker with a bounded
queue (503 beyond it), so guessing passwords cannot starve scrapes or the capture
loop of CPU (bcrypt takes one core at most).
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus

from agent.export.basicauth import parse_basic
from agent.export.httphead import Request, Response, parse_head
from agent.export.webconfig import PLAIN, WebSettings

log = logging.getLogger(__name__)

SWEEP_S = 0.25  # how often deadlines are checked
BUSY_MIN_S = 0.001  # bursts shorter than this do not pay the CPU budget's sleep
ACCEPT_BATCH = 64  # connections accepted per readiness event
RECV_SIZE = 16384
SEND_SIZE = 65536
TLS_HANDSHAKE_RECORD = 0x16
AUTHENTICATE = 'Basic realm="voipprobe", charset="UTF-8"'


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds on what clients can make the exporter hold; times in seconds."""

    max_connections: int = 256
    max_head_bytes: int = 8192
    max_headers: int = 64
    handshake_timeout_s: float = 10.0
    head_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    write_timeout_s: float = 30.0
    workers: int = 2
    max_auth_pending: int = 16  # bcrypt checks queued before 503
    # The share of wall time the loop may keep the interpreter busy: after handling a
    # burst of events for t seconds it sleeps t * (1 - share) / share, so a flood of
    # connections leaves the GIL to the capture loop (see "CPU budget").
    max_cpu_share: float = 0.25


App = Callable[[Request], Response]


@dataclass(slots=True)
class ServerStats:
    """What the server refused or cut, for tests and logs."""

    accepted: int = 0
    evicted: int = 0
    refused_full: int = 0
    timed_out: int = 0
    plain_on_tls: int = 0
    tls_failed: int = 0
    bad_requests: int = 0
    unauthorized: int = 0
    rate_limited: int = 0
    auth_busy: int = 0


class _State(enum.Enum):
    SNIFF = "sniff"
    HANDSHAKE = "handshake"
    HEAD = "head"
    BUSY = "busy"
    WRITE = "write"


@dataclass(slots=True, eq=False)
class _Conn:
    sock: socket.socket
    peer: str
    settings: WebSettings
    state: _State
    deadline: float
    waiting_since: float  # when it began waiting for a request head (eviction order)
    events: int = 0  # registered selector events (0: not registered)
    buf: bytearray = field(default_factory=bytearray)
    out: memoryview = field(default_factory=lambda: memoryview(b""))
    keep_alive: bool = False
    closed: bool = False


class _Bucket:
    """The toolkit's rate_limit: a token bucket, one token per interval, ``burst`` deep."""

    def __init__(self, interval_s: float, burst: int, now: float) -> None:
        self.interval_s, self.burst = interval_s, burst
        self.tokens, self.at = float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) / self.interval_s)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class HttpServer:
    """Serves ``app`` on a bound listening socket until `stop`."""

    def __init__(self, listener: socket.socket, app: App, settings: WebSettings = PLAIN,
                 limits: ServerLimits | None = None, server_name: str = "voipprobe") -> None:
        self.limits = limits or ServerLimits()
        self.stats = ServerStats()
        self._listener = listener
        self._app = app
        self._settings = settings
        self._server_name = server_name
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._done: deque[tuple[_Conn, bytes, bool]] = deque()
        self._conns: set[_Conn] = set()
        self._fast = ThreadPoolExecutor(self.limits.workers, "voipprobe-http")
        self._slow = ThreadPoolExecutor(1, "voipprobe-http-auth")
        self._auth_pending = 0
        self._auth_lock = threading.Lock()
        self._bucket: tuple[WebSettings, _Bucket] | None = None
        self._stopping = False
        self._accepting = True

    # -- control (any thread) ---------------------------------------------------------

    @property
    def settings(self) -> WebSettings:
        return self._settings

    def set_settings(self, settings: WebSettings) -> None:
        """Apply a new web config to the next connection and request."""
        self._settings = settings

    def stop(self) -> None:
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full buffer: the loop is awake anyway
            self._wake_w.send(b"x")

    # -- the loop ---------------------------------------------------------------------

    def serve(self) -> None:
        """Run the loop until `stop` (in the server's own thread)."""
        self._listener.setblocking(False)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        next_sweep = time.monotonic() + SWEEP_S
        share = self.limits.max_cpu_share
        try:
            while not self._stopping:
                timeout = max(0.0, next_sweep - time.monotonic())
                events = self._sel.select(timeout)
                busy_from = time.thread_time()  # CPU, not the wait for the lock
                for key, mask in events:
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        self._io(key.data, mask)
                self._deliver()
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + SWEEP_S
                    self._sweep(now)
                busy = time.thread_time() - busy_from
                if busy > BUSY_MIN_S and share < 1.0:
                    time.sleep(busy * (1.0 - share) / share)
        finally:
            self._close_all()

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass

    def _accept(self) -> None:
        now = time.monotonic()
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as err:  # EMFILE/ENFILE: stop accepting until the next sweep
                log.warning("exporter cannot accept connections: %s", err)
                self._pause_accepting()
                return
            sock.setblocking(False)
            if len(self._conns) >= self.limits.max_connections and not self._evict():
                self.stats.refused_full += 1
                sock.close()
                continue
            self.stats.accepted += 1
            settings = self._settings
            peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
            if settings.tls:
                conn = _Conn(sock, peer, settings, _State.SNIFF,
                             now + self.limits.handshake_timeout_s, now)
            else:
                conn = _Conn(sock, peer, settings, _State.HEAD,
                             now + self.limits.head_timeout_s, now)
            self._conns.add(conn)
            self._want(conn, selectors.EVENT_READ)

    def _pause_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            self._sel.unregister(self._listener)

    def _evict(self) -> bool:
        waiting = [c for c in self._conns
                   if c.state in (_State.SNIFF, _State.HANDSHAKE, _State.HEAD)]
        if not waiting:
            return False
        self.stats.evicted += 1
        self._close(min(waiting, key=lambda c: c.waiting_since))
        return True

    def _sweep(self, now: float) -> None:
        if not self._accepting and len(self._conns) < self.limits.max_connections:
            self._accepting = True
            self._sel.register(self._listener, selectors.EVENT_READ, "listen")
        for conn in [c for c in self._conns if c.deadline <= now]:
            self.stats.timed_out += 1
            self._close(conn)

    def _want(self, conn: _Conn, events: int) -> None:
        if conn.events == events:
            return
        if conn.events and events:
            self._sel.modify(conn.sock, events, conn)
        elif events:
            self._sel.register(conn.sock, events, conn)
        else:
            self._sel.unregister(conn.sock)
        conn.events = events

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        self._want(conn, 0)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _close_all(self) -> None:
        for conn in list(self._conns):
            self._close(conn)
        self._fast.shutdown(wait=False, cancel_futures=True)
        self._slow.shutdown(wait=False, cancel_futures=True)
        self._sel.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- per connection ---------------------------------------------------------------

    def _io(self, conn: _Conn, mask: int) -> None:
        try:
            if conn.state is _State.SNIFF:
                self._sniff(conn)
            elif conn.state is _State.HANDSHAKE:
                self._handshake(conn)
            elif conn.state is _State.HEAD:
                self._read_head(conn)
            elif conn.state is _State.WRITE:
                self._write(conn)
        except (ssl.SSLError, OSError) as err:
            if conn.state in (_State.SNIFF, _State.HANDSHAKE):
                self.stats.tls_failed += 1
            log.debug("exporter connection %s: %s", conn.peer, err)
            self._close(conn)

    def _sniff(self, conn: _Conn) -> None:
        first = conn.sock.recv(1, socket.MSG_PEEK)
        if not first:
            self._close(conn)
            return
        context = conn.settings.ssl_context
        assert context is not None
        if first[0] != TLS_HANDSHAKE_RECORD:
            # What Go's net/http answers too: the client learns why, in words. The
            # request is read first: closing on unread data would send a reset that can
            # overtake the answer.
            self.stats.plain_on_tls += 1
            with contextlib.suppress(BlockingIOError):
                conn.sock.recv(self.limits.max_head_bytes)
            self._respond(conn, Response(400, "text/plain; charset=utf-8",
                                         b"Client sent an HTTP request to an HTTPS server.\n"),
                          keep_alive=False, head_only=False)
            return
        self._want(conn, 0)
        conn.sock = context.wrap_socket(conn.sock, server_side=True,
                                        do_handshake_on_connect=False)
        conn.state = _State.HANDSHAKE
        self._handshake(conn)

    def _handshake(self, conn: _Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
            return
        allowed = conn.settings.allowed_sans
        if allowed and not allowed & _sans(sock.getpeercert()):
            self.stats.tls_failed += 1
            log.debug("exporter connection %s: client certificate SAN not allowed", conn.peer)
            self._close(conn)
            return
        now = time.monotonic()
        conn.state, conn.deadline = _State.HEAD, now + self.limits.head_timeout_s
        self._read_head(conn)

    def _read_head(self, conn: _Conn) -> None:
        limit = self.limits.max_head_bytes
        while b"\r\n\r\n" not in conn.buf and len(conn.buf) <= limit:
            try:
                chunk = conn.sock.recv(RECV_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                self._want(conn, selectors.EVENT_WRITE)
                return
            if not chunk:
                self._close(conn)
                return
            if not conn.buf:  # the head's first byte: its whole-head deadline starts now
                conn.deadline = time.monotonic() + self.limits.head_timeout_s
            conn.buf += chunk
        self._take_request(conn)

    def _take_request(self, conn: _Conn) -> None:
        end = conn.buf.find(b"\r\n\r\n")
        if end < 0 or end + 4 > self.limits.max_head_bytes:
            if len(conn.buf) > self.limits.max_head_bytes or end >= 0:
                self.stats.bad_requests += 1
                self._error(conn, 431, "request head too large")
            else:
                self._want(conn, selectors.EVENT_READ)
            return
        head = bytes(conn.buf[:end])
        del conn.buf[:end + 4]
        parsed = parse_head(head, self.limits.max_headers, conn.peer)
        if isinstance(parsed, tuple):
            self.stats.bad_requests += 1
            self._error(conn, *parsed)
            return
        request, keep_alive = parsed, parsed.keep_alive
        head_only = request.method == "HEAD"
        settings = self._settings
        if not self._rate_ok(settings):
            self.stats.rate_limited += 1
            self._respond(conn, _text(429, "too many requests"), keep_alive, head_only)
            return
        conn.state, conn.deadline = _State.BUSY, float("inf")
        self._want(conn, 0)
        auth = settings.auth
        if auth is None:
            self._fast.submit(self._work, conn, request, None, keep_alive, settings)
            return
        credentials = parse_basic(request.headers.get("authorization"))
        if credentials is None:
            self.stats.unauthorized += 1
            self._respond(conn, _unauthorized(), keep_alive, head_only)
        elif auth.cached(credentials):
            self._fast.submit(self._work, conn, request, None, keep_alive, settings)
        else:
            with self._auth_lock:
                busy = self._auth_pending >= self.limits.max_auth_pending
                if not busy:
                    self._auth_pending += 1
            if busy:
                self.stats.auth_busy += 1
                self._respond(conn, _text(503, "authentication busy, retry later",
                                          (("Retry-After", "1"),)), keep_alive, head_only)
            else:
                self._slow.submit(self._work, conn, request, credentials, keep_alive, settings)

    def _rate_ok(self, settings: WebSettings) -> bool:
        if settings.rate_interval_s <= 0:
            return True
        now = time.monotonic()
        if self._bucket is None or self._bucket[0] is not settings:
            self._bucket = (settings, _Bucket(settings.rate_interval_s, settings.rate_burst, now))
        return self._bucket[1].take(now)

    def _work(self, conn: _Conn, request: Request, credentials: tuple[bytes, bytes] | None,
              keep_alive: bool, settings: WebSettings) -> None:
        """In a worker thread: check a password if asked, then run the app."""
        try:
            if credentials is not None:
                try:
                    assert settings.auth is not None
                    ok = settings.auth.verify(credentials)
                finally:
                    with self._auth_lock:
                        self._auth_pending -= 1
                if not ok:
                    self.stats.unauthorized += 1
                    self._post(conn, _unauthorized(), keep_alive, request.method == "HEAD")
                    return
            try:
                response = self._app(request)
            except Exception:  # a bug in a route: answer 500, keep serving
                log.exception("exporter request %s failed", request.path)
                response = _text(500, "internal error")
            self._post(conn, response, keep_alive, request.method == "HEAD")
        except Exception:  # never lose a connection in BUSY: it would never be closed
            log.exception("exporter worker failed")
            self._post(conn, _text(500, "internal error"), False, False)

    def _post(self, conn: _Conn, response: Response, keep_alive: bool, head_only: bool) -> None:
        data = self._encode(response, keep_alive, head_only)
        self._done.append((conn, data, keep_alive))
        self._wake()

    def _deliver(self) -> None:
        while self._done:
            conn, data, keep_alive = self._done.popleft()
            if not conn.closed:
                self._start_write(conn, data, keep_alive)

    def _respond(self, conn: _Conn, response: Response, keep_alive: bool,
                 head_only: bool) -> None:
        self._start_write(conn, self._encode(response, keep_alive, head_only), keep_alive)

    def _error(self, conn: _Conn, status: int, text: str) -> None:
        extra = (("Allow", "GET, HEAD"),) if status == 405 else ()
        self._respond(conn, _text(status, text, extra), keep_alive=False, head_only=False)

    def _start_write(self, conn: _Conn, data: bytes, keep_alive: bool) -> None:
        conn.state, conn.out, conn.keep_alive = _State.WRITE, memoryview(data), keep_alive
        conn.deadline = time.monotonic() + self.limits.write_timeout_s
        try:
            self._write(conn)
        except (ssl.SSLError, OSError) as err:
            log.debug("exporter connection %s: %s", conn.peer, err)
            self._close(conn)

    def _write(self, conn: _Conn) -> None:
        while conn.out:
            try:
                sent = conn.sock.send(conn.out[:SEND_SIZE])
            except (BlockingIOError, ssl.SSLWantWriteError):
                self._want(conn, selectors.EVENT_WRITE)
                return
            except ssl.SSLWantReadError:
                self._want(conn, selectors.EVENT_READ)
                return
            conn.out = conn.out[sent:]
        if not conn.keep_alive or self._stopping:
            self._close(conn)
            return
        now = time.monotonic()
        conn.state, conn.waiting_since = _State.HEAD, now
        conn.deadline = now + (self.limits.head_timeout_s if conn.buf
                               else self.limits.idle_timeout_s)
        self._read_head(conn)  # a pipelined request, or TLS data already decrypted

    def _encode(self, response: Response, keep_alive: bool, head_only: bool) -> bytes:
        status = HTTPStatus(response.status)
        lines = [f"HTTP/1.1 {status.value} {status.phrase}",
                 f"Server: {self._server_name}",
                 f"Date: {email.utils.formatdate(usegmt=True)}",
                 f"Content-Type: {response.content_type}",
                 f"Content-Length: {len(response.body)}",
                 *(f"{k}: {v}" for k, v in (*self._settings.headers, *response.headers))]
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + response.body


def _text(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, "text/plain; charset=utf-8", (text + "\n").encode(), headers)


def _unauthorized() -> Response:
    return _text(401, "unauthorized", (("WWW-Authenticate", AUTHENTICATE),))


def _sans(cert: Mapping[str, object] | None) -> frozenset[str]:
    """The values of a verified peer certificate's subjectAltName (DNS, IP, email, URI)."""
    if not cert:
        return frozenset()
    entries = cert.get("subjectAltName", ())
    assert isinstance(entries, tuple)
    return frozenset(str(value).rstrip("\n") for _kind, value in entries)
