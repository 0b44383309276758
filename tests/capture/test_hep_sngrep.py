"""A real HEP sender: sngrep (Debian's, `-I capture -H udp:...`) reads a corpus capture
and sends its SIP as HEP v2 or v3. Received by `HepListener`, and captured by tcpdump on
loopback for `voipprobe analyze`: both give the signalling of analyze of the original."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from corpus_oracle import corpus_dir

from agent.calls.events import CallEnded
from agent.capture.hep_listener import HepListener
from agent.engine import Engine
from agent.sip.events import EndReason

CAPTURE = "wiki_SIP_CALL_RTP_G711.pcap"
SIP_FIELDS = ("call_id", "final_status", "invite_ts", "first_provisional_ts", "answer_ts",
              "setup_delay_s", "answer_delay_s", "transport", "from", "to")


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} not installed")
        pytest.skip(f"{tool} not installed")
    return path


def _sngrep(capture: Path, port: int, version: int, home: Path) -> subprocess.Popen[bytes]:
    (home / ".sngreprc").write_text(f"set eep.send.version {version}\n")
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "TERM": "dumb"}
    return subprocess.Popen([_need("sngrep"), "-N", "-q", "-I", str(capture), "-H",
                             f"udp:127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _analyze(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "--json",
                          "--no-progress", str(path)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def _signalling(calls: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(c[k] for k in SIP_FIELDS) for c in calls if c["call_id"] is not None)


@pytest.mark.parametrize("version", [2, 3])
def test_sngrep_hep_to_the_listener(version: int, tmp_path: Path) -> None:
    original = corpus_dir() / "pcaps" / CAPTURE
    *want, summary = _analyze(original)
    listener = HepListener("127.0.0.1", 0, ["127.0.0.1/32"])
    engine = Engine()
    got = []
    proc = _sngrep(original, listener.port, version, tmp_path)
    try:
        deadline = time.monotonic() + 20
        while listener.counters.datagrams < summary["route_sip_udp"] and \
                time.monotonic() < deadline:
            for b in listener.poll(0.2):
                got += [e.record.to_json() for e in engine.feed(b) if isinstance(e, CallEnded)]
    finally:
        proc.kill()
        proc.wait(10)
        listener.close()
    got += [e.record.to_json() for e in engine.finish(EndReason.CAPTURE_END)
            if isinstance(e, CallEnded)]
    hep = listener.hep
    assert getattr(hep, f"records_v{version}") == summary["route_sip_udp"] == 14
    assert hep.errors_v2 == hep.errors_v3 == 0
    assert _signalling(got) == _signalling(want)
    assert len(_signalling(got)) == 2


def test_sngrep_hep_captured_by_tcpdump_and_analyzed(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("tcpdump on loopback needs root")
    original = corpus_dir() / "pcaps" / CAPTURE
    *want, summary = _analyze(original)
    # a bound socket, so loopback answers no ICMP port-unreachable (sngrep's connected
    # socket would then fail every other send)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    pcap = tmp_path / "hep.pcap"
    dump = subprocess.Popen([_need("tcpdump"), "-i", "lo", "-U", "-w", str(pcap),
                             f"udp dst port {port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # tcpdump attaches its filter
        proc = _sngrep(original, port, 3, tmp_path)
        proc.wait(20)
        time.sleep(0.5)
    finally:
        dump.terminate()
        dump.wait(10)
        sink.close()
    # the capture's HEP goes to a non-default port: tell analyze with a config
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"capture:\n  hep_ports: [{port}]\n")
    out = subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "--json",
                          "--no-progress", "--config", str(cfg), str(pcap)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    *got, hep_summary = [json.loads(line) for line in out.splitlines()]
    assert hep_summary["hep_records_v3"] == summary["route_sip_udp"] == 14
    assert hep_summary["route_sip_messages"] == summary["route_sip_messages"]
    assert _signalling(got) == _signalling(want)
