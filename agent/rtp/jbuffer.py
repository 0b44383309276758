"""Vectorised jitter-buffer emulation and ptime: the batch twin of `ReferenceStream._buffer`.

Definitions are in `agent.rtp.rules` (theory of operation; `jb_play` is one packet).
`BatchStats._jitter` hands over its jitter rows (accepted media rows, grouped by
stream, arrival order); the *buffer rows* are those that are not duplicates, of
streams with a clock. Per stream the state carries: whether the segment has had a
buffer row (``jb_has``), that row's extended RTP timestamp and sequence number
(the ts extension and ptime pairs continue from them), the anchor (``jb_base``,
integer microseconds, ``JB_INF``: resynchronise at the next row), the late
packets in a row (``jb_run``) and the sums.

Between re-anchors the anchor is a running minimum, so a batch is cut into
*groups* at its resynchronising rows (segment start, discontinuity, marker) and
the anchor of every row comes from one segmented ``np.minimum.accumulate``. A row
that would re-anchor on lateness (`jb_play`) is rare on real streams; a stream
that has one is replayed per packet from that row on, which is exactly the
reference, so both twins agree whatever the batch boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.rtp.columns import group_starts
from agent.rtp.rules import (
    HOLE_WINDOW,
    JB_INF,
    JB_RESYNC_LATE,
    JB_TRANSIT_CLIP,
    Gap,
    JbState,
    JitterBufferSpec,
    add_ptime_step,
    jb_packet,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
State = dict[str, npt.NDArray[Any]]

# jb_wsum: waits in whole nanoseconds, an integer sum (exact, so independent of batching)
INT_FIELDS = ("jb_has", "jb_ext", "jb_seq", "jb_base", "jb_run", "jb_top", "jb_n", "jb_late",
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
    marker: B


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
    """Streams whose segment ended: the ts extension, ptime pairs and anchor start over."""
    s["jb_has"][sids] = 0
    resync(s, sids)


def resync(s: State, sids: I64) -> None:
    """The next buffer row of these streams re-anchors the buffer."""
    s["jb_base"][sids] = JB_INF
    s["jb_run"][sids] = 0


def update(s: State, hists: dict[int, dict[int, int]], gaps: dict[int, list[Gap]],
           spec: JitterBufferSpec, r: JitterRows, new_seg_sids: I64, last_sid: I64,
           last_gseg: I64) -> None:
    """Buffer rows of one batch. ``new_seg_sids``: streams with a segment that started in
    this batch; ``last_sid``/``last_gseg``: every stream of the batch (sorted) and the
    segment of its last accepted row."""
    rows = _buffer_rows(s, r)
    any_disc = bool(r.disc.any())
    if rows is None:
        reset(s, new_seg_sids)
        if any_disc:
            resync(s, np.unique(r.sid[r.disc]))
        return
    b = rows.r
    ext_ts, tsd = _extend_ts(s, rows)
    step = _ptime_steps(s, rows, tsd)
    add_ptime_steps(hists, b.sid, step, rows.bstart)
    anchor = None
    calm = np.ones(rows.bs.size, bool)
    if spec.model != "none":
        since = np.zeros(b.sid.size, bool)
        if any_disc:
            since, calm = _resyncs(r, rows)
        anchor = _play(s, gaps, spec, rows, since, ext_ts)
    reset(s, new_seg_sids)
    if any_disc:
        resync(s, np.unique(r.sid[r.disc]))
    bl = rows.bl
    u = b.sid[bl]
    keep = b.gseg[bl] == last_gseg[np.searchsorted(last_sid, u)]  # in its last segment
    s["jb_has"][u[keep]] = 1
    s["jb_ext"][u[keep]], s["jb_seq"][u[keep]] = ext_ts[bl][keep], b.ext_seq[bl][keep]
    if anchor is not None:
        calm &= keep
        s["jb_base"][u[calm]], s["jb_run"][u[calm]] = anchor[0][calm], anchor[1][calm]
        s["jb_top"][u[calm]] = b.max_ext[bl][calm]


def _buffer_rows(s: State, r: JitterRows) -> _Rows | None:
    idx: I64 | None = None
    b = r
    if r.dup.any() or not (r.clock > 0).all():
        idx = np.flatnonzero(~r.dup & (r.clock > 0))
        if idx.size == 0:
            return None
        b = JitterRows(*(getattr(r, f)[idx] for f in JitterRows.__slots__))
    sid, g = b.sid, b.gseg
    bstart = group_starts(sid)
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


def _play(s: State, gaps: dict[int, list[Gap]], spec: JitterBufferSpec, rows: _Rows, since: B,
          ext_ts: I64) -> tuple[I64, I64]:
    """Anchor, lateness and waits of the buffer rows (``since``: a discontinuity since the
    previous buffer row); returns each stream's (anchor, late run) after its last row."""
    r, bs, bl = rows.r, rows.bs, rows.bl
    n = r.sid.size
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.rint((r.arrival_s - ext_ts / r.clock) * 1e6)
    np.clip(t, -JB_TRANSIT_CLIP, JB_TRANSIT_CLIP, out=t)
    transit = t.astype(np.int64)
    u = r.sid[bs]
    base0 = np.where(rows.cont, s["jb_base"][u], JB_INF)  # the state's anchor, per stream
    run0 = np.where(rows.cont, s["jb_run"][u], 0)
    sync = rows.segstart | since | (r.marker != 0)  # a stream's first row: segstart True
    sync[bs] = since[bs] | (r.marker[bs] != 0) | (base0 == JB_INF)
    gstart = sync | rows.bstart
    y = transit.copy()
    first = bs[~sync[bs]]  # a stream's first row continuing the state's anchor
    y[first] = np.minimum(transit[first], base0[~sync[bs]])
    base = segmented_min(y, np.cumsum(gstart) - 1)
    delay_us = transit - base
    if spec.model == "fixed":
        target_ms = np.full(n, spec.fixed_ms)
    else:
        target_ms = spec.adaptive_k * r.jitter_s * 1000.0
        np.maximum(target_ms, spec.adaptive_min_ms, out=target_ms)
        np.minimum(target_ms, spec.adaptive_max_ms, out=target_ms)
    late = delay_us > target_ms * 1000.0
    adaptive = spec.model == "adaptive"
    idx = np.arange(n)
    stream_of = np.cumsum(rows.bstart) - 1
    in_order = r.ext_seq == r.max_ext
    if adaptive:
        run = np.zeros(n, np.int64)
        replay = ~in_order | late  # a late one in order stretches the playout
    else:  # late packets in a row, the state's run carried into a stream's leading run
        brk = np.maximum.accumulate(np.where(~late, idx, np.where(rows.bstart, idx - 1, -1)))
        run = idx - brk
        run += np.where(late & (brk == bs[stream_of] - 1), run0[stream_of], 0)
        replay = ~in_order | (late & (run >= JB_RESYNC_LATE))
    # the rows each stream replays per packet: from its first reordered or re-anchoring one
    stop = bl + 1
    if replay.any():
        hit = np.flatnonzero(replay)
        k = np.unique(stream_of[hit], return_index=True)
        stop[k[0]] = hit[k[1]]
    wait = np.where(late, 0.0, target_ms - delay_us / 1000.0)
    top_prev = _shift(r.max_ext, rows.bstart, np.where(rows.cont, s["jb_top"][u], 0))
    base_prev = _shift(base, rows.bstart, base0)
    _note_gaps(gaps, r.sid, sync, in_order & (r.ext_seq - top_prev > 1), idx < stop[stream_of],
               top_prev, r.ext_seq, base_prev)
    base_out, run_out = base[bl], run[bl]
    for sk in np.flatnonzero(stop <= bl).tolist():
        f, end = int(stop[sk]), int(bl[sk])
        sid = int(u[sk])
        st = JbState(int(base_prev[f]), int(run[f - 1]) if f > bs[sk] else int(run0[sk]),
                     int(top_prev[f]), gaps.setdefault(sid, []))
        for i in range(f, end + 1):
            late[i], wait[i] = jb_packet(st, adaptive, int(transit[i]), int(r.ext_seq[i]),
                                         int(r.max_ext[i]), bool(sync[i]), float(target_ms[i]))
        base_out[sk], run_out[sk] = st.base, st.run
    for sk in np.flatnonzero(np.isin(u, list(gaps))).tolist() if gaps else ():
        g, top = gaps[int(u[sk])], int(r.max_ext[bl[sk]])
        while g and g[0][1] <= top - HOLE_WINDOW:
            del g[0]  # what `jb_packet` drops per packet: never read again
    s["jb_n"][u] += bl - bs + 1
    s["jb_late"][u] += np.add.reduceat(late, bs)
    s["jb_wsum"][u] += np.add.reduceat(np.rint(wait * 1e6).astype(np.int64), bs)
    s["jb_wmax"][u] = np.maximum(s["jb_wmax"][u], np.maximum.reduceat(wait, bs))
    return base_out, run_out


def _note_gaps(gaps: dict[int, list[Gap]], sid: I64, sync: B, opens: B, fast: B, top_prev: I64,
               ext: I64, base_prev: I64) -> None:
    """The vectorised rows' share of `jb_packet`'s gap list: a resync clears a stream's list,
    an in-order row past a gap adds (the skipped numbers, the anchor before it); numbers
    HOLE_WINDOW behind the max are dropped. Both are rare: a loop over those rows."""
    for i in np.flatnonzero(fast & (sync | (opens & ~sync))).tolist():
        k = int(sid[i])
        if sync[i]:
            gaps.pop(k, None)
        else:
            gaps.setdefault(k, []).append((int(top_prev[i]) + 1, int(ext[i]) - 1,
                                           int(base_prev[i])))
