"""SLA evaluation and address helpers (agent/sla/policy.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decode.frames import format_addr
from agent.sla import Measured, default_sla_config, direction_of, evaluate, peer_of
from agent.sla.config import Peer, SlaProfile
from agent.sla.policy import (
    CALL_MEASURES,
    DSCP_CHECKS,
    REASON_NAMES,
    REQUIREMENTS,
    THRESHOLDS,
    Violation,
    address_key,
    dscp_compliance_ratio,
    evaluate_call,
    violation_reason,
    words_key,
)

DEFAULT = default_sla_config().profiles["default"]
FULL = SlaProfile(
    name="full",
    min_mos_cq=4.0,
    max_jitter_ms=20.0,
    max_loss_ratio=0.01,
    max_rtt_ms=200.0,
    max_one_way_delay_ms=150.0,
    max_setup_delay_s=3.0,
    media_dscp=(46,),
    signalling_dscp=(24, 26, 40),
    min_dscp_compliance_ratio=0.95,
)
GOOD = Measured(
    mos_cq=4.3,
    jitter_ms=5.0,
    loss_ratio=0.0,
    rtt_ms=40.0,
    one_way_delay_ms=60.0,
    setup_delay_s=0.8,
    media_dscp_packets={46: 1000},
    signalling_dscp_packets={24: 6},
)


def test_met() -> None:
    v = evaluate(FULL, GOOD)
    assert v.verdict == "met" and v.met
    assert v.profile == "full" and v.violations == () and v.not_judged == ()
    assert v.to_json() == {"verdict": "met", "profile": "full", "violations": []}


@pytest.mark.parametrize(
    ("field", "value", "threshold", "limit"),
    [
        ("mos_cq", 3.9, "min_mos_cq", 4.0),
        ("jitter_ms", 20.5, "max_jitter_ms", 20.0),
        ("loss_ratio", 0.05, "max_loss_ratio", 0.01),
        ("rtt_ms", 250.0, "max_rtt_ms", 200.0),
        ("one_way_delay_ms", 151.0, "max_one_way_delay_ms", 150.0),
        ("setup_delay_s", 3.5, "max_setup_delay_s", 3.0),
    ],
)
def test_each_threshold_violated(field: str, value: float, threshold: str, limit: float) -> None:
    v = evaluate(FULL, replace(GOOD, **{field: value}))
    assert v.verdict == "violated"
    assert v.violations == (Violation(threshold, limit, value),)
    assert v.to_json()["violations"] == [{"threshold": threshold, "limit": limit, "value": value}]


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("mos_cq", 4.0),
        ("jitter_ms", 20.0),
        ("loss_ratio", 0.01),
        ("rtt_ms", 200.0),
        ("one_way_delay_ms", 150.0),
        ("setup_delay_s", 3.0),
    ],
)
def test_exactly_on_limit_is_met(field: str, limit: float) -> None:
    assert evaluate(FULL, replace(GOOD, **{field: limit})).met


def test_none_is_not_judged() -> None:
    v = evaluate(FULL, Measured())
    assert v.verdict == "met" and v.violations == ()
    assert set(v.not_judged) == {t for t, _, _ in THRESHOLDS} | {"media_dscp", "signalling_dscp"}


def test_unset_threshold_is_not_judged() -> None:
    v = evaluate(SlaProfile(name="empty"), Measured(mos_cq=1.0, loss_ratio=0.9))
    assert v.met and v.not_judged == ()


def test_several_violations_all_listed() -> None:
    v = evaluate(DEFAULT, Measured(mos_cq=3.0, jitter_ms=45.0, loss_ratio=0.05))
    assert [x.threshold for x in v.violations] == ["min_mos_cq", "max_jitter_ms", "max_loss_ratio"]
    assert v.profile == "default"


@pytest.mark.parametrize(("threshold", "value", "limit", "text"), [
    ("media_dscp", 0.0, 0.95, "media_dscp_compliance: 0.00 (min 0.95)"),
    ("signalling_dscp", 1 / 6, 0.95, "signalling_dscp_compliance: 0.17 (min 0.95)"),
    ("max_jitter_ms", 41.2749, 30.0, "jitter_ms: 41.27 (max 30)"),
    ("min_mos_cq", 3.412, 3.6, "mos_cq: 3.41 (min 3.6)"),
    # two decimals would print the limit itself: more are shown
    ("max_loss_ratio", 0.0149, 0.01, "loss_ratio: 0.015 (max 0.01)"),
    ("max_loss_ratio", 0.01004, 0.01, "loss_ratio: 0.01004 (max 0.01)"),
    ("max_setup_delay_s", 3.5, 3.0, "setup_delay_s: 3.50 (max 3)"),
    ("require_two_way_media", 1, 2, "media_directions: 1 (min 2)"),
])
def test_violation_reason_reads_quantity_value_and_limit(
        threshold: str, value: float, limit: float, text: str) -> None:
    assert violation_reason(threshold, value, limit) == text
    assert Violation(threshold, limit, value).reason == text


def test_every_profile_threshold_has_a_reason_name() -> None:
    assert set(REASON_NAMES) == ({t for t, _, _ in THRESHOLDS} | {t for t, _ in DSCP_CHECKS}
                                 | {t for t, _, _ in REQUIREMENTS})


def test_media_dscp_violation() -> None:
    v = evaluate(FULL, replace(GOOD, media_dscp_packets={0: 1000}))
    assert v.violations == (Violation("media_dscp", 0.95, 0.0, (46,)),)
    assert v.to_json()["violations"][0]["accepted"] == [46]


def test_dscp_compliance_threshold() -> None:
    # 96 % EF: meets 0.95; 94 % does not
    assert evaluate(FULL, replace(GOOD, media_dscp_packets={46: 96, 0: 4})).met
    v = evaluate(FULL, replace(GOOD, media_dscp_packets={46: 94, 0: 6}))
    assert v.violations == (Violation("media_dscp", 0.95, 0.94, (46,)),)


def test_signalling_dscp_accepts_any_listed() -> None:
    assert evaluate(FULL, replace(GOOD, signalling_dscp_packets={24: 2, 26: 2, 40: 2})).met
    v = evaluate(FULL, replace(GOOD, signalling_dscp_packets={0: 5, 40: 1}))
    assert v.violations[0].threshold == "signalling_dscp"
    assert v.violations[0].value == pytest.approx(1 / 6)


def test_dscp_without_packets_not_judged() -> None:
    v = evaluate(FULL, replace(GOOD, media_dscp_packets={}))
    assert v.met and v.not_judged == ("media_dscp",)


def test_dscp_compliance_ratio() -> None:
    assert dscp_compliance_ratio({46: 3, 0: 1}, [46]) == 0.75
    assert dscp_compliance_ratio({}, [46]) is None


LOCAL = [ipaddress.ip_network("192.168.0.0/16"), ipaddress.ip_network("2001:db8:1::/48")]


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ("203.0.113.5", "192.168.1.10", "inbound"),
        ("192.168.1.10", "203.0.113.5", "outbound"),
        ("192.168.1.10", "192.168.2.10", None),
        ("203.0.113.5", "198.51.100.1", None),
        ("2001:db8:ff::1", "2001:db8:1::10", "inbound"),
        ("::ffff:192.168.1.10", "::ffff:203.0.113.5", "outbound"),  # IPv4-mapped
    ],
)
def test_direction_of(src: str, dst: str, expected: str | None) -> None:
    assert direction_of(src, dst, LOCAL) == expected


def test_direction_without_local_networks() -> None:
    assert direction_of("10.0.0.1", "10.0.0.2", []) is None


PEERS = [
    Peer(name="carrier-a", networks=(ipaddress.ip_network("203.0.113.0/24"),)),
    Peer(
        name="carrier-b",
        networks=(
            ipaddress.ip_network("2001:db8:ff::/48"),
            ipaddress.ip_network("198.51.100.0/24"),
        ),
    ),
]


@pytest.mark.parametrize(
    ("ip", "name"),
    [
        ("203.0.113.9", "carrier-a"),
        (ipaddress.ip_address("198.51.100.200"), "carrier-b"),
        ("2001:db8:ff::7", "carrier-b"),
        ("::ffff:203.0.113.9", "carrier-a"),
        ("8.8.8.8", "other"),
        ("2001:db8:2::1", "other"),
    ],
)
def test_peer_of(ip: str, name: str) -> None:
    assert peer_of(ip, PEERS) == name


# -- require_two_way_media (a requirement: media in 2 directions) -------------------------

TWO_WAY = FULL.model_copy(update={"name": "two_way", "require_two_way_media": True})


@pytest.mark.parametrize(("directions", "violated"), [(2, False), (1, True), (0, True)])
def test_two_way_media_requirement(directions: int, violated: bool) -> None:
    v = evaluate(TWO_WAY, replace(GOOD, media_directions=directions))
    assert v.verdict == ("violated" if violated else "met")
    want = [Violation("require_two_way_media", 2.0, float(directions))] if violated else []
    assert list(v.violations) == want
    assert "require_two_way_media" not in v.not_judged


def test_two_way_media_not_judged_when_not_measured_or_not_required() -> None:
    v = evaluate(TWO_WAY, GOOD)  # media_directions None: the call could not be judged
    assert v.met and v.not_judged == ("require_two_way_media",)
    off = evaluate(FULL, replace(GOOD, media_directions=1))  # not required: nothing said
    assert off.met and "require_two_way_media" not in off.not_judged


# -- the fast paths, held to the plain forms they replace -----------------------------------

def _reference_within(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
                      networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Membership as `ipaddress` says it (the IPv4-mapped form is its IPv4 address)."""
    a = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return any(a.version == n.version and a in n for n in networks)


def _address(draw_v4: bool, value: int, mapped: bool) -> str:
    if draw_v4:
        v4 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
        return f"::ffff:{v4}" if mapped else str(v4)
    return str(ipaddress.IPv6Address(value))


_nets = st.lists(
    st.builds(
        lambda v4, value, prefix: ipaddress.ip_network(
            (value & 0xFFFFFFFF, prefix % 33) if v4 else (value, prefix), strict=False),
        st.booleans(), st.integers(0, 2**128 - 1), st.integers(0, 128)),
    max_size=4)
_addrs = st.builds(_address, st.booleans(), st.integers(0, 2**128 - 1), st.booleans())


@settings(max_examples=300, deadline=None)
@given(nets=_nets, src=_addrs, dst=_addrs, as_object=st.booleans())
def test_direction_and_peer_match_ipaddress_membership(
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network], src: str, dst: str,
        as_object: bool) -> None:
    """Membership by integer ranges (`_within`) says what `ipaddress` says, for text and
    address objects, IPv4, IPv6 and IPv4-mapped alike."""
    s: str | ipaddress.IPv4Address | ipaddress.IPv6Address = src
    d: str | ipaddress.IPv4Address | ipaddress.IPv6Address = dst
    if as_object:
        s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    src_local, dst_local = _reference_within(s, nets), _reference_within(d, nets)
    want = ("inbound" if dst_local and not src_local
            else "outbound" if src_local and not dst_local else None)
    assert direction_of(s, d, nets) == want
    assert direction_of(s, d, tuple(nets)) == want
    peers = [Peer(name=f"p{i}", networks=(n,)) for i, n in enumerate(nets)]
    want_peer = next((p.name for p in peers if _reference_within(s, list(p.networks))),
                     "other")
    assert peer_of(s, peers) == want_peer


@settings(max_examples=300, deadline=None)
@given(hi=st.integers(0, 2**64 - 1), lo=st.integers(0, 2**64 - 1), v4=st.booleans())
def test_words_key_is_the_key_of_the_text_form(hi: int, lo: int, v4: bool) -> None:
    if v4:
        hi, lo = 0, (0xFFFF << 32) | (lo & 0xFFFFFFFF)
    assert words_key(hi, lo) == address_key(format_addr(hi, lo))


def test_bad_address_text_still_raises() -> None:
    with pytest.raises(ValueError):
        direction_of("not-an-ip", "10.0.0.1", LOCAL)
    with pytest.raises(ValueError):
        peer_of("10.0.0.300", PEERS)


@pytest.mark.parametrize("profile", [DEFAULT, FULL, TWO_WAY, SlaProfile(name="empty")])
@pytest.mark.parametrize("setup", [None, 0.5, 3.0, 3.5])
@pytest.mark.parametrize("sig", [None, {}, {24: 6}, {0: 5, 40: 1}])
@pytest.mark.parametrize("directions", [None, 0, 1, 2])
def test_evaluate_call_is_evaluate_of_the_call_measures(
        profile: SlaProfile, setup: float | None, sig: dict[int, int] | None,
        directions: int | None) -> None:
    full = evaluate(profile, Measured(setup_delay_s=setup, signalling_dscp_packets=sig,
                                      media_directions=directions))
    call = evaluate_call(profile, setup_delay_s=setup, signalling_dscp_packets=sig,
                         media_directions=directions)
    assert (call.verdict, call.profile, call.violations) == (
        full.verdict, full.profile, full.violations)
    call_thresholds = {t for t, m, _ in THRESHOLDS if m in CALL_MEASURES} | {
        t for t, m in DSCP_CHECKS if m in CALL_MEASURES} | {
        t for t, m, _ in REQUIREMENTS if m in CALL_MEASURES}
    assert call.not_judged == tuple(n for n in full.not_judged if n in call_thresholds)


def test_each_profile_object_is_judged_by_its_own_thresholds() -> None:
    """Plans are remembered per profile object: a copy with other limits, or a profile
    built anew each time, is judged by its own."""
    m = Measured(jitter_ms=25.0)
    for _ in range(3):
        assert evaluate(FULL, m).violations == (Violation("max_jitter_ms", 20.0, 25.0),)
        loose = FULL.model_copy(update={"max_jitter_ms": 30.0})
        assert evaluate(loose, m).met
        assert evaluate(SlaProfile(name="x", max_jitter_ms=24.0), m).violations == (
            Violation("max_jitter_ms", 24.0, 25.0),)


def test_dscp_compliance_ratio_takes_any_iterable() -> None:
    packets = {46: 3, 0: 1, 26: 4}
    for accepted in ([46, 26], (46, 26), {46, 26}, frozenset({46, 26}), iter([46, 26])):
        assert dscp_compliance_ratio(packets, accepted) == 7 / 8
    assert dscp_compliance_ratio({46: 0}, [46]) is None
