"""Issue 7 acceptance: the engine's output is a function of packet order and packet time.

(a) Batching invariance, a property test: every corpus capture (and
    ../shared/extra_pcaps when present) and every `callgen` scenario is read
    once, then fed to a fresh `Engine` cut into batches of 1, 2, 3, 7, 64, 1000
    packets and at random cut points (hypothesis); the CallEnded records,
    StreamEnded stats and CallInterval events must equal the single-batch
    run field for field. ``calls.interval_s`` is 5 s so that intervals occur.

    Runtime: the engine costs about 1 ms per ``feed`` call whatever the batch
    size, so sizes 1, 2 and 3 run on a prefix of each capture (the first
    `SMALL_BATCH_PREFIX` packets of a corpus capture, `SMALL_BATCH_PREFIX_GEN`
    of a generated one; the reference is then the single-batch run of that same
    prefix -- the invariant holds for every packet sequence, prefixes
    included); 7, 64, 1000 and the random cuts (at most `MAX_CUTS` cut points,
    `RANDOM_EXAMPLES` examples per capture) run on whole captures. The module
    takes about 80 s on the 2-core CI machine.
(b) ``analyze --json --streams`` on ``editcap -c 200`` pieces (in order) prints
    the same records as on the whole file.
(c) reorder_start / heavy_jitter: packets, lost, duplicates, reordered exactly
    the generator's, for SDP-announced and unsignalled streams.
(d) port_reuse: each call has its own codec and SDP clock, not estimated.
(e) sip_only_refresh: no call ends at its answer; BYE - 200 OK durations.
(f) many_calls: status, end reason, setup delay, duration, media per direction.

All truth comes from `callgen` (which imports nothing from ``agent``), never
from voipprobe's output -- except in (a) and (b), whose reference is the probe
itself on the same packets, by definition of the invariant.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import callgen
import mediagen
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tshark_table import parse_rtp_streams

from agent.calls.events import CallEnded, CallInterval, StreamEnded
from agent.capture.batch import Batch
from agent.capture.pcapfile import open_capture
from agent.config import Config
from agent.engine import Engine, EngineConfig

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "pcaps"
EXTRA = CORPUS.parent.parent / "extra_pcaps"  # more public captures, when a session fetched them
CONFIG = Config.model_validate({"calls": {"interval_s": 5.0}})

SMALL_BATCH_PREFIX = 600  # packets fed in batches of 1, 2, 3 (corpus captures)
SMALL_BATCH_PREFIX_GEN = 2500  # the same for generated captures (where timers matter most)
MAX_CUTS = 60
RANDOM_EXAMPLES = 3
TOLERANCE_S = 1e-6  # µs timestamps; the JSON rounds times to 6 decimals


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _capture_files() -> list[Path]:
    files = sorted(CORPUS.glob("*")) if CORPUS.is_dir() else []
    if EXTRA.is_dir():
        files += sorted(EXTRA.glob("*.pcap*"))
    return [f for f in files if f.suffix in (".pcap", ".pcapng", ".gz", ".cap")]


# the media registry's scenarios that exercise CN, SRTP event lengths and one codec per call
GENERATED = {**callgen.SCENARIOS, **{k: mediagen.SCENARIOS[k] for k in (
    "codec_tour", "srtp_dtmf_32_mki_unsignalled", "pcma_vad")}}
SOURCES = [f"{'corpus' if f.parent == CORPUS else 'extra'}/{f.name}"
           for f in _capture_files()] + [f"gen/{name}" for name in GENERATED]
if not CORPUS.is_dir() and _in_ci():
    SOURCES.append("corpus/MISSING")


# ---------------------------------------------------------------------------
# Packets and engine runs
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Packets:
    data: list[bytes]
    ts: list[float]
    linktype: list[int]

    def __len__(self) -> int:
        return len(self.data)

    def prefix(self, n: int) -> Packets:
        return Packets(self.data[:n], self.ts[:n], self.linktype[:n])


@functools.cache
def _generated(name: str, folder: str) -> tuple[Path, callgen.ScenarioTruth]:
    packets, truth = GENERATED[name]()
    return callgen.write(Path(folder) / f"{name}.pcap", packets), truth


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("callgen"))


def _path(source: str, folder: str) -> Path:
    kind, name = source.split("/", 1)
    if name == "MISSING":
        pytest.fail(f"corpus missing at {CORPUS} (CI must have shared/ beside the clone)")
    if kind == "gen":
        return _generated(name, folder)[0]
    return (CORPUS if kind == "corpus" else EXTRA) / name


@functools.cache
def _read(path: Path) -> Packets:
    """Every packet of the file, once, as bytes + time + link type."""
    data: list[bytes] = []
    ts: list[float] = []
    lt: list[int] = []
    with open_capture(path) as reader:
        for b in reader:
            for i in range(len(b)):
                data.append(b.packet(i))
                ts.append(float(b.ts[i]))
                lt.append(int(b.linktype[i]))
    return Packets(data, ts, lt)


Outcome = dict[str, list[str]]


def _quality(q: Any) -> Any:
    """An interval's rating in its JSON form, rounded as the call record rounds it: the
    raw floats of a running mean summed over differently cut chunks may differ in the
    last ulp, which no record or metric shows; every decision still has to agree."""
    if q is None:
        return None
    if hasattr(q, "to_json"):
        return q.to_json()
    if dataclasses.is_dataclass(q) and not isinstance(q, type):
        return dataclasses.asdict(q)
    return q.model_dump(mode="json")


def _canon(events: Sequence[object]) -> Outcome:
    """Each kind of event as a sorted list of canonical JSON texts (a stable key)."""
    out: Outcome = {"calls": [], "streams": [], "intervals": []}
    for e in events:
        if isinstance(e, CallEnded):
            out["calls"].append(json.dumps(e.record.to_json(), sort_keys=True))
        elif isinstance(e, StreamEnded):
            out["streams"].append(json.dumps(e.stats.to_json(), sort_keys=True))
        elif isinstance(e, CallInterval):
            out["intervals"].append(json.dumps(
                {"ts": e.ts, "call_id": e.call_id, "delta": e.delta.to_json(),
                 "quality": _quality(e.quality)}, sort_keys=True, default=str))
    return {k: sorted(v) for k, v in out.items()}


def _run(p: Packets, bounds: Sequence[int]) -> Outcome:
    """Feed ``p`` cut at ``bounds`` (ascending, 0 < b < len) to a fresh engine."""
    engine = Engine(EngineConfig(config=CONFIG))
    events: list[object] = []
    edges = [0, *bounds, len(p)]
    for lo, hi in itertools.pairwise(edges):
        if hi > lo:
            batch = Batch.from_packets(p.data[lo:hi], p.ts[lo:hi], p.linktype[lo:hi])
            events.extend(engine.feed(batch))
    events.extend(engine.finish())
    return _canon(events)


def _fixed(n: int, size: int) -> list[int]:
    return list(range(size, n, size))


_REFERENCE: dict[tuple[Path, int], Outcome] = {}


def _reference(path: Path, n: int) -> Outcome:
    """The single-batch run of the first ``n`` packets of ``path``."""
    if (path, n) not in _REFERENCE:
        _REFERENCE[(path, n)] = _run(_read(path).prefix(n), [])
    return _REFERENCE[(path, n)]


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def _field_diff(want: str, got: str, limit: int = 25) -> str:
    a, b = _flatten(json.loads(want)), _flatten(json.loads(got))
    rows = [f"    {k}: whole={a.get(k, '<absent>')!r} batched={b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    more = f"\n    ... {len(rows) - limit} more" if len(rows) > limit else ""
    return "\n".join(rows[:limit]) + more


def _identity(o: dict[str, Any]) -> tuple[Any, ...]:
    """What names a record regardless of its measurements: a call, a stream, an interval."""
    if o.get("kind") == "call":
        first = o["directions"][0]["stream"] if o.get("directions") else {}
        return ("call", o.get("call_id"), o.get("invite_ts"), first.get("src"), first.get("ssrc"))
    if o.get("kind") == "stream":
        return ("stream", o["src"], o["dst"], o["ssrc"])
    d = o.get("delta") or {}
    return ("interval", o.get("ts"), d.get("src"), d.get("dst"), d.get("ssrc"))


def _ident(text: str) -> str:
    return " ".join(str(x) for x in _identity(json.loads(text)))


def _explain(want: Outcome, got: Outcome) -> str:
    """A readable account of the first kind of event that differs: counts, then the
    first record only the whole-file run has, field by field against its batched twin
    (same identity if there is one, else the most similar record)."""
    for kind in ("calls", "streams", "intervals"):
        w, g = want[kind], got[kind]
        if w == g:
            continue
        ws, gs = set(w), set(g)
        only_w = [x for x in w if x not in gs]
        only_g = [x for x in g if x not in ws]
        lines = [f"{kind}: whole-file run has {len(w)}, batched run {len(g)}; "
                 f"{len(only_w)} only in the whole-file run, {len(only_g)} only batched"]
        if only_w and only_g:
            first = only_w[0]
            ident = _identity(json.loads(first))
            twins = [x for x in only_g[:5000] if _identity(json.loads(x)) == ident]
            if twins:
                closest = twins[0]
            else:
                fw = _flatten(json.loads(first))

                def common(x: str, fw: dict[str, Any] = fw) -> int:
                    fx = _flatten(json.loads(x))
                    return sum(1 for k, v in fw.items() if fx.get(k) == v)

                closest = max(only_g[:500], key=common)
            lines.append(f"  first differing record ({_ident(first)}) vs its "
                         f"{'batched twin' if twins else 'closest batched record'} "
                         f"({_ident(closest)}):")
            lines.append(_field_diff(first, closest))
        else:
            lines.append("  e.g. " + "\n  e.g. ".join(_ident(x) for x in (only_w or only_g)[:3]))
        return "\n".join(lines)
    return "equal"


def _check(path: Path, n: int, bounds: Sequence[int], what: str) -> None:
    want = _reference(path, n)
    got = _run(_read(path).prefix(n), bounds)
    if got != want:  # raised, not asserted: pytest's own dict diff would bury the account
        raise AssertionError(f"{path.name}, first {n} packets, {what}:\n{_explain(want, got)}")


# ---------------------------------------------------------------------------
# (a) batching invariance
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_fixed_batch_sizes_equal_whole_file(source: str, gen_dir: str) -> None:
    path = _path(source, gen_dir)
    p = _read(path)
    n = len(p)
    if n == 0:
        pytest.skip("no packets")
    small = min(n, SMALL_BATCH_PREFIX_GEN if source.startswith("gen/") else SMALL_BATCH_PREFIX)
    failures = []
    for size in (1, 2, 3, 7, 64, 1000):
        m = small if size <= 3 else n
        try:
            _check(path, m, _fixed(m, size), f"batches of {size}")
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.mark.parametrize("source", SOURCES)
@settings(max_examples=RANDOM_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_cuts_equal_whole_file(source: str, gen_dir: str, data: st.DataObject) -> None:
    path = _path(source, gen_dir)
    n = len(_read(path))
    if n < 2:
        return
    cuts = data.draw(st.lists(st.integers(1, n - 1), max_size=MAX_CUTS, unique=True)
                     .map(sorted), label="cuts")
    _check(path, n, cuts, f"cut at {cuts}")


# ---------------------------------------------------------------------------
# analyze as a user runs it
# ---------------------------------------------------------------------------


def _analyze(*files: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", "--no-progress", "--streams",
         *map(str, files)],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


@functools.cache
def _analyzed(name: str, folder: str) -> tuple[list[dict[str, Any]], callgen.ScenarioTruth]:
    path, truth = _generated(name, folder)
    return _analyze(path), truth


def _calls(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["call_id"]: o for o in objs if o["kind"] == "call" and o["call_id"] is not None}


# ---------------------------------------------------------------------------
# (b) editcap -c 200
# ---------------------------------------------------------------------------


def _editcap() -> str:
    exe = shutil.which("editcap")
    if exe is None:
        if _in_ci():
            pytest.fail("editcap missing (CI installs wireshark-common / tshark)")
        pytest.skip("editcap not installed (apt-get install tshark)")
    return exe


@pytest.mark.parametrize("source", ["gen/many_calls", "corpus/wiki_SIP_CALL_RTP_G711.pcap",
                                    "corpus/sipp_sip-tcp_pcma_dtmf.pcap"])
def test_editcap_pieces_equal_whole_file(source: str, gen_dir: str, tmp_path: Path) -> None:
    """Records and streams equal (as sorted lines); the summary line equal except its
    ``files`` list, which names the files given and so differs by construction."""
    editcap = _editcap()
    path = _path(source, gen_dir)
    if not path.exists():
        pytest.skip(f"{path} not present")
    subprocess.run([editcap, "-c", "200", str(path), str(tmp_path / "piece.pcap")],
                   check=True, capture_output=True, timeout=120)
    pieces = sorted(tmp_path.glob("piece_*"))
    assert len(pieces) > 1
    whole, split = _analyze(path), _analyze(*pieces)

    def records(objs: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps(o, sort_keys=True) for o in objs if o["kind"] != "summary")

    def summary(objs: list[dict[str, Any]]) -> dict[str, Any]:
        (s,) = [o for o in objs if o["kind"] == "summary"]
        return {k: v for k, v in s.items() if k != "files"}

    w, s = records(whole), records(split)
    if w != s:
        want = {"calls": [x for x in w if '"kind": "call"' in x],
                "streams": [x for x in w if '"kind": "stream"' in x], "intervals": []}
        got = {"calls": [x for x in s if '"kind": "call"' in x],
               "streams": [x for x in s if '"kind": "stream"' in x], "intervals": []}
        pytest.fail(f"{len(pieces)} pieces of {path.name} vs the whole file:\n"
                    f"{_explain(want, got)}")
    assert summary(split) == summary(whole)


# ---------------------------------------------------------------------------
# (c) reordering at stream start, heavy jitter
# ---------------------------------------------------------------------------

COUNTERS = ("packets", "expected", "lost", "duplicates", "reordered")


@pytest.mark.parametrize("scenario", ["reorder_start", "reorder_start_unsignalled",
                                      "heavy_jitter"])
def test_stream_counters_exact(scenario: str, gen_dir: str) -> None:
    objs, truth = _analyzed(scenario, gen_dir)
    streams = [o for o in objs if o["kind"] == "stream"]
    problems = []
    for t in truth.streams():
        mine = [o for o in streams if (o["src"], o["dst"], o["ssrc"]) == t.key]
        if len(mine) != 1:
            problems.append(f"{t.src}->{t.dst} ssrc {t.ssrc:#010x}: {len(mine)} stream "
                            f"objects, want 1 ({[o['packets'] for o in mine]} packets)")
            continue
        got = {k: mine[0][k] for k in COUNTERS}
        want = {k: getattr(t, k) for k in COUNTERS}
        if got != want:
            problems.append(f"{t.src}->{t.dst}: got {got}, want {want}")
    extra = [o for o in streams if (o["src"], o["dst"], o["ssrc"])
             not in {t.key for t in truth.streams()}]
    if extra:
        problems.append(f"{len(extra)} streams the generator did not send: "
                        f"{[(o['src'], o['dst'], o['ssrc'], o['packets']) for o in extra]}")
    for c in truth.calls:
        rec = _calls(objs).get(c.call_id)
        if rec is None:
            problems.append(f"call {c.call_id} missing")
            continue
        got_dirs = {(d["stream"]["src"], d["stream"]["dst"], d["stream"]["ssrc"]):
                    d["stream"]["packets"] for d in rec["directions"]}
        want_dirs = {s.key: s.packets for s in c.streams}
        if got_dirs != want_dirs:
            problems.append(f"call directions {got_dirs}, want {want_dirs}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---------------------------------------------------------------------------
# (d) port reuse
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["port_reuse_g726", "port_reuse_g726_same_ssrc",
                                      "port_reuse_speex", "port_reuse_speex_same_ssrc"])
def test_port_reuse_each_call_its_own_codec(scenario: str, gen_dir: str) -> None:
    objs, truth = _analyzed(scenario, gen_dir)
    calls = _calls(objs)
    problems = []
    for t in truth.calls:
        rec = calls.get(t.call_id)
        if rec is None:
            problems.append(f"{t.call_id}: missing")
            continue
        want = (t.codec, t.clock_rate, False)
        dirs = [(d["stream"]["codec"], d["stream"]["clock_rate"],
                 d["stream"]["clock_rate_estimated"]) for d in rec["directions"]]
        if rec["codec"] != t.codec or dirs != [want, want]:
            problems.append(f"{t.call_id}: call codec {rec['codec']!r}, directions {dirs}; "
                            f"want {t.codec!r} and 2 x {want}")
        got_pk = sorted((d["stream"]["src"], d["stream"]["packets"]) for d in rec["directions"])
        want_pk = sorted((s.src, s.packets) for s in t.streams)
        if got_pk != want_pk:
            problems.append(f"{t.call_id}: direction packets {got_pk}, want {want_pk}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---------------------------------------------------------------------------
# (e) SIP only, session-timer refreshes
# ---------------------------------------------------------------------------


def test_sip_only_refreshed_calls(gen_dir: str) -> None:
    objs, truth = _analyzed("sip_only_refresh", gen_dir)
    calls = _calls(objs)
    assert sorted(calls) == sorted(c.call_id for c in truth.calls)
    problems = []
    for t in truth.calls:
        rec = calls[t.call_id]
        assert t.answer_ts is not None
        summary = (f"{t.call_id}: end_reason={rec['end_reason']} duration_s="
                   f"{rec['duration_s']} answer_ts={rec['answer_ts']} end_ts={rec['end_ts']}")
        if rec["answer_ts"] is None or abs(rec["answer_ts"] - t.answer_ts) > TOLERANCE_S:
            problems.append(f"{summary}; want answer_ts {t.answer_ts}")
            continue
        if not (rec["duration_s"] or 0) > 0 or not rec["end_ts"] > rec["answer_ts"]:
            problems.append(f"{summary}; the call ended at its answer")
        if rec["media_at_probe"] is not False:
            problems.append(f"{summary}; no RTP passed the probe: want media_at_probe false")
        if t.bye_ts is not None:
            assert t.duration_s is not None
            if rec["end_reason"] != "normal" or rec["duration_s"] is None or \
                    abs(rec["duration_s"] - t.duration_s) > TOLERANCE_S:
                problems.append(f"{summary}; want normal, {t.duration_s} s (BYE - 200 OK)")
        elif rec["end_reason"] != "capture_end":
            problems.append(f"{summary}; want capture_end (no BYE before the capture ends)")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---------------------------------------------------------------------------
# (f) many concurrent calls
# ---------------------------------------------------------------------------


def _close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None and abs(a - b) <= TOLERANCE_S)


def test_many_calls_match_truth(gen_dir: str) -> None:
    objs, truth = _analyzed("many_calls", gen_dir)
    calls = _calls(objs)
    assert sorted(calls) == sorted(c.call_id for c in truth.calls)
    checks: list[tuple[str, Callable[[dict[str, Any], callgen.CallTruth], tuple[Any, Any]]]] = [
        ("final_status", lambda r, t: (r["final_status"], t.final_status)),
        ("end_reason", lambda r, t: (r["end_reason"], t.end_reason)),
    ]
    problems = []
    for t in truth.calls:
        rec = calls[t.call_id]
        for name, f in checks:
            got, want = f(rec, t)
            if got != want:
                problems.append(f"{t.call_id}: {name} {got!r}, want {want!r}")
        if not _close(rec["setup_delay_s"], t.setup_delay_s):
            problems.append(f"{t.call_id}: setup_delay_s {rec['setup_delay_s']}, "
                            f"want {t.setup_delay_s}")
        if not _close(rec["duration_s"], t.duration_s):
            problems.append(f"{t.call_id}: duration_s {rec['duration_s']}, "
                            f"want {t.duration_s}")
        if t.final_status != 200:
            continue
        labels = {d["direction"] for d in rec["directions"]}
        got_dirs = {(d["stream"]["src"], d["stream"]["dst"], d["stream"]["ssrc"]):
                    d["stream"]["packets"] for d in rec["directions"]}
        want_dirs = {s.key: s.packets for s in t.streams}
        if len(labels) != 2 or got_dirs != want_dirs:
            problems.append(f"{t.call_id} (re-INVITE: {t.reinvite}): directions {labels} "
                            f"{got_dirs}, want two directions {want_dirs}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---------------------------------------------------------------------------
# The generator itself, against tshark (so a generator bug cannot pass as truth)
# ---------------------------------------------------------------------------


@pytest.mark.needs_tshark
@pytest.mark.parametrize("scenario", ["many_calls", "port_reuse_g726", "port_reuse_speex",
                                      "reorder_start", "reorder_start_unsignalled",
                                      "heavy_jitter"])
def test_generator_streams_agree_with_tshark(scenario: str, gen_dir: str) -> None:
    """tshark finds exactly the generator's streams, with its packet counts (the
    same-SSRC variants are left out: tshark merges their calls into one stream)."""
    tshark = shutil.which("tshark")
    if tshark is None:
        if _in_ci():
            pytest.fail("tshark missing")
        pytest.skip("tshark not installed")
    path, truth = _generated(scenario, gen_dir)
    proc = subprocess.run([tshark, "-r", str(path), "-o", "rtp.heuristic_rtp:TRUE", "-q",
                           "-z", "rtp,streams"], capture_output=True, text=True, timeout=120,
                          check=True)
    theirs = {(t.src_endpoint, t.dst_endpoint, t.ssrc): t.packets
              for t in parse_rtp_streams(proc.stdout)}
    assert theirs == {s.key: s.packets for s in truth.streams()}
    if scenario.startswith("reorder_start"):
        for s in truth.streams():  # what the scenario is for: a clean count, reordered start
            assert (s.lost, s.duplicates, s.packets - s.distinct) == (0, 30, 30)
            assert s.reordered > 0
