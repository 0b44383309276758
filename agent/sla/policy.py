"""SLA policy: judge one direction's measurements against a profile.

Theory of operation
-------------------
A profile (:class:`agent.sla.config.SlaProfile`) is a set of limits. The
caller gathers what was measured for one media direction of a call into a
:class:`Measured`; any value may be ``None`` (not measured, e.g. no RTCP so no
round trip) and is then *not judged* - it can neither meet nor violate.
:func:`evaluate` walks the threshold table :data:`THRESHOLDS` and the two DSCP
checks, and returns a :class:`Verdict`: ``met``, or ``violated`` with every
threshold crossed and the measured value. A value exactly on the limit meets it.

DSCP compliance is the share of a direction's packets whose DSCP is in the
profile's accepted list; it must reach ``min_dscp_compliance_ratio``.

A requirement (:data:`REQUIREMENTS`) is a yes/no profile field that asks for a
count: ``require_two_way_media`` asks for media in 2 directions, and a call
with media in one violates it with ``limit`` 2 and ``value`` 1. The caller
leaves the count ``None`` when the call cannot be judged (not answered, too
short, no media at the probe at all, one-way by SDP: agent/calls/media_seen.py).

:func:`direction_of` and :func:`peer_of` map addresses to the bounded label
sets the config defines (``inbound``/``outbound``, peer names or ``other``).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Generic, Literal, TypeVar

from agent.sla.config import OTHER_PEER, Peer, SlaProfile

Direction = Literal["inbound", "outbound"]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# An address as membership tests compare it: (IP version, its integer value), an
# IPv4-mapped IPv6 address as the IPv4 address it maps (what `ipaddress` would say).
AddressKey = tuple[int, int]
# A network as (IP version, first address, last address), integers.
_Range = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Measured:
    """One direction's measurements. ``None`` = not measured = not judged."""

    mos_cq: float | None = None
    jitter_ms: float | None = None
    loss_ratio: float | None = None  # lost / expected, 0..1 (network loss)
    rtt_ms: float | None = None
    one_way_delay_ms: float | None = None
    setup_delay_s: float | None = None
    media_dscp_packets: Mapping[int, int] | None = field(default=None, hash=False)
    signalling_dscp_packets: Mapping[int, int] | None = field(default=None, hash=False)
    media_directions: int | None = None  # directions media was seen in (0..2), if judged


@dataclass(frozen=True, slots=True)
class Violation:
    """A crossed threshold: its profile field name, the limit, and the measured value."""

    threshold: str
    limit: float
    value: float
    accepted: tuple[int, ...] = ()  # for DSCP checks: the accepted values

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "threshold": self.threshold,
            "limit": self.limit,
            "value": round(self.value, 6),
        }
        if self.accepted:
            out["accepted"] = list(self.accepted)
        return out

    @property
    def reason(self) -> str:
        """``quantity: value (min|max limit)`` (`violation_reason`)."""
        return violation_reason(self.threshold, self.value, self.limit)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The SLA outcome of one direction."""

    verdict: Literal["met", "violated"]
    profile: str
    violations: tuple[Violation, ...]
    not_judged: tuple[str, ...]  # thresholds set in the profile but not measured

    @property
    def met(self) -> bool:
        return self.verdict == "met"

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "profile": self.profile,
            "violations": [v.to_json() for v in self.violations],
        }


#: (profile field, Measured field, kind): "min" limits are floors, "max" ceilings.
THRESHOLDS: tuple[tuple[str, str, Literal["min", "max"]], ...] = (
    ("min_mos_cq", "mos_cq", "min"),
    ("max_jitter_ms", "jitter_ms", "max"),
    ("max_loss_ratio", "loss_ratio", "max"),
    ("max_rtt_ms", "rtt_ms", "max"),
    ("max_one_way_delay_ms", "one_way_delay_ms", "max"),
    ("max_setup_delay_s", "setup_delay_s", "max"),
)

#: (profile field with accepted values, Measured field with DSCP -> packets)
DSCP_CHECKS: tuple[tuple[str, str], ...] = (
    ("media_dscp", "media_dscp_packets"),
    ("signalling_dscp", "signalling_dscp_packets"),
)

#: (profile yes/no field, Measured field, the value it requires at least)
REQUIREMENTS: tuple[tuple[str, str, int], ...] = (
    ("require_two_way_media", "media_directions", 2),
)

assert {m for _, m, _ in THRESHOLDS} | {m for _, m in DSCP_CHECKS} | {
    m for _, m, _ in REQUIREMENTS
} == {f.name for f in fields(Measured)}

#: The `Measured` fields of a call as a whole rather than of one media direction
#: (:func:`evaluate_call`).
CALL_MEASURES = frozenset({"setup_delay_s", "signalling_dscp_packets", "media_directions"})
assert {f.name for f in fields(Measured)} >= CALL_MEASURES


#: profile field -> (the measured quantity a reason names, "min" or "max")
REASON_NAMES: dict[str, tuple[str, Literal["min", "max"]]] = {
    **{t: (m, kind) for t, m, kind in THRESHOLDS},
    **{t: (f"{t}_compliance", "min") for t, _ in DSCP_CHECKS},
    **{t: (m, "min") for t, m, _ in REQUIREMENTS},
}


_COUNTS = frozenset(t for t, _, _ in REQUIREMENTS)  # thresholds whose value is a count

K = TypeVar("K")
V = TypeVar("V")


class _ByIdentity(Generic[K, V]):
    """What ``derive`` makes of an immutable object (a profile, a tuple of networks),
    remembered by the object's identity: a lookup is one dict access, where hashing a
    profile or a tuple of networks would cost more than what it saves. The entry holds
    the object, so its id cannot be reused while remembered; at ``cap`` entries (config
    reloads, callers that pass a fresh list each time) the cache starts over."""

    def __init__(self, derive: Callable[[K], V], cap: int = 256) -> None:
        self._derive = derive
        self._cap = cap
        self._entries: dict[int, tuple[K, V]] = {}

    def __call__(self, key: K) -> V:
        hit = self._entries.get(id(key))
        if hit is not None and hit[0] is key:
            return hit[1]
        value = self._derive(key)
        if len(self._entries) >= self._cap:
            self._entries.clear()
        self._entries[id(key)] = (key, value)
        return value


@dataclass(frozen=True, slots=True)
class _Plan:
    """A profile's checks, only those it sets, in :func:`evaluate`'s order."""

    thresholds: tuple[tuple[str, str, bool, float], ...]  # (name, Measured field, is min, limit)
    # (name, Measured field, accepted values, the same as a set)
    dscp: tuple[tuple[str, str, tuple[int, ...], frozenset[int]], ...]
    requirements: tuple[tuple[str, str, int], ...]  # (name, Measured field, required count)


def _make_plan(profile: SlaProfile) -> _Plan:
    return _Plan(
        thresholds=tuple((name, attr, kind == "min", getattr(profile, name))
                         for name, attr, kind in THRESHOLDS
                         if getattr(profile, name) is not None),
        dscp=tuple((name, attr, tuple(accepted), frozenset(accepted))
                   for name, attr in DSCP_CHECKS
                   if (accepted := getattr(profile, name)) is not None),
        requirements=tuple(r for r in REQUIREMENTS if getattr(profile, r[0])),
    )


def _make_call_plan(profile: SlaProfile) -> _Plan:
    plan = _plan(profile)
    return _Plan(
        thresholds=tuple(c for c in plan.thresholds if c[1] in CALL_MEASURES),
        dscp=tuple(c for c in plan.dscp if c[1] in CALL_MEASURES),
        requirements=tuple(c for c in plan.requirements if c[1] in CALL_MEASURES),
    )


_plan: _ByIdentity[SlaProfile, _Plan] = _ByIdentity(_make_plan)
_call_plan: _ByIdentity[SlaProfile, _Plan] = _ByIdentity(_make_call_plan)


def violation_reason(threshold: str, value: float, limit: float) -> str:
    """A crossed threshold as people read it: ``quantity: value (min|max limit)``,
    e.g. ``media_dscp_compliance: 0.00 (min 0.95)``, ``jitter_ms: 41.27 (max 30)``.

    The value gets two decimals, more (up to six) while it would print as the limit,
    so ``loss_ratio: 0.015 (max 0.01)`` never reads ``0.01 (max 0.01)``."""
    name, kind = REASON_NAMES.get(threshold, (threshold, "max"))
    shown = f"{limit:g}"
    if threshold in _COUNTS:  # a count: "media_directions: 1 (min 2)"
        return f"{name}: {value:g} ({kind} {shown})"
    printed_limit = float(shown)
    for places in range(2, 7):
        text = f"{value:.{places}f}"
        if float(text) != printed_limit:
            break
    return f"{name}: {text} ({kind} {shown})"


def dscp_compliance_ratio(packets: Mapping[int, int], accepted: Iterable[int]) -> float | None:
    """Share of packets whose DSCP is accepted; ``None`` when there were no packets."""
    ok = accepted if isinstance(accepted, (frozenset, set, tuple, list)) else set(accepted)
    total = in_ok = 0
    for dscp, n in packets.items():
        total += n
        if dscp in ok:
            in_ok += n
    if total <= 0:
        return None
    return in_ok / total


def evaluate(profile: SlaProfile, measured: Measured) -> Verdict:
    """Judge ``measured`` against every threshold ``profile`` sets."""
    return _judge(profile, _plan(profile), functools.partial(getattr, measured))


def evaluate_call(profile: SlaProfile, *, setup_delay_s: float | None,
                  signalling_dscp_packets: Mapping[int, int] | None,
                  media_directions: int | None) -> Verdict:
    """Judge the call's own measures (:data:`CALL_MEASURES`) against ``profile``: the
    violations of ``evaluate(profile, Measured(<these alone>))``, and ``not_judged``
    only among the thresholds of these measures. Builds no `Measured`: every call's
    record asks this, a flood of INVITEs included."""
    values = {"setup_delay_s": setup_delay_s,
              "signalling_dscp_packets": signalling_dscp_packets or None,
              "media_directions": media_directions}
    return _judge(profile, _call_plan(profile), values.__getitem__)


def _judge(profile: SlaProfile, plan: _Plan, value_of: Callable[[str], Any]) -> Verdict:
    violations: list[Violation] = []
    not_judged: list[str] = []
    for name, attr, is_min, limit in plan.thresholds:
        value: float | None = value_of(attr)
        if value is None:
            not_judged.append(name)
        elif (value < limit) if is_min else (value > limit):
            violations.append(Violation(name, limit, value))
    for name, attr, accepted, ok in plan.dscp:
        packets: Mapping[int, int] | None = value_of(attr)
        ratio = dscp_compliance_ratio(packets, ok) if packets is not None else None
        if ratio is None:
            not_judged.append(name)
        elif ratio < profile.min_dscp_compliance_ratio:
            violations.append(Violation(name, profile.min_dscp_compliance_ratio, ratio, accepted))
    for name, attr, required in plan.requirements:
        count: int | None = value_of(attr)
        if count is None:
            not_judged.append(name)
        elif count < required:
            violations.append(Violation(name, float(required), float(count)))
    return Verdict(
        verdict="violated" if violations else "met",
        profile=profile.name,
        violations=tuple(violations),
        not_judged=tuple(not_judged),
    )


def _ip_key(addr: IpAddress) -> AddressKey:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # the RTP layer stores IPv4 as IPv4-mapped IPv6
    return addr.version, int(addr)


# Records and labels ask about the same few addresses again and again (as text: the
# endpoints' `addr`); parsing one costs ~5 us. Bounded: a flood of new addresses evicts.
@functools.lru_cache(maxsize=8192)
def _text_key(ip: str) -> AddressKey:
    return _ip_key(ipaddress.ip_address(ip))


def address_key(ip: str | IpAddress) -> AddressKey:
    """``ip`` as membership tests compare it (`AddressKey`); ValueError when a string is
    not an IP literal."""
    return _text_key(ip) if isinstance(ip, str) else _ip_key(ip)


def words_key(hi: int, lo: int) -> AddressKey:
    """The `AddressKey` of an address kept as (hi, lo) 64-bit words, IPv4-mapped for
    IPv4 (`agent.decode.frames`): the same as :func:`address_key` of its text form."""
    hi, lo = int(hi), int(lo)
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return 4, lo & 0xFFFFFFFF
    return 6, (hi << 64) | lo


def _make_ranges(networks: tuple[IpNetwork, ...]) -> tuple[_Range, ...]:
    return tuple((n.version, int(n.network_address), int(n.broadcast_address))
                 for n in networks)


_ranges: _ByIdentity[tuple[IpNetwork, ...], tuple[_Range, ...]] = _ByIdentity(_make_ranges)


def _within(key: AddressKey, networks: Iterable[IpNetwork]) -> bool:
    """``ipaddress``'s ``addr in net`` for any of ``networks`` of the address's version."""
    version, value = key
    nets = networks if isinstance(networks, tuple) else tuple(networks)
    return any(version == v and first <= value <= last for v, first, last in _ranges(nets))


def direction_of(
    src_ip: str | IpAddress, dst_ip: str | IpAddress, local_networks: Iterable[IpNetwork]
) -> Direction | None:
    """``inbound`` (remote -> local), ``outbound`` (local -> remote), else ``None``.

    ``None`` when both or neither side is local (e.g. no local networks set);
    the caller then labels directions ``a_to_b``/``b_to_a``.
    """
    return direction_of_keys(address_key(src_ip), address_key(dst_ip), local_networks)


def direction_of_keys(src: AddressKey, dst: AddressKey,
                      local_networks: Iterable[IpNetwork]) -> Direction | None:
    """:func:`direction_of` of two addresses given as `AddressKey`s."""
    nets = local_networks if isinstance(local_networks, tuple) else tuple(local_networks)
    src_local = _within(src, nets)
    dst_local = _within(dst, nets)
    if dst_local and not src_local:
        return "inbound"
    if src_local and not dst_local:
        return "outbound"
    return None


def peer_of(ip: str | IpAddress, peers: Iterable[Peer]) -> str:
    """Name of the first configured peer whose networks hold ``ip``, else ``other``."""
    return peer_of_key(address_key(ip), peers)


def peer_of_key(key: AddressKey, peers: Iterable[Peer]) -> str:
    """:func:`peer_of` of an address given as an `AddressKey`."""
    for peer in peers:
        if _within(key, peer.networks):
            return peer.name
    return OTHER_PEER
