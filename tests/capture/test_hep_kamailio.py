"""A real HEP sender in its real role: Kamailio (Debian's 5.x, module siptrace with
``hep_mode_on``, ``trace_mode`` 1: every message in and out) proxies three sipp calls on
loopback and mirrors the signalling as HEP v3 over UDP to `HepListener` or over TCP to
`HepTcpListener`; the engine records the three calls Kamailio proxied, answered and ended
by BYE."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from agent.calls.events import CallEnded
from agent.capture.hep_listener import HepListener, HepTcpListener
from agent.engine import Engine
from agent.sip.events import EndReason

MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")

CFG = """#!KAMAILIO
debug=1
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:{proxy}
{tcp_listen}
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "siptrace.so"
modparam("siptrace", "duplicate_uri", "sip:127.0.0.1:{hep}{transport}")
modparam("siptrace", "hep_mode_on", 1)
modparam("siptrace", "hep_version", 3)
modparam("siptrace", "hep_capture_id", 1234)
modparam("siptrace", "trace_on", 1)
modparam("siptrace", "trace_to_database", 0)
modparam("siptrace", "trace_mode", 1)
request_route {{
    if (is_method("INVITE")) {{ record_route(); }}
    $du = "sip:127.0.0.1:{uas}";
    t_relay();
}}
"""


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                  else None)
    if path is None or (name == "kamailio" and not (MODULES / "siptrace.so").exists()):
        if os.environ.get("CI"):
            pytest.fail(f"{name} not installed")
        pytest.skip(f"{name} not installed")
    return path


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_kamailio_siptrace_calls_are_recorded(transport: str, tmp_path: Path) -> None:
    kamailio, sipp = _tool("kamailio"), _tool("sipp")
    listener: HepListener | HepTcpListener = (
        HepListener if transport == "udp" else HepTcpListener)("127.0.0.1", 0, ["127.0.0.1/32"])
    proxy, uas_port, uac_port = _free_ports(3)
    cfg = tmp_path / "kamailio.cfg"
    tcp = transport == "tcp"  # HEP over TCP needs a TCP socket of Kamailio's own
    cfg.write_text(CFG.format(proxy=proxy, modules=MODULES, hep=listener.port, uas=uas_port,
                              transport=";transport=tcp" if tcp else "",
                              tcp_listen=f"listen=tcp:127.0.0.1:{proxy}" if tcp else ""))
    procs: list[subprocess.Popen[bytes]] = []
    engine = Engine()
    records = []
    try:
        procs.append(subprocess.Popen(  # -DD: no daemon, the test owns the process
            [kamailio, "-DD", "-E", "-f", str(cfg), "-w", str(tmp_path), "-Y", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-m", "3",
             "-nostdin"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # both bound
        uac = subprocess.Popen(
            [sipp, "-sn", "uac", f"127.0.0.1:{proxy}", "-i", "127.0.0.1", "-p", str(uac_port),
             "-m", "3", "-l", "3", "-r", "3", "-d", "500", "-nostdin", "-timeout", "15"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(uac)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for b in listener.poll(0.2):
                records += [e.record for e in engine.feed(b) if isinstance(e, CallEnded)]
            if uac.poll() is not None and listener.poll(0.5) == []:
                break
        assert uac.returncode == 0, "sipp's calls through Kamailio failed"
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        listener.close()
    records += [e.record for e in engine.finish(EndReason.CAPTURE_END)
                if isinstance(e, CallEnded)]
    hep = listener.hep
    assert hep.records_v3 > 0 and hep.errors_v3 == 0 and listener.counters.denied == 0
    assert (listener.counters.connections > 0) == (transport == "tcp")
    calls = [r for r in records if r.call_id is not None]
    assert len(calls) == 3
    assert {r.final_status for r in calls} == {200}
    assert {str(r.end_reason) for r in calls} == {"normal"}  # ended by BYE
    for r in calls:
        assert r.duration_s is not None and 0.45 < r.duration_s < 2.0  # sipp -d 500 ms
        assert r.setup_delay_s is not None and r.setup_delay_s < 1.0
