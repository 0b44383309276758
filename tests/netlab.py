"""A caller - gateway - callee network on one machine, with real SIP user agents (sipp).

Shape (TESTING.md)::

    A (caller)            R (gateway)                   B (callee)
    a0 198.18.7.1/24 ---- ra 198.18.7.254  rb 198.18.8.254 ---- b0 198.18.8.2/24
    sipp uac_pcap         nftables forward chain         sipp uas (-rtp_echo)
                          tcpdump -i rb (the capture)

Only addresses of 198.18.0.0/15 (RFC 2544) are used. Namespaces are named after the
test run (pid) and a per-lab tag, veths are created directly inside them (so their short
names cannot collide with anything in the root namespace), and teardown always kills the
processes this module started and deletes the namespaces.

What the user agents do (sipp 3.6, ``sipp -sd uac_pcap``):

* A sends INVITE (offer: PCMA/8000 pt 8 + telephone-event pt 101) from 198.18.7.1:5061
  to 198.18.8.2:5060; B answers 180 then 200 OK with SDP; A sends ACK, then plays
  ``pcap/g711a.pcap`` (236 RTP packets, PCMA, 30 ms / 240 samples each, ~7.05 s, one SSRC)
  from its media port to B's media port, pauses 8 s from the start of the playout, plays
  ``pcap/dtmf_2833_1.pcap`` (10 RFC 2833 packets of another SSRC, the last 3 are the
  redundant end-of-event copies), pauses 1 s, sends BYE; B answers 200 OK.
* B runs with ``-rtp_echo``: every RTP packet arriving on its media port (``-mp``, 6000)
  is sent back unchanged to its source, so the media crosses the gateway in both
  directions, the B->A stream with the same SSRC and sequence numbers as the A->B one.
* The built-in ``uas`` scenario answers ``m=audio ... RTP/AVP 0`` (PCMU), a codec the
  offer did not contain, while the caller sends PCMA: :data:`UAS_SCENARIO` is the built-in
  scenario with a valid answer (PCMA pt 8 + telephone-event pt 101), nothing else changed.

The capture is taken on R's interface toward B (``rb``): SIP and media of both directions
cross that link, each packet once. Packets A->B are seen as they leave R (after the
forward chain: re-marked or dropped by it), packets B->A as they arrive at R (before it).

DSCP: sipp sends everything with DSCP 0, so by default the endpoints mark their own traffic
as real phones do (:data:`ENDPOINT_MARKING`, nftables in A's and B's output hook: SIP CS3,
media EF). Impairments belong in the gateway's forward chain (``gateway_rules``): a drop
rule on a sender's own output hook makes ``sendto()`` fail and sipp then stops its RTP.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SIPP_PCAP_DIR = Path("/usr/share/sip-tester")
TOOLS = {"ip": "iproute2", "nft": "nftables", "tcpdump": "tcpdump", "sipp": "sip-tester",
         "tshark": "tshark"}

A_ADDR = "198.18.7.1"
R_ADDR_A = "198.18.7.254"
R_ADDR_B = "198.18.8.254"
B_ADDR = "198.18.8.2"
R_ADDR_P = "198.18.9.254"  # R's side of the link to a probe that is not on the path
P_ADDR = "198.18.9.2"
A_SIP_PORT = 5061
B_SIP_PORT = 5060
B_MEDIA_PORT = 6000

#: nftables rule matching the media (every UDP packet that is not SIP).
MEDIA = "udp sport != 5060-5061 udp dport != 5060-5061"
#: nftables rule matching the SIP signalling.
SIGNALLING_SPORT = "udp sport 5060-5061"
SIGNALLING_DPORT = "udp dport 5060-5061"

#: Output-hook rules in A and B: mark SIP CS3 (24) and media EF (46), as phones do.
ENDPOINT_MARKING: tuple[str, ...] = (
    f"{SIGNALLING_SPORT} ip dscp set cs3",
    f"{SIGNALLING_DPORT} ip dscp set cs3",
    f"{MEDIA} ip dscp set ef",
)

#: G.711 packets per call in each direction (g711a.pcap) and their packetisation.
G711_PACKETS_PER_CALL = 236
G711_PTIME_MS = 30
#: RFC 2833 packets per call in each direction (dtmf_2833_1.pcap: 8 sequence numbers,
#: the last one sent 3 times).
DTMF_PACKETS_PER_CALL = 10
#: Seconds one call lasts on the wire (INVITE to the 200 OK of BYE): pause 8 s + 1 s.
CALL_SECONDS = 9.2

UAS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- sipp's built-in 'uas' scenario, answering the uac_pcap offer with PCMA (pt 8) and
     telephone-event (pt 101) instead of PCMU (pt 0), which the offer did not contain. -->
<scenario name="Basic UAS responder, PCMA answer">
  <recv request="INVITE" crlf="true">
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-11,16

    ]]>
  </send>
  <recv request="ACK" optional="true" rtd="true" crlf="true">
  </recv>
  <recv request="BYE">
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <timewait milliseconds="2000"/>
</scenario>
"""


#: :data:`UAS_SCENARIO` with B playing its own G.711 (``pcap/g711a.pcap``, from its media
#: port to the offer's) once the ACK arrives, instead of echoing A (``run_calls(uas_plays=
#: True)``): then each direction's media exists whatever happens to the other one.
#: (sipp refuses a ``<nop>`` after an optional ``<recv>``: the ACK is awaited here.)
UAS_PLAY_SCENARIO = UAS_SCENARIO.replace(
    '<recv request="ACK" optional="true"', '<recv request="ACK"', 1).replace(
    '  <recv request="BYE">',
    '  <nop>\n    <action>\n      <exec play_pcap_audio="pcap/g711a.pcap"/>\n'
    '    </action>\n  </nop>\n  <recv request="BYE">', 1)
assert UAS_PLAY_SCENARIO.count("play_pcap_audio") == 1 and 'optional' not in UAS_PLAY_SCENARIO


class LabError(RuntimeError):
    """The lab could not be built or a user agent failed."""


def lab_unavailable_reason() -> str | None:
    """Why this machine cannot run the lab (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables, tcpdump)"
    missing = [f"{cmd} (package {pkg})" for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None]
    if missing:
        return "missing tools: " + ", ".join(missing)
    for name in ("g711a.pcap", "dtmf_2833_1.pcap"):
        if not (SIPP_PCAP_DIR / name).is_file():
            return f"sipp's {SIPP_PCAP_DIR / name} is missing (package sip-tester)"
    return None


def require_lab() -> None:
    """For tests: skip with the reason when the lab cannot run here; fail instead in CI
    (``CI`` set: scripts/test.sh installs the tools and CI runs as root)."""
    import pytest

    reason = lab_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"namespace lab unavailable in CI: {reason}")
    pytest.skip(f"namespace lab unavailable: {reason}")


def _run(cmd: Sequence[str], *, timeout: float = 20.0, input_text: str | None = None) -> str:
    """Run a setup command; its failure is a :class:`LabError` with its stderr."""
    try:
        proc = subprocess.run(
            list(cmd), input=input_text, capture_output=True, text=True, timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def nft_ruleset(table: str, chain: str, hook: str, rules: Sequence[str]) -> str:
    """An nftables ruleset: one inet table, one filter chain on ``hook``, the rules in order.
    (``fwd`` and ``mark`` are nft keywords: chains here are ``impair`` and ``marking``.)"""
    body = "\n".join(f"  {r}" for r in rules)
    return (
        f"table inet {table} {{\n chain {chain} {{\n"
        f"  type filter hook {hook} priority 0; policy accept;\n{body}\n }}\n}}\n"
    )


@dataclass
class CallRun:
    """What one lab run produced."""

    capture: Path
    workdir: Path
    calls: int
    uac_returncode: int
    uac_log: Path
    uas_log: Path
    seconds: float
    gateway_rules: tuple[str, ...]


@dataclass
class Lab:
    """Namespaces A, R, B and the processes running in them. Use as a context manager:
    ``with Lab("clean", tmp) as lab: run = lab.run_calls(3)``; leaving it removes everything."""

    tag: str
    workdir: Path
    gateway_rules: Sequence[str] = ()
    endpoint_rules: Sequence[str] = ENDPOINT_MARKING
    a_sip_port: int = A_SIP_PORT
    prefix: str = field(default_factory=lambda: f"vp{os.getpid() % 10000}")
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)
    _created: list[str] = field(default_factory=list, init=False)

    @property
    def ns_a(self) -> str:
        return f"{self.prefix}{self.tag}-a"

    @property
    def ns_r(self) -> str:
        return f"{self.prefix}{self.tag}-r"

    @property
    def ns_b(self) -> str:
        return f"{self.prefix}{self.tag}-b"

    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- network -------------------------------------------------------------------------

    def build(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for ns in (self.ns_a, self.ns_r, self.ns_b):
            if ns in _netns_list():
                raise LabError(f"network namespace {ns} already exists (a previous run leaked?)")
            _run(["ip", "netns", "add", ns])
            self._created.append(ns)
        # veths created in place: the names live only inside the lab's namespaces.
        _run(["ip", "link", "add", "a0", "netns", self.ns_a, "type", "veth",
              "peer", "name", "ra", "netns", self.ns_r])
        _run(["ip", "link", "add", "b0", "netns", self.ns_b, "type", "veth",
              "peer", "name", "rb", "netns", self.ns_r])
        for ns, dev, addr in (
            (self.ns_a, "a0", f"{A_ADDR}/24"),
            (self.ns_r, "ra", f"{R_ADDR_A}/24"),
            (self.ns_r, "rb", f"{R_ADDR_B}/24"),
            (self.ns_b, "b0", f"{B_ADDR}/24"),
        ):
            _run(["ip", "-n", ns, "addr", "add", addr, "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        for ns in (self.ns_a, self.ns_r, self.ns_b):
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.ns_a, "route", "add", "default", "via", R_ADDR_A])
        _run(["ip", "-n", self.ns_b, "route", "add", "default", "via", R_ADDR_B])
        _run(["ip", "netns", "exec", self.ns_r, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        if self.gateway_rules:
            _run(["ip", "netns", "exec", self.ns_r, "nft", "-f", "-"],
                 input_text=nft_ruleset("vplab", "impair", "forward", self.gateway_rules))
        if self.endpoint_rules:
            for ns in (self.ns_a, self.ns_b):
                _run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                     input_text=nft_ruleset("vplab", "marking", "output", self.endpoint_rules))
        # A reaches B through R (bounded: the link comes up within a second or two).
        deadline = time.monotonic() + 10.0
        while True:
            ping = subprocess.run(
                ["ip", "netns", "exec", self.ns_a, "ping", "-c", "1", "-W", "1", B_ADDR],
                capture_output=True, timeout=5, check=False,
            ) if shutil.which("ping") else None
            if ping is None or ping.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise LabError(f"{B_ADDR} unreachable from {self.ns_a} through {self.ns_r}")
            time.sleep(0.2)

    def close(self) -> None:
        """Kill what this lab started and delete its namespaces (safe to call twice)."""
        for proc in reversed(self._procs):
            _stop(proc, signal.SIGTERM, 3.0)
        self._procs.clear()
        for ns in reversed(self._created):
            # Anything still running inside a namespace only this lab uses was started by it.
            with contextlib.suppress(Exception):
                pids = _run(["ip", "netns", "pids", ns], timeout=5).split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(Exception):
                _run(["ip", "netns", "del", ns], timeout=10)
        self._created.clear()

    @property
    def ns_p(self) -> str:
        return f"{self.prefix}{self.tag}-p"

    def mirror_over_vxlan(self, interface: str = "rb", vni: int = 100) -> str:
        """R mirrors everything ``interface`` sends and receives to a probe namespace P
        over VXLAN (UDP 4789), as a switch's or router's mirror session would: a
        ``type vxlan`` device and ``tc`` mirred actions on both clsact hooks. P's ``p0``
        (198.18.9.2) receives the VXLAN datagrams; returns P's namespace name."""
        ns_p = self.ns_p
        if ns_p in _netns_list():
            raise LabError(f"network namespace {ns_p} already exists (a previous run leaked?)")
        _run(["ip", "netns", "add", ns_p])
        self._created.append(ns_p)
        _run(["ip", "link", "add", "rp", "netns", self.ns_r, "type", "veth",
              "peer", "name", "p0", "netns", ns_p])
        for ns, dev, addr in ((self.ns_r, "rp", f"{R_ADDR_P}/24"), (ns_p, "p0", f"{P_ADDR}/24")):
            _run(["ip", "-n", ns, "addr", "add", addr, "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        _run(["ip", "-n", ns_p, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.ns_r, "link", "add", "vx0", "type", "vxlan", "id", str(vni),
              "local", R_ADDR_P, "remote", P_ADDR, "dstport", "4789", "dev", "rp"])
        _run(["ip", "-n", self.ns_r, "link", "set", "vx0", "up"])
        tc = ["ip", "netns", "exec", self.ns_r, "tc"]
        _run([*tc, "qdisc", "add", "dev", interface, "clsact"])
        for hook in ("ingress", "egress"):
            _run([*tc, "filter", "add", "dev", interface, hook, "protocol", "all", "u32",
                  "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "vx0"])
        return ns_p

    # -- processes -----------------------------------------------------------------------

    def _spawn(self, ns: str, cmd: Sequence[str], log: Path, cwd: Path | None = None,
               stderr_pipe: bool = False) -> subprocess.Popen[bytes]:
        # ``ip netns exec`` execs the command: the Popen pid is the tool's own pid.
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *cmd],
                stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.PIPE if stderr_pipe else subprocess.STDOUT,
                cwd=cwd,
            )
        self._procs.append(proc)
        return proc

    def start_capture(self, capture: Path, interface: str = "rb",
                      ns: str | None = None, bpf: Sequence[str] = ()
                      ) -> subprocess.Popen[bytes]:
        """tcpdump on R's interface toward B (or ``interface``, e.g. ``ra`` toward A, where
        A->B packets are seen before the forward chain and B->A after it; or an interface
        of namespace ``ns``); returns once it is listening.

        ``--immediate-mode``: without it libpcap hands packets over in blocks (up to 1 s
        late) and the packets of the last block are lost when tcpdump is stopped.
        ``-Z root``: tcpdump would otherwise drop to its own user, who cannot write into a
        root-only temporary directory. ``-B``: a 64 MiB ring instead of libpcap's 2 MiB,
        so that a replay's bursts (several mirror copies of each packet back to back) are
        not dropped while tcpdump waits for a CPU on a loaded machine: the likeliest
        cause of a capture missing a copy or two of one packet now and then under load
        (the kernel's backlog counters, /proc/net/softnet_stat, showed no drop).
        ``bpf``: a tcpdump filter expression's words."""
        proc = self._spawn(
            ns or self.ns_r,
            ["tcpdump", "-i", interface, "-n", "-U", "--immediate-mode", "-B", "65536", "-s", "0",
             "-Z", "root", "-w", str(capture), *bpf],
            self.workdir / f"tcpdump-{capture.stem}.log", stderr_pipe=True,
        )
        assert proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + 10.0
        while b"listening on" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise LabError(f"tcpdump did not start: {seen.decode(errors='replace')}")
            ready, _, _ = select.select([proc.stderr], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(proc.stderr.fileno(), 4096)
                if not chunk:
                    continue
                seen += chunk
        return proc

    def _wait_listening(self, ns: str, port: int) -> None:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            out = _run(["ip", "netns", "exec", ns, "ss", "-Hnul", f"sport = :{port}"])
            if out.strip():
                return
            time.sleep(0.1)
        raise LabError(f"nothing listens on udp port {port} in {ns}")

    def run_calls(self, calls: int = 3, rate: float = 10.0,
                  capture_interface: str = "rb", uas_plays: bool = False) -> CallRun:
        """``calls`` sipp uac_pcap calls from A to B, one at a time, captured on R's
        ``capture_interface``; B echoes A's media, or plays its own (``uas_plays``:
        :data:`UAS_PLAY_SCENARIO`).

        Calls are sequential (``-l 1``): B's echo port is the same for every call, so
        concurrent calls would share B's media address, which real UAs don't do."""
        started = time.monotonic()
        capture = self.workdir / f"{self.tag}.pcap"
        uac_dir = self.workdir / "uac"
        (uac_dir / "pcap").mkdir(parents=True, exist_ok=True)
        for pcap in SIPP_PCAP_DIR.glob("*.pcap"):
            shutil.copy(pcap, uac_dir / "pcap" / pcap.name)
        uas_xml = self.workdir / "uas_pcma.xml"
        uas_xml.write_text(UAS_PLAY_SCENARIO if uas_plays else UAS_SCENARIO, encoding="ascii")
        budget = int(calls * (CALL_SECONDS + 2.0) + 15)

        tcpdump = self.start_capture(capture, capture_interface)
        uas_log = self.workdir / "uas.log"
        uas = self._spawn(
            self.ns_b,
            ["sipp", "-sf", str(uas_xml), "-i", B_ADDR, "-p", str(B_SIP_PORT),
             "-mi", B_ADDR, "-mp", str(B_MEDIA_PORT), *([] if uas_plays else ["-rtp_echo"]),
             "-m", str(calls), "-nostdin", "-timeout", f"{budget + 10}s", "-trace_err",
             "-error_file", str(self.workdir / "uas_errors.log")],
            uas_log, cwd=uac_dir if uas_plays else self.workdir,  # uac_dir holds pcap/
        )
        self._wait_listening(self.ns_b, B_SIP_PORT)
        uac_log = self.workdir / "uac.log"
        uac = self._spawn(
            self.ns_a,
            ["sipp", "-sn", "uac_pcap", f"{B_ADDR}:{B_SIP_PORT}", "-i", A_ADDR,
             "-p", str(self.a_sip_port), "-mi", A_ADDR, "-m", str(calls), "-l", "1",
             "-r", str(rate), "-nostdin", "-timeout", f"{budget}s", "-timeout_error",
             "-trace_err", "-error_file", str(self.workdir / "uac_errors.log")],
            uac_log, cwd=uac_dir,
        )
        try:
            rc = uac.wait(timeout=budget + 15)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"sipp uac still running after {budget + 15} s") from exc
        # B's last 200 OK (to BYE) has been received by A when A exits: everything crossed R.
        time.sleep(0.5)
        _stop(tcpdump, signal.SIGINT, 5.0)
        _stop(uas, signal.SIGTERM, 3.0)
        return CallRun(
            capture=capture, workdir=self.workdir, calls=calls, uac_returncode=rc,
            uac_log=uac_log, uas_log=uas_log, seconds=time.monotonic() - started,
            gateway_rules=tuple(self.gateway_rules),
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process a lab started (tcpdump: SIGINT flushes its capture)."""
    _stop(proc, signal.SIGINT, 5.0)


def _stop(proc: subprocess.Popen[bytes], sig: int, grace: float) -> None:
    """Signal one process we started, then kill it if it outlives ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
    if proc.stderr is not None:
        proc.stderr.close()


def _netns_list() -> set[str]:
    out = _run(["ip", "netns", "list"], timeout=5)
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def run_scenario(tag: str, workdir: Path, gateway_rules: Sequence[str] = (),
                 calls: int = 3, endpoint_rules: Sequence[str] = ENDPOINT_MARKING) -> CallRun:
    """Build a lab, place ``calls`` calls through it, tear it down; the capture stays."""
    with Lab(tag, workdir, gateway_rules=gateway_rules, endpoint_rules=endpoint_rules) as lab:
        return lab.run_calls(calls)


@contextlib.contextmanager
def lab(tag: str, workdir: Path, gateway_rules: Sequence[str] = ()) -> Iterator[Lab]:
    """Context-manager spelling of :class:`Lab`."""
    with Lab(tag, workdir, gateway_rules=gateway_rules) as built:
        yield built
