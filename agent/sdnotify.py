"""The systemd notification protocol (sd_notify(3)), without libsystemd.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``: an AF_UNIX datagram
socket path, or an abstract-namespace name when it starts with ``@``. A state
is one datagram of ``KEY=VALUE`` lines: ``READY=1`` after setup, ``RELOADING=1``
/ ``READY=1`` around a reload, ``STOPPING=1`` at shutdown, ``WATCHDOG=1`` at
least every ``$WATCHDOG_USEC`` when ``WatchdogSec=`` is set. Outside systemd
the variable is unset and every call is a no-op, so the agent needs no flag
to know where it runs. Sending never raises: a lost notification must not
stop capture (systemd's watchdog is what notices a daemon that went silent).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


def _address(value: str) -> str:
    # Abstract namespace: the leading '@' stands for the NUL byte (unix(7)).
    return "\0" + value[1:] if value.startswith("@") else value


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd; True if a datagram was sent.

    No-op (False) when ``$NOTIFY_SOCKET`` is unset or empty, or when sending fails."""
    env = os.environ if environ is None else environ
    target = env.get(NOTIFY_SOCKET, "")
    if not target:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # Non-blocking: a receiver whose queue is full (10 datagrams by default,
            # net.unix.max_dgram_qlen) must not stall the capture loop.
            sock.setblocking(False)
            sock.sendto(state.encode("utf-8"), _address(target))
    except OSError:
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds from ``$WATCHDOG_USEC`` (None: no watchdog).

    Like sd_watchdog_enabled(3), a ``$WATCHDOG_PID`` naming another process means
    the watchdog is not ours."""
    env = os.environ if environ is None else environ
    usec = env.get(WATCHDOG_USEC, "")
    pid = env.get(WATCHDOG_PID, "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


class Watchdog:
    """Sends ``WATCHDOG=1`` at most every half of the watchdog interval.

    `kick` is called by the capture loop on every iteration: a loop that hangs stops
    kicking, and systemd restarts the service (a timer thread would keep a hung loop
    alive). ``clock`` is monotonic seconds."""

    def __init__(
        self,
        interval_s: float | None,
        send: Callable[[str], object] = notify,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.period_s = None if interval_s is None else interval_s / 2
        self._send = send
        self._clock = clock
        self._last: float | None = None

    def kick(self) -> bool:
        """Send WATCHDOG=1 if half an interval has passed since the last one."""
        if self.period_s is None:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.period_s:
            return False
        self._last = now
        self._send("WATCHDOG=1")
        return True
