"""Vectorised RTP statistics: every stream of a batch updated at once with numpy.

The vectorised twin of `agent.rtp.reference` (definitions in `agent.rtp.rules`).
Per-stream state lives in numpy arrays indexed by a stream slot, so a batch
boundary can fall anywhere in a stream. Rows are grouped by slot with a stable
argsort; per-stream reductions use ``reduceat`` over the group offsets.

- Sequence: signed 16-bit steps to the previous row; extended numbers are a
  segmented cumulative sum, the running maximum a segmented cumulative max and
  the running base (lowest tracked number) a segmented cumulative min (offset
  trick; skipped when no row falls below its segment's starting base). Rows are
  classified against the max and base before them; duplicates are repeated
  (segment, ext) keys (``np.unique`` first occurrences) or numbers the state
  already holds (between its base and max, not a hole: a first occurrence below
  the state's base fills a hole this batch opened). RFC 3550 A.1 large
  jumps are rare: only the streams that have one take a short integer loop to
  decide restart vs stray; a jump on a batch's last row is held to the next batch.
- Jitter: ``J_i = a_i J_{i-1} + b_i`` (a = 15/16, b = |D|/16, or a = 1, b = 0
  when J is not updated, a = 0 at a stream's first row) is an affine recurrence,
  solved by a log-step (Hillis-Steele) scan of composed maps: 16 passes for
  65536 rows, no underflow, no division.
- Holes (lost numbers) are kept per stream only when there is loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from agent.media.payloads import PayloadKind
from agent.rtp import jbuffer
from agent.rtp.columns import RtpColumns, group_starts
from agent.rtp.model import StreamStats
from agent.rtp.rules import (
    HOLE_WINDOW,
    JB_INF,
    JITTER_DISCONTINUITY_S,
    MAX_DROPOUT,
    MAX_MISORDER,
    SEQ_MOD,
    BurstTotals,
    Gap,
    JitterBufferSpec,
    StreamMeta,
    Totals,
    is_large_jump,
    seq_step,
    split_final_holes,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
OFF = 1 << 40  # makes extended numbers positive for the segmented max
BIG = 1 << 42  # separates segments in combined keys
NEG = -(1 << 50)
NONE = BIG - OFF - 1  # "no base yet": above every number, its key still inside its segment
_EMPTY = np.zeros(0, np.int64)

_INT_FIELDS = (
    "has_seq", "last_seq", "last_ext", "base", "max", "distinct", "done_expected", "done_lost",
    "done_wraps", "restarts", "duplicates", "reordered", "max_gap", "packets", "markers",
    "events", "cn", "regular", "jref_ts", "jref_ok", "prev_kind", "vlan", "pcp",
    *jbuffer.INT_FIELDS,
)
_FLOAT_FIELDS = (
    "clock", "jitter", "jsum", "jmax", "dsum", "dmax", "jref_arr", "first_ts", "last_ts",
    *jbuffer.FLOAT_FIELDS,
)


_TOTALS_FIELDS = (
    "has_seq", "max", "base", "distinct", "done_expected", "done_lost", "done_wraps", "restarts",
    "duplicates", "reordered", "max_gap", "packets", "markers", "events", "cn", "regular",
    "vlan", "pcp", "jitter", "jsum", "jmax", "dsum", "dmax", "first_ts", "last_ts",
    "jb_n", "jb_late", "jb_wsum", "jb_wmax",
)


def affine_scan(a: F64, b: F64, span: int | None = None) -> F64:
    """x_i = a_i x_{i-1} + b_i with x_{-1} = 0, by a log-step scan of composed maps.

    ``span``: no row is ``span`` or more rows after the last row with ``a == 0`` (a
    stream's first row), so windows that long are complete and the scan stops there.
    """
    a, b = a.copy(), b.copy()
    d, n = 1, a.shape[0]
    limit = n if span is None else min(n, span)
    while d < limit:  # after the pass, row i composes the maps of rows (i - 2d, i]
        b[d:] += a[d:] * b[:-d]  # the right side is evaluated before b is written
        a[d:] *= a[:-d]  # numpy buffers overlapping operands
        d *= 2
    return b


def stable_order(x: I64) -> I64:
    """``np.argsort(x, kind="stable")``; for values in 0..32767 (stream slots, mostly) on
    int16, where numpy's stable sort is a radix sort: ~10x faster than on int64."""
    if x.size and int(x.min()) >= 0 and int(x.max()) < (1 << 15):
        return np.argsort(x.astype(np.int16), kind="stable")
    return np.argsort(x, kind="stable")


def _runs(key: I64) -> tuple[I64, I64]:
    """(first row, length) of each run of equal values of ``key``."""
    first = np.flatnonzero(group_starts(key))
    return first, np.diff(np.append(first, key.size))


def _shift(x: npt.NDArray[Any], start: B, first: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Previous row's value within a group; ``first`` for each group's first row."""
    out = np.empty_like(x)
    out[1:] = x[:-1]
    out[start] = first
    return out


def _running_base(
    ext: I64, gseg: I64, seg_first: I64, reset: B, untracked: B, init: I64
) -> tuple[I64, I64]:
    """(each row's segment base before it, each segment's base after the batch).

    The base is the running minimum of the tracked (not untracked) numbers, from
    ``init`` (the state's base, or ``NONE`` for a segment starting in the batch):
    a segmented ``np.minimum.accumulate`` over offset keys, each segment's keys
    below every earlier segment's. Most batches lower no base: then no scan.
    """
    tracked = np.where(untracked, NONE, ext)
    seg_base: I64 = np.minimum(np.minimum.reduceat(tracked, seg_first), init)
    start_base = np.where(init == NONE, ext[seg_first], init)
    if not (tracked < start_base[gseg]).any():
        return start_base[gseg], seg_base  # NONE only on rows that start a segment
    shift = gseg * BIG
    running = np.minimum.accumulate(tracked + OFF - shift) + shift - OFF
    prev: I64 = np.minimum(_shift(running, reset, np.full(seg_first.size, NONE)), init[gseg])
    return prev, seg_base


def _new_holes(adv: B, lower: B, ext: I64, prev_max: I64, prev_min: I64, gseg: I64,
               fill_keys: I64) -> I64:
    """Combined keys (segment, number) of holes opened in this batch and not filled:
    above the max by an advance, below the base by a lowering."""
    up = np.flatnonzero(adv & (ext - prev_max > 1))
    down = np.flatnonzero(lower & (prev_min - ext > 1))
    if up.size + down.size == 0:
        return np.zeros(0, np.int64)
    lengths = np.concatenate((ext[up] - prev_max[up] - 1, prev_min[down] - ext[down] - 1))
    first = np.concatenate((prev_max[up] + 1, ext[down] + 1))
    begin = np.concatenate((gseg[up], gseg[down])) * BIG + first + OFF
    offsets = np.cumsum(lengths) - lengths
    keys = np.repeat(begin - offsets, lengths) + np.arange(int(lengths.sum()))
    return keys[~np.isin(keys, fill_keys)] if fill_keys.size else keys


class BatchStats:
    """Per-stream RFC 3550 state for many streams; `update` with a whole batch at once."""

    def __init__(self, capacity: int = 64, jb: JitterBufferSpec | None = None) -> None:
        self.jb = jb or JitterBufferSpec()
        self._cap = 0
        self.s: dict[str, npt.NDArray[Any]] = {}
        self._grow(capacity)
        self._free: list[int] = []
        self._next = 0
        self.meta: dict[int, StreamMeta] = {}
        self.holes: dict[int, I64] = {}
        self.bursts: dict[int, BurstTotals] = {}
        self.pts: dict[int, set[int]] = {}
        self.dscp: dict[int, dict[int, int]] = {}
        self.held: dict[int, RtpColumns] = {}
        self.ptime: dict[int, dict[int, int]] = {}  # per stream: RTP timestamp step -> count
        self.jb_gaps: dict[int, list[Gap]] = {}  # per stream: numbers the max skipped

    # -- slots ------------------------------------------------------------------------

    def _grow(self, cap: int) -> None:
        for name in _INT_FIELDS + _FLOAT_FIELDS:
            dtype = np.int64 if name in _INT_FIELDS else np.float64
            new = np.zeros(cap, dtype=dtype)
            if name in self.s:
                new[: self._cap] = self.s[name]
            self.s[name] = new
        self._cap = cap

    def open(self, meta: StreamMeta) -> int:
        """A new stream; returns its slot."""
        if self._free:
            sid = self._free.pop()
        else:
            if self._next >= self._cap:
                self._grow(self._cap * 2)
            sid, self._next = self._next, self._next + 1
        for name in _INT_FIELDS + _FLOAT_FIELDS:
            self.s[name][sid] = 0
        s = self.s
        s["prev_kind"][sid] = -1
        s["jb_base"][sid] = JB_INF
        s["first_ts"][sid], s["last_ts"][sid] = np.inf, -np.inf
        s["clock"][sid] = float(meta.clock_rate or 0)
        self.meta[sid] = meta
        self.bursts[sid] = BurstTotals()
        self.pts[sid], self.dscp[sid] = set(), {}
        self.ptime[sid] = {}
        return sid

    def close(self, sid: int) -> StreamStats:
        """Final statistics of a stream; its slot is freed."""
        held = self.held.pop(sid, None)
        if held is not None:  # a large jump never confirmed: a stray
            self._count(held)
        stats = self.totals(sid).to_stats(self.meta[sid], self.jb)
        for table in (self.meta, self.holes, self.bursts, self.pts, self.dscp, self.held,
                      self.ptime, self.jb_gaps):
            table.pop(sid, None)
        self._free.append(sid)
        return stats

    def snapshot(self, sid: int) -> StreamStats:
        """Statistics of a stream so far, without ending it (a held large jump not counted)."""
        return self.totals(sid).to_stats(self.meta[sid], self.jb)

    # -- the batch update ---------------------------------------------------------------

    def update(self, cols: RtpColumns) -> None:
        """Account every row (rows of one stream in arrival order; streams interleaved)."""
        if self.held:
            cols = self._prepend_held(cols)
        if len(cols) == 0:
            return
        c = cols.take(stable_order(cols.sid))
        acc, newseg, step, pending = self._sequence_flags(c)
        if pending.any():
            for i in np.flatnonzero(pending).tolist():
                self.held[int(c.sid[i])] = c.take(np.array([i]))
            keep = ~pending
            c, acc, newseg, step = c.take(keep), acc[keep], newseg[keep], step[keep]
            if len(c) == 0:
                return
        self._count(c)
        a_idx = np.flatnonzero(acc)
        if a_idx.size == len(c):  # no large jump held back: mostly
            self._sequence(c, newseg, step)
        elif a_idx.size:
            self._sequence(c.take(a_idx), newseg[a_idx], step[a_idx])

    def _prepend_held(self, cols: RtpColumns) -> RtpColumns:
        present = set(np.unique(cols.sid).tolist())
        parts = [self.held.pop(s) for s in list(self.held) if s in present]
        return RtpColumns.concat([*parts, cols]) if parts else cols

    def _sequence_flags(self, c: RtpColumns) -> tuple[B, B, I64, B]:
        """(accepted, starts a segment, step to last accepted, held for the next batch)."""
        sid, seq = c.sid, c.seq
        start = group_starts(sid)
        has_prev = ~start | (self.s["has_seq"][sid] > 0)
        prev = _shift(seq, start, self.s["last_seq"][sid[start]])
        step = ((seq - prev + SEQ_MOD // 2) & (SEQ_MOD - 1)) - SEQ_MOD // 2
        large = has_prev & ((step >= MAX_DROPOUT) | (step <= -MAX_MISORDER))
        acc = np.ones(len(c), bool)
        newseg = ~has_prev
        pending = np.zeros(len(c), bool)
        for s in np.unique(sid[large]).tolist():
            lo, hi = np.searchsorted(sid, [s, s + 1]).tolist()
            self._jump_loop(s, seq[lo:hi].tolist(), lo, acc, newseg, step, pending)
        return acc, newseg, step, pending

    def _jump_loop(
        self, s: int, seqs: list[int], lo: int, acc: B, newseg: B, step: I64, pending: B
    ) -> None:
        """RFC 3550 A.1 bad_seq logic for one stream's rows (only streams with a jump)."""
        last: int | None = int(self.s["last_seq"][s]) if self.s["has_seq"][s] else None
        held: int | None = None
        for i, q in enumerate(seqs):
            if held is not None:
                if (q - seqs[held]) % SEQ_MOD == 1:  # confirmed: restart at the held row
                    newseg[lo + held], acc[lo + held], last = True, True, seqs[held]
                held = None
            if last is None:
                newseg[lo + i], last = True, q
                continue
            st = seq_step(q, last)
            if is_large_jump(st):
                held, acc[lo + i] = i, False
                continue
            step[lo + i], last = st, q
        if held is not None:
            pending[lo + held] = True

    def _count(self, c: RtpColumns) -> None:
        """Per-packet counters (strays included)."""
        s, sid = self.s, c.sid
        starts = np.flatnonzero(group_starts(sid))
        u = sid[starts]
        new = s["packets"][u] == 0
        s["vlan"][u[new]] = c.vlan[starts[new]]
        s["pcp"][u[new]] = c.pcp[starts[new]]
        s["packets"][u] += np.diff(np.append(starts, len(c)))
        s["markers"][u] += np.add.reduceat(c.marker.astype(np.int64), starts)
        s["events"][u] += np.add.reduceat(c.kind == PayloadKind.TELEPHONE_EVENT, starts)
        s["cn"][u] += np.add.reduceat(c.kind == PayloadKind.COMFORT_NOISE, starts)
        s["first_ts"][u] = np.minimum(s["first_ts"][u], np.minimum.reduceat(c.arrival_s, starts))
        s["last_ts"][u] = np.maximum(s["last_ts"][u], np.maximum.reduceat(c.arrival_s, starts))
        # rows are grouped by stream and a stream keeps its PT and DSCP for long runs: the
        # distinct keys and their counts come from the runs (few), not from every row
        first, _ = _runs(sid * 128 + c.pt)
        for key in np.unique(sid[first] * 128 + c.pt[first]).tolist():
            self.pts[key // 128].add(key % 128)
        first, length = _runs(sid * 64 + c.dscp)
        keys, inv = np.unique(sid[first] * 64 + c.dscp[first], return_inverse=True)
        counts = np.bincount(inv, weights=length, minlength=keys.size).astype(np.int64)
        for key, n in zip(keys.tolist(), counts.tolist(), strict=True):
            table = self.dscp[key // 64]
            table[key % 64] = table.get(key % 64, 0) + n

    def _sequence(self, c: RtpColumns, ns: B, step: I64) -> None:
        """Sequence space, holes and jitter for accepted rows."""
        s, sid = self.s, c.sid
        sstart = group_starts(sid)
        reset = ns | sstart
        val = np.where(ns, c.seq, step)
        cont_first = sstart & ~ns
        val[cont_first] += s["last_ext"][sid[cont_first]]
        gseg = np.cumsum(reset) - 1
        seg_first = np.flatnonzero(reset)
        cs = np.cumsum(val)
        ext = cs - (cs[seg_first] - val[seg_first])[gseg]
        seg_sid = sid[seg_first]
        seg_cont = ~ns[seg_first]
        seg_init = np.where(seg_cont, s["max"][seg_sid], NEG)
        key = gseg * BIG + ext + OFF
        running = np.maximum.accumulate(key) - gseg * BIG - OFF
        prev_max = np.maximum(_shift(running, reset, np.full(seg_first.size, NEG)), seg_init[gseg])
        adv = ~ns & (ext > prev_max)
        untracked = ~ns & ~adv & (ext <= prev_max - HOLE_WINDOW)
        prev_min, seg_base = _running_base(
            ext, gseg, seg_first, reset, untracked, np.where(seg_cont, s["base"][seg_sid], NONE)
        )
        lower = ~ns & ~adv & ~untracked & (ext < prev_min)  # reordered before the first
        cand = ~ns & ~adv & ~untracked & ~lower
        firstocc = np.ones(len(c), bool)
        if cand.any():  # only then can a number repeat within the batch
            firstocc[:] = False
            firstocc[np.unique(key, return_index=True)[1]] = True
        dup = cand & ~firstocc
        dup |= self._seen_in_state(cand & firstocc & seg_cont[gseg], sid, ext)
        fill = cand & ~dup
        self._seq_counters(sid, sstart, dup, fill | untracked | lower,
                           np.where(adv, ext - prev_max, 0))
        fresh = ns | adv | fill | lower
        seg_max = np.maximum(np.maximum.reduceat(ext, seg_first), seg_init)
        seg_distinct = np.add.reduceat(fresh, seg_first) + np.where(
            seg_cont, s["distinct"][seg_sid], 0
        )
        new_holes = _new_holes(adv, lower, ext, prev_max, prev_min, gseg, key[fill])
        seg = _Segments(seg_first, seg_sid, seg_cont, seg_base, seg_max, seg_distinct)
        self._close_state_segments(seg)
        self._segment_holes(seg, new_holes, gseg[fill], ext[fill])
        self._segment_state(c, seg, ext)
        self._jitter(c, sstart, gseg, seg_cont, dup, ext, (running, seg_init))

    def _seen_in_state(self, chk: B, sid: I64, ext: I64) -> B:
        """Rows whose number the state already holds (within its base..max, not a hole);
        a number below the state's base is a hole this batch opened by lowering it."""
        out = np.zeros(sid.shape[0], bool)
        idx = np.flatnonzero(chk & (ext <= self.s["max"][sid]) & (ext >= self.s["base"][sid]))
        for s in np.unique(sid[idx]).tolist():
            rows = idx[sid[idx] == s]
            holes = self.holes.get(s)
            out[rows] = True if holes is None else ~np.isin(ext[rows], holes)
        return out

    def _seq_counters(self, sid: I64, sstart: B, dup: B, reord: B, gap: I64) -> None:
        s = self.s
        starts = np.flatnonzero(sstart)
        u = sid[starts]
        s["duplicates"][u] += np.add.reduceat(dup, starts)
        s["reordered"][u] += np.add.reduceat(reord, starts)
        s["max_gap"][u] = np.maximum(s["max_gap"][u], np.maximum.reduceat(gap, starts))

    def _close_state_segments(self, seg: _Segments) -> None:
        """Restarts: close the state's segment (batch start) and the batch's earlier ones."""
        s = self.s
        had = s["has_seq"][seg.sid] > 0
        at_start = seg.stream_first & ~seg.cont & had
        for sid in seg.sid[at_start].tolist():
            self._close(sid, int(s["base"][sid]), int(s["max"][sid]), int(s["distinct"][sid]))
            self.bursts[sid].add(split_final_holes(self.holes.pop(sid, _EMPTY), None)[0])
        np.add.at(s["restarts"], seg.sid, (~seg.cont & (had | ~seg.stream_first)).astype(np.int64))
        for k in np.flatnonzero(~seg.last).tolist():
            self._close(int(seg.sid[k]), int(seg.base[k]), int(seg.top[k]), int(seg.distinct[k]))

    def _close(self, sid: int, base: int, top: int, distinct: int) -> None:
        s = self.s
        s["done_expected"][sid] += top - base + 1
        s["done_lost"][sid] += top - base + 1 - distinct
        s["done_wraps"][sid] += top // SEQ_MOD - base // SEQ_MOD  # base may be < 0

    def _segment_holes(self, seg: _Segments, new_keys: I64, fill_seg: I64, fill_ext: I64) -> None:
        """Update each touched segment's holes; finalise runs that can no longer fill.

        Every touched segment at once: the state's holes of those that continue it (less
        this batch's fills) join the new ones as combined keys, sorted; a run is final
        when its segment closed in the batch or its last hole is ``HOLE_WINDOW`` behind
        the segment's max (`split_final_holes`: within a segment the final runs are the
        lowest ones); the rest stay the stream's holes."""
        touched = np.union1d(new_keys // BIG, fill_seg[seg.cont[fill_seg]])
        touched = np.union1d(touched, np.flatnonzero(seg.cont & ~seg.last))
        olds = []
        for k in touched[seg.cont[touched]].tolist():
            held = self.holes.pop(int(seg.sid[k]), None)
            if held is not None:
                olds.append(held + (k * BIG + OFF))
        keys = new_keys
        if olds:
            old = np.concatenate(olds)
            if fill_seg.size:
                old = old[~np.isin(old, fill_seg * BIG + fill_ext + OFF)]
            keys = np.concatenate((keys, old))
        if keys.size == 0:
            return
        keys = np.sort(keys)
        kseg = keys // BIG
        ext = keys - kseg * BIG - OFF
        starts = np.flatnonzero(np.diff(keys, prepend=keys[0] - 2) != 1)  # runs (segments
        lengths = np.diff(np.append(starts, keys.size))  # are BIG apart: never one run)
        rseg = kseg[starts]
        final = ~seg.last[rseg] | (ext[starts + lengths - 1] <= seg.top[rseg] - HOLE_WINDOW)
        self._add_bursts(seg.sid[rseg[final]], lengths[final])
        kept = np.flatnonzero(np.repeat(~final, lengths))  # only last segments keep any
        if kept.size:
            first, count = _runs(kseg[kept])
            for k, a, n in zip(kseg[kept][first].tolist(), first.tolist(), count.tolist(),
                               strict=True):
                self.holes[int(seg.sid[k])] = ext[kept[a : a + n]]

    def _add_bursts(self, sid: I64, lengths: I64) -> None:
        """Final loss runs (``lengths``) of streams ``sid`` into their burst totals."""
        if sid.size == 0:
            return
        u, inv = np.unique(sid, return_inverse=True)
        count = np.bincount(inv, minlength=u.size)
        longest = np.zeros(u.size, np.int64)
        np.maximum.at(longest, inv, lengths)
        total = np.zeros(u.size, np.int64)
        np.add.at(total, inv, lengths)
        for s, n, top, tot in zip(u.tolist(), count.tolist(), longest.tolist(), total.tolist(),
                                  strict=True):
            b = self.bursts[s]
            b.count, b.longest, b.total = b.count + n, max(b.longest, top), b.total + tot

    def _segment_state(self, c: RtpColumns, seg: _Segments, ext: I64) -> None:
        s = self.s
        k = np.flatnonzero(seg.last)
        u = seg.sid[k]
        s["has_seq"][u] = 1
        s["base"][u], s["max"][u], s["distinct"][u] = seg.base[k], seg.top[k], seg.distinct[k]
        last_row = np.append(seg.first[1:], len(c))[k] - 1
        s["last_seq"][u], s["last_ext"][u] = c.seq[last_row], ext[last_row]

    def _jitter(
        self, c: RtpColumns, sstart: B, gseg: I64, seg_cont: B, dup: B, ext: I64,
        top: tuple[I64, I64],
    ) -> None:
        """RFC 3550 A.8 over the accepted media rows, all streams at once; then the
        jitter buffer and ptime (`agent.rtp.jbuffer`) over the same rows."""
        s, sid = self.s, c.sid
        jm = c.kind == PayloadKind.MEDIA
        pk = _shift(c.kind, sstart, s["prev_kind"][sid[sstart]])
        ends = np.append(np.flatnonzero(sstart)[1:], len(c)) - 1
        s["prev_kind"][sid[ends]] = c.kind[ends]
        # a segment started in this batch drops the state's jitter reference (read first)
        newseg_rows = (np.diff(gseg, prepend=-1) != 0) & ~seg_cont[gseg]
        j = np.flatnonzero(jm)
        if j.size == 0:
            s["jref_ok"][sid[newseg_rows]] = 0
            jbuffer.reset(s, sid[newseg_rows])
            return
        jsid, jg, arr, ts = sid[j], gseg[j], c.arrival_s[j], c.ts[j]
        jstart = group_starts(jsid)
        segstart = jstart.copy()
        segstart[1:] |= jg[1:] != jg[:-1]
        has_ref = ~segstart | (seg_cont[jg] & (s["jref_ok"][jsid] > 0))
        ref_arr = _shift(arr, segstart, s["jref_arr"][jsid[segstart]])
        ref_ts = _shift(ts, segstart, s["jref_ts"][jsid[segstart]])
        delta = arr - ref_arr
        clk = s["clock"][jsid]
        tsd = ((ts - ref_ts + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        dabs = np.abs(delta - tsd / np.where(clk > 0, clk, 1.0))
        ok = has_ref & (clk > 0)
        disc = ok & (dabs > JITTER_DISCONTINUITY_S)
        upd = ok & ~disc
        a = np.where(upd, 15.0 / 16.0, 1.0)
        b = np.where(upd, dabs / 16.0, 0.0)
        js = np.flatnonzero(jstart)
        b[js] += a[js] * s["jitter"][jsid[js]]
        a[js] = 0.0
        s["jref_ok"][sid[newseg_rows]] = 0
        jit = affine_scan(a, b, int(np.diff(np.append(js, j.size)).max()))
        max_after = np.maximum(top[0][j], top[1][jg])  # the segment's max after the row
        rows = jbuffer.JitterRows(jsid, jg, seg_cont[jg], dup[j], disc, jit, arr, ts, ext[j],
                                  max_after, clk, c.marker[j])
        jbuffer.update(s, self.ptime, self.jb_gaps, self.jb, rows, sid[newseg_rows], sid[ends],
                       gseg[ends])
        regular = has_ref & ~disc & ~c.marker[j] & ~dup[j] & (pk[j] == PayloadKind.MEDIA)
        self._jitter_totals(jsid[js], js, jit, delta, regular)
        jl = np.append(js[1:], j.size) - 1
        u = jsid[jl]
        s["jitter"][u] = jit[jl]
        last_gseg = gseg[ends[np.searchsorted(sid[ends], u)]]
        valid = jg[jl] == last_gseg
        s["jref_ok"][u[valid]] = 1
        s["jref_arr"][u[valid]], s["jref_ts"][u[valid]] = arr[jl][valid], ts[jl][valid]

    def _jitter_totals(self, u: I64, js: I64, jit: F64, delta: F64, regular: B) -> None:
        s = self.s
        s["regular"][u] += np.add.reduceat(regular, js)
        reg_jit = np.where(regular, jit, 0.0)
        reg_delta = np.where(regular, delta, 0.0)
        s["jsum"][u] += np.add.reduceat(reg_jit, js)
        s["jmax"][u] = np.maximum(s["jmax"][u], np.maximum.reduceat(reg_jit, js))
        s["dsum"][u] += np.add.reduceat(reg_delta, js)
        s["dmax"][u] = np.maximum(s["dmax"][u], np.maximum.reduceat(reg_delta, js))

    # -- results ----------------------------------------------------------------------------

    def totals(self, sid: int) -> Totals:
        """Scalar results of one stream so far (held rows not included)."""
        s = {name: self.s[name].item(sid) for name in _TOTALS_FIELDS}
        cur = s["max"] - s["base"] + 1 if s["has_seq"] else 0
        b = self.bursts[sid]
        bursts = BurstTotals(b.count, b.longest, b.total)
        holes = self.holes.get(sid)
        if holes is not None and holes.size:
            bursts.add(split_final_holes(holes, None)[0])
        return Totals(
            payload_types=tuple(sorted(self.pts[sid])),
            packets=s["packets"],
            expected=s["done_expected"] + cur,
            lost=s["done_lost"] + (cur - s["distinct"] if s["has_seq"] else 0),
            duplicates=s["duplicates"],
            reordered=s["reordered"],
            seq_wraps=s["done_wraps"] + (
                s["max"] // SEQ_MOD - s["base"] // SEQ_MOD if s["has_seq"] else 0
            ),
            restarts=s["restarts"],
            bursts=bursts,
            max_seq_gap=s["max_gap"],
            jitter_s=s["jitter"],
            jitter_sum_s=s["jsum"],
            jitter_max_s=s["jmax"],
            regular=s["regular"],
            delta_sum_s=s["dsum"],
            delta_max_s=s["dmax"],
            markers=s["markers"],
            events=s["events"],
            comfort_noise=s["cn"],
            dscp=dict(self.dscp[sid]),
            vlan=s["vlan"] if s["vlan"] >= 0 else None,
            pcp=s["pcp"] if s["pcp"] >= 0 else None,
            first_ts=s["first_ts"],
            last_ts=s["last_ts"],
            jb_packets=s["jb_n"],
            jb_discarded=s["jb_late"],
            jb_wait_sum_ms=s["jb_wsum"] / 1e6,
            jb_wait_max_ms=s["jb_wmax"],
            ptime_steps=dict(self.ptime[sid]),
        )


class _Segments:
    """Per-segment arrays of one batch (a segment: rows of one stream between restarts)."""

    def __init__(self, first: I64, sid: I64, cont: B, base: I64, top: I64, distinct: I64) -> None:
        self.first, self.sid, self.cont = first, sid, cont
        self.base, self.top, self.distinct = base, top, distinct
        n = sid.shape[0]
        self.last = np.ones(n, bool)
        self.last[:-1] = sid[1:] != sid[:-1]
        self.stream_first = np.ones(n, bool)
        self.stream_first[1:] = sid[1:] != sid[:-1]
