"""End to end: ``voipprobe run`` with a HEP listener (``capture.hep_listeners``) and
Kamailio's siptrace as the HEP sender, as an admin would set it up, in a private network
namespace (its own loopback: the fixed ports collide with nothing). Kamailio proxies three
sipp calls; the agent's call log has the three answered calls and /metrics counts the HEP
datagrams on the listener."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_hep_kamailio import CFG, MODULES

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
HEP_PORT, PROXY, UAS, UAC, EXPORTER = 9060, 15060, 15062, 15061, 19957


def _require() -> None:
    missing = [t for t in ("kamailio", "sipp", "ip") if shutil.which(t) is None
               and not Path(f"/usr/sbin/{t}").exists()]
    reason = ("not root" if os.geteuid() != 0 else
              f"missing: {', '.join(missing)}" if missing else
              None if (MODULES / "siptrace.so").exists() else "no Kamailio siptrace module")
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def netns() -> Iterator[str]:
    _require()
    name = f"vp-hep-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # d0: a quiet interface to capture on (no dummy module on this kernel)
        for cmd in (["link", "set", "lo", "up"],
                    ["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
                    ["link", "set", "d0", "up"], ["link", "set", "d1", "up"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _in(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int | None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return None


def test_agent_records_calls_kamailio_sends_as_hep(netns: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    cfg = tmp_path / "voipprobe.yaml"
    cfg.write_text(json.dumps({
        "capture": {"interfaces": ["d0"], "hep_listeners": [
            {"address": "127.0.0.1", "port": HEP_PORT, "allowed_senders": ["127.0.0.1/32"]}]},
        "exporter": {"listen": f"127.0.0.1:{EXPORTER}"},
        "call_log": {"target": str(log)}, "privacy": "clear", "state_dir": str(tmp_path)}))
    kcfg = tmp_path / "kamailio.cfg"
    kcfg.write_text(CFG.format(proxy=PROXY, modules=MODULES, hep=HEP_PORT, uas=UAS,
                               transport="", tcp_listen=""))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    agent = subprocess.Popen(_in(netns, sys.executable, "-m", "agent.cli", "run", "--config",
                                 str(cfg)), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=open(tmp_path / "agent.err", "wb"))  # noqa: SIM115
    others: list[subprocess.Popen[bytes]] = []
    try:
        others.append(subprocess.Popen(_in(netns, "kamailio", "-DD", "-E", "-f", str(kcfg),
                                           "-w", str(tmp_path), "-Y", str(tmp_path)), **quiet))
        others.append(subprocess.Popen(_in(netns, "sipp", "-sn", "uas", "-i", "127.0.0.1",
                                           "-p", str(UAS), "-m", "3", "-nostdin"),
                                       cwd=tmp_path, **quiet))
        time.sleep(2.0)  # the agent, Kamailio and the UAS are bound
        assert agent.poll() is None, (tmp_path / "agent.err").read_text()
        uac = subprocess.run(_in(netns, "sipp", "-sn", "uac", f"127.0.0.1:{PROXY}", "-i",
                                 "127.0.0.1", "-p", str(UAC), "-m", "3", "-l", "3", "-r", "3",
                                 "-d", "500", "-nostdin", "-timeout", "15"),
                             cwd=tmp_path, timeout=30, check=False, **quiet)
        assert uac.returncode == 0
        time.sleep(2.5)  # a metrics update (about once a second)
        scrape = subprocess.run(_in(netns, sys.executable, "-c",
                                    "import urllib.request,sys; sys.stdout.write(urllib.request"
                                    f".urlopen('http://127.0.0.1:{EXPORTER}/metrics').read()"
                                    ".decode())"), capture_output=True, text=True, timeout=20,
                                check=True).stdout
    finally:
        for p in reversed(others):
            _stop(p)
        code = _stop(agent)
    assert code == 0, (tmp_path / "agent.err").read_text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(scrape) for s in fam.samples}
    hep = samples[("voipprobe_capture_packets_total",
                   (("interface", f"hep:{HEP_PORT}"), ("site", "default")))]
    assert hep == 39  # 13 messages per call in and out of the proxy (3 x 13)
    assert samples[("voipprobe_capture_kernel_drops_total",
                    (("interface", f"hep:{HEP_PORT}"), ("site", "default")))] == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    calls = [r for r in records if r["call_id"] is not None]
    assert len(calls) == 3
    assert {r["final_status"] for r in calls} == {200}
    assert {r["end_reason"] for r in calls} == {"normal"}
