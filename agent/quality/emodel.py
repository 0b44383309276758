"""ITU-T G.107 E-model (narrowband) and the G.107.1 wideband rating scale.

Theory of operation
-------------------
The E-model adds impairments on a psychological scale:

    R = Ro - Is - Id - Ie,eff + A                      (G.107 §7.1)

* ``Ro`` (basic signal-to-noise ratio) and ``Is`` (simultaneous impairments:
  loudness, sidetone, quantisation) depend only on the terminal/loudness
  parameters, plus a faint dependence of ``Is`` on the echo-path delay T.
* ``Id`` (delay impairments) = talker echo ``Idte`` + listener echo ``Idle``
  + absolute delay ``Idd``.
* ``Ie,eff`` (equipment impairment) = codec impairment ``Ie`` raised by packet
  loss ``Ppl`` with robustness ``Bpl`` and burstiness ``BurstR``.

Every constant that G.107 lets a planner change lives in :class:`EModelParams`
with the G.107 §7.7 default (Table 3), so nothing here is a hard-coded 93.2:
with all defaults Ro = 94.7688, Is = 1.4136 and R = 93.2062 (MOS 4.4094).

Units: delays are milliseconds (as in G.107), loss ``Ppl`` is in percent.
Pure functions, no I/O.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EModelParams:
    """G.107 planning parameters; defaults are G.107 §7.7 Table 3.

    Delays T, Tr and Ta are not here: a probe measures or estimates them per
    call (see ``agent.quality.model``).
    """

    slr_db: float = 8.0  # send loudness rating
    rlr_db: float = 2.0  # receive loudness rating
    stmr_db: float = 15.0  # sidetone masking rating
    lstr_db: float = 18.0  # listener sidetone rating
    ds: float = 3.0  # D-value of telephone, send side
    dr: float = 3.0  # D-value of telephone, receive side
    telr_db: float = 65.0  # talker echo loudness rating
    wepl_db: float = 110.0  # weighted echo path loss
    qdu: float = 1.0  # number of quantisation distortion units
    nc_dbm0p: float = -70.0  # circuit noise referred to the 0 dBr point
    nfor_dbmp: float = -64.0  # noise floor at the receive side
    ps_dba: float = 35.0  # room noise at the send side
    pr_dba: float = 35.0  # room noise at the receive side
    a: float = 0.0  # advantage factor (0 for wired VoIP)
    mt_ms: float = 100.0  # Idd: delay below which absolute delay does not impair
    st: float = 1.0  # Idd: sharpness of the absolute delay curve
    # Ie,eff = Ie + (ceiling - Ie) * Ppl / (Ppl/BurstR + Bpl). G.107 uses 95; the
    # STANDARDS.md wideband vector applies the same 95 on the WB scale (unverified).
    ie_eff_ceiling: float = 95.0
    # G.107.1 wideband rating scale: R_WB max 129, MOS from R_WB / 1.29.
    ro_wb: float = 129.0
    wb_scale: float = 1.29
    # Id,WB = wb_scale * (Idte + Idd) from the narrowband formulas, listener echo
    # left out (G.107.1: listener echo "not studied in detail"). (unverified)
    wb_include_listener_echo: bool = False


DEFAULT_PARAMS = EModelParams()

#: Bounds of the R -> MOS mapping (G.107 Annex B, eq. B-4).
R_MIN = 0.0
R_MAX = 100.0
MOS_MIN = 1.0
MOS_MAX = 4.5


def _db_sum(*levels_db: float) -> float:
    """Power sum of levels in dB: 10 log10(sum 10^(L/10))."""
    return 10.0 * math.log10(sum(10.0 ** (level / 10.0) for level in levels_db))


@functools.lru_cache(maxsize=16)  # a pure function of the (frozen) parameters
def noise_power_no(p: EModelParams = DEFAULT_PARAMS) -> float:
    """Total noise No in dBm0p (G.107 §7.2): circuit, room (send/receive), floor."""
    olr = p.slr_db + p.rlr_db
    nos = p.ps_dba - p.slr_db - p.ds - 100.0 + 0.004 * (p.ps_dba - olr - p.ds - 14.0) ** 2
    pre = p.pr_dba + 10.0 * math.log10(1.0 + 10.0 ** ((10.0 - p.lstr_db) / 10.0))
    nor = p.rlr_db - 121.0 + pre + 0.008 * (pre - 35.0) ** 2
    nfo = p.nfor_dbmp + p.rlr_db
    return _db_sum(p.nc_dbm0p, nos, nor, nfo)


@functools.lru_cache(maxsize=16)
def basic_ro(p: EModelParams = DEFAULT_PARAMS) -> float:
    """Basic signal-to-noise ratio Ro = 15 - 1.5 (SLR + No) (G.107 §7.2)."""
    return 15.0 - 1.5 * (p.slr_db + noise_power_no(p))


def _stmro(p: EModelParams, t_ms: float) -> float:
    """Weighted sidetone + talker-echo masking rating STMRo (G.107 §7.3)."""
    return -10.0 * math.log10(
        10.0 ** (-p.stmr_db / 10.0) + math.exp(-t_ms / 4.0) * 10.0 ** (-p.telr_db / 10.0)
    )


def sidetone_ist(p: EModelParams = DEFAULT_PARAMS, t_ms: float = 0.0) -> float:
    """Ist: impairment from non-optimum sidetone (G.107 §7.3)."""
    s = _stmro(p, t_ms)
    return (
        12.0 * math.pow(1.0 + ((s - 13.0) / 6.0) ** 8, 1.0 / 8.0)
        - 28.0 * math.pow(1.0 + ((s + 1.0) / 19.4) ** 35, 1.0 / 35.0)
        - 13.0 * math.pow(1.0 + ((s - 3.0) / 33.0) ** 13, 1.0 / 13.0)
        + 29.0
    )


# Pure functions of the (frozen) parameters and the delays, and the delays repeat: a call
# without RTCP round trips is rated on its codec's and jitter buffer's assumed delays,
# the same for every call of that codec. Bounded: measured delays evict.
@functools.lru_cache(maxsize=4096)
def simultaneous_is(p: EModelParams = DEFAULT_PARAMS, t_ms: float = 0.0) -> float:
    """Is = Iolr + Ist + Iq (G.107 §7.3); ``t_ms`` is the talker-echo delay T."""
    no = noise_power_no(p)
    olr = p.slr_db + p.rlr_db
    xolr = olr + 0.2 * (64.0 + no - p.rlr_db)
    iolr = 20.0 * (math.pow(1.0 + (xolr / 8.0) ** 8, 1.0 / 8.0) - xolr / 8.0)
    q = 37.0 - 15.0 * math.log10(p.qdu)
    g = 1.07 + 0.258 * q + 0.0602 * q**2
    z = 46.0 / 30.0 - g / 40.0
    y = (basic_ro(p) - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0
    iq = 15.0 * math.log10(1.0 + math.pow(10.0, y) + math.pow(10.0, z))
    return iolr + sidetone_ist(p, t_ms) + iq


@dataclass(frozen=True, slots=True)
class DelayImpairment:
    """Id and its three parts, on the narrowband R scale."""

    idte: float  # talker echo
    idle: float  # listener echo
    idd: float  # absolute (mouth-to-ear) delay

    @property
    def total(self) -> float:
        return self.idte + self.idle + self.idd


def talker_echo_idte(p: EModelParams, t_ms: float) -> float:
    """Idte (G.107 §7.4) for echo-path mean one-way delay T in ms."""
    no = noise_power_no(p)
    roe = -1.5 * (no - p.rlr_db)
    terv = (
        p.telr_db
        - 40.0 * math.log10((1.0 + t_ms / 10.0) / (1.0 + t_ms / 150.0))
        + 6.0 * math.exp(-0.3 * t_ms**2)
    )
    if p.stmr_db < 9.0:
        # G.107 §7.4: low sidetone masking makes echo more audible. (unverified)
        terv += sidetone_ist(p, t_ms) / 2.0
    re = 80.0 + 2.5 * (terv - 14.0)
    idte = ((roe - re) / 2.0 + math.sqrt((roe - re) ** 2 / 4.0 + 100.0) - 1.0) * (
        1.0 - math.exp(-t_ms)
    )
    if p.stmr_db > 20.0:
        # G.107 §7.4: high sidetone and echo combine. (unverified)
        idte = math.sqrt(idte**2 + sidetone_ist(p, t_ms) ** 2)
    return idte


def listener_echo_idle(p: EModelParams, tr_ms: float) -> float:
    """Idle (G.107 §7.4) for round-trip delay Tr in ms of the listener-echo loop."""
    rle = 10.5 * (p.wepl_db + 7.0) * math.pow(tr_ms + 1.0, -0.25)
    ro = basic_ro(p)
    return (ro - rle) / 2.0 + math.sqrt((ro - rle) ** 2 / 4.0 + 169.0)


def absolute_delay_idd(p: EModelParams, ta_ms: float) -> float:
    """Idd (G.107 §7.4) for absolute one-way delay Ta in ms; 0 up to mT."""
    if ta_ms <= p.mt_ms:
        return 0.0
    x = math.log10(ta_ms / p.mt_ms) / math.log10(2.0)
    k = 6.0 * p.st
    return 25.0 * (
        math.pow(1.0 + math.pow(x, k), 1.0 / k)
        - 3.0 * math.pow(1.0 + math.pow(x / 3.0, k), 1.0 / k)
        + 2.0
    )


@functools.lru_cache(maxsize=4096)  # see simultaneous_is
def delay_impairment(
    t_ms: float, tr_ms: float, ta_ms: float, p: EModelParams = DEFAULT_PARAMS
) -> DelayImpairment:
    """Id = Idte(T) + Idle(Tr) + Idd(Ta), all delays in ms (G.107 §7.4)."""
    return DelayImpairment(
        idte=talker_echo_idte(p, t_ms),
        idle=listener_echo_idle(p, tr_ms),
        idd=absolute_delay_idd(p, ta_ms),
    )


def effective_ie(
    ie: float,
    bpl: float,
    ppl_percent: float,
    burst_r: float = 1.0,
    p: EModelParams = DEFAULT_PARAMS,
) -> float:
    """Ie,eff = Ie + (95 - Ie) Ppl / (Ppl/BurstR + Bpl) (G.107 §7.5).

    ``ppl_percent`` is the packet-loss probability in percent (0..100);
    ``burst_r`` is 1 for random loss, > 1 for bursty loss.
    """
    if ppl_percent <= 0.0:
        return ie
    if burst_r <= 0.0:
        raise ValueError(f"burst_r must be > 0, got {burst_r}")
    return ie + (p.ie_eff_ceiling - ie) * ppl_percent / (ppl_percent / burst_r + bpl)


def mos_from_r(r: float) -> float:
    """G.107 Annex B R -> MOS (conversational quality estimate), clamped to [1, 4.5].

    The cubic dips below 1 for 0 < R < 6.5; the clamp keeps MOS monotone in R.
    """
    if r <= R_MIN:
        return MOS_MIN
    if r >= R_MAX:
        return MOS_MAX
    mos = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    return min(MOS_MAX, max(MOS_MIN, mos))


def mos_from_r_wideband(r_wb: float, p: EModelParams = DEFAULT_PARAMS) -> float:
    """G.107.1 Annex A: MOS from the wideband rating via Rx = R_WB / 1.29."""
    return mos_from_r(r_wb / p.wb_scale)


@dataclass(frozen=True, slots=True)
class RatingBreakdown:
    """Every term of one E-model evaluation (narrowband or wideband scale)."""

    ro: float
    is_: float
    id: DelayImpairment
    id_total: float  # on this rating's scale (scaled for wideband)
    ie_eff: float
    a: float
    scale: float  # 1 for narrowband, 1.29 (G.107.1) for wideband

    @property
    def r(self) -> float:
        """R = Ro - Is - Id - Ie,eff + A, unclamped."""
        return self.ro - self.is_ - self.id_total - self.ie_eff + self.a

    @property
    def r_listening(self) -> float:
        """R without the delay terms (Id), the basis of MOS-LQ here."""
        return self.ro - self.is_ - self.ie_eff + self.a

    @property
    def wideband(self) -> bool:
        return self.scale != 1.0

    @property
    def r_max(self) -> float:
        """Top of this rating scale: 100 narrowband, 129 wideband."""
        return R_MAX * self.scale

    def mos(self, r: float) -> float:
        """MOS for a rating ``r`` on this scale (G.107 Annex B / G.107.1 Annex A)."""
        return mos_from_r(r / self.scale)


def rate_narrowband(
    *,
    t_ms: float,
    tr_ms: float,
    ta_ms: float,
    ie: float,
    bpl: float,
    ppl_percent: float,
    burst_r: float = 1.0,
    p: EModelParams = DEFAULT_PARAMS,
) -> RatingBreakdown:
    """G.107 narrowband R with its terms. Delays in ms, loss in percent."""
    d = delay_impairment(t_ms, tr_ms, ta_ms, p)
    return RatingBreakdown(
        ro=basic_ro(p),
        is_=simultaneous_is(p, t_ms),
        id=d,
        id_total=d.total,
        ie_eff=effective_ie(ie, bpl, ppl_percent, burst_r, p),
        a=p.a,
        scale=1.0,
    )


def rate_wideband(
    *,
    t_ms: float,
    tr_ms: float,
    ta_ms: float,
    ie_wb: float,
    bpl: float,
    ppl_percent: float,
    burst_r: float = 1.0,
    p: EModelParams = DEFAULT_PARAMS,
) -> RatingBreakdown:
    """G.107.1 wideband R in monitoring use: R = 129 - Id,WB - Ie,eff,WB + A.

    Is,WB is taken as 0 (G.107.1 default terminals). Id,WB is the narrowband
    Idte + Idd scaled by 1.29 (and Idle only if ``wb_include_listener_echo``).
    """
    d = delay_impairment(t_ms, tr_ms, ta_ms, p)
    nb_id = d.idte + d.idd + (d.idle if p.wb_include_listener_echo else 0.0)
    return RatingBreakdown(
        ro=p.ro_wb,
        is_=0.0,
        id=d,
        id_total=p.wb_scale * nb_id,
        ie_eff=effective_ie(ie_wb, bpl, ppl_percent, burst_r, p),
        a=p.a,
        scale=p.wb_scale,
    )
