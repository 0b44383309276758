"""No identity leaves in clear: every form of a party (sip:, sips:, tel:, with or without
a user part, display names, the identity headers) and, with ``addresses``, every IP
address, through the real daemon into its call log (both formats) and its metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from packetbuild import rtp, sdp, sip, udp
from prometheus_client import generate_latest
from test_daemon import FakeSource, make_daemon

from agent.capture.batch import Batch, LinkType
from agent.export.calllog import CallLog
from agent.export.privacy import PrivacyError, Pseudonymiser

CALLER, CALLEE = "198.18.7.10", "198.18.8.20"
T0 = 1_700_000_000.0
#: (From, display name, To) of each call: every URI form
PARTIES = [
    ("sip:+15551230001@198.18.7.10", "Alice Smith", "sip:5551230002@carrier.example"),
    ("sips:carol@example.org", "", "tel:+1-555-123-0003;phone-context=example.org"),
    ("sip:+15551230004", "Dave Jones", "sip:198.18.8.20:5060;user=phone"),
]
IDENTITY_HEADERS = (
    "P-Asserted-Identity: \"Erin Secret\" <sip:+15551230005@198.18.7.10>",
    "P-Preferred-Identity: <tel:+15551230006>",
    "Remote-Party-ID: \"Frank\" <sip:5551230007@198.18.7.10>;party=calling",
    "Diversion: <sip:5551230008@198.18.7.10>;reason=unconditional",
    "History-Info: <sip:5551230009@198.18.7.10>;index=1",
    "Referred-By: <sip:grace@example.org>",
    "Contact: <sip:+15551230010@198.18.7.10:5060>",
)
#: what must never appear when the privacy mode hashes
SECRETS = ["5551230001", "5551230002", "555-123-0003", "5551230003", "5551230004",
           "5551230005", "5551230006", "5551230007", "5551230008", "5551230009",
           "5551230010", "carol", "grace", "Alice", "Smith", "Dave", "Jones", "Erin",
           "Frank"]
ADDRESSES = [CALLER, CALLEE]


def _call(n: int, t0: float) -> list[tuple[float, bytes]]:
    frm, display, to = PARTIES[n]
    cid = f"call{n}@{CALLER}"
    kw = {"from_uri": frm, "to_uri": to, "call_id": cid, "from_display": display}
    a_port, b_port = 16000 + 10 * n, 20000 + 10 * n
    out = [(t0, udp(CALLER, 5060, CALLEE, 5060, sip(
        f"INVITE {to} SIP/2.0", "1 INVITE", body=sdp(CALLER, a_port),
        extra=IDENTITY_HEADERS, **kw))),
        (t0 + 0.5, udp(CALLEE, 5060, CALLER, 5060, sip(
            "SIP/2.0 200 OK", "1 INVITE", ";tag=b1", body=sdp(CALLEE, b_port), **kw))),
        (t0 + 0.51, udp(CALLER, 5060, CALLEE, 5060, sip(
            f"ACK {to} SIP/2.0", "1 ACK", ";tag=b1", **kw)))]
    for k in range(100):
        t = t0 + 0.6 + 0.02 * k
        out.append((t, udp(CALLER, a_port, CALLEE, b_port, rtp(k, 160 * k, 0x100 + n))))
        out.append((t + 0.001, udp(CALLEE, b_port, CALLER, a_port, rtp(k, 160 * k, 0x200 + n))))
    out.append((t0 + 3.0, udp(CALLER, 5060, CALLEE, 5060, sip(
        f"BYE {to} SIP/2.0", "2 BYE", ";tag=b1", **kw))))
    out.append((t0 + 3.01, udp(CALLEE, 5060, CALLER, 5060, sip(
        "SIP/2.0 200 OK", "2 BYE", ";tag=b1", **kw))))
    return out


def _batches() -> list[Batch]:
    packets = sorted(p for n in range(len(PARTIES)) for p in _call(n, T0 + 5 * n))
    return [Batch.from_packets([p for _, p in packets], [t for t, _ in packets], LinkType.RAW)]


def _run(tmp_path: Path, privacy: str, addresses: str, fmt: str) -> tuple[str, str]:
    """The call log text and the metrics text of a daemon that saw the three calls."""
    cfg = tmp_path / f"{privacy}-{addresses}-{fmt}.yaml"
    cfg.write_text(json.dumps({"privacy": privacy, "addresses": addresses,
                               "exporter": {"site": "lab"},
                               "calls": {"media_idle_timeout_s": 20}}))
    log_path = tmp_path / f"{privacy}-{addresses}.{fmt}"
    key = bytes(range(32))
    log = CallLog(str(log_path), fmt, Pseudonymiser(privacy, key, addresses))  # type: ignore[arg-type]
    d, registry = make_daemon(FakeSource(_batches()), cfg, call_log=log)
    for _ in range(40):
        d.step()
    d.shutdown()
    return log_path.read_text(), generate_latest(registry).decode()


@pytest.mark.parametrize("fmt", ["json", "line"])
def test_hashed_records_and_metrics_hold_no_identity_nor_address(tmp_path: Path,
                                                                 fmt: str) -> None:
    log, metrics = _run(tmp_path, "hash", "hash", fmt)
    assert log.count("\n") == len(PARTIES)  # every call was written
    for text, where in ((log, "call log"), (metrics, "metrics")):
        for secret in [*SECRETS, *ADDRESSES, "198.18.7.", "198.18.8."]:
            assert secret not in text, (secret, where)
    if fmt == "json":
        recs = [json.loads(line) for line in log.splitlines()]
        # one party, one pseudonym: +15551230001 as From of the first call
        first = recs[[r["call_id"] for r in recs].index(_token("call0@" + CALLER))]
        assert first["from"].startswith("sip:h:") and "@h:" in first["from"]
        assert all(d["stream"]["src"].startswith("h:") for r in recs for d in r["directions"])


def _token(text: str) -> str:
    return Pseudonymiser("hash", bytes(range(32))).token(text)


def test_clear_privacy_shows_them_all(tmp_path: Path) -> None:
    log, _ = _run(tmp_path, "clear", "hash", "json")  # clear means clear, addresses too
    for secret in ["5551230001", "5551230002", "555-123-0003", "5551230004", "carol",
                   *ADDRESSES]:
        assert secret in log, secret


def test_prefix_keeps_the_networks_only(tmp_path: Path) -> None:
    log, _ = _run(tmp_path, "hash", "prefix", "json")
    recs = [json.loads(line) for line in log.splitlines()]
    ends = {d["stream"][k] for r in recs for d in r["directions"] for k in ("src", "dst")}
    assert {e.rsplit(":", 1)[0] for e in ends} == {"198.18.7.0/24", "198.18.8.0/24"}
    assert all(a not in log for a in ADDRESSES)


def test_every_form_of_one_party_gets_one_pseudonym() -> None:
    p = Pseudonymiser("hash", bytes(range(32)), "hash")
    one = {p.uri("sip:+15551230001@198.18.7.10"), p.uri("sips:+15551230001@carrier.example"),
           p.uri("tel:+1-555-123-0001"), p.uri("sip:+15551230001"), p.uri("+1 555 123 0001")}
    assert {re.search(r"h:[0-9a-f]{12}", u or "")[0] for u in one} == {p.token("+15551230001")}
    assert p.uri("sip:carrier.example;transport=tcp") == "sip:carrier.example;transport=tcp"
    assert p.uri("sip:[2001:db8::1]:5060") == f"sip:{p.token('2001:db8::1')}:5060"
    assert p.point("vxlan/198.18.9.1/vni5001") == f"vxlan/{p.token('198.18.9.1')}/vni5001"
    assert p.point("eth0:in") == "eth0:in"
    prefix = Pseudonymiser("hash", bytes(range(32)), "prefix")
    assert prefix.address("[2001:db8:1:2::5]:4000") == "2001:db8:1::/48:4000"
    assert prefix.address("198.18.7.10:16000") == "198.18.7.0/24:16000"
    with pytest.raises(PrivacyError, match="addresses"):
        Pseudonymiser("hash", bytes(32), "scramble")  # type: ignore[arg-type]


def test_lookup_prints_the_pseudonyms_the_call_log_shows(tmp_path: Path) -> None:
    """`voipprobe lookup` with the agent's key finds a PBX's Call-ID, a number and an
    address in the call log; without a key it says so and exits 2."""
    import subprocess
    import sys

    from agent.export.privacy import load_or_create_key

    state = tmp_path / "state"
    key = load_or_create_key(state)
    cfg = tmp_path / "lookup.yaml"
    cfg.write_text(json.dumps({"privacy": "hash", "addresses": "hash",
                               "state_dir": str(state)}))
    log_path = tmp_path / "calls.jsonl"
    log = CallLog(str(log_path), "json", Pseudonymiser("hash", key, "hash"))
    d, _ = make_daemon(FakeSource(_batches()), cfg, call_log=log)
    for _ in range(40):
        d.step()
    d.shutdown()
    recs = [json.loads(line) for line in log_path.read_text().splitlines()]

    def lookup(*args: str) -> list[str]:
        out = subprocess.run([sys.executable, "-m", "agent.cli", "lookup", "--config",
                              str(cfg), *args], capture_output=True, text=True, timeout=60,
                             check=True).stdout
        return [line.split("\t")[1] for line in out.splitlines()]

    (cid,) = lookup("--kind", "call-id", f"call1@{CALLER}")
    (rec,) = [r for r in recs if r["call_id"] == cid]
    assert lookup("tel:+1-555-123-0003;phone-context=example.org") == [rec["to"]]
    (src,) = lookup("--kind", "address", f"{CALLER}:16010")
    assert src in {d["stream"]["src"] for d in rec["directions"]}
    cfg.write_text(json.dumps({"privacy": "hash", "state_dir": str(tmp_path / "none")}))
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "lookup", "--config", str(cfg),
                           "x"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "no privacy.key in" in proc.stderr
