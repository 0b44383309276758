"""IP fragment reassembly (RFC 791 §3.2, RFC 8200 §4.5), bounded and driven by packet time.

Theory of operation: a fragment set is keyed by what the RFCs say identifies one
original datagram: (4, src, dst, protocol, id) for IPv4, (6, src, dst, id) for
IPv6. A set collects (offset, bytes) pieces until the last fragment (MF=0) has
fixed the total length and the pieces cover [0, total) without gaps; then the
datagram's payload (everything after the fixed IP header) is returned.

Defences, because the table is keyed by what the network chooses (DESIGN rule 4):
- at most ``max_fragment_sets`` sets; a new set evicts the oldest one
- at most ``max_fragment_total_bytes`` held; the oldest sets are evicted until it fits
- a set expires ``fragment_timeout_s`` of packet time after its first fragment
- overlapping pieces drop the whole set (RFC 5722; teardrop-style attacks rely on
  overlaps), exact duplicates (same offset and length, e.g. a capture dup) are ignored
- pieces other than the last must be multiples of 8 octets; a datagram may not exceed
  ``max_fragment_bytes``; a set may hold at most ``MAX_PIECES`` pieces, which keeps the
  overlap check linear and small
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from agent.decode.counters import DecodeCounters, DecodeLimits

MAX_PIECES = 256  # 65535 / 256 ~ 256-byte fragments: below any real MTU (IPv4 min 68 aside)

FragKey = tuple[int, int, int, int, int]


@dataclass(slots=True)
class _FragSet:
    first_ts: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    total: int = -1  # payload length, known once the last fragment arrived
    held: int = 0
    proto: int = -1  # upper-layer protocol (IPv6: from the offset-0 fragment header)


class Reassembler:
    """Bounded fragment table; counts into the shared `DecodeCounters`."""

    def __init__(self, limits: DecodeLimits, counters: DecodeCounters) -> None:
        self._limits = limits
        self._counters = counters
        self._sets: OrderedDict[FragKey, _FragSet] = OrderedDict()
        self._held = 0

    def __len__(self) -> int:
        return len(self._sets)

    @property
    def bytes_held(self) -> int:
        return self._held

    def expire(self, now: float) -> None:
        """Drop sets older than the timeout at packet time ``now`` (epoch seconds).

        Sets are checked oldest-inserted first and the scan stops at the first live
        one, so a capture whose clock steps backwards expires late, never wrongly.
        """
        timeout = self._limits.fragment_timeout_s
        while self._sets:
            key, oldest = next(iter(self._sets.items()))
            if now - oldest.first_ts <= timeout:
                return
            self._drop(key)
            self._counters.fragments_expired += 1

    def add(
        self, key: FragKey, now: float, offset: int, more: bool, data: bytes, proto: int
    ) -> tuple[int, bytes] | None:
        """Store one fragment; return (protocol, datagram payload) when it completes one.

        Counts the packet as pending, duplicate or bad unless it completes a datagram
        (then the caller accounts for the packet).
        """
        self.expire(now)
        end = offset + len(data)
        if not data or (more and len(data) % 8) or end > self._limits.max_fragment_bytes:
            self._counters.fragments_bad += 1
            return None
        frag = self._sets.get(key)
        if frag is None:
            frag = self._new_set(key, now)
        verdict = self._check(frag, offset, end, more)
        if verdict != "ok":
            if verdict == "bad":
                self._drop(key)
            self._counters.add("fragments_duplicate" if verdict == "dup" else "fragments_bad")
            return None
        if not more:
            frag.total = end
        if offset == 0:
            frag.proto = proto
        frag.pieces[offset] = data
        frag.held += len(data)
        self._held += len(data)
        if frag.held == frag.total and frag.proto >= 0:
            # No overlaps and sum(pieces) == total: the pieces tile [0, total) exactly.
            self._drop(key)
            self._counters.fragments_reassembled += 1
            return frag.proto, b"".join(frag.pieces[o] for o in sorted(frag.pieces))
        self._counters.fragments_pending += 1
        self._enforce_total_bytes(keep=key)
        return None

    def _new_set(self, key: FragKey, now: float) -> _FragSet:
        while len(self._sets) >= self._limits.max_fragment_sets:
            self._drop(next(iter(self._sets)))
            self._counters.fragments_evicted += 1
        frag = _FragSet(first_ts=now)
        self._sets[key] = frag
        return frag

    @staticmethod
    def _check(frag: _FragSet, offset: int, end: int, more: bool) -> str:
        """'ok', 'dup' (exact duplicate piece) or 'bad' (inconsistent: drop the set)."""
        old = frag.pieces.get(offset)
        if old is not None and offset + len(old) == end:
            return "dup"
        if len(frag.pieces) >= MAX_PIECES:
            return "bad"
        if frag.total >= 0 and (end > frag.total or (not more and end != frag.total)):
            return "bad"
        for o, piece in frag.pieces.items():
            if offset < o + len(piece) and o < end:
                return "bad"
            if not more and o + len(piece) > end:
                return "bad"
        return "ok"

    def _enforce_total_bytes(self, keep: FragKey) -> None:
        while self._held > self._limits.max_fragment_total_bytes and self._sets:
            oldest = next(iter(self._sets))
            if oldest == keep and len(self._sets) == 1:
                return
            if oldest == keep:
                self._sets.move_to_end(keep)
                continue
            self._drop(oldest)
            self._counters.fragments_evicted += 1

    def _drop(self, key: FragKey) -> None:
        frag = self._sets.pop(key)
        self._held -= frag.held
