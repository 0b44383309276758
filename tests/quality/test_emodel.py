"""Every E-model vector of STANDARDS.md (G.107 / G.107.1).

Tolerances: 0.01 on R and on Id terms, 0.002 on MOS (the tables round to
three decimals, so 0.002 covers their rounding).
"""

from __future__ import annotations

import dataclasses

import pytest

from agent.quality.emodel import (
    DEFAULT_PARAMS,
    EModelParams,
    absolute_delay_idd,
    basic_ro,
    delay_impairment,
    effective_ie,
    mos_from_r,
    mos_from_r_wideband,
    rate_narrowband,
    rate_wideband,
    simultaneous_is,
)

R_TOL = 0.01
MOS_TOL = 0.002


def nb(
    ta: float,
    ppl: float = 0.0,
    ie: float = 0.0,
    bpl: float = 4.3,
    burst_r: float = 1.0,
    p: EModelParams = DEFAULT_PARAMS,
) -> float:
    """R for the STANDARDS.md convention T = Ta, Tr = 2 Ta."""
    return rate_narrowband(
        t_ms=ta, tr_ms=2 * ta, ta_ms=ta, ie=ie, bpl=bpl, ppl_percent=ppl, burst_r=burst_r, p=p
    ).r


def test_defaults_ro_is_r_mos() -> None:
    assert basic_ro() == pytest.approx(94.7688, abs=1e-3)
    assert simultaneous_is() == pytest.approx(1.4136, abs=1e-3)
    r = nb(0.0)
    assert r == pytest.approx(93.2062, abs=1e-3)
    assert mos_from_r(r) == pytest.approx(4.4094, abs=1e-3)


def test_ro_is_not_hard_coded() -> None:
    noisy = dataclasses.replace(DEFAULT_PARAMS, ps_dba=60.0)
    assert basic_ro(noisy) < basic_ro() - 1.0
    coarse = dataclasses.replace(DEFAULT_PARAMS, qdu=8.0)
    assert simultaneous_is(coarse) > simultaneous_is() + 1.0


@pytest.mark.parametrize(
    ("r", "mos"),
    [(20, 1.252), (40, 2.064), (50, 2.575), (60, 3.100), (70, 3.597), (80, 4.024), (90, 4.339)],
)
def test_r_to_mos_vectors(r: float, mos: float) -> None:
    assert mos_from_r(r) == pytest.approx(mos, abs=MOS_TOL)


def test_r_to_mos_clamps() -> None:
    assert mos_from_r(-5.0) == 1.0
    assert mos_from_r(0.0) == 1.0
    assert mos_from_r(3.0) == 1.0  # the cubic dips to ~0.98 here
    assert mos_from_r(100.0) == 4.5
    assert mos_from_r(120.0) == 4.5


@pytest.mark.parametrize(
    ("ta", "idte", "idle", "idd", "r", "mos"),
    [
        (100, 1.964, 0.728, 0.0, 90.664, 4.355),
        (150, 2.812, 0.841, 0.164, 89.539, 4.328),
        (200, 3.571, 0.935, 3.044, 85.805, 4.223),
        (300, 4.834, 1.094, 14.761, 72.666, 3.719),
        (400, 5.808, 1.230, 24.070, 62.247, 3.216),
    ],
)
def test_delay_table(ta: float, idte: float, idle: float, idd: float, r: float, mos: float) -> None:
    d = delay_impairment(t_ms=ta, tr_ms=2 * ta, ta_ms=ta)
    assert d.idte == pytest.approx(idte, abs=R_TOL)
    assert d.idle == pytest.approx(idle, abs=R_TOL)
    assert d.idd == pytest.approx(idd, abs=R_TOL)
    assert nb(ta) == pytest.approx(r, abs=R_TOL)
    assert mos_from_r(nb(ta)) == pytest.approx(mos, abs=MOS_TOL)


def test_idd_zero_up_to_mt() -> None:
    assert absolute_delay_idd(DEFAULT_PARAMS, 100.0) == 0.0
    assert absolute_delay_idd(DEFAULT_PARAMS, 100.5) > 0.0


@pytest.mark.parametrize(
    ("ta", "ppl", "r", "mos"),
    [
        (0, 1, 75.282, 3.834),
        (0, 2, 63.047, 3.256),
        (0, 5, 42.131, 2.170),
        (150, 1, 71.615, 3.672),
        (150, 2, 59.380, 3.068),
        (150, 5, 38.464, 1.989),
        (300, 1, 54.742, 2.825),
        (300, 2, 42.508, 2.189),
        (300, 5, 21.591, 1.301),
    ],
)
def test_loss_table(ta: float, ppl: float, r: float, mos: float) -> None:
    got = nb(ta, ppl=ppl, ie=0.0, bpl=4.3)
    assert got == pytest.approx(r, abs=R_TOL)
    assert mos_from_r(got) == pytest.approx(mos, abs=MOS_TOL)


@pytest.mark.parametrize(("ppl", "r"), [(1, 89.566), (2, 86.195), (5, 77.425)])
def test_g711_plc(ppl: float, r: float) -> None:
    assert nb(0, ppl=ppl, ie=0.0, bpl=25.1) == pytest.approx(r, abs=R_TOL)


@pytest.mark.parametrize(("ppl", "r"), [(1, 78.006), (2, 74.206), (5, 64.706)])
def test_g729a_vad(ppl: float, r: float) -> None:
    assert nb(0, ppl=ppl, ie=11.0, bpl=19.0) == pytest.approx(r, abs=R_TOL)


def test_burst_r_2() -> None:
    assert effective_ie(0.0, 4.3, 2.0, burst_r=2.0) == pytest.approx(35.849, abs=R_TOL)
    assert nb(0, ppl=2.0, ie=0.0, bpl=4.3, burst_r=2.0) == pytest.approx(57.357, abs=R_TOL)


def test_burstiness_hurts() -> None:
    assert effective_ie(0.0, 4.3, 2.0, burst_r=3.0) > effective_ie(0.0, 4.3, 2.0, burst_r=1.0)


def test_no_loss_gives_plain_ie() -> None:
    assert effective_ie(11.0, 19.0, 0.0) == 11.0


def test_wideband_vector() -> None:
    b = rate_wideband(t_ms=0, tr_ms=0, ta_ms=0, ie_wb=20.0, bpl=4.3, ppl_percent=2.0)
    assert b.ie_eff == pytest.approx(43.81, abs=R_TOL)
    assert b.r == pytest.approx(85.19, abs=R_TOL)
    assert b.mos(b.r) == pytest.approx(3.406, abs=MOS_TOL)
    assert mos_from_r_wideband(b.r) == pytest.approx(3.406, abs=MOS_TOL)
    assert b.r_max == pytest.approx(129.0)


def test_wideband_clean_is_top_of_scale() -> None:
    b = rate_wideband(t_ms=0, tr_ms=0, ta_ms=0, ie_wb=0.0, bpl=4.3, ppl_percent=0.0)
    assert b.r == pytest.approx(129.0)
    assert b.mos(b.r) == 4.5


def test_wideband_delay_scaled() -> None:
    b = rate_wideband(t_ms=300, tr_ms=600, ta_ms=300, ie_wb=0.0, bpl=4.3, ppl_percent=0.0)
    d = delay_impairment(300, 600, 300)
    assert b.id_total == pytest.approx(1.29 * (d.idte + d.idd))
