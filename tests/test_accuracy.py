"""`voipprobe analyze --json` against ground truth from tests/synth.py, and against tshark.

Each variant writes a capture whose true statistics the generator computed
from the definitions (see synth.py), runs the CLI exactly as a user would (a
subprocess), and compares stream by stream, matched on (src, dst, ssrc).

Tolerances, and why:
- counts (packets, expected, lost, duplicates, reordered, ...) are exact:
  they are integers with one right answer;
- jitter values: within 1 % or 0.01 ms, whichever is larger. The truth is
  computed on exactly the timestamps written to the file, so the residual is
  float rounding of epoch-second timestamps (~0.2 µs at 1.7e9 s) and the
  JSON's 4-decimal rounding; 0.01 ms covers both with a wide margin while
  still catching any definitional difference (e.g. DTMF not excluded, or
  jitter computed on sequence order instead of arrival order);
- first_ts/last_ts: 2 µs (float64 epoch seconds + 6-decimal JSON rounding).

Jitter definition (synth.compute_truth): A.8 over the audio packets in arrival
order -- telephone-event and CN left out, duplicates and reordered packets kept,
as RFC 3550 and tshark do; mean/max over J after each such packet.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import synth
from synth import (
    CapturedPacket,
    DtmfEvent,
    Flow,
    Impairments,
    Interface,
    Silence,
    SynthStream,
    VlanTag,
    make_stream,
)

REPO = Path(__file__).resolve().parent.parent

# Moderate impairments used where the variant is about framing, not statistics. No
# duplicates here: whether a duplicate takes part in jitter is a definition with its own
# variant (duplicates_jitter), and a framing variant should fail only for framing.
MILD = Impairments(loss=0.01, reorder=0.005, jitter_ms=6.0)
HEAVY = Impairments(loss=0.05, duplicate=0.03, reorder=0.05, jitter_ms=40.0)


@dataclass
class Expect:
    """One stream of a capture: where it travels, its packets/truth, extra JSON expectations."""

    flow: Flow
    stream: SynthStream
    extra: dict[str, Any] = field(default_factory=dict)
    dscp: dict[str, int] | None = None  # None: every packet carries flow.dscp

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.flow.src_endpoint, self.flow.dst_endpoint, self.stream.ssrc)


def v4(i: int) -> Flow:
    return Flow(f"198.18.{i}.10", f"198.19.{i}.20", 16000 + 2 * i, 30000 + 2 * i)


def _one(
    tmp: Path,
    *,
    name: str = "c.pcap",
    flow: Flow | None = None,
    linktype: int = synth.LINKTYPE_ETHERNET,
    n: int = 600,
    seed: int = 1,
    impair: Impairments = MILD,
    pcap_kw: dict[str, Any] | None = None,
    stream_kw: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, list[Expect]]:
    """A single-stream classic pcap."""
    flow = flow or v4(1)
    pcap_kw = pcap_kw or {}
    res = 1 if pcap_kw.get("nanosecond") else 1000
    s = make_stream(n, ssrc=0x10000 + seed, seed=seed, impair=impair, resolution_ns=res,
                    **(stream_kw or {}))  # fmt: skip
    path = synth.write_pcap(tmp / name, synth.stream_frames(s, flow, linktype), linktype, **pcap_kw)
    return path, [Expect(flow, s, extra or {})]


def v_eth_ipv4_us(tmp: Path) -> tuple[Path, list[Expect]]:
    return _one(tmp)


def v_pcap_ns_big_endian(tmp: Path) -> tuple[Path, list[Expect]]:
    return _one(tmp, seed=2, pcap_kw={"nanosecond": True, "big_endian": True})


def v_vlan(tmp: Path) -> tuple[Path, list[Expect]]:
    flow = Flow("198.18.5.1", "198.18.6.1", 20000, 20002, vlans=(VlanTag(100, 5),))
    return _one(tmp, flow=flow, seed=3, extra={"vlan": 100, "pcp": 5})


def v_qinq(tmp: Path) -> tuple[Path, list[Expect]]:
    # The contract keeps the innermost (customer) tag: that is the voice VLAN.
    flow = Flow("198.18.5.2", "198.18.6.2", 20004, 20006, vlans=(VlanTag(300, 1), VlanTag(42, 5)))
    return _one(tmp, flow=flow, seed=4, extra={"vlan": 42, "pcp": 5})


def v_ipv6(tmp: Path) -> tuple[Path, list[Expect]]:
    flow = Flow("2001:db8::1", "2001:db8:0:1::2", 4000, 4002, dscp=46)
    return _one(tmp, flow=flow, seed=5)


def v_linux_sll(tmp: Path) -> tuple[Path, list[Expect]]:
    return _one(tmp, linktype=synth.LINKTYPE_LINUX_SLL, seed=6)


def v_raw_ip(tmp: Path) -> tuple[Path, list[Expect]]:
    return _one(tmp, linktype=synth.LINKTYPE_RAW, seed=7)


def v_pcapng(tmp: Path) -> tuple[Path, list[Expect]]:
    """Two interfaces with different link types and timestamp resolutions."""
    f_eth = v4(2)
    f_raw = Flow("2001:db8::10", "2001:db8::20", 6000, 6002)
    a = make_stream(600, ssrc=0xA1, seed=8, impair=MILD, resolution_ns=1000)
    b = make_stream(600, ssrc=0xB2, seed=9, impair=MILD, resolution_ns=1)
    pk = synth.merge(
        synth.stream_frames(a, f_eth, synth.LINKTYPE_ETHERNET, iface=0),
        synth.stream_frames(b, f_raw, synth.LINKTYPE_RAW, iface=1),
    )
    ifs = [Interface(synth.LINKTYPE_ETHERNET, 6), Interface(synth.LINKTYPE_RAW, 9)]
    path = synth.write_pcapng(tmp / "c.pcapng", pk, ifs)
    return path, [Expect(f_eth, a), Expect(f_raw, b)]


def v_pcapng_big_endian_gzip(tmp: Path) -> tuple[Path, list[Expect]]:
    f = v4(3)
    s = make_stream(600, ssrc=0xC3, seed=10, impair=MILD, resolution_ns=1)
    path = synth.write_pcapng(
        tmp / "c.pcapng.gz", synth.stream_frames(s, f), [Interface(synth.LINKTYPE_ETHERNET, 9)],
        big_endian=True, compress=True,
    )  # fmt: skip
    return path, [Expect(f, s)]


def v_gzip(tmp: Path) -> tuple[Path, list[Expect]]:
    return _one(tmp, name="c.pcap.gz", seed=11, pcap_kw={"compress": True})


def v_seq_wrap(tmp: Path) -> tuple[Path, list[Expect]]:
    # Sequence numbers wrap mid-stream and so does the 32-bit RTP timestamp.
    return _one(
        tmp, n=1000, seed=12,
        stream_kw={"start_seq": 65200, "start_ts": 2**32 - 160 * 300},
        extra={"seq_wraps": 1},
    )  # fmt: skip


def v_heavy(tmp: Path) -> tuple[Path, list[Expect]]:
    return _one(tmp, n=2000, seed=13, impair=HEAVY)


def v_duplicates_jitter(tmp: Path) -> tuple[Path, list[Expect]]:
    """Network duplicates take part in jitter like every received packet (RFC 3550 A.8
    "for each data packet"; tshark agrees, see test_truth_duplicates_against_tshark)."""
    dup = Impairments(loss=0.01, duplicate=0.02, reorder=0.005, jitter_ms=6.0)
    path, exp = _one(tmp, n=800, seed=16, impair=dup)
    assert exp[0].stream.truth.duplicates > 5
    return path, exp


def v_dtmf_cn(tmp: Path) -> tuple[Path, list[Expect]]:
    """RFC 4733 events and RFC 3389 CN + DTX: no false loss, jitter on audio only."""
    path, exp = _one(
        tmp, n=900, seed=14,
        impair=Impairments(jitter_ms=4.0),
        stream_kw={
            "dtmf": [DtmfEvent(at=100, slots=6, event=1), DtmfEvent(at=400, slots=8, event=9)],
            "silences": [Silence(at=200, gap=60), Silence(at=600, gap=100)],
        },
    )  # fmt: skip
    t = exp[0].stream.truth
    assert t.lost == 0 and t.telephone_event_packets == 6 + 8 + 4 and t.comfort_noise_packets == 2
    exp[0].extra = {
        "telephone_event_packets": t.telephone_event_packets,
        "comfort_noise_packets": t.comfort_noise_packets,
    }
    return path, exp


def v_concurrent(tmp: Path) -> tuple[Path, list[Expect]]:
    """Three calls, both directions, overlapping in time, different impairments and codecs."""
    exps: list[Expect] = []
    lists: list[list[CapturedPacket]] = []
    imps = [MILD, HEAVY, Impairments(jitter_ms=15.0)]
    for call in range(3):
        fwd = v4(10 + call)
        back = Flow(fwd.dst, fwd.src, fwd.dport, fwd.sport)
        for d, flow in enumerate((fwd, back)):
            s = make_stream(
                500 + 100 * call, ssrc=0xCA110000 + 2 * call + d, seed=100 + 2 * call + d,
                impair=imps[call], pt=synth.PT_PCMA if call == 1 else synth.PT_PCMU,
                start_ns=synth.BASE_EPOCH_NS + call * 3_000_000_000 + d * 7_000_000,
            )  # fmt: skip
            exps.append(Expect(flow, s))
            lists.append(synth.stream_frames(s, flow))
    return synth.write_pcap(tmp / "c.pcap", synth.merge(*lists)), exps


def v_dscp_mix(tmp: Path) -> tuple[Path, list[Expect]]:
    """90 % EF and 10 % best effort (a re-marking hop): the histogram must show both."""
    flow = v4(4)
    s = make_stream(700, ssrc=0xD5C9, seed=15, impair=MILD)
    rng = random.Random(15)
    marks = [46 if rng.random() < 0.9 else 0 for _ in s.packets]
    pk = synth.stream_frames(s, flow, dscp_per_packet=marks)
    hist = {str(k): v for k, v in sorted(Counter(marks).items())}
    assert set(hist) == {"0", "46"}
    return synth.write_pcap(tmp / "c.pcap", pk), [Expect(flow, s, dscp=hist)]


VARIANTS: dict[str, Callable[[Path], tuple[Path, list[Expect]]]] = {
    name[2:]: fn for name, fn in globals().items() if name.startswith("v_") and callable(fn)
}


@dataclass
class Outcome:
    path: Path
    expects: list[Expect]
    streams: dict[tuple[str, str, int], dict[str, Any]]
    error: str | None


def analyze(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """Run the CLI as a user would; the stream objects, or the reason there are none."""
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", "--streams", str(path)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        return [], f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    objs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    return [o for o in objs if o.get("kind") == "stream"], None


_cache: dict[str, Outcome] = {}


@pytest.fixture(params=sorted(VARIANTS))
def outcome(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """Capture + CLI run per variant, shared by the three assertion groups below."""
    name: str = request.param
    if name not in _cache:
        tmp = tmp_path_factory.mktemp(name)
        path, exps = VARIANTS[name](tmp)
        for e in exps:  # the probe finds RTP heuristically: give it enough to go on
            assert e.stream.truth.packets >= 50
        got, err = analyze(path)
        _cache[name] = Outcome(path, exps, {(o["src"], o["dst"], o["ssrc"]): o for o in got}, err)
    return _cache[name]


def _stream(out: Outcome, e: Expect) -> dict[str, Any]:
    if out.error:  # a failure of the test, not an error of the fixture
        pytest.fail(f"analyze failed on {out.path}: {out.error}")
    got = out.streams.get(e.key)
    assert got is not None, f"stream {e.key} not reported; got {sorted(out.streams)}"
    return got


COUNTS = ("packets", "expected", "lost", "duplicates", "reordered")
JITTERS = ("jitter_ms", "jitter_mean_ms", "jitter_max_ms")


def test_counts(outcome: Outcome) -> None:
    for e in outcome.expects:
        got = _stream(outcome, e)
        t = e.stream.truth
        assert {k: got[k] for k in COUNTS} == {k: getattr(t, k) for k in COUNTS}, e.key
    assert len(outcome.streams) == len(outcome.expects), sorted(outcome.streams)


def test_jitter(outcome: Outcome) -> None:
    for e in outcome.expects:
        got = _stream(outcome, e)
        t = e.stream.truth
        for k in JITTERS:
            want = getattr(t, k)
            assert abs(got[k] - want) <= max(0.01, 0.01 * want), (e.key, k, got[k], want)


def test_other_fields(outcome: Outcome) -> None:
    for e in outcome.expects:
        got = _stream(outcome, e)
        t = e.stream.truth
        want: dict[str, Any] = {
            "seq_wraps": t.seq_wraps,
            "loss_bursts": t.loss_bursts,
            "loss_burst_max": t.loss_burst_max,
            "dscp": e.dscp if e.dscp is not None else {str(e.flow.dscp): t.packets},
            "vlan": None,
            "pcp": None,
            "telephone_event_packets": t.telephone_event_packets,
            "comfort_noise_packets": t.comfort_noise_packets,
            "clock_rate": 8000,
        }
        want.update(e.extra)
        assert {k: got[k] for k in want} == want, e.key
        assert abs(got["first_ts"] - t.first_ts) <= 2e-6
        assert abs(got["last_ts"] - t.last_ts) <= 2e-6


# ---------------------------------------------------------------------------
# tshark as a second opinion
# ---------------------------------------------------------------------------


def _tshark() -> str:
    exe = shutil.which("tshark")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("tshark is required in CI")
        pytest.skip("tshark not installed")
    return exe


def tshark_capture(tmp: Path) -> tuple[Path, list[Expect]]:
    """Two streams tshark can judge cleanly: no duplicates (tshark's loss goes
    negative on them), no DTMF/CN (tshark does not leave them out of jitter)."""
    a_flow, b_flow = v4(20), v4(21)
    a = make_stream(1500, ssrc=0x7A, seed=21,
                    impair=Impairments(loss=0.03, reorder=0.02, jitter_ms=25.0))  # fmt: skip
    b = make_stream(1500, ssrc=0x7B, seed=22, impair=Impairments(loss=0.01, jitter_ms=8.0))
    pk = synth.merge(synth.stream_frames(a, a_flow), synth.stream_frames(b, b_flow))
    return synth.write_pcap(tmp / "t.pcap", pk), [Expect(a_flow, a), Expect(b_flow, b)]


def run_tshark(exe: str, path: Path) -> dict[tuple[str, str, int], synth.TsharkStream]:
    text = subprocess.run(
        [exe, "-r", str(path), "-q", "-o", "rtp.heuristic_rtp:TRUE", "-z", "rtp,streams"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    return {
        (synth._endpoint(r.src, r.sport), synth._endpoint(r.dst, r.dport), r.ssrc): r
        for r in synth.parse_tshark_rtp_streams(text)
    }


def _close(a: float, b: float) -> bool:
    """0.05 ms or 2 %: tshark prints 3 decimals and averages J slightly differently."""
    return abs(a - b) <= max(0.05, 0.02 * abs(b))


@pytest.mark.needs_tshark
def test_truth_agrees_with_tshark(tmp_path: Path) -> None:
    """The yardstick itself, checked against tshark (runs even before the CLI exists)."""
    exe = _tshark()
    path, exps = tshark_capture(tmp_path)
    ts = run_tshark(exe, path)
    for e in exps:
        t, r = e.stream.truth, ts[e.key]
        assert (r.packets, r.lost) == (t.packets, t.lost)
        assert _close(t.jitter_mean_ms, r.mean_jitter_ms), (t.jitter_mean_ms, r.mean_jitter_ms)
        assert _close(t.jitter_max_ms, r.max_jitter_ms), (t.jitter_max_ms, r.max_jitter_ms)


@pytest.mark.needs_tshark
def test_truth_duplicates_against_tshark(tmp_path: Path) -> None:
    """tshark's loss is RFC 3550's expected - received, duplicates included: it must equal
    our lost - duplicates. Checks the generator's duplicate and reorder bookkeeping."""
    exe = _tshark()
    path, exps = v_heavy(tmp_path)
    t, r = exps[0].stream.truth, run_tshark(exe, path)[exps[0].key]
    assert t.duplicates > 0 and t.reordered > 0
    assert (r.packets, r.lost) == (t.packets, t.lost - t.duplicates)
    assert _close(t.jitter_max_ms, r.max_jitter_ms)


@pytest.mark.needs_tshark
def test_cli_agrees_with_tshark(tmp_path: Path) -> None:
    exe = _tshark()
    path, exps = tshark_capture(tmp_path)
    ts = run_tshark(exe, path)
    got, err = analyze(path)
    assert err is None, err
    ours = {(o["src"], o["dst"], o["ssrc"]): o for o in got}
    for e in exps:
        o, r = ours[e.key], ts[e.key]
        assert (o["packets"], o["lost"]) == (r.packets, r.lost), e.key
        assert _close(o["jitter_mean_ms"], r.mean_jitter_ms), (o["jitter_mean_ms"], r)
        assert _close(o["jitter_max_ms"], r.max_jitter_ms), (o["jitter_max_ms"], r)
