#!/usr/bin/env python3
"""CPU cost of the live agent capturing a replayed G.711 workload at a fixed rate.

    sudo python3 bench/agent_bench.py                 # 300,000 packets at 10,000 packets/s
    sudo python3 bench/agent_bench.py --pps 20000 --packets 400000 --json
    sudo python3 bench/agent_bench.py --pps 100000 --calls 1000 --packets 1000000  # issue 11

A veth pair with unique names (198.18.201.1/30 and .2, RFC 2544 space, IPv6 off) is
created in the root namespace; ``voipprobe run -i <end B>`` captures on one end (a
temporary config, state in a temporary directory, call log to /dev/null, exporter on a
free loopback port) while ``tcpreplay --pps=RATE`` (or, without tcpreplay, a paced
AF_PACKET sender in this script) replays ``bench/gen_workload.py``'s G.711 capture
(100 concurrent calls, both directions: 10,000 packets/s at 20 ms ptime; addresses in
198.18.0.0/15), merged in time order with its SIP workload of ``--sip-rate`` new calls
per second of the replay (INVITE to BYE, 486/503/487 among them, a little media each),
onto end A. Every SIP call must come out as a record: the call log is read after the
agent's stop, and its signalled records are counted and their final statuses compared
with the generator's truth. The agent's CPU time is utime+stime of /proc/<pid>/stat read
just before the replay starts and once the agent has caught up after it; packets
captured and kernel drops come from its /metrics. Root is needed (veth, AF_PACKET).
Every wait is bounded, and the agent and the veth pair are always removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ADDR_A = "198.18.201.1/30"
ADDR_B = "198.18.201.2/30"
CLK_TCK = os.sysconf("SC_CLK_TCK")
METRIC_RE = re.compile(r'^(voipprobe_[a-z_]+)\{([^}]*)\}\s+([0-9.eE+-]+)$')


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=20)


@contextlib.contextmanager
def veth_pair(tag: str) -> Iterator[tuple[str, str]]:
    """A veth pair ``vb<tag>a`` <-> ``vb<tag>b`` with IPv6 off; always deleted."""
    a, b = f"vb{tag}a", f"vb{tag}b"
    sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
    try:
        for name, addr in ((a, ADDR_A), (b, ADDR_B)):
            with contextlib.suppress(OSError):
                Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")
            sh("ip", "addr", "add", addr, "dev", name)
            sh("ip", "link", "set", name, "up")
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True, timeout=20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included) in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def scrape(port: int) -> dict[tuple[str, str], float]:
    """``{(metric name, label text): value}`` of the agent's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = METRIC_RE.match(line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def metric(samples: dict[tuple[str, str], float], name: str, label: str = "") -> float:
    return sum(v for (n, lab), v in samples.items() if n == name and label in lab)


@contextlib.contextmanager
def agent(iface: str, port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``voipprobe run`` on ``iface`` (call log ``workdir/calls.jsonl``); waits for
    /health, always stopped at the end."""
    cfg = workdir / "config.yaml"
    cfg.write_text(f"state_dir: {workdir / 'state'}\nprivacy: hash\n")
    log = (workdir / "agent.stderr").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(cfg), "-i", iface,
         "--listen", f"127.0.0.1:{port}", "--call-log", str(workdir / "calls.jsonl")],
        cwd=HERE.parent, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited {proc.returncode}: "
                                   f"{(workdir / 'agent.stderr').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("agent did not answer /health within 30 s")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()


def _records(path: Path) -> tuple[bytes, list[tuple[int, int, int]]]:
    """A classic little-endian pcap's bytes and, per record, (time µs, start, length)."""
    data = path.read_bytes()
    out, off = [], 24
    while off + 16 <= len(data):
        sec, usec, incl = struct.unpack_from("<III", data, off)
        out.append((sec * 1_000_000 + usec, off, 16 + incl))
        off += 16 + incl
    return data, out


def merged_workload(calls: int, packets: int, pps: int, sip_rate: float
                    ) -> tuple[Path, dict[str, Any] | None]:
    """The G.711 workload, and with ``sip_rate`` > 0 it merged in time order with a SIP
    workload of that many new calls per second of the replay; (file, SIP truth)."""
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    g711 = out_dir / f"workload-{calls}c-{packets}.pcap"
    if not g711.exists():
        subprocess.run([sys.executable, str(HERE / "gen_workload.py"), "--calls", str(calls),
                        "--packets", str(packets), "--out", str(g711)],
                       check=True, capture_output=True, timeout=120)
    if sip_rate <= 0:
        return g711, None
    # the capture's time runs at calls * 100 packets/s; the replay's at pps
    speed = pps / (calls * 100)
    n_sip = max(1, round(sip_rate * packets / pps))
    stem = out_dir / f"workload-{calls}c-{packets}-sip{n_sip}at{sip_rate / speed:g}"
    path, truth_path = stem.with_suffix(".pcap"), stem.with_suffix(".json")
    if not (path.exists() and truth_path.exists()):
        sip = stem.with_name(stem.name + "-sip.pcap")
        subprocess.run([sys.executable, str(HERE / "gen_workload.py"), "--sip",
                        "--calls", str(n_sip), "--rate", f"{sip_rate / speed:g}",
                        "--out", str(sip), "--truth", str(truth_path)],
                       check=True, capture_output=True, timeout=120)
        (a, ra), (b, rb) = _records(g711), _records(sip)
        order = sorted([(t, 0, k) for k, (t, _, _) in enumerate(ra)]
                       + [(t, 1, k) for k, (t, _, _) in enumerate(rb)])
        srcs, recs = (a, b), (ra, rb)
        with open(path, "wb") as f:
            f.write(a[:24])
            for _, which, k in order:
                _, start, n = recs[which][k]
                f.write(srcs[which][start:start + n])
        sip.unlink()
    return path, json.loads(truth_path.read_text())


def sip_outcome(call_log: Path, truth: dict[str, Any]) -> dict[str, object]:
    """The SIP calls of the truth against the signalled records of the call log: how
    many are there, and whether their final statuses are the truth's."""
    records = [json.loads(line) for line in call_log.read_text().splitlines() if line.strip()]
    signalled = [r for r in records if r.get("kind") == "call" and r.get("call_id")]
    got: dict[str, int] = {}
    for r in signalled:
        got[str(r.get("final_status"))] = got.get(str(r.get("final_status")), 0) + 1
    want = {k: v for k, v in truth["statuses"].items() if v}
    return {"sip_calls": truth["calls"], "sip_calls_recorded": len(signalled),
            "sip_statuses_right": got == want, "records_written": len(records)}


def read_pcap_frames(path: Path) -> list[bytes]:
    """Frames of a classic little-endian pcap (what gen_workload writes)."""
    data = path.read_bytes()
    frames, off = [], 24
    while off + 16 <= len(data):
        incl = int.from_bytes(data[off + 8:off + 12], "little")
        frames.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return frames


def paced_send(iface: str, pcap: Path, pps: int, max_s: float) -> int:
    """Fallback for tcpreplay: send the frames on ``iface`` at ``pps``; returns the count."""
    frames = read_pcap_frames(pcap)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    start = time.monotonic()
    sent = 0
    try:
        for i, frame in enumerate(frames):
            due = start + i / pps
            now = time.monotonic()
            if now - start > max_s:
                break
            if due > now:
                time.sleep(due - now)
            s.send(frame)
            sent += 1
    finally:
        s.close()
    return sent


def replay(iface: str, pcap: Path, pps: int, max_s: float) -> str:
    tcpreplay = shutil.which("tcpreplay")
    if tcpreplay:
        subprocess.run([tcpreplay, "-q", f"--pps={pps}", "-i", iface, str(pcap)],
                       check=True, capture_output=True, timeout=max_s)
        return "tcpreplay"
    paced_send(iface, pcap, pps, max_s)
    return "paced AF_PACKET sender (tcpreplay not installed)"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "kernel": os.uname().release}


def sysfs(iface: str, counter: str) -> int:
    return int(Path(f"/sys/class/net/{iface}/statistics/{counter}").read_text())


def run(pps: int, packets: int, calls: int, sip_rate: float) -> dict[str, object]:
    pcap, truth = merged_workload(calls, packets, pps, sip_rate)
    max_s = packets / pps * 1.5 + 30
    tag = f"{os.getpid() % 100000}"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="vp-agent-bench-") as tmp, \
            veth_pair(tag) as (end_a, end_b), agent(end_b, port, Path(tmp)) as proc:
        time.sleep(1.5)  # let the ring settle and the first metrics update happen
        base = scrape(port)
        cap0 = metric(base, "voipprobe_capture_packets_total", f'interface="{end_b}"')
        tx0 = sysfs(end_a, "tx_packets")
        idle0 = cpu_seconds(proc.pid)
        time.sleep(3.0)  # idle baseline: the loop polling an idle ring
        idle_cpu = cpu_seconds(proc.pid) - idle0
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        sender = replay(end_a, pcap, pps, max_s)
        t_replay = time.monotonic() - t0
        sent = sysfs(end_a, "tx_packets") - tx0
        # Caught up: wait until the exported capture count stops moving (bounded).
        captured, deadline, last = 0.0, time.monotonic() + 10, -1.0
        while time.monotonic() < deadline:
            time.sleep(1.2)  # metrics are updated about once a second
            s = scrape(port)
            captured = metric(s, "voipprobe_capture_packets_total",
                              f'interface="{end_b}"') - cap0
            if captured == last:
                break
            last = captured
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        drops = metric(s, "voipprobe_capture_kernel_drops_total", f'interface="{end_b}"')
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            engine_packets = json.loads(r.read().decode() or "{}").get("packets", -1)
        hwm_kb = status_kb(proc.pid, "VmHWM")
        alive = proc.poll() is None
        t_stop = time.monotonic()
        with contextlib.suppress(OSError, subprocess.SubprocessError):  # the stop: records
            proc.terminate()
            proc.wait(timeout=30)
        stop_s = time.monotonic() - t_stop
        calls_out = sip_outcome(Path(tmp) / "calls.jsonl", truth) if truth else {}
    cpu = cpu1 - cpu0
    return {
        "sender": sender, "rate_pps": pps, "workload": str(pcap.relative_to(HERE.parent)),
        "packets_sent": sent, "packets_captured": int(captured),
        "kernel_drops": int(drops), "engine_packets": engine_packets,
        "replay_s": round(t_replay, 2), "window_s": round(t1 - t0, 2),
        "agent_cpu_s": round(cpu, 3),
        "cpu_s_per_million_packets": round(cpu / max(sent, 1) * 1e6, 3),
        "pct_of_one_core_at_rate": round(100 * cpu / max(t_replay, 1e-9), 2),
        "idle_pct_of_one_core": round(100 * idle_cpu / 3.0, 2),
        "peak_rss_mb": round(hwm_kb / 1024, 1), "agent_alive": alive,
        "stop_s": round(stop_s, 2), "exit_code": proc.returncode, **calls_out, **machine(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pps", type=int, default=10_000, help="replay rate, packets/s")
    ap.add_argument("--packets", type=int, default=300_000, help="packets in the workload")
    ap.add_argument("--calls", type=int, default=100, help="concurrent G.711 calls")
    ap.add_argument("--sip-rate", type=float, default=20.0,
                    help="new SIP calls per second of the replay, merged in (0: none)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("agent_bench: needs root (veth pair, AF_PACKET)", file=sys.stderr)
        return 2
    if not 1 <= args.packets / args.pps <= 300:
        ap.error("--packets / --pps must be between 1 and 300 seconds")
    res = run(args.pps, args.packets, args.calls, args.sip_rate)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        width = max(len(k) for k in res)
        for k, v in res.items():
            print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
