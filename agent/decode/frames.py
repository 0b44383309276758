"""`Frames`: decoded L3/L4 columns for the UDP and TCP packets of a batch.

One row per UDP or TCP packet that decode could reach (after peeling VLAN tags,
cooked headers and tunnels, and after IP fragment reassembly). Addresses are
kept as 128-bit values split in two uint64 columns; IPv4 addresses are stored
IPv4-mapped (``::ffff:a.b.c.d``), so IPv4 and IPv6 group and compare the same
way. Payload bytes are ``data[payload_off[i] : payload_off[i] + payload_len[i]]``:
``data`` is the batch buffer, extended with reassembled datagrams when a
fragment completed in this batch.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IPPROTO_TCP = 6
IPPROTO_UDP = 17

# hi word of an IPv4-mapped address is 0; the lo word carries 0x0000ffff in its top half.
V4_MAPPED_LO = np.uint64(0x0000FFFF00000000)


@dataclass(frozen=True, slots=True)
class Frames:
    """Columns (numpy arrays of equal length N) of decoded UDP/TCP frames.

    - ``pkt``: index of the packet in its `Batch` (the last fragment's for reassembled ones)
    - ``ts``: packet timestamp, epoch seconds
    - ``ip_version``: 4 or 6 (of the innermost IP header that carries the L4 header)
    - ``src_hi``/``src_lo``/``dst_hi``/``dst_lo``: 128-bit addresses, IPv4-mapped for IPv4
    - ``sport``/``dport``: L4 ports
    - ``proto``: 17 (UDP) or 6 (TCP)
    - ``dscp`` (0..63) and ``ecn`` (0..3) of that IP header
    - ``vlan``: innermost 802.1Q VLAN id, -1 when untagged; ``pcp``: its priority, -1 untagged
    - ``payload_off``/``payload_len``: the L4 payload in ``data`` (UDP length field honoured,
      clipped to what was captured)
    - ``wire_len``: original packet length on the wire
    - ``tcp_seq``/``tcp_flags``: TCP sequence number and flags (0 for UDP), kept for SIP/TCP
    - ``point``: the observation point it was seen at (`agent.capture.points`): the
      batch's, or a mirror's exporter for a packet that came out of a tunnel
    - ``payload_sent``: the L4 payload length as sent (UDP: its length field less 8;
      TCP: what the IP length leaves), at least ``payload_len``'s when the capture was
      cut: the kernel filter keeps media only up to the end of its RTP header
    """

    data: npt.NDArray[np.uint8]
    pkt: npt.NDArray[np.int64]
    ts: npt.NDArray[np.float64]
    ip_version: npt.NDArray[np.uint8]
    src_hi: npt.NDArray[np.uint64]
    src_lo: npt.NDArray[np.uint64]
    dst_hi: npt.NDArray[np.uint64]
    dst_lo: npt.NDArray[np.uint64]
    sport: npt.NDArray[np.uint16]
    dport: npt.NDArray[np.uint16]
    proto: npt.NDArray[np.uint8]
    dscp: npt.NDArray[np.uint8]
    ecn: npt.NDArray[np.uint8]
    vlan: npt.NDArray[np.int16]
    pcp: npt.NDArray[np.int8]
    payload_off: npt.NDArray[np.int64]
    payload_len: npt.NDArray[np.int32]
    wire_len: npt.NDArray[np.int32]
    tcp_seq: npt.NDArray[np.uint32]
    tcp_flags: npt.NDArray[np.uint8]
    point: npt.NDArray[np.uint16]
    payload_sent: npt.NDArray[np.int32]

    def __len__(self) -> int:
        return int(self.pkt.shape[0])

    def payload(self, i: int) -> bytes:
        start = int(self.payload_off[i])
        return self.data[start : start + int(self.payload_len[i])].tobytes()


COLUMN_DTYPES: dict[str, type[np.generic]] = {
    "pkt": np.int64,
    "ts": np.float64,
    "ip_version": np.uint8,
    "src_hi": np.uint64,
    "src_lo": np.uint64,
    "dst_hi": np.uint64,
    "dst_lo": np.uint64,
    "sport": np.uint16,
    "dport": np.uint16,
    "proto": np.uint8,
    "dscp": np.uint8,
    "ecn": np.uint8,
    "vlan": np.int16,
    "pcp": np.int8,
    "payload_off": np.int64,
    "payload_len": np.int32,
    "wire_len": np.int32,
    "tcp_seq": np.uint32,
    "tcp_flags": np.uint8,
    "point": np.uint16,
    "payload_sent": np.int32,
}


def empty_frames(data: npt.NDArray[np.uint8] | None = None) -> Frames:
    """Frames with no rows (over ``data``, or an empty buffer)."""
    buf = np.zeros(0, dtype=np.uint8) if data is None else data
    cols = {name: np.zeros(0, dtype=dt) for name, dt in COLUMN_DTYPES.items()}
    return Frames(data=buf, **cols)  # type: ignore[arg-type,unused-ignore]


def format_addr(hi: int, lo: int) -> str:
    """Text form of a 128-bit address column value (IPv4-mapped shown as dotted quad)."""
    return _format_addr(int(hi), int(lo))


@functools.lru_cache(maxsize=8192)  # the same endpoints recur in every message of a call
def _format_addr(hi: int, lo: int) -> str:
    if hi == 0 and (lo >> 32) == 0xFFFF:
        # what str(IPv4Address) prints, without building one (a flood of new sources)
        return f"{(lo >> 24) & 0xFF}.{(lo >> 16) & 0xFF}.{(lo >> 8) & 0xFF}.{lo & 0xFF}"
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def format_endpoint(hi: int, lo: int, port: int) -> str:
    """``ip:port`` for IPv4, ``[addr]:port`` for IPv6 (the JSON contract's form)."""
    addr = format_addr(hi, lo)
    return f"[{addr}]:{int(port)}" if ":" in addr else f"{addr}:{int(port)}"


@functools.lru_cache(maxsize=8192)  # SDP endpoints are hinted again on every dialog event
# SDP and SIP name the same few addresses in message after message; parsing one costs
# several us. Bounded: a flood of new addresses evicts.
@functools.lru_cache(maxsize=8192)
def addr_to_words(addr: str) -> tuple[int, int]:
    """(hi, lo) column values of an IPv4 or IPv6 address string."""
    ip = ipaddress.ip_address(addr)
    value = int(ip) | (0xFFFF << 32) if ip.version == 4 else int(ip)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF
