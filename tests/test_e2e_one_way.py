"""End to end: one-way audio made by the gateway, seen by the live agent (issue 8 item 5).

The sipp lab of tests/netlab.py (caller A - gateway R - callee B, 198.18.0.0/15 only):
A plays G.711 (236 PCMA packets) and 10 RFC 2833 packets to B. The agent runs in R
exactly as an admin runs it, and tcpdump writes a reference capture of the same
interface::

    ip netns exec R python -m agent.cli run --config CFG -i ra --listen 127.0.0.1:9957 ...

On R's interface toward A (``ra``) A->B packets are seen as they arrive at R (before its
forward chain) and B->A packets as they leave it (after the chain); on the interface
toward B (``rb``) the reverse. Config: peer ``carrier`` = B's network, bound to a profile
with ``require_two_way_media: true`` (judged after 5 s; a call lasts ~9 s).

1. Agent on ``ra``, B echoes A's media (``-rtp_echo``): a clean call is ``media_seen:
   both``, no one-way, no two-way violation; the one-way counter exists for peer
   ``carrier`` at 0.
2. nftables in R's forward chain drops every RTP packet from B (``counter`` on the rule):
   ``media_seen: a_to_b``, ``one_way_media: a_to_b``, the SLA violated on
   ``require_two_way_media`` (limit 2, value 1), ``voipprobe_calls_one_way_media_total
   {peer="carrier",direction="a_to_b"}`` 1.
3. A second agent on ``rb``; B plays its own G.711 (netlab ``uas_plays``) and R drops
   every RTP packet from A: ``b_to_a`` in the record and the counter of the ``rb`` agent.
   The ``ra`` agent saw A's packets arrive before R dropped them, so it reports that
   call two-way: ``media_seen`` is about what passed the capture point.

Independent truth for 2 and 3: the nftables counter shows that the far side did send
(its whole media was dropped), and tshark on the reference capture finds RTP from the
other side only, with the SSRC and packet count of our one direction; ``voipprobe
analyze`` of that capture says the same as the live agent.

Skipped (with the reason) when not root or a tool is missing; fails instead with ``CI``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import netlab
import pytest
from test_e2e_agent import _http, _log_tail, _records, _samples, _start_agent, _total, _wait_for
from tshark_table import parse_rtp_streams

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow]

ONE_WAY = "voipprobe_calls_one_way_media_total"
DROP_TABLE = "vponeway"
RB_AGENT_PORT = 9958
#: What the echoing B sends back per call: A's audio and A's RFC 2833 packets.
ECHOED = netlab.G711_PACKETS_PER_CALL + netlab.DTMF_PACKETS_PER_CALL


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[netlab.Lab]:
    netlab.require_lab()
    with netlab.Lab("ow", tmp_path / "lab") as built:
        yield built


def _config(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "voipprobe.yaml"
    config.write_text(
        f"state_dir: {state}\n"
        "privacy: clear\n"
        "calls:\n  media_idle_timeout_s: 3.0\n  interval_s: 3.0\n"
        "sla:\n"
        "  peers:\n"
        "    - {name: carrier, networks: [198.18.8.0/24], profile: strict}\n"
        "  profiles:\n"
        "    default: {}\n"
        "    strict: {require_two_way_media: true, two_way_media_after_s: 5}\n",
        encoding="utf-8")
    return config


def _drop_while(lab: netlab.Lab, rule: str,
                run: Callable[[], netlab.CallRun]) -> tuple[netlab.CallRun, int]:
    """``run()`` with ``rule`` (a ``counter drop``) in R's forward chain: (its result, the
    packets the rule dropped)."""
    ns = lab.ns_r
    netlab._run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                input_text=netlab.nft_ruleset(DROP_TABLE, "impair", "forward", (rule,)))
    try:
        result = run()
        out = netlab._run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet",
                           DROP_TABLE])
    finally:
        netlab._run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", DROP_TABLE])
    m = re.search(r"counter packets (\d+) bytes \d+ drop", out)
    assert m is not None, out
    assert result.uac_returncode == 0, _log_tail(result.uac_log)
    return result, int(m.group(1))


def _analyze(capture: Path, config: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", "--no-progress",
         "--config", str(config), str(capture)],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return [o for o in map(json.loads, proc.stdout.splitlines()) if o["kind"] == "call"]


def _scrape_after(ns: str, base: str, calls: int) -> list[tuple[str, dict[str, str], float]]:
    """The agent's samples once ``calls`` calls have ended."""
    scrape: dict[str, str] = {}

    def ended() -> bool:
        status, body = _http(ns, f"{base}/metrics")
        scrape["text"] = body
        return status == 200 and _total(_samples(body), "voipprobe_calls_ended_total") >= calls

    _wait_for(f"{calls} ended calls at {base}", ended, 20.0, interval=0.5)
    return _samples(scrape["text"])


def _check_one_way(rec: dict[str, Any], direction: str, sender: str, run: netlab.CallRun,
                   config: Path) -> None:
    """A judged one-way call with media ``direction`` from ``sender`` only, as tshark
    and ``analyze`` of the reference capture see it too."""
    assert rec["peer"] == "carrier" and rec["final_status"] == 200, rec
    assert rec["end_reason"] == "normal" and rec["duration_s"] > 5.0, rec
    assert rec["media_at_probe"] is True, rec
    assert (rec["media_seen"], rec["one_way_media"]) == (direction, direction), rec
    assert rec["sla"]["verdict"] == "violated", rec["sla"]
    two_way = [v for v in rec["sla"]["violations"] if v["threshold"] == "require_two_way_media"]
    assert [(v["limit"], v["value"]) for v in two_way] == [(2.0, 1.0)], rec["sla"]
    (d,) = rec["directions"]  # only one side's media passed the probe
    assert d["direction"] == direction, d
    assert d["stream"]["src"].split(":")[0] == sender, d["stream"]
    assert d["stream"]["packets"] == netlab.G711_PACKETS_PER_CALL, d["stream"]

    tshark = subprocess.run(
        ["tshark", "-r", str(run.capture), "-q", "-o", "rtp.heuristic_rtp:TRUE",
         "-z", "rtp,streams"], capture_output=True, text=True, timeout=60, check=True)
    theirs = parse_rtp_streams(tshark.stdout)
    assert {t.src for t in theirs} == {sender}, theirs
    audio = [t for t in theirs if t.packets == netlab.G711_PACKETS_PER_CALL]
    assert len(audio) == 1 and audio[0].ssrc == d["stream"]["ssrc"], theirs

    (offline,) = _analyze(run.capture, config)
    assert offline["call_id"] == rec["call_id"]
    assert (offline["media_seen"], offline["one_way_media"]) == (direction, direction)
    assert [v["threshold"] for v in offline["sla"]["violations"]] == [
        v["threshold"] for v in rec["sla"]["violations"]]


def test_one_way_audio_dropped_by_the_gateway(lab: netlab.Lab, tmp_path: Path) -> None:
    ns = lab.ns_r
    config = _config(tmp_path)
    call_log = tmp_path / "calls.jsonl"
    _, base = _start_agent(lab, config, "ra", call_log, tmp_path / "agent.log")

    # -- 1. a clean call: media both ways ------------------------------------------------
    clean = lab.run_calls(1, capture_interface="ra")
    assert clean.uac_returncode == 0, _log_tail(clean.uac_log)
    s = _scrape_after(ns, base, 1)
    (rec,) = _records(call_log)
    assert rec["peer"] == "carrier" and rec["final_status"] == 200, rec
    assert rec["duration_s"] > 5.0, rec
    assert (rec["media_seen"], rec["one_way_media"]) == ("both", None), rec
    assert rec["sla"]["profile"] == "strict"
    assert "require_two_way_media" not in (
        {v["threshold"] for v in rec["sla"]["violations"]} | set(rec["sla"]["not_judged"]))
    for direction in ("a_to_b", "b_to_a"):
        assert _total(s, ONE_WAY, peer="carrier", direction=direction) == 0, s
    assert any(n == ONE_WAY and labels["peer"] == "carrier" for n, labels, _ in s), s

    # -- 2. R drops B's media: one-way a_to_b --------------------------------------------
    one_way, dropped = _drop_while(
        lab, f"ip saddr {netlab.B_ADDR} udp sport {netlab.B_MEDIA_PORT} counter drop",
        lambda: lab.run_calls(1, capture_interface="ra"))
    assert dropped == ECHOED, f"B's echo: {dropped} packets dropped, want {ECHOED}"
    s = _scrape_after(ns, base, 2)
    assert _total(s, ONE_WAY, peer="carrier", direction="a_to_b") == 1, s
    assert _total(s, ONE_WAY, peer="carrier", direction="b_to_a") == 0, s
    assert _total(s, "voipprobe_sla_violations_total", peer="carrier", profile="strict",
                  threshold="require_two_way_media") == 1, s
    records = _records(call_log)
    assert len(records) == 2, records
    _check_one_way(records[-1], "a_to_b", netlab.A_ADDR, one_way, config)

    # -- 3. B plays its own audio, R drops A's: one-way b_to_a, seen on rb ---------------
    rb_log = tmp_path / "calls-rb.jsonl"
    _, rb_base = _start_agent(lab, config, "rb", rb_log, tmp_path / "agent-rb.log",
                              port=RB_AGENT_PORT)
    reverse, dropped = _drop_while(
        lab, f"ip saddr {netlab.A_ADDR} udp dport {netlab.B_MEDIA_PORT} counter drop",
        lambda: lab.run_calls(1, capture_interface="rb", uas_plays=True))
    assert dropped == ECHOED, f"A's media: {dropped} packets dropped, want {ECHOED}"
    s = _scrape_after(ns, rb_base, 1)
    assert _total(s, ONE_WAY, peer="carrier", direction="b_to_a") == 1, s
    assert _total(s, ONE_WAY, peer="carrier", direction="a_to_b") == 0, s
    (rec,) = _records(rb_log)
    _check_one_way(rec, "b_to_a", netlab.B_ADDR, reverse, config)
    # The ra agent saw A's packets reach R before R dropped them: two-way at that tap.
    s = _scrape_after(ns, base, 3)
    seen_on_ra = _records(call_log)[-1]
    assert seen_on_ra["call_id"] == rec["call_id"]
    assert (seen_on_ra["media_seen"], seen_on_ra["one_way_media"]) == ("both", None)
    assert _total(s, ONE_WAY, peer="carrier") == 1, s
