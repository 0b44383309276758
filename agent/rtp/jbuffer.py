"""Vectorised jitter-buffer emulation and ptime: the batch twin of `ReferenceStream._buffer`.

Definitions are in `agent.rtp.rules` (theory of operation). `BatchStats._jitter`
hands over its jitter rows (accepted media rows, grouped by stream, arrival
order); the *buffer rows* are those that are not duplicates, of streams with a
clock. Per stream the state carries: whether the segment has had a buffer row
(``jb_has``), that row's extended RTP timestamp and sequence number (the ts
extension and ptime pairs continue from them), the window (``jb_blk`` the
current block or -1, ``jb_cur``/``jb_prev`` the minimum transit of the current
and previous block, integer microseconds) and the sums.

The window is a segmented running minimum: rows are cut into *groups* (one
segment, one block, no resync inside), the running minimum of each group comes
from one ``np.minimum.accumulate`` over offset keys (each group's keys sit below
every earlier group's, the trick the sequence code uses for its maximum), and a
group's previous-block minimum is the total of the group before it when that is
the adjacent block of the same window, or the state's for a stream's first group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.rtp.rules import (
    JB_BLOCK_SHIFT,
    JB_INF,
    JB_TRANSIT_CLIP,
    JitterBufferSpec,
    add_ptime_step,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
State = dict[str, npt.NDArray[Any]]

# jb_wsum: waits in whole nanoseconds, an integer sum (exact, so independent of batching)
INT_FIELDS = ("jb_has", "jb_ext", "jb_seq", "jb_blk", "jb_cur", "jb_prev", "jb_n", "jb_late",
              "jb_wsum")
FLOAT_FIELDS = ("jb_wmax",)


def _shift(x: npt.NDArray[Any], start: B, first: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Previous row's value within a group; ``first`` for each group's first row."""
    out = np.empty_like(x)
    out[1:] = x[:-1]
    out[start] = first
    return out


def _ends(starts: I64, n: int) -> I64:
    """Last row of each group, from the groups' first rows."""
    out = np.empty_like(starts)
    out[:-1] = starts[1:] - 1
    out[-1] = n - 1
    return out


def segmented_min(x: I64, gid: I64) -> I64:
    """Running minimum of ``x`` restarting with every group; ``gid`` the non-decreasing
    group number of each row (0, 0, 1, 1, 1, 2 ...)."""
    lo, hi = int(x.min()), int(x.max())
    width = hi - lo + 1
    ngroups = int(gid[-1]) + 1
    if width < (1 << 62) // ngroups:  # |x| <= 2^60, so no overflow anywhere
        off = gid * width
        out: I64 = np.minimum.accumulate(x - off)  # group g's keys lie below group g-1's
        out += off
        return out
    n = x.shape[0]  # absurd spreads (timestamp chaos): the same on ranks, still exact
    order = np.argsort(x, kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    best = np.minimum.accumulate(rank - gid * n) + gid * n
    picked: I64 = x[order[best]]
    return picked


def add_ptime_steps(hists: dict[int, dict[int, int]], sid: I64, step: I64, start: B) -> None:
    """Count the steps (> 0; 0 = no pair) of rows grouped by stream (``start``: first row
    of a stream), in arrival order, into the bounded histograms; a new step enters in
    order of first appearance, as one packet at a time would."""
    change = start.copy()
    change[1:] |= step[1:] != step[:-1]
    runs = np.flatnonzero(change)  # a stream sends one step most of the time: few runs
    keep = step[runs] > 0
    counts = np.diff(np.append(runs, step.size))[keep]
    key = (sid[runs][keep] << 32) | step[runs][keep]
    if key.size == 0:
        return
    uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
    totals = np.zeros(uniq.size, np.int64)
    np.add.at(totals, inv, counts)
    for k in np.argsort(first, kind="stable").tolist():
        u = int(uniq[k])
        add_ptime_step(hists[u >> 32], u & 0xFFFFFFFF, int(totals[k]))


@dataclass(frozen=True, slots=True)
class JitterRows:
    """Accepted media rows of one batch (grouped by stream, arrival order), from `_jitter`."""

    sid: I64
    gseg: I64  # batch segment id (a stream's segments are consecutive ids)
    seg_cont: B  # the row's segment continues the state's segment
    dup: B
    disc: B  # jitter discontinuity at this row
    jitter_s: F64  # J after the row
    arrival_s: F64
    ts: I64
    ext_seq: I64
    max_ext: I64  # the segment's highest extended sequence number after the row
    clock: F64


@dataclass(frozen=True, slots=True)
class _Rows:
    """Buffer rows and their grouping by stream and segment."""

    r: JitterRows
    idx: I64 | None  # buffer rows among the jitter rows (None: all of them)
    bs: I64  # each stream's first row
    bl: I64  # each stream's last row
    bstart: B
    segstart: B
    cont: B  # per stream: its first row continues the state's segment


def reset(s: State, sids: I64) -> None:
    """Streams whose segment ended: the ts extension, ptime pairs and window start over."""
    s["jb_has"][sids] = 0
    s["jb_blk"][sids] = -1


def update(s: State, hists: dict[int, dict[int, int]], spec: JitterBufferSpec, r: JitterRows,
           new_seg_sids: I64, last_sid: I64, last_gseg: I64) -> None:
    """Buffer rows of one batch. ``new_seg_sids``: streams with a segment that started in
    this batch; ``last_sid``/``last_gseg``: every stream of the batch (sorted) and the
    segment of its last accepted row."""
    rows = _buffer_rows(s, r)
    any_disc = bool(r.disc.any())
    if rows is None:
        reset(s, new_seg_sids)
        if any_disc:
            s["jb_blk"][np.unique(r.sid[r.disc])] = -1
        return
    b = rows.r
    ext_ts, tsd = _extend_ts(s, rows)
    step = _ptime_steps(s, rows, tsd)
    add_ptime_steps(hists, b.sid, step, rows.bstart)
    window = None
    calm = np.ones(rows.bs.size, bool)
    if spec.model != "none":
        resync = np.zeros(b.sid.size, bool)
        if any_disc:
            resync, calm = _resyncs(r, rows)
        window = _window(s, spec, rows, resync, ext_ts)
    reset(s, new_seg_sids)
    if any_disc:
        s["jb_blk"][np.unique(r.sid[r.disc])] = -1
    bl = rows.bl
    u = b.sid[bl]
    keep = b.gseg[bl] == last_gseg[np.searchsorted(last_sid, u)]  # in its last segment
    s["jb_has"][u[keep]] = 1
    s["jb_ext"][u[keep]], s["jb_seq"][u[keep]] = ext_ts[bl][keep], b.ext_seq[bl][keep]
    if window is not None:
        calm &= keep
        blk, cur, prev = window
        s["jb_blk"][u[calm]], s["jb_cur"][u[calm]] = blk[calm], cur[calm]
        s["jb_prev"][u[calm]] = prev[calm]


def _buffer_rows(s: State, r: JitterRows) -> _Rows | None:
    idx: I64 | None = None
    b = r
    if r.dup.any() or not (r.clock > 0).all():
        idx = np.flatnonzero(~r.dup & (r.clock > 0))
        if idx.size == 0:
            return None
        b = JitterRows(*(getattr(r, f)[idx] for f in JitterRows.__slots__))
    sid, g = b.sid, b.gseg
    bstart = np.empty(sid.size, bool)
    bstart[0] = True
    np.not_equal(sid[1:], sid[:-1], out=bstart[1:])
    bs = np.flatnonzero(bstart)
    segstart = bstart.copy()
    segstart[1:] |= g[1:] != g[:-1]
    cont = b.seg_cont[bs] & (s["jb_has"][sid[bs]] > 0)
    return _Rows(b, idx, bs, _ends(bs, sid.size), bstart, segstart, cont)


def _extend_ts(s: State, rows: _Rows) -> tuple[I64, I64]:
    """(extended RTP timestamp, signed step to the previous buffer row) of each row."""
    ts, bs, cont = rows.r.ts, rows.bs, rows.cont
    prev_ext = s["jb_ext"][rows.r.sid[bs]]
    prev_ts = _shift(ts, rows.bstart, prev_ext & 0xFFFFFFFF)
    diff = ts - prev_ts
    tsd = ((diff + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
    fresh = rows.segstart.copy()  # rows that start the extension afresh
    fresh[bs[cont]] = False
    wrapped = (tsd != diff) & ~fresh
    first = np.flatnonzero(rows.segstart)
    seg_off = np.zeros(first.size, np.int64)  # the state's wraps, for continued segments
    seg_off[np.searchsorted(first, bs[cont])] = prev_ext[cont] - (prev_ext[cont] & 0xFFFFFFFF)
    if not wrapped.any():  # no 32-bit wrap in this batch: the common case
        if not seg_off.any():
            return ts, tsd
        return ts + np.repeat(seg_off, np.diff(np.append(first, ts.size))), tsd
    val = np.where(rows.segstart, ts + seg_off[np.cumsum(rows.segstart) - 1], tsd)
    val[bs[cont]] = prev_ext[cont] + tsd[bs[cont]]
    cs = np.cumsum(val)
    ext: I64 = cs - np.repeat(cs[first] - val[first], np.diff(np.append(first, ts.size)))
    return ext, tsd


def _ptime_steps(s: State, rows: _Rows, tsd: I64) -> I64:
    """Per row: its timestamp step when it follows the previous buffer row of the segment
    by exactly one sequence number and the timestamp advanced; else 0."""
    ext_seq = rows.r.ext_seq
    prev_seq = _shift(ext_seq, rows.bstart, s["jb_seq"][rows.r.sid[rows.bs]])
    pair = (ext_seq - prev_seq == 1) & (tsd > 0)
    fresh = rows.segstart.copy()
    fresh[rows.bs[rows.cont]] = False
    pair &= ~fresh
    return np.where(pair, tsd, 0)


def _resyncs(r: JitterRows, rows: _Rows) -> tuple[B, B]:
    """(a discontinuity since the previous buffer row of the stream or the batch start,
    per buffer row; none after the stream's last buffer row, per stream)."""
    jstart = np.ones(r.sid.size, bool)
    jstart[1:] = r.sid[1:] != r.sid[:-1]
    cd = np.cumsum(r.disc)
    b = np.arange(r.sid.size) if rows.idx is None else rows.idx
    stream_of = (np.cumsum(jstart) - 1)[b[rows.bs]]  # among the batch's jitter streams
    cd_before: I64 = (cd - r.disc)[jstart][stream_of]
    cdb = cd[b]
    resync = cdb != _shift(cdb, rows.bstart, cd_before)
    jl = _ends(np.flatnonzero(jstart), r.sid.size)
    return resync, cd[jl][stream_of] == cdb[rows.bl]


def _window(s: State, spec: JitterBufferSpec, rows: _Rows, resync: B, ext_ts: I64
            ) -> tuple[I64, I64, I64]:
    """Base, lateness and waits of the buffer rows; returns each stream's last window
    (block, current block's minimum, previous block's minimum)."""
    r = rows.r
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.rint((r.arrival_s - ext_ts / r.clock) * 1e6)
    np.clip(t, -JB_TRANSIT_CLIP, JB_TRANSIT_CLIP, out=t)
    transit = t.astype(np.int64)
    block = r.max_ext >> JB_BLOCK_SHIFT
    gstart = rows.segstart | resync
    gstart[1:] |= block[1:] != block[:-1]
    gf = np.flatnonzero(gstart)
    glen = np.diff(np.append(gf, transit.size))
    init_cur = np.full(gf.size, JB_INF, np.int64)
    prev = np.full(gf.size, JB_INF, np.int64)
    # a stream's first group continues the state's window when nothing broke it
    sf = np.flatnonzero(rows.bstart[gf])
    u = r.sid[rows.bs]
    blk0 = s["jb_blk"][u]
    ok = rows.cont & ~resync[rows.bs] & (blk0 >= 0)
    same = ok & (block[rows.bs] == blk0)
    nxt = ok & (block[rows.bs] == blk0 + 1)
    init_cur[sf[same]] = s["jb_cur"][u[same]]
    prev[sf[same]] = s["jb_prev"][u[same]]
    prev[sf[nxt]] = s["jb_cur"][u[nxt]]
    total = np.minimum(np.minimum.reduceat(transit, gf), init_cur)
    inner = np.flatnonzero(~(rows.segstart[gf] | resync[gf]))  # new block, same window
    inner = inner[block[gf[inner]] == block[gf[inner] - 1] + 1]
    prev[inner] = total[inner - 1]
    y = transit.copy()  # the base is the running minimum with both carried minima folded in
    y[gf] = np.minimum(np.minimum(transit[gf], init_cur), prev)
    gid = np.repeat(np.arange(gf.size), glen)
    delay_us = transit - segmented_min(y, gid)
    if spec.model == "fixed":
        late = delay_us > spec.fixed_ms * 1000.0
        wait = spec.fixed_ms - delay_us / 1000.0
    else:
        target_ms = spec.adaptive_k * r.jitter_s * 1000.0
        np.maximum(target_ms, spec.adaptive_min_ms, out=target_ms)
        np.minimum(target_ms, spec.adaptive_max_ms, out=target_ms)
        late = delay_us > target_ms * 1000.0
        wait = target_ms - delay_us / 1000.0
    wait[late] = 0.0
    bs, bl = rows.bs, rows.bl
    s["jb_n"][u] += bl - bs + 1
    s["jb_late"][u] += np.add.reduceat(late, bs)
    s["jb_wsum"][u] += np.add.reduceat(np.rint(wait * 1e6).astype(np.int64), bs)
    s["jb_wmax"][u] = np.maximum(s["jb_wmax"][u], np.maximum.reduceat(wait, bs))
    return block[bl], total[gid[bl]], prev[gid[bl]]
