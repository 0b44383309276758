"""OS errors as an admin reads them: which setting, which address or file, what to do.

A raw ``[Errno 98] Address already in use`` says neither which address nor which
setting; these messages name both, and for a capture refused by the kernel what
to grant. `StartupError` is an `OSError`, so callers that catch OSError still do.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

_DENIED = {errno.EPERM, errno.EACCES}
_NO_DEVICE = {errno.ENODEV, errno.ENXIO}

CAPTURE_HELP = ("run as root or give the unit AmbientCapabilities=CAP_NET_RAW), "
                'see README "Running the agent"')


class StartupError(OSError):
    """The agent cannot start; the message names the setting, the value and what to do."""

    def __str__(self) -> str:
        return str(self.args[0])


def reason(exc: OSError) -> str:
    """``address already in use``: the OS's words without ``[Errno N]`` or a file name."""
    text = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return text[:1].lower() + text[1:]


def capture_error(exc: OSError, interfaces: Sequence[str]) -> StartupError:
    """The AF_PACKET ring of ``interfaces`` could not be opened."""
    names = ", ".join(interfaces)
    if exc.errno in _DENIED:
        return StartupError(f"capturing on {names} needs CAP_NET_RAW ({CAPTURE_HELP}")
    if exc.errno in _NO_DEVICE:
        return StartupError(f"capture.interfaces: no such interface: {names}")
    return StartupError(f"capturing on {names}: {reason(exc)}")


def listen_error(exc: OSError, setting: str, address: str) -> StartupError:
    """A socket for ``setting`` (``exporter.listen``, ``capture.hep_listeners[0]``)
    could not be bound to ``address`` (``HOST:PORT``)."""
    text = reason(exc)
    if exc.errno == errno.EACCES:
        text += " (a port below 1024 needs CAP_NET_BIND_SERVICE)"
    return StartupError(f"{setting} {address}: {text}")
