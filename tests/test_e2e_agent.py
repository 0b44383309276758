"""End to end: the live agent (``voipprobe run``) on the gateway of the sipp lab.

Acceptance test of issue 4, item 1 (and the exporter, call log and SIGTERM items as a
user meets them). tests/netlab.py builds caller A - gateway R - callee B in network
namespaces (198.18.0.0/15 only); the agent runs inside R exactly as an admin runs it::

    ip netns exec R python -m agent.cli run --config CFG -i rb --listen 127.0.0.1:9957 \
        --call-log calls.jsonl

(R's loopback belongs to R alone, so the fixed ports cannot collide with anything.)
sipp places :data:`CALLS` clean calls (endpoints mark SIP CS3 / RTP EF), then:

* ``/metrics`` scraped over HTTP inside R: calls ended (all ``normal``), SLA verdicts,
  RTP packets, INVITEs, capture packets and no kernel drops on ``rb``; the text passes
  ``promtool check metrics``;
* a real ``prometheus`` in R scrapes the agent (target ``up``, ``voipprobe_build_info``);
* the call log holds one JSON record per call, status 200, URIs pseudonymised;
* one call with its media re-marked CS0 by nftables in R's forward chain: exactly the
  236 A->B audio packets counted as DSCP-mismatched media, SLA violated;
* one more call, and SIGTERM while its media flows: exit 0 within 5 s, and a record with
  end reason ``shutdown``.

Skipped (with the reason) when not root or a tool is missing; fails instead with ``CI``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import chromium
import netlab
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from tshark_table import parse_rtp_streams

from agent.export.privacy import Pseudonymiser, load_or_create_key
from agent.export.recent import VIOLATED_RGB

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow]

CALLS = 3
AGENT_PORT = 9957
PROM_PORT = 9090
IFACE = "rb"
#: The agent's stop budget (issue 4: SIGTERM exits 0 within 5 s).
STOP_BUDGET_S = 5.0
#: A pseudonymised SIP URI: ``sip:h:<12 hex>@host`` (agent/export/privacy.py).
HASHED_URI = re.compile(r"^<?sips?:h:[0-9a-f]{12}@[^>]+>?$")

Samples = list[tuple[str, dict[str, str], float]]


def _unavailable() -> str | None:
    reason = netlab.lab_unavailable_reason()
    if reason is not None:
        return reason
    missing = [t for t in ("prometheus", "promtool") if shutil.which(t) is None]
    return f"missing tools: {', '.join(missing)} (package prometheus)" if missing else None


def _require() -> None:
    reason = _unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"agent lab unavailable in CI: {reason}")
    pytest.skip(f"agent lab unavailable: {reason}")


def _http(ns: str, url: str, timeout: float = 3.0, accept: str = "*/*") -> tuple[int, str]:
    """GET ``url`` from inside namespace ``ns``: (status, body); status 0 when unreachable."""
    code = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        "    q = urllib.request.Request(sys.argv[1], headers={'Accept': sys.argv[2]})\n"
        f"    r = urllib.request.urlopen(q, timeout={timeout})\n"
        "    s, b = r.status, r.read()\n"
        "except urllib.error.HTTPError as e:\n"
        "    s, b = e.code, e.read()\n"
        "except OSError:\n"
        "    s, b = 0, b''\n"
        "sys.stdout.write(str(s) + '\\n' + b.decode('utf-8', 'replace'))\n"
    )
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, url, accept],
                          capture_output=True, text=True, timeout=timeout + 10, check=False)
    if proc.returncode != 0:
        return 0, proc.stderr
    status, _, body = proc.stdout.partition("\n")
    return int(status), body


def _wait_for(what: str, check: Callable[[], bool], timeout: float,
              interval: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _samples(text: str) -> Samples:
    return [(s.name, dict(s.labels), float(s.value))
            for fam in text_string_to_metric_families(text) for s in fam.samples]


def _total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == want for k, want in labels.items()))


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines]


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "<no log>"


def _start_agent(lab: netlab.Lab, config: Path, iface: str, call_log: Path,
                 log: Path, port: int = AGENT_PORT) -> tuple[subprocess.Popen[bytes], str]:
    """``voipprobe run`` in R on ``iface``, serving on ``port`` of R's loopback; returns
    once ``/health`` answers: (the process, the base URL)."""
    agent = lab._spawn(  # netlab registers it: killed in teardown
        lab.ns_r, [sys.executable, "-m", "agent.cli", "run", "--config", str(config),
                   "-i", iface, "--listen", f"127.0.0.1:{port}",
                   "--call-log", str(call_log)],
        log, cwd=REPO)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert agent.poll() is None, f"agent exited {agent.returncode}: {_log_tail(log)}"
        return _http(lab.ns_r, f"{base}/health")[0] == 200

    _wait_for("the agent's /health", healthy, 20.0)
    return agent, base


def _start_prometheus(lab: netlab.Lab, workdir: Path, rule_files: tuple[Path, ...] = (),
                      ) -> tuple[subprocess.Popen[bytes], Path]:
    """A real ``prometheus`` in R on ``PROM_PORT``, scraping the agent every second (job
    ``voipprobe``) and evaluating ``rule_files`` every second: (the process, its log)."""
    prom_dir = workdir / "prom"
    prom_dir.mkdir()
    prom_cfg = prom_dir / "prometheus.yml"
    rules = "".join(f"  - '{path}'\n" for path in rule_files)
    prom_cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        + (f"rule_files:\n{rules}" if rules else "")
        + "scrape_configs:\n  - job_name: voipprobe\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{AGENT_PORT}']\n",
        encoding="utf-8")
    prom_log = workdir / "prometheus.log"
    prom = lab._spawn(
        lab.ns_r, ["prometheus", f"--config.file={prom_cfg}",
                   f"--storage.tsdb.path={prom_dir}/data",
                   f"--web.listen-address=127.0.0.1:{PROM_PORT}"],
        prom_log, cwd=prom_dir)
    return prom, prom_log


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[netlab.Lab]:
    _require()
    with netlab.Lab("ag", tmp_path / "lab") as built:
        yield built


def test_live_agent_on_gateway(lab: netlab.Lab, tmp_path: Path) -> None:
    ns = lab.ns_r
    state = tmp_path / "state"
    state.mkdir()
    call_log = tmp_path / "calls.jsonl"
    config = tmp_path / "voipprobe.yaml"
    config.write_text(
        f"state_dir: {state}\n"
        "privacy: hash\n"
        "calls:\n  media_idle_timeout_s: 3.0\n  interval_s: 3.0\n",
        encoding="utf-8")
    agent_log = tmp_path / "agent.log"
    agent, base = _start_agent(lab, config, IFACE, call_log, agent_log)

    # A real Prometheus in R, scraping the agent every second while the calls run.
    prom, prom_log = _start_prometheus(lab, tmp_path)

    run = lab.run_calls(CALLS)
    assert run.uac_returncode == 0, _log_tail(run.uac_log)

    # -- metrics: every call ended (BYE) and accounted ----------------------------------
    scrape: dict[str, str] = {}

    def all_ended() -> bool:
        status, body = _http(ns, f"{base}/metrics")
        scrape["text"] = body
        return status == 200 and _total(_samples(body), "voipprobe_calls_ended_total") >= CALLS

    _wait_for(f"{CALLS} ended calls in /metrics", all_ended, 15.0, interval=0.5)
    time.sleep(1.0)  # nothing more should arrive: re-scrape for the final figures
    status, text = _http(ns, f"{base}/metrics")
    assert status == 200
    s = _samples(text)
    assert _total(s, "voipprobe_calls_ended_total") == CALLS, text
    assert _total(s, "voipprobe_calls_ended_total", end_reason="normal") == CALLS, text
    assert _total(s, "voipprobe_calls_started_total") == CALLS, text
    assert _total(s, "voipprobe_sla_verdicts_total") >= CALLS, text
    assert _total(s, "voipprobe_rtp_packets_total") > 0, text
    assert _total(s, "voipprobe_sip_requests_total", method="INVITE") == CALLS, text
    # no peer configured: every request is peer="other" (a bounded label, never an address)
    assert _total(s, "voipprobe_sip_requests_total", method="INVITE", peer="other") == CALLS
    # the core's labels, the same on every family: no local networks, so a_to_b/b_to_a
    # on the RTP and interval series as on the call series, never "unknown"
    def directions(family: str) -> set[str]:
        return {lab["direction"] for n, lab, _ in s if n == family}
    assert directions("voipprobe_call_mos_count") == {"a_to_b", "b_to_a"}, text
    for family in ("voipprobe_rtp_packets_total", "voipprobe_interval_jitter_seconds_count"):
        assert directions(family) == {"a_to_b", "b_to_a"}, (family, text)
    assert _total(s, "voipprobe_capture_packets_total", interface=IFACE) > 0, text
    assert _total(s, "voipprobe_capture_kernel_drops_total", interface=IFACE) == 0, text
    assert _total(s, "voipprobe_build_info") == 1, text
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    # -- Prometheus scraped the agent ---------------------------------------------------
    def target_up() -> bool:
        assert prom.poll() is None, f"prometheus exited: {_log_tail(prom_log)}"
        status, body = _http(ns, f"http://127.0.0.1:{PROM_PORT}/api/v1/targets")
        if status != 200:
            return False
        active = json.loads(body)["data"]["activeTargets"]
        return any(t["health"] == "up" for t in active)

    _wait_for("prometheus target up", target_up, 20.0, interval=0.5)

    def build_info() -> bool:
        status, body = _http(ns, f"http://127.0.0.1:{PROM_PORT}/api/v1/query"
                                 "?query=voipprobe_build_info")
        return status == 200 and len(json.loads(body)["data"]["result"]) == 1

    _wait_for("voipprobe_build_info in prometheus", build_info, 10.0, interval=0.5)

    # -- call log: one pseudonymised record per call ------------------------------------
    records = _records(call_log)
    assert len(records) == CALLS, records
    assert len({r["call_id"] for r in records}) == CALLS, records
    for rec in records:
        assert rec["kind"] == "call", rec
        assert rec["final_status"] == 200, rec
        assert rec["end_reason"] == "normal", rec
        for key in ("from", "to"):
            assert HASHED_URI.match(str(rec[key])), (key, rec[key])
    clear_text = call_log.read_text(encoding="utf-8")
    assert "sip:sipp@" not in clear_text and "sip:service@" not in clear_text
    _same_as_analyze(records, run.capture, config, state)
    _same_intervals_as_capture(s, run.capture, config)

    # -- DSCP re-marked in R: one call whose A->B media leaves R as CS0 ----------------
    assert _total(s, "voipprobe_dscp_mismatched_packets_total") == 0, text
    netlab._run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                input_text=netlab.nft_ruleset("vpremark", "impair", "forward",
                                              (f"{netlab.MEDIA} ip dscp set cs0",)))
    remark = lab.run_calls(1)
    assert remark.uac_returncode == 0, _log_tail(remark.uac_log)

    def remark_ended() -> bool:
        status, body = _http(ns, f"{base}/metrics")
        scrape["text"] = body
        return (status == 200
                and _total(_samples(body), "voipprobe_calls_ended_total") >= CALLS + 1)

    _wait_for("the re-marked call in /metrics", remark_ended, 15.0, interval=0.5)
    s = _samples(scrape["text"])
    # Only A->B audio (236 PCMA packets, after R's forward chain) is CS0; B->A is seen
    # before the chain (EF) and SIP is not touched.
    assert _total(s, "voipprobe_dscp_mismatched_packets_total", traffic="media") == (
        netlab.G711_PACKETS_PER_CALL), scrape["text"]
    assert _total(s, "voipprobe_dscp_mismatched_packets_total", traffic="signalling") == 0
    assert _total(s, "voipprobe_sla_verdicts_total", verdict="violated") == 1, scrape["text"]
    records = _records(call_log)
    assert len(records) == CALLS + 1, records
    assert records[-1]["end_reason"] == "normal", records[-1]
    assert records[-1]["sla"]["verdict"] == "violated", records[-1]["sla"]

    # -- 10 % of the media dropped in R: loss as tshark counts it, loss threshold ------
    netlab._run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "vpremark"])
    netlab._run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                input_text=netlab.nft_ruleset("vpdrop", "impair", "forward",
                                              (f"{netlab.MEDIA} numgen random mod 100 < 10 drop",)))
    lossy = lab.run_calls(1)
    assert lossy.uac_returncode == 0, _log_tail(lossy.uac_log)
    netlab._run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "vpdrop"])

    def lossy_ended() -> bool:
        status, body = _http(ns, f"{base}/metrics")
        scrape["text"] = body
        return (status == 200
                and _total(_samples(body), "voipprobe_calls_ended_total") >= CALLS + 2)

    _wait_for("the lossy call in /metrics", lossy_ended, 15.0, interval=0.5)
    s = _samples(scrape["text"])
    assert _total(s, "voipprobe_rtp_lost_packets_total") > 0, scrape["text"]
    assert _total(s, "voipprobe_sla_violations_total", threshold="max_loss_ratio") >= 1
    records = _records(call_log)
    assert len(records) == CALLS + 2, records
    tshark = subprocess.run(
        ["tshark", "-r", str(lossy.capture), "-q", "-o", "rtp.heuristic_rtp:TRUE",
         "-z", "rtp,streams"], capture_output=True, text=True, timeout=60, check=True)
    theirs = {(t.src_endpoint, t.dst_endpoint, t.ssrc): t
              for t in parse_rtp_streams(tshark.stdout)}
    a_to_b = [d["stream"] for d in records[-1]["directions"] if d["direction"] == "a_to_b"]
    assert len(a_to_b) == 1 and a_to_b[0]["lost"] > 0, records[-1]["directions"]
    t = theirs[(a_to_b[0]["src"], a_to_b[0]["dst"], a_to_b[0]["ssrc"])]
    assert a_to_b[0]["lost"] == t.lost and a_to_b[0]["packets"] == t.packets
    assert "max_loss_ratio" in {v["threshold"] for v in records[-1]["sla"]["violations"]}

    # -- from a bad metric to the call: exemplars and /calls in a real browser ---------
    _calls_page_and_exemplars(ns, base, records, tmp_path)

    # -- SIGTERM while a call's media flows ---------------------------------------------
    result: dict[str, Any] = {}

    def one_call() -> None:
        try:
            result["run"] = lab.run_calls(1)
        except Exception as exc:  # reported by the assertions below
            result["error"] = exc

    caller = threading.Thread(target=one_call, daemon=True)
    caller.start()

    def call_started() -> bool:
        status, body = _http(ns, f"{base}/metrics")
        samples = _samples(body) if status == 200 else []
        return (_total(samples, "voipprobe_calls_started_total") >= CALLS + 3
                and _total(samples, "voipprobe_rtp_packets_total")
                > _total(s, "voipprobe_rtp_packets_total"))

    _wait_for("the fourth call and its media", call_started, 15.0, interval=0.3)
    time.sleep(1.0)  # media flowing (the playout lasts ~7 s)
    agent.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        rc = agent.wait(timeout=STOP_BUDGET_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"agent still running {STOP_BUDGET_S} s after SIGTERM: "
                    f"{_log_tail(agent_log)}")
    took = time.monotonic() - sent
    assert rc == 0, f"agent exited {rc} after SIGTERM: {_log_tail(agent_log)}"
    assert took < STOP_BUDGET_S
    caller.join(timeout=30)
    assert not caller.is_alive()
    assert "error" not in result, result
    records = _records(call_log)
    assert len(records) == CALLS + 3, records
    last = records[-1]
    assert last["kind"] == "call" and last["end_reason"] == "shutdown", last
    assert last["call_id"] not in {r["call_id"] for r in records[:-1]}


def _calls_page_and_exemplars(ns: str, base: str, records: list[dict[str, Any]],
                              workdir: Path) -> None:
    """The call histograms' exemplars name the logged calls; ``/calls`` rendered by
    headless Chromium shows every logged call, the violated ones first, with their
    reasons, and its screenshot paints exactly the violated rows in their colour."""
    logged = {r["call_id"] for r in records}
    violated = [r for r in records if r["sla"]["verdict"] == "violated"]
    assert len(violated) == 2, [r["sla"] for r in records]

    status, text = _http(ns, f"{base}/metrics", accept="application/openmetrics-text")
    assert status == 200
    refs = {s.exemplar.labels["call_id"]
            for fam in openmetrics_families(text) if fam.name == "voipprobe_call_mos"
            for s in fam.samples if s.exemplar is not None}
    assert refs and refs <= logged, (refs, logged)  # pseudonyms, as the log shows them

    dom = chromium.dump_dom(f"{base}/calls", netns=ns)
    assert f'data-calls="{len(records)}"' in dom, dom
    assert dom.count('<tr class="violated">') == 2 and dom.count('<tr class="met">') == 3
    rows = re.findall(r'<tr class="(\w+)"><td>[^<]*</td><td>([^<]*)</td>', dom)
    assert {cid for _, cid in rows} == logged
    assert [v for v, _ in rows] == ["violated", "violated", "met", "met", "met"]
    assert "media_dscp_compliance: 0.00 (min 0.95)" in dom, dom
    assert re.search(r"loss_ratio: 0\.\d+ \(max 0\.01\)", dom), dom

    png = chromium.screenshot(f"{base}/calls", workdir / "calls.png", netns=ns)
    image = chromium.read_png(png)
    assert chromium.colour_bands(image, VIOLATED_RGB) == 2, png
    assert chromium.colour_bands(image, (0xE8, 0xE8, 0xE8)) == 1  # the header row


def _same_as_analyze(live: list[dict[str, Any]], capture: Path, config: Path,
                     state: Path) -> None:
    """The live run and `analyze` of tcpdump's capture of the same interface give the
    same records, ``mos_min`` included (intervals lie on a grid of packet time, whatever
    the ring's batches). The two taps do not always share a kernel timestamp: a packet
    received on a veth whose skb carries none (the namespace crossing clears it) is
    stamped by each AF_PACKET socket as it delivers, tens of microseconds apart under
    load (seen: J 0.5326 vs 0.5170 ms). Tolerances: 1 ms on timings, 0.05 ms on jitter
    (the mirroring acceptance's), 0.01 on MOS."""
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", "--no-progress",
         "--config", str(config), str(capture)],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    hasher = Pseudonymiser("hash", load_or_create_key(state))  # the agent's own key
    offline = {r["call_id"]: r for r in (
        hasher.apply(o) for o in map(json.loads, proc.stdout.splitlines())
        if o["kind"] == "call" and o["call_id"] is not None)}
    assert sorted(offline) == sorted(r["call_id"] for r in live)
    for rec in live:
        off = offline[rec["call_id"]]
        for key in ("from", "to", "final_status", "end_reason", "codec"):
            assert rec[key] == off[key], (key, rec[key], off[key])
        for key in ("setup_delay_s", "answer_delay_s", "duration_s"):
            assert abs(rec[key] - off[key]) < 1e-3, (key, rec[key], off[key])
        assert len(rec["directions"]) == len(off["directions"])
        for a, b in zip(rec["directions"], off["directions"], strict=True):
            assert a["direction"] == b["direction"]
            for key in ("ssrc", "packets", "expected", "lost", "duplicates", "dscp"):
                assert a["stream"][key] == b["stream"][key], (key, a["stream"], b["stream"])
            assert abs(a["stream"]["jitter_ms"] - b["stream"]["jitter_ms"]) < 0.05
            assert abs(a["quality"]["mos_cq"] - b["quality"]["mos_cq"]) < 0.01
            lo, hi = a["quality"]["mos_min"], b["quality"]["mos_min"]
            assert (lo is None) == (hi is None), (lo, hi)
            assert lo is None or abs(lo - hi) < 0.01, (lo, hi)
            assert a["sla"]["verdict"] == b["sla"]["verdict"]


def _same_intervals_as_capture(live: Samples, capture: Path, config: Path) -> None:
    """The interval events the agent exported are those of the engine run over tcpdump's
    capture: as many rated intervals (the MOS histogram), the same interval MOS sum
    within 0.01 per interval."""
    from agent.calls.events import CallInterval
    from agent.capture.pcapfile import open_capture
    from agent.config import load_config
    from agent.engine import Engine, EngineConfig

    engine = Engine(EngineConfig(config=load_config(config)))
    events = []
    with open_capture(capture) as reader:
        for batch in reader:
            events += engine.feed(batch)
    events += engine.finish()
    intervals = [e for e in events if isinstance(e, CallInterval)]
    rated = [e.quality.mos_cq for e in intervals if e.quality is not None]
    assert rated, "no interval was rated: the calls are too short for the test's interval_s"
    assert _total(live, "voipprobe_interval_mos_count") == len(rated)
    assert abs(_total(live, "voipprobe_interval_mos_sum") - sum(rated)) < 0.01 * len(rated)
    # Intervals with a few packets (jitter/loss observations) are not compared: tcpdump
    # starts after and stops before the agent, so the capture's edges hold fewer packets.
