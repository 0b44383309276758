"""End to end: the gateway seen on both of its interfaces (issue 9 item 1).

The sipp lab of tests/netlab.py (caller A - gateway R - callee B, 198.18.0.0/15 only),
with nftables in R's forward chain dropping 10 % of A's RTP to B (``numgen random``,
with a counter). B echoes what reaches it, sequence numbers and SSRC unchanged. The
probe captures *both* of R's interfaces, as the README recommends for a gateway:

- live: ``voipprobe run -i ra -i rb`` and ``voipprobe run`` with the default ``any``;
- offline: ``analyze`` of tshark's two-interface pcapng (``-i ra -i rb``) and of
  tcpdump's ``-i any`` capture, cooked v1 (no interface index: points ``in``/``out``)
  and v2 (``-y LINUX_SLL2``: ``if<N>:in``/``if<N>:out``).

Each forwarded packet is seen twice, at the ingress and at the egress point. What must
hold, for every call, against independent truth:

- no duplicates: each point's stream counts each packet once;
- A->B: the ingress point (``ra:in``) lost nothing, the egress point (``rb:out``) lost
  what R dropped, the direction's figures are the egress point's, and ``loss_between
  _points`` says how many were lost between them; B->A (the echo, carrying A->B's
  gaps in its sequence numbers): the same loss at both points, none between them;
- truth: tshark's ``rtp,streams`` on each interface's packets alone (split from the
  pcapng by ``frame.interface_name``), and the nft counter (what R dropped in all);
- SIP is counted once per message: ``voipprobe_sip_requests_total{method="INVITE"}`` is
  the number of calls, and so is the ``sip_requests_invite`` count of ``analyze``.

Skipped (with the reason) when not root or a tool is missing; fails instead with ``CI``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netlab
import pytest
from test_e2e_agent import _http, _log_tail, _records, _samples, _total, _wait_for
from tshark_table import parse_rtp_streams

REPO = Path(__file__).resolve().parent.parent
CALLS = 3
DROP = (f"ip saddr {netlab.A_ADDR} udp dport {netlab.B_MEDIA_PORT} "
        "numgen random mod 100 < 10 counter drop")

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three calls through R with 10 % of A's RTP dropped, measured live by two agents
    (``-i ra -i rb`` and ``any``) and captured by tshark (both interfaces, pcapng) and
    tcpdump (``any``, cooked v1 and v2)."""
    netlab.require_lab()
    tmp = tmp_path_factory.mktemp("points")
    with netlab.Lab("pt", tmp / "lab", gateway_rules=(DROP,)) as lab:
        config = tmp / "voipprobe.yaml"
        state = tmp / "state"
        state.mkdir()
        config.write_text(f"state_dir: {state}\nprivacy: clear\n"
                          "calls:\n  media_idle_timeout_s: 3.0\n  interval_s: 3.0\n",
                          encoding="utf-8")
        agents = {}
        for name, ifaces, port in (("two", ["-i", "ra", "-i", "rb"], 9961),
                                   ("any", [], 9962)):
            log = tmp / f"calls-{name}.jsonl"
            proc = lab._spawn(lab.ns_r, [
                sys.executable, "-m", "agent.cli", "run", "--config", str(config), *ifaces,
                "--listen", f"127.0.0.1:{port}", "--call-log", str(log)],
                tmp / f"agent-{name}.log", cwd=REPO)
            base = f"http://127.0.0.1:{port}"

            def healthy(proc: subprocess.Popen[bytes] = proc, base: str = base,
                        name: str = name) -> bool:
                assert proc.poll() is None, _log_tail(tmp / f"agent-{name}.log")
                return _http(lab.ns_r, f"{base}/health")[0] == 200

            _wait_for(f"agent {name}", healthy, 20.0)
            agents[name] = (log, base)
        pcapng = tmp / "both.pcapng"
        tshark = lab._spawn(lab.ns_r, ["tshark", "-i", "ra", "-i", "rb", "-w", str(pcapng),
                                       "-q"], tmp / "tshark.log")
        sll1, sll2 = tmp / "any1.pcap", tmp / "any2.pcap"
        dumps = [lab._spawn(lab.ns_r, ["tcpdump", "-i", "any", "-n", "-U", "-s", "0", "-Z",
                                       "root", *extra, "-w", str(path)],
                            tmp / f"tcpdump-{path.stem}.log")
                 for path, extra in ((sll1, ["-y", "LINUX_SLL"]), (sll2, ["-y", "LINUX_SLL2"]))]
        time.sleep(2.0)  # tshark and tcpdump listening
        run = lab.run_calls(CALLS)
        assert run.uac_returncode == 0, _log_tail(run.uac_log)
        time.sleep(1.0)
        for proc in (tshark, *dumps):
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
        counters = netlab._run(["ip", "netns", "exec", lab.ns_r, "nft", "list", "table",
                                "inet", "vplab"])
        m = re.search(r"counter packets (\d+) bytes \d+ drop", counters)
        assert m is not None, counters
        scrapes = {}
        for name, (_log, base) in agents.items():
            def ended(base: str = base) -> bool:
                status, body = _http(lab.ns_r, f"{base}/metrics")
                scrapes[base] = body
                return status == 200 and _total(
                    _samples(body), "voipprobe_calls_ended_total") >= CALLS

            _wait_for(f"{CALLS} calls ended at {name}", ended, 30.0, interval=0.5)
        yield {
            "config": config, "dropped": int(m.group(1)), "pcapng": pcapng,
            "sll1": sll1, "sll2": sll2,
            "live": {name: (_records(log), _samples(scrapes[base]))
                     for name, (log, base) in agents.items()},
        }


def _analyze(capture: Path, config: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", "--no-progress",
         "--config", str(config), str(capture)],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    (summary,) = [o for o in out if o["kind"] == "summary"]
    return [o for o in out if o["kind"] == "call"], summary


def _tshark_streams(pcapng: Path, interface: str, tmp: Path) -> dict[tuple[str, str], Any]:
    """tshark's RTP streams of one interface's packets: (src, dst) -> stream."""
    part = tmp / f"{interface}.pcapng"
    subprocess.run(["tshark", "-r", str(pcapng), "-Y", f'frame.interface_name == "{interface}"',
                    "-w", str(part)], check=True, capture_output=True, timeout=60)
    out = subprocess.run(["tshark", "-r", str(part), "-q", "-o", "rtp.heuristic_rtp:TRUE",
                          "-z", "rtp,streams"], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return {(f"{t.src}:{t.sport}", f"{t.dst}:{t.dport}"): t for t in parse_rtp_streams(out)
            if t.packets == netlab.G711_PACKETS_PER_CALL or t.packets > 100}


def _check(records: list[dict[str, Any]], ingress: str, egress: str, back_in: str,
           back_out: str) -> list[int]:
    """Every call seen at both points (names as this source gives them); returns each
    call's A->B loss between the points."""
    assert len(records) == CALLS, [r["call_id"] for r in records]
    between = []
    for rec in records:
        assert rec["final_status"] == 200 and rec["end_reason"] == "normal", rec
        by_dir = {d["direction"]: d for d in rec["directions"]}
        assert set(by_dir) == {"a_to_b", "b_to_a"}, rec["directions"]
        ab, ba = by_dir["a_to_b"], by_dir["b_to_a"]
        assert [p["point"] for p in ab["points"]] == [ingress, egress], ab["points"]
        assert [p["point"] for p in ba["points"]] == [back_in, back_out], ba["points"]
        up, down = ab["points"]
        assert up["packets"] == netlab.G711_PACKETS_PER_CALL and up["lost"] == 0, up
        assert up["duplicates"] == down["duplicates"] == 0, ab["points"]
        # RFC 3550 loss counts gaps up to the highest number received: a dropped last
        # packet is no gap at the egress point, but it was lost between the points
        dropped = netlab.G711_PACKETS_PER_CALL - down["packets"]
        assert dropped - 2 <= down["lost"] <= dropped, down
        assert ab["point"] == egress and ab["stream"]["point"] == egress
        assert ab["stream"]["packets"] == down["packets"]
        assert ab["stream"]["lost"] == down["lost"] and ab["stream"]["duplicates"] == 0
        (hop,) = ab["loss_between_points"]
        assert (hop["upstream"], hop["downstream"], hop["lost"]) == (
            ingress, egress, dropped), hop
        # the echo carries A->B's gaps: the same loss at both of its points, none between
        b_up, b_down = ba["points"]
        assert b_up["lost"] == b_down["lost"] == down["lost"], ba["points"]
        assert b_up["packets"] == b_down["packets"] == down["packets"], ba["points"]
        assert [h["lost"] for h in ba["loss_between_points"]] == [0]
        between.append(hop["lost"])
    return between


def test_gateway_on_two_interfaces_offline(gateway: dict[str, Any], tmp_path: Path) -> None:
    records, summary = _analyze(gateway["pcapng"], gateway["config"])
    between = _check(records, "ra", "rb", "rb", "ra")
    assert summary["sip_requests_invite"] == CALLS, summary
    assert summary["route_sip_copies"] > 0, summary
    assert sum(between) > 0, "10 % of ~700 packets dropped, none lost between the points?"
    assert sum(between) <= gateway["dropped"]  # the rest: A's DTMF packets, same rule
    # tshark, per interface: what each point saw of each call's A->B stream
    at_ra = _tshark_streams(gateway["pcapng"], "ra", tmp_path)
    at_rb = _tshark_streams(gateway["pcapng"], "rb", tmp_path)
    for rec in records:
        ab = next(d for d in rec["directions"] if d["direction"] == "a_to_b")
        key = (ab["stream"]["src"], ab["stream"]["dst"])
        theirs_in = [t for k, t in at_ra.items() if k == key and t.ssrc == ab["stream"]["ssrc"]]
        theirs_out = [t for k, t in at_rb.items() if k == key and t.ssrc == ab["stream"]["ssrc"]]
        assert len(theirs_in) == len(theirs_out) == 1, (at_ra, at_rb)
        up, down = ab["points"]
        assert (up["packets"], up["lost"]) == (theirs_in[0].packets, theirs_in[0].lost)
        assert (down["packets"], down["lost"]) == (theirs_out[0].packets, theirs_out[0].lost)


@pytest.mark.parametrize(("capture", "ingress", "egress"), [
    ("sll1", "in", "out"), ("sll2", r"if\d+:in", r"if\d+:out")])
def test_gateway_from_an_any_capture(gateway: dict[str, Any], capture: str, ingress: str,
                                     egress: str) -> None:
    records, summary = _analyze(gateway[capture], gateway["config"])
    assert summary["sip_requests_invite"] == CALLS, summary
    names = {p["point"] for r in records for d in r["directions"] for p in d["points"]}
    assert len(names) == (2 if capture == "sll1" else 4), names  # 2 interfaces x in/out
    assert all(re.fullmatch(f"{ingress}|{egress}", n) for n in names), names
    a_in = next(n for n in names if re.fullmatch(ingress, n))
    a_out = next(n for n in names if re.fullmatch(egress, n))
    if capture == "sll1":  # no interface index: the same two names both ways
        _check(records, a_in, a_out, a_in, a_out)
    else:
        ab = next(d for d in records[0]["directions"] if d["direction"] == "a_to_b")
        up, down = (p["point"] for p in ab["points"])
        ba_in = next(n for n in names if n.endswith(":in") and n != up)
        ba_out = next(n for n in names if n.endswith(":out") and n != down)
        _check(records, up, down, ba_in, ba_out)


@pytest.mark.parametrize(("agent", "points"), [
    ("two", ("ra:in", "rb:out", "rb:in", "ra:out")),
    ("any", ("ra:in", "rb:out", "rb:in", "ra:out"))])
def test_gateway_live(gateway: dict[str, Any], agent: str, points: tuple[str, ...]) -> None:
    records, samples = gateway["live"][agent]
    between = _check(records, *points)
    offline, _ = _analyze(gateway["pcapng"], gateway["config"])
    assert between == [next(d for d in r["directions"] if d["direction"] == "a_to_b")
                       ["loss_between_points"][0]["lost"] for r in offline]
    assert _total(samples, "voipprobe_sip_requests_total", method="INVITE") == CALLS, samples
    assert _total(samples, "voipprobe_lost_between_points_packets_total",
                  upstream="ra:in", downstream="rb:out") == sum(between)
    # each point's RTP counted at that point
    assert _total(samples, "voipprobe_rtp_packets_total", point="ra:in") >= \
        CALLS * netlab.G711_PACKETS_PER_CALL
