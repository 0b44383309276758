#!/usr/bin/env python3
"""Live flood benchmark (issue 12 item 6): the agent on the lab's gateway under a flood.

    sudo .venv/bin/python bench/flood_live.py                    # 30 s at top speed
    sudo .venv/bin/python bench/flood_live.py --seconds 20 --pps 100000 --json

The caller - gateway - callee lab of tests/netlab.py (namespaces A, R, B; 198.18.0.0/15
only). ``voipprobe run`` captures on R's interface toward B (``rb``), as on a gateway.
tcpreplay in B replays a prepared pcap on ``b0`` (so every frame reaches ``rb``),
looping for ``--seconds``, at ``--pps`` or ``--topspeed``. The pcap (`build_flood`):

- random UDP, random ports on both sides: more than 200,000 distinct flows per loop, a
  third of them RTP-looking (version 2 header, random PT/SSRC/sequence);
- an INVITE scanner: INVITEs with distinct Call-IDs (and SDP), never answered;
- garbage SIP over TCP: segments of random SIP-looking bytes to port 5060, no handshake.

Every flood frame comes from 198.18.9.0/24 (not a lab subnet) to R's address on ``rb``,
and R drops that source in its prerouting hook (after AF_PACKET has seen it), so R's
stack answers nothing. While the flood runs sipp places real calls A -> B through R,
one at a time (netlab's ``run_calls``); more calls follow once the flood ended. A call
is "during" the flood when its INVITE's packet time precedes the flood's end.

Every ``--scrape-s`` seconds the agent's ``/metrics`` is read and a line printed:
offered pps (tcpreplay's rate over the interval: frames the capture counted, kernel
drops included), processed pps (``voipprobe_packets_total``), kernel drops, shed
packets (``voipprobe_overload_shed_packets_total``), the agent's CPU % (utime+stime of
/proc/PID/stat) and RSS. At the end, each sipp call is classified: recorded (its record,
with status and loss), or lost to overload (no record, and the kernel dropped or the agent
shed packets during its lifetime: counted), or *missing* (no record and nothing counted:
a bug). SIGTERM is then sent and the time to exit measured.

`run_flood` returns all of it as a dict; tests/test_agent_flood_live.py runs a short
version and asserts on it. Needs root and the lab's tools (netlab.TOOLS + tcpreplay).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import netlab  # noqa: E402

FLOOD_NET = "198.18.9."  # source of every flood frame (dropped by R after capture)
AGENT_PORT = 9958
FLOWS_PER_LOOP = 220_000  # random-UDP frames in the pcap: one flow each (ports random)
INVITES_PER_LOOP = 20_000
TCP_PER_LOOP = 20_000
METRIC_RE = re.compile(r'^(voipprobe_[a-z_]+)(?:\{([^}]*)\})?\s+([0-9.eE+-]+)$')
SIPP_CALL_ID = re.compile(r"@198\.18\.7\.1$")


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return int(~s & 0xFFFF)


def _ipv4(src: str, dst: str, proto: int, l4: bytes, ident: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, 0, 64, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:] + l4


def _udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _tcp(sport: int, dport: int, seq: int, payload: bytes) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 5 << 4, 0x18, 65535, 0, 0) + payload


def _invite(rng: random.Random, i: int, src: str, dst: str, sport: int) -> bytes:
    body = (f"v=0\r\no=- {i} 1 IN IP4 {src}\r\ns=-\r\nc=IN IP4 {src}\r\nt=0 0\r\n"
            f"m=audio {rng.randrange(10000, 60000, 2)} RTP/AVP 0 8\r\n").encode()
    head = (f"INVITE sip:{rng.randrange(10**9)}@{dst} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src}:{sport};branch=z9hG4bK{rng.getrandbits(48):x}\r\n"
            f"From: <sip:scan@{src}>;tag={rng.getrandbits(32):x}\r\n"
            f"To: <sip:{i}@{dst}>\r\nCall-ID: scan-{i}-{rng.getrandbits(40):x}@{src}\r\n"
            f"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def _garbage_sip(rng: random.Random) -> bytes:
    first = rng.choice((b"INVITE sip:x SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b"REGISTER ",
                        b"OPTIONS sip:a@b SIP/2.0\r\nVia: "))
    return first + rng.randbytes(rng.randrange(0, 600))


def build_flood(path: Path, dst_mac: bytes, src_mac: bytes, dst_ip: str, seed: int = 12
                ) -> int:
    """Write the flood pcap (classic, Ethernet); returns its frame count."""
    rng = random.Random(seed)
    kinds = ([0] * FLOWS_PER_LOOP) + ([1] * INVITES_PER_LOOP) + ([2] * TCP_PER_LOOP)
    rng.shuffle(kinds)
    eth = dst_mac + src_mac + b"\x08\x00"
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, kind in enumerate(kinds):
            src = f"{FLOOD_NET}{1 + i % 250}"
            if kind == 0:
                if i % 3 == 0:  # RTP-looking: version 2, random PT, sequence, SSRC
                    payload = bytes([0x80, rng.randrange(0, 128)]) + rng.randbytes(10) + \
                        rng.randbytes(rng.randrange(0, 200))
                else:
                    payload = rng.randbytes(rng.randrange(0, 200))
                ip = _ipv4(src, dst_ip, 17, _udp(rng.randrange(1024, 65536),
                                                 rng.randrange(1024, 65536), payload), i & 0xFFFF)
            elif kind == 1:
                sport = rng.randrange(1024, 65536)
                ip = _ipv4(src, dst_ip, 17, _udp(sport, 5060, _invite(rng, i, src, dst_ip, sport)),
                           i & 0xFFFF)
            else:
                ip = _ipv4(src, dst_ip, 6, _tcp(rng.randrange(1024, 65536), 5060,
                                                rng.getrandbits(32), _garbage_sip(rng)),
                           i & 0xFFFF)
            frame = eth + ip
            f.write(struct.pack("<IIII", i // 1_000_000, i % 1_000_000, len(frame), len(frame)))
            f.write(frame)
    return len(kinds)


def _curl(ns: str, url: str, timeout: float = 4.0) -> str | None:
    proc = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-m", str(timeout), url],
                          capture_output=True, text=True, timeout=timeout + 10, check=False)
    return proc.stdout if proc.returncode == 0 else None


def parse_metrics(text: str) -> dict[str, float]:
    """Totals by family name (labels summed)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = METRIC_RE.match(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Scrape:
    t: float  # seconds since the flood started
    captured: float  # voipprobe_capture_packets_total (kernel drops included)
    processed: float  # voipprobe_packets_total
    drops: float
    shed: float
    cpu_s: float
    rss_mb: float
    ok: bool = True  # /metrics answered


@dataclass
class CallResult:
    call_id: str
    invite_ts: float
    final_status: int | None = None
    end_reason: str | None = None
    lost: int | None = None  # RTP packets lost, all directions
    packets: int | None = None
    capture_lossy: bool | None = None


@dataclass
class FloodResult:
    seconds: float
    scrapes: list[Scrape] = field(default_factory=list)
    during: list[CallResult] = field(default_factory=list)
    after: list[CallResult] = field(default_factory=list)
    sipp_during: int = 0  # calls sipp placed during the flood
    drops_total: float = 0.0
    shed_total: float = 0.0
    peak_rss_mb: float = 0.0
    stop_s: float | None = None
    after_latency_s: float | None = None  # sipp's last call done -> its records written
    exit_code: int | None = None
    agent_log: str = ""

    def rows(self) -> list[dict[str, float]]:
        out = []
        for a, b in zip(self.scrapes, self.scrapes[1:], strict=False):
            dt = max(b.t - a.t, 1e-9)
            out.append({"t": round(b.t, 1), "dt": round(dt, 2),
                        "offered_pps": round((b.captured - a.captured) / dt),
                        "processed_pps": round((b.processed - a.processed) / dt),
                        "kernel_drops": b.drops - a.drops, "shed": b.shed - a.shed,
                        "cpu_pct": round(100 * (b.cpu_s - a.cpu_s) / dt, 1),
                        "rss_mb": round(b.rss_mb, 1)})
        return out


def _calls(records: list[dict[str, Any]], after: float = 0.0) -> dict[str, CallResult]:
    """sipp's calls (Call-ID ``N-PID@198.18.7.1``) whose INVITE came after ``after``."""
    out = {}
    for r in records:
        cid = r.get("call_id") or ""
        if not SIPP_CALL_ID.search(cid) or float(r.get("invite_ts") or 0.0) <= after:
            continue
        streams = [d["stream"] for d in r.get("directions", []) if d.get("stream")]
        out[cid] = CallResult(cid, float(r["invite_ts"]), r.get("final_status"),
                              r.get("end_reason"),
                              sum(int(s.get("lost", 0)) for s in streams),
                              sum(int(s.get("packets", 0)) for s in streams),
                              bool(r.get("capture_lossy")))
    return out


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def run_flood(workdir: Path, seconds: float = 30.0, pps: int | None = None,
              scrape_s: float = 5.0, calls_after: int = 1, tag: str = "fl",
              out: Any = None) -> FloodResult:
    """The whole run (see the module docstring); ``out``: a stream for progress lines."""
    netlab.require_lab()
    workdir.mkdir(parents=True, exist_ok=True)
    res = FloodResult(seconds)

    def say(text: str) -> None:
        if out is not None:
            print(text, file=out, flush=True)

    with netlab.Lab(tag, workdir / "lab") as lab:
        ns = lab.ns_r
        netlab._run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input_text=netlab.nft_ruleset(
            "vpflood", "guard", "prerouting", (f"ip saddr {FLOOD_NET}0/24 drop",)))
        mac = {dev: bytes.fromhex(netlab._run(["ip", "netns", "exec", n, "cat",
                                               f"/sys/class/net/{dev}/address"]).strip()
                                  .replace(":", ""))
               for n, dev in ((lab.ns_r, "rb"), (lab.ns_b, "b0"))}
        pcap = workdir / "flood.pcap"
        t0 = time.monotonic()
        frames = build_flood(pcap, mac["rb"], mac["b0"], netlab.R_ADDR_B)
        say(f"flood pcap: {frames} frames in {time.monotonic() - t0:.1f} s")
        state = workdir / "state"
        state.mkdir(exist_ok=True)
        call_log = workdir / "calls.jsonl"
        config = workdir / "voipprobe.yaml"
        config.write_text(f"state_dir: {state}\nprivacy: clear\n"
                          "calls:\n  media_idle_timeout_s: 3.0\n", encoding="utf-8")
        agent_log = workdir / "agent.log"
        agent = lab._spawn(ns, [sys.executable, "-m", "agent.cli", "run", "--config",
                                str(config), "-i", "rb", "--listen",
                                f"127.0.0.1:{AGENT_PORT}", "--call-log", str(call_log)],
                           agent_log, cwd=REPO)
        base = f"http://127.0.0.1:{AGENT_PORT}"
        deadline = time.monotonic() + 30
        while _curl(ns, f"{base}/health") is None:
            if agent.poll() is not None or time.monotonic() > deadline:
                raise netlab.LabError(f"agent did not start: {agent_log.read_text()[-2000:]}")
            time.sleep(0.3)

        def scrape(t: float) -> Scrape:
            text = _curl(ns, f"{base}/metrics")
            m = parse_metrics(text or "")
            return Scrape(t, m.get("voipprobe_capture_packets_total", 0.0),
                          m.get("voipprobe_packets_total", 0.0),
                          m.get("voipprobe_capture_kernel_drops_total", 0.0),
                          m.get("voipprobe_overload_shed_packets_total", 0.0),
                          _proc_cpu_s(agent.pid), _rss_mb(agent.pid), text is not None)

        # sipp during the flood: one call at a time, captured on R's loopback (nothing:
        # the agent is the capture that matters, and a tcpdump of the flood would be GBs)
        during_calls = max(1, int(seconds // (netlab.CALL_SECONDS + 1.5)))
        sipp: dict[str, Any] = {}

        def place() -> None:
            try:
                sipp["run"] = lab.run_calls(during_calls, capture_interface="lo")
            except netlab.LabError as exc:  # a call stuck under the flood: counted below
                sipp["error"] = str(exc)

        rate = ["--topspeed"] if pps is None else [f"--pps={pps}"]
        replay = lab._spawn(lab.ns_b, ["tcpreplay", "-q", "-i", "b0", *rate, "--loop=0",
                                       f"--duration={int(seconds)}", str(pcap)],
                            workdir / "tcpreplay.log")
        start = time.monotonic()
        res.scrapes.append(scrape(0.0))
        caller = threading.Thread(target=place, daemon=True)
        caller.start()
        next_at = start + scrape_s
        while replay.poll() is None and time.monotonic() < start + seconds + 10:
            time.sleep(max(0.0, min(next_at, start + seconds + 10) - time.monotonic()))
            if time.monotonic() >= next_at:
                res.scrapes.append(scrape(time.monotonic() - start))
                r = res.rows()[-1]
                say("t={t:5.1f}s offered {offered_pps:>8} pps processed {processed_pps:>8} pps "
                    "kernel drops {kernel_drops:>9.0f} shed {shed:>8.0f} cpu {cpu_pct:5.1f}% "
                    "rss {rss_mb:6.1f} MB".format(**r))
                next_at += scrape_s
        caller.join(timeout=60 + during_calls * 15)
        flood_end = time.time()
        res.sipp_during = during_calls
        res.scrapes.append(scrape(time.monotonic() - start))
        # after the flood: new calls must be recorded correctly within seconds
        after_run = lab.run_calls(calls_after, capture_interface="lo")
        t_after = time.monotonic()
        while time.monotonic() < t_after + 30:
            if len(_calls(_records(call_log), after=flood_end)) >= calls_after:
                res.after_latency_s = time.monotonic() - t_after
                break
            time.sleep(0.2)
        if after_run.uac_returncode != 0:
            say(f"sipp after the flood exited {after_run.uac_returncode}")
        last = scrape(time.monotonic() - start)
        res.drops_total, res.shed_total = last.drops, last.shed
        res.peak_rss_mb = max(s.rss_mb for s in [*res.scrapes, last])
        t_stop = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        try:
            res.exit_code = agent.wait(timeout=30)
            res.stop_s = time.monotonic() - t_stop
        except subprocess.TimeoutExpired:
            res.stop_s = None
        # every call is in the log now (SIGTERM writes the active ones)
        records = _records(call_log)
        res.after = list(_calls(records, after=flood_end).values())
        res.during = [c for c in _calls(records).values() if c.invite_ts <= flood_end]
        res.agent_log = agent_log.read_text(errors="replace")[-3000:]
        if "error" in sipp:
            say(f"sipp during the flood: {sipp['error']}")
    return res


def summary(res: FloodResult) -> dict[str, Any]:
    recorded = len(res.during)
    counted = res.drops_total + res.shed_total > 0
    missing = max(0, res.sipp_during - recorded)
    return {
        "rows": res.rows(), "peak_rss_mb": round(res.peak_rss_mb, 1),
        "kernel_drops": res.drops_total, "shed": res.shed_total,
        "sipp_during": res.sipp_during, "recorded_during": recorded,
        "lost_to_overload": missing if counted else 0,
        "silently_missing": 0 if counted else missing,
        "during": [vars(c) for c in res.during], "after": [vars(c) for c in res.after],
        "stop_s": res.stop_s, "exit_code": res.exit_code,
        "after_latency_s": res.after_latency_s,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--pps", type=int, default=None, help="offered rate (default: top speed)")
    ap.add_argument("--scrape-s", type=float, default=5.0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp") / f"flood-live-{os.getpid()}")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = run_flood(args.workdir, args.seconds, args.pps, args.scrape_s, out=sys.stderr)
    s = summary(res)
    if args.json:
        print(json.dumps(s, indent=1))
    else:
        print(f"peak RSS {s['peak_rss_mb']} MB, kernel drops {s['kernel_drops']:.0f}, shed "
              f"{s['shed']:.0f}; sipp calls during the flood {s['sipp_during']}: recorded "
              f"{s['recorded_during']}, lost to overload (counted) {s['lost_to_overload']}, "
              f"silently missing {s['silently_missing']}")
        for c in res.during + res.after:
            print(f"  {c.call_id}: status {c.final_status} {c.end_reason} packets {c.packets} "
                  f"lost {c.lost} capture_lossy {c.capture_lossy}")
        print(f"calls after the flood recorded {s['after_latency_s']} s after sipp ended")
        print(f"SIGTERM: exit {s['exit_code']} in {s['stop_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
