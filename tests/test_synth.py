"""The oracle's own tests: truth on the STANDARDS.md vectors, files readable by others.

If the generator were wrong, every accuracy test would be measuring against a
wrong yardstick, so it is checked against the published vectors and its files
are read back by independent parsers (dpkt, scapy, tshark).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import synth
from synth import (
    Arrival,
    DtmfEvent,
    Flow,
    Impairments,
    Interface,
    Silence,
    VlanTag,
    compute_truth,
    make_stream,
)


def _unwrap(seqs: list[int]) -> list[int]:
    """16-bit -> extended, nearest to the running maximum (test vectors only)."""
    out: list[int] = []
    top = None
    for s in seqs:
        if top is None:
            ext = s
        else:
            ext = (top & ~0xFFFF) | s
            if ext - top > 0x8000:
                ext -= 0x10000
            elif top - ext > 0x8000:
                ext += 0x10000
        out.append(ext)
        top = ext if top is None else max(top, ext)
    return out


def _arrivals(seqs: list[int]) -> list[Arrival]:
    return [Arrival(i * 20_000_000, e, e * 160, 0) for i, e in enumerate(_unwrap(seqs))]


def test_loss_vector_simple() -> None:
    t = compute_truth(_arrivals([100, 101, 102, 104, 105, 108, 109, 110]))
    assert (t.expected, t.packets, t.lost, t.duplicates, t.reordered) == (11, 8, 3, 0, 0)
    assert (t.loss_bursts, t.loss_burst_max) == (2, 2)


def test_loss_vector_wrap_dup_reorder() -> None:
    t = compute_truth(_arrivals([65533, 65534, 65535, 0, 2, 1, 2, 5, 6]))
    assert (t.expected, t.packets, t.lost, t.duplicates, t.reordered) == (10, 9, 2, 1, 1)
    assert t.seq_wraps == 1


def test_jitter_vector() -> None:
    arrivals_ms = [0, 20, 41, 59, 80, 105, 120, 140]
    arr = [Arrival(ms * 1_000_000, i, i * 160, 0) for i, ms in enumerate(arrivals_ms)]
    t = compute_truth(arr, 8000)
    # J in timestamp units after each packet (STANDARDS.md), 1 unit = 0.125 ms.
    units = [0, 0, 0.5, 1.469, 1.877, 4.260, 6.493, 6.088]
    assert t.jitter_ms == pytest.approx(0.761, abs=5e-4)
    assert t.jitter_max_ms == pytest.approx(6.493 * 0.125, abs=5e-4)
    assert t.jitter_mean_ms == pytest.approx(sum(units) / 8 * 0.125, abs=5e-4)


def test_below_first_counts_from_the_lowest() -> None:
    t = compute_truth(_arrivals([10, 11, 9, 12]))
    assert (t.expected, t.packets, t.lost, t.duplicates, t.reordered) == (4, 4, 0, 0, 1)
    t = compute_truth(_arrivals([12, 9, 13]))
    assert (t.expected, t.lost, t.reordered, t.loss_bursts, t.loss_burst_max) == (5, 2, 1, 1, 2)
    t = compute_truth([Arrival(0, 1, 160, 0), Arrival(1, 0, 0, 0), Arrival(2, -1, -160, 0)])
    assert (t.expected, t.lost, t.reordered, t.seq_wraps) == (3, 0, 2, 1)  # 0 then 65535


def test_jitter_head_reorders_the_start() -> None:
    imp = Impairments(jitter_ms=60.0, jitter_head=True)
    starts = [make_stream(50, ssrc=9, seed=k, impair=imp).packets for k in range(20)]
    assert any(p[0].ext_seq > min(q.ext_seq for q in p) for p in starts)
    default = make_stream(50, ssrc=9, seed=1, impair=Impairments(jitter_ms=60.0)).packets
    assert [p.ext_seq for p in default[:4]] == sorted(p.ext_seq for p in default[:4])


def test_clean_stream_truth() -> None:
    s = make_stream(200, ssrc=1, seed=3)
    t = s.truth
    assert (t.packets, t.expected, t.lost, t.duplicates, t.reordered) == (200, 200, 0, 0, 0)
    assert t.jitter_max_ms == 0.0
    assert t.markers == 1


def test_explicit_drops_and_wrap() -> None:
    s = make_stream(
        300, ssrc=2, start_seq=65500, impair=Impairments(drop_slots=frozenset({50, 51, 99}))
    )
    t = s.truth
    assert (t.packets, t.expected, t.lost, t.loss_bursts, t.loss_burst_max) == (297, 300, 3, 2, 2)
    assert t.seq_wraps == 1
    assert [p.data[2:4] for p in s.packets[35:37]] == [b"\xff\xff", b"\x00\x00"]


def test_dtmf_and_dtx_schedule() -> None:
    s = make_stream(
        300, ssrc=3, seed=4, dtmf=[DtmfEvent(at=100, slots=6)], silences=[Silence(at=200, gap=40)]
    )
    t = s.truth
    # 6 event packets + 2 end repeats; 1 CN packet; 40 silent slots send nothing.
    assert t.telephone_event_packets == 8
    assert t.comfort_noise_packets == 1
    assert t.duplicates == 2
    assert t.lost == 0
    assert t.packets == 300 - 40 + 2
    assert t.markers == 3  # stream start, event start, talkspurt after DTX
    assert t.jitter_max_ms == 0.0  # no delay: gaps in time are matched by timestamp gaps
    te = [p for p in s.packets if p.pt == synth.PT_TELEPHONE_EVENT]
    assert len({p.ext_ts for p in te}) == 1  # onset timestamp repeated
    assert [p.data[13] & 0x80 for p in te[-3:]] == [0x80] * 3  # end bit on the three repeats


def test_heavy_impairments_are_consistent() -> None:
    imp = Impairments(loss=0.05, duplicate=0.03, reorder=0.05, jitter_ms=30.0)
    t = make_stream(2000, ssrc=4, seed=5, impair=imp).truth
    assert t.lost > 0 and t.duplicates > 0 and t.reordered > 0
    assert t.packets == t.expected - t.lost + t.duplicates
    assert 0 < t.jitter_ms < 30


@pytest.mark.parametrize("nanosecond", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
def test_pcap_reads_back_with_dpkt(tmp_path: Path, nanosecond: bool, big_endian: bool) -> None:
    dpkt = pytest.importorskip("dpkt")
    flow = Flow("198.18.0.1", "198.18.0.2", 4000, 4002, dscp=46, vlans=(VlanTag(100, 5),))
    s = make_stream(60, ssrc=0x1234, seed=1, resolution_ns=1 if nanosecond else 1000)
    path = synth.write_pcap(
        tmp_path / "x.pcap",
        synth.stream_frames(s, flow),
        nanosecond=nanosecond,
        big_endian=big_endian,
    )
    with open(path, "rb") as f:
        recs = list(dpkt.pcap.Reader(f))
    assert len(recs) == 60
    ts, buf = recs[7]
    assert abs(float(ts) - s.packets[7].arrival_ns / 1e9) < 1e-6
    eth = dpkt.ethernet.Ethernet(buf)
    assert eth.vlan_tags[0].id == 100 and eth.vlan_tags[0].pri == 5
    ip = eth.data
    assert ip.tos >> 2 == 46
    assert bytes(ip.data.data) == s.packets[7].data


def test_pcapng_two_interfaces_reads_back_with_scapy(tmp_path: Path) -> None:
    scapy_utils = pytest.importorskip("scapy.utils")
    f4 = Flow("198.18.0.1", "198.18.0.2", 4000, 4002)
    f6 = Flow("2001:db8::1", "2001:db8::2", 5000, 5002)
    a = make_stream(60, ssrc=1, seed=1, resolution_ns=1000)
    b = make_stream(60, ssrc=2, seed=2, resolution_ns=1)
    pk = synth.merge(
        synth.stream_frames(a, f4, synth.LINKTYPE_ETHERNET, iface=0),
        synth.stream_frames(b, f6, synth.LINKTYPE_RAW, iface=1),
    )
    path = synth.write_pcapng(
        tmp_path / "x.pcapng",
        pk,
        [Interface(synth.LINKTYPE_ETHERNET, 6), Interface(synth.LINKTYPE_RAW, 9)],
    )
    pkts = scapy_utils.rdpcap(str(path))
    assert len(pkts) == 120
    ns = sorted(int(p.time * 10**9) for p in pkts)  # scapy keeps a Decimal time
    assert ns == sorted(p.ts_ns for p in pk)


@pytest.mark.skipif(
    shutil.which("tshark") is None and not os.environ.get("CI"), reason="tshark not installed"
)
@pytest.mark.parametrize(
    "linktype,vlans,src,dst",
    [
        (synth.LINKTYPE_ETHERNET, (VlanTag(200, 3), VlanTag(10, 5)), "198.18.0.1", "198.19.0.2"),
        (synth.LINKTYPE_LINUX_SLL, (), "2001:db8::1", "2001:db8::2"),
        (synth.LINKTYPE_RAW, (), "198.18.0.1", "198.19.0.2"),
    ],
)
def test_tshark_accepts_headers_and_checksums(
    tmp_path: Path, linktype: int, vlans: tuple[VlanTag, ...], src: str, dst: str
) -> None:
    flow = Flow(src, dst, 4000, 4002, dscp=34, vlans=vlans)
    s = make_stream(5, ssrc=9, seed=1)
    path = synth.write_pcap(
        tmp_path / "c.pcap.gz", synth.stream_frames(s, flow, linktype), linktype, compress=True
    )
    fields = [
        "ip.checksum.status",
        "ipv6.tclass",
        "udp.checksum.status",
        "ip.dsfield.dscp",
        "ieee8021ad.id",
        "vlan.id",
        "udp.length",
    ]
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-T",
            "fields",
            "-E",
            "separator=;",
            *[x for f in fields for x in ("-e", f)],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(out) == 5
    ipck, tclass, udpck, dscp, svlan, vlan, ulen = out[0].split(";")
    assert udpck == "1"  # proto_checksum_enum_e: 0 bad, 1 good, 2 unverified
    assert ulen == str(8 + 172)
    if ":" in src:
        assert int(tclass, 16) >> 2 == 34
    else:
        assert ipck == "1" and dscp == "34"
    if vlans:
        assert (svlan, vlan) == ("200", "10")  # outer 802.1ad S-tag, inner C-tag
