"""Decode the shared capture corpus and compare with TShark's oracle files.

Captures are read with scapy's raw readers (not with agent.capture, which is
tested on its own) so that this test only depends on decode.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from scapy.utils import RawPcapNgReader, RawPcapReader

from agent.capture.batch import Batch
from agent.decode import Decoder, Frames, TunnelPorts
from agent.decode.counters import PER_PACKET_DROPS
from agent.decode.frames import COLUMN_DTYPES, format_addr

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
PCAPS = CORPUS / "pcaps"
ORACLE = CORPUS / "oracle"


def _corpus_or_skip() -> None:
    if not PCAPS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"corpus missing at {CORPUS}")
        pytest.skip(f"corpus not found at {CORPUS}")


def load(path: Path) -> Batch:
    pkts: list[bytes] = []
    ts: list[float] = []
    lts: list[int] = []
    wire: list[int] = []
    if path.suffix == ".pcapng" or path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a":
        with RawPcapNgReader(str(path)) as ng:
            for data, meta in ng:
                pkts.append(data)
                ts.append(((meta.tshigh << 32) | meta.tslow) / meta.tsresol)
                lts.append(meta.linktype)
                wire.append(max(meta.wirelen, len(data)))
    else:
        with RawPcapReader(str(path)) as pc:
            nano = pc.nano if hasattr(pc, "nano") else False
            for data, meta in pc:
                pkts.append(data)
                ts.append(meta.sec + meta.usec * (1e-9 if nano else 1e-6))
                lts.append(pc.linktype)
                wire.append(max(meta.wirelen, len(data)))
    return Batch.from_packets(pkts, ts, lts, wire)


def all_pcaps() -> list[str]:
    return sorted(p.name for p in PCAPS.iterdir()) if PCAPS.is_dir() else ["<missing>"]


@pytest.mark.parametrize("name", all_pcaps())
def test_corpus_decodes_and_paths_agree(name: str) -> None:
    _corpus_or_skip()
    batch = load(PCAPS / name)
    fast, slow = Decoder(), Decoder(force_slow_path=True)
    f, g = fast.decode(batch), slow.decode(batch)
    for col in COLUMN_DTYPES:
        np.testing.assert_array_equal(getattr(f, col), getattr(g, col), err_msg=col)
    assert fast.counters == slow.counters
    c = fast.counters
    assert c.packets == len(batch)
    drops = sum(getattr(c, r) for r in PER_PACKET_DROPS)
    assert c.packets == c.frames + c.fragments_pending + drops
    assert c.truncated == 0 and c.bad_ip_header == 0 and c.unsupported_linktype == 0


def oracle_rows(name: str) -> list[dict[str, str]]:
    for suffix in (".rtp_packets.tsv", ".rtp_packets.heur.tsv", ".rtp_packets.decode_as_rtp.tsv"):
        path = ORACLE / f"{name}{suffix}"
        if path.exists():
            with path.open() as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
            if rows:
                return rows
    return []


Tuple = tuple[str, int, str, int]


def our_udp(f: Frames) -> dict[Tuple, list[tuple[int, int, bool]]]:
    """(ts in µs, dscp, looks like RTP v2) of our UDP frames, by 5-tuple."""
    out: dict[Tuple, list[tuple[int, int, bool]]] = defaultdict(list)
    for i in np.flatnonzero(f.proto == 17).tolist():
        key = (format_addr(f.src_hi[i], f.src_lo[i]), int(f.sport[i]),
               format_addr(f.dst_hi[i], f.dst_lo[i]), int(f.dport[i]))
        payload = f.payload(i)
        rtp = len(payload) >= 12 and payload[0] >> 6 == 2
        out[key].append((round(float(f.ts[i]) * 1e6), int(f.dscp[i]), rtp))
    return out


RTP_FILES = [n for n in all_pcaps() if n.startswith(("rtpproxy_", "wiki_", "sipp_"))]


@pytest.mark.parametrize("name", RTP_FILES)
def test_rtp_5tuples_and_dscp_match_tshark(name: str) -> None:
    _corpus_or_skip()
    rows = oracle_rows(name)
    if not rows:
        pytest.skip(f"no RTP rows in the oracle for {name}")
    want: dict[tuple[str, int, str, int], list[tuple[int, int]]] = defaultdict(list)
    for r in rows:
        fields = (r["ip.src"], r["udp.srcport"], r["ip.dst"], r["udp.dstport"])
        if not r["ip.src"] or any("," in x for x in fields):
            continue  # IPv6 (no ip.* columns) or ICMP-quoted / tunnelled copies
        key = (r["ip.src"], int(r["udp.srcport"]), r["ip.dst"], int(r["udp.dstport"]))
        ts_us = round(float(r["frame.time_epoch"]) * 1e6)
        want[key].append((ts_us, int(r["ip.dsfield.dscp"])))
    assert want
    ours = our_udp(Decoder().decode(load(PCAPS / name)))
    for key, expected in want.items():
        got = Counter((ts, dscp) for ts, dscp, _ in ours.get(key, []))
        assert not Counter(expected) - got, key  # every tshark RTP packet is a frame of ours
        # the rest on that 5-tuple is not RTP (e.g. a b"TEST" probe in wiki_sip-rtp-*)
        extra = got - Counter(expected)
        rtp_like = {(ts, dscp) for ts, dscp, rtp in ours[key] if rtp}
        assert not set(extra) & rtp_like, key


def _decode(name: str) -> tuple[Frames, Decoder]:
    _corpus_or_skip()
    dec = Decoder()
    return dec.decode(load(PCAPS / name)), dec


def test_tunnelled_corpus_files() -> None:
    # counts from oracle/<file>.io_phs.txt
    f, _ = _decode("ndpi_qinq_pppoe_gre_sip.pcapng")  # QinQ, PPPoE, GRE/PPP
    assert len(f) == 36 and set(f.proto) == {17}
    starts = {f.payload(i).split(b" ")[0] for i in range(36)}
    assert starts == {b"OPTIONS", b"INVITE", b"SIP/2.0", b"ACK", b"CANCEL", b"BYE"}
    f, _ = _decode("heplify_gre-teb_sip.pcapng")  # GRE transparent Ethernet bridging
    assert len(f) == 140 and set(f.proto) == {17}
    f, _ = _decode("tcpdump_erspan-type-ii_hsrp_nonvoip.pcap")  # GRE/ERSPAN II, HSRP
    assert len(f) == 16 and set(f.dport) == {1985}
    f, _ = _decode("sngrep_ipip_sip_tcp.pcap")  # 2 plain + 2 IP-in-IP SIP/TCP
    assert len(f) == 4 and set(f.proto) == {6}


def test_ipv6_fragmented_sip() -> None:
    f, dec = _decode("sngrep_ipv6frag_sip.pcap")
    assert dec.counters.fragments_reassembled == 2 and dec.counters.fragments_pending == 2
    assert len(f) == 32
    big = [i for i in range(len(f)) if f.payload_off[i] >= f.data.size - 4000]
    assert big and all(f.payload(i).split(b" ")[0] in (b"SIP/2.0", b"INVITE", b"UPDATE",
                                                       b"PRACK") for i in big)


def test_vlan_corpus_ids() -> None:
    f, _ = _decode("ndpi_rtp_mixed_vlan.pcapng")
    assert 1508 in Counter(f.vlan.tolist())


def _tshark_inner(path: Path, fields: tuple[str, ...], *args: str) -> list[tuple[str, ...]]:
    """tshark's per-packet fields; for tunnelled packets the last (innermost) value."""
    if shutil.which("tshark") is None:
        if os.environ.get("CI"):
            pytest.fail("tshark missing in CI (scripts/test.sh installs it)")
        pytest.skip("tshark not installed")
    cmd = ["tshark", "-r", str(path), *args, "-T", "fields"]
    for name in fields:
        cmd += ["-e", name]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)
    return [tuple(v.split(",")[-1] for v in line.split("\t"))
            for line in proc.stdout.splitlines()]


def _our_rows(f: Frames) -> list[tuple[str, ...]]:
    return [(format_addr(f.src_hi[i], f.src_lo[i]), format_addr(f.dst_hi[i], f.dst_lo[i]),
             str(int(f.sport[i])), str(int(f.dport[i])), str(int(f.proto[i])),
             str(int(f.dscp[i])), str(int(f.payload_len[i])))
            for i in range(len(f))]


def test_tzsp_on_a_configured_port_decodes_as_tshark_says() -> None:
    # The capture's sender streams TZSP to UDP 31337, not the default 37008: by default
    # it is plain UDP to the router; with the port configured, the HTTP it carries.
    _corpus_or_skip()
    path = PCAPS / "tzsp_http_nonvoip.pcapng"
    batch = load(path)
    plain = Decoder().decode(batch)
    assert set(plain.dport.tolist()) == {31337} and set(plain.proto.tolist()) == {17}
    dec = Decoder(tunnel_ports=TunnelPorts(tzsp=frozenset({31337})))
    f = dec.decode(batch)
    want = _tshark_inner(path, ("ip.src", "ip.dst", "tcp.srcport", "tcp.dstport", "ip.proto",
                                "ip.dsfield.dscp", "tcp.len"), "-d", "udp.port==31337,tzsp")
    assert len(want) == len(batch) == 5
    assert _our_rows(f) == want
    assert f.tcp_seq.tolist() == [int(v[0]) for v in _tshark_inner(
        path, ("tcp.seq_raw",), "-d", "udp.port==31337,tzsp")]
    assert f.payload(0).startswith(b"GET / HTTP/1.1\r\n")
    assert dec.counters.tunnels_decapsulated == 5


def test_erspan_ii_decodes_as_tshark_says() -> None:
    _corpus_or_skip()
    path = PCAPS / "tcpdump_erspan-type-ii_hsrp_nonvoip.pcap"
    f = Decoder().decode(load(path))
    want = _tshark_inner(path, ("ip.src", "ip.dst", "udp.srcport", "udp.dstport", "ip.proto",
                                "ip.dsfield.dscp", "udp.length"))
    assert len(want) == 16
    # tshark's udp.length counts the 8-byte header
    assert _our_rows(f) == [(*w[:6], str(int(w[6]) - 8)) for w in want]
