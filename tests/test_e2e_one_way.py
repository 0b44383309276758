"""End to end: one-way audio made by the gateway, seen by the live agent (issue 8 item 5).

The sipp lab of tests/netlab.py (caller A - gateway R - callee B, 198.18.0.0/15 only):
A plays G.711 (236 PCMA packets) and 10 RFC 2833 packets to B, and B echoes every RTP
packet back (``-rtp_echo``), so a clean call has media both ways. The agent runs in R
exactly as an admin runs it, capturing on ``ra`` (R's interface toward the caller), and
tcpdump writes a reference capture of the same interface::

    ip netns exec R python -m agent.cli run --config CFG -i ra --listen 127.0.0.1:9957 ...

On ``ra`` A->B packets are seen as they arrive at R (before its forward chain), B->A
packets as they leave R (after it). Config: peer ``carrier`` = B's network, bound to a
profile with ``require_two_way_media: true`` (judged after 5 s; a call lasts ~9 s).

1. A clean call: ``media_seen: both``, no one-way, no two-way violation; the one-way
   counter exists for peer ``carrier`` at 0.
2. nftables in R's forward chain drops every RTP packet from B's media port (``counter``
   on the rule): B -> A media never leaves R. The call's record says ``media_seen:
   a_to_b`` and ``one_way_media: a_to_b``; the SLA is violated on
   ``require_two_way_media`` (limit 2, value 1); ``voipprobe_calls_one_way_media_total
   {peer="carrier",direction="a_to_b"}`` is 1. Independent truth: the nftables counter
   shows that B did send (it dropped 236 + 10 packets: B's whole echo), and tshark on
   the reference capture finds RTP from A only, with the packet count of our a_to_b
   direction. ``voipprobe analyze`` of that capture says the same as the live agent.

Skipped (with the reason) when not root or a tool is missing; fails instead with ``CI``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netlab
import pytest
from test_e2e_agent import _http, _log_tail, _records, _samples, _start_agent, _total, _wait_for
from tshark_table import parse_rtp_streams

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow]

IFACE = "ra"
ONE_WAY = "voipprobe_calls_one_way_media_total"
DROP_TABLE = "vponeway"
#: Every RTP packet B sends (its echo of A's media), in R's forward chain.
DROP_RULE = f"ip saddr {netlab.B_ADDR} udp sport {netlab.B_MEDIA_PORT} counter drop"
#: What B echoes per call: A's audio and A's RFC 2833 packets.
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


def _dropped(ns: str) -> int:
    """Packets the drop rule counted (``nft list table``: ``counter packets N bytes M``)."""
    out = netlab._run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", DROP_TABLE])
    m = re.search(r"counter packets (\d+) bytes \d+ drop", out)
    assert m is not None, out
    return int(m.group(1))


def _tshark_streams(capture: Path) -> list[Any]:
    proc = subprocess.run(
        ["tshark", "-r", str(capture), "-q", "-o", "rtp.heuristic_rtp:TRUE",
         "-z", "rtp,streams"], capture_output=True, text=True, timeout=60, check=True)
    return parse_rtp_streams(proc.stdout)


def _analyze(capture: Path, config: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", "--no-progress",
         "--config", str(config), str(capture)],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return [o for o in map(json.loads, proc.stdout.splitlines()) if o["kind"] == "call"]


def test_one_way_audio_dropped_by_the_gateway(lab: netlab.Lab, tmp_path: Path) -> None:
    ns = lab.ns_r
    config = _config(tmp_path)
    call_log = tmp_path / "calls.jsonl"
    _, base = _start_agent(lab, config, IFACE, call_log, tmp_path / "agent.log")
    scrape: dict[str, str] = {}

    def ended(n: int) -> bool:
        status, body = _http(ns, f"{base}/metrics")
        scrape["text"] = body
        return status == 200 and _total(_samples(body), "voipprobe_calls_ended_total") >= n

    # -- 1. a clean call: media both ways ------------------------------------------------
    clean = lab.run_calls(1, capture_interface=IFACE)
    assert clean.uac_returncode == 0, _log_tail(clean.uac_log)
    _wait_for("the clean call in /metrics", lambda: ended(1), 20.0, interval=0.5)
    s = _samples(scrape["text"])
    (rec,) = _records(call_log)
    assert rec["peer"] == "carrier" and rec["final_status"] == 200, rec
    assert rec["duration_s"] > 5.0, rec
    assert (rec["media_seen"], rec["one_way_media"]) == ("both", None), rec
    assert rec["sla"]["profile"] == "strict"
    assert "require_two_way_media" not in (
        {v["threshold"] for v in rec["sla"]["violations"]} | set(rec["sla"]["not_judged"]))
    for direction in ("a_to_b", "b_to_a"):
        assert _total(s, ONE_WAY, peer="carrier", direction=direction) == 0, scrape["text"]
    assert any(n == ONE_WAY and labels["peer"] == "carrier" for n, labels, _ in s), scrape["text"]

    # -- 2. R drops B's media: one-way a_to_b --------------------------------------------
    netlab._run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                input_text=netlab.nft_ruleset(DROP_TABLE, "impair", "forward", (DROP_RULE,)))
    one_way = lab.run_calls(1, capture_interface=IFACE)
    assert one_way.uac_returncode == 0, _log_tail(one_way.uac_log)
    dropped = _dropped(ns)
    netlab._run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", DROP_TABLE])
    assert dropped == ECHOED, f"B's echo: {dropped} packets dropped, want {ECHOED}"

    _wait_for("the one-way call in /metrics", lambda: ended(2), 20.0, interval=0.5)
    s = _samples(scrape["text"])
    assert _total(s, ONE_WAY, peer="carrier", direction="a_to_b") == 1, scrape["text"]
    assert _total(s, ONE_WAY, peer="carrier", direction="b_to_a") == 0, scrape["text"]
    assert _total(s, "voipprobe_sla_violations_total", peer="carrier", profile="strict",
                  threshold="require_two_way_media") == 1, scrape["text"]
    records = _records(call_log)
    assert len(records) == 2, records
    rec = records[-1]
    assert rec["final_status"] == 200 and rec["end_reason"] == "normal", rec
    assert rec["duration_s"] > 5.0 and rec["media_at_probe"] is True, rec
    assert (rec["media_seen"], rec["one_way_media"]) == ("a_to_b", "a_to_b"), rec
    assert rec["sla"]["verdict"] == "violated", rec["sla"]
    two_way = [v for v in rec["sla"]["violations"] if v["threshold"] == "require_two_way_media"]
    assert [(v["limit"], v["value"]) for v in two_way] == [(2.0, 1.0)], rec["sla"]
    (d,) = rec["directions"]  # only the caller's media passed the probe
    assert d["direction"] == "a_to_b", d
    assert d["stream"]["src"] == f"{netlab.A_ADDR}:{d['stream']['src'].split(':')[1]}"
    assert d["stream"]["packets"] == netlab.G711_PACKETS_PER_CALL, d["stream"]

    # tshark on tcpdump's capture of the same interface: RTP from A only.
    theirs = _tshark_streams(one_way.capture)
    assert theirs, "tshark found no RTP in the one-way call's capture"
    assert {t.src for t in theirs} == {netlab.A_ADDR}, theirs
    audio = [t for t in theirs if t.packets == netlab.G711_PACKETS_PER_CALL]
    assert len(audio) == 1 and audio[0].ssrc == d["stream"]["ssrc"], theirs

    # analyze of that capture agrees with the live agent.
    (offline,) = _analyze(one_way.capture, config)
    assert offline["call_id"] == rec["call_id"]
    assert (offline["media_seen"], offline["one_way_media"]) == ("a_to_b", "a_to_b")
    assert [v["threshold"] for v in offline["sla"]["violations"]] == [
        v["threshold"] for v in rec["sla"]["violations"]]
