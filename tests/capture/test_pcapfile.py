"""Tests for agent/capture/pcapfile.py: hand-built pcap/pcapng files and the public corpus."""

from __future__ import annotations

import calendar
import gzip
import os
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.capture.batch import Batch
from agent.capture.pcapfile import CaptureFormatError, CaptureReader, open_capture

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

# --------------------------------------------------------------------------- builders

Packet = tuple[float, bytes]  # (epoch seconds, captured bytes)


def pcap_file(
    packets: list[Packet],
    *,
    endian: str = "<",
    nano: bool = False,
    linktype: int = 1,
    snaplen: int = 65535,
    wirelen_extra: int = 0,
) -> bytes:
    """A classic pcap file; every packet's orig_len is caplen + ``wirelen_extra``."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    unit = 10**9 if nano else 10**6
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data in packets:
        sec, frac = divmod(round(ts * unit), unit)
        out.append(struct.pack(endian + "IIII", sec, frac, len(data), len(data) + wirelen_extra))
        out.append(data)
    return b"".join(out)


def block(endian: str, typ: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(endian + "II", typ, length) + body + struct.pack(endian + "I", length)


def option(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(endian: str = "<") -> bytes:
    body = struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    body += option(endian, 4, b"voipprobe test") + option(endian, 0, b"")
    return block(endian, 0x0A0D0D0A, body)


def idb(endian: str, linktype: int, tsresol: int | None = None, tsoffset: int = 0) -> bytes:
    opts = option(endian, 2, b"eth0")
    if tsresol is not None:
        opts += option(endian, 9, bytes([tsresol]))
    if tsoffset:
        opts += option(endian, 14, struct.pack(endian + "q", tsoffset))
    return block(endian, 1, struct.pack(endian + "HHI", linktype, 0, 65535) + opts)


def epb(endian: str, iface: int, ticks: int, data: bytes, wirelen: int | None = None) -> bytes:
    head = struct.pack(
        endian + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wirelen or len(data)
    )
    return block(endian, 6, head + data + b"\0" * (-len(data) % 4) + option(endian, 0, b""))


def spb(endian: str, data: bytes) -> bytes:
    return block(endian, 3, struct.pack(endian + "I", len(data)) + data)


def pb(endian: str, iface: int, ticks: int, data: bytes) -> bytes:
    head = struct.pack(
        endian + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)
    )
    return block(endian, 2, head + data)


def write(tmp_path: Path, content: bytes, name: str = "x.cap") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def read_all(path: Path, **kwargs: int) -> tuple[list[Batch], CaptureReader]:
    with open_capture(path, **kwargs) as reader:
        batches = list(reader)
    return batches, reader


def flatten(batches: list[Batch]) -> tuple[list[bytes], list[float], list[int], list[int]]:
    """(packet bytes, timestamps, link types, wire lengths) over all batches."""
    data = [b.packet(i) for b in batches for i in range(len(b))]
    ts = [float(t) for b in batches for t in b.ts]
    lt = [int(x) for b in batches for x in b.linktype]
    wl = [int(x) for b in batches for x in b.wirelen]
    return data, ts, lt, wl


def payloads(n: int, base: int = 60) -> list[bytes]:
    return [bytes([i % 256]) * (base + i) for i in range(n)]


T0 = 1_700_000_000.0

# --------------------------------------------------------------------------- classic pcap


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, endian: str, nano: bool) -> None:
    frac = 0.123456789 if nano else 0.123456
    pkts = [(T0 + i + frac, p) for i, p in enumerate(payloads(3))]
    path = write(
        tmp_path, pcap_file(pkts, endian=endian, nano=nano, linktype=113, wirelen_extra=40)
    )
    batches, reader = read_all(path)
    data, ts, lt, wl = flatten(batches)
    assert data == [p for _, p in pkts]
    assert ts == pytest.approx([t for t, _ in pkts], abs=1e-9 if nano else 1e-7)
    assert lt == [113] * 3
    assert wl == [len(p) + 40 for _, p in pkts]
    assert [int(c) for b in batches for c in b.caplen] == [len(p) for _, p in pkts]
    assert reader.packets == 3 and reader.warnings == []


def test_pcap_header_only_has_no_packets(tmp_path: Path) -> None:
    batches, reader = read_all(write(tmp_path, pcap_file([])))
    assert sum(len(b) for b in batches) == 0
    assert reader.packets == 0 and reader.warnings == []


def test_pcap_linktype_fcs_bits_are_masked(tmp_path: Path) -> None:
    content = bytearray(pcap_file([(T0, b"abc")]))
    struct.pack_into("<I", content, 20, 0x1000_0000 | 1)  # FCS-present flag (pcap-linktype(7))
    batches, _ = read_all(write(tmp_path, bytes(content)))
    assert flatten(batches)[2] == [1]


def test_pcap_chunking_by_packets(tmp_path: Path) -> None:
    pkts = [(T0 + i * 0.02, p) for i, p in enumerate(payloads(10))]
    batches, reader = read_all(write(tmp_path, pcap_file(pkts)), chunk_packets=3)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    data, ts, _, _ = flatten(batches)
    assert data == [p for _, p in pkts]
    assert ts == pytest.approx([t for t, _ in pkts], abs=1e-7)
    assert reader.packets == 10


@pytest.mark.parametrize("chunk_bytes", [1, 50, 100, 333, 4096])
def test_pcap_small_reads_cross_window_boundaries(tmp_path: Path, chunk_bytes: int) -> None:
    pkts = [(T0 + i, p) for i, p in enumerate(payloads(25))]
    batches, reader = read_all(write(tmp_path, pcap_file(pkts)), chunk_bytes=chunk_bytes)
    assert flatten(batches)[0] == [p for _, p in pkts]
    assert reader.warnings == []
    # A batch's buffer is one window: the read size, or one record if that is larger.
    biggest_record = 16 + max(len(p) for _, p in pkts)
    assert all(b.data.shape[0] <= max(chunk_bytes, biggest_record) + 24 for b in batches)


def test_pcap_truncated_inside_packet(tmp_path: Path) -> None:
    pkts = [(T0 + i, p) for i, p in enumerate(payloads(5))]
    content = pcap_file(pkts)
    cut = len(content) - (len(pkts[4][1]) + 16) + 16 + 10  # 10 bytes into record 5's data
    batches, reader = read_all(write(tmp_path, content[:cut]))
    assert flatten(batches)[0] == [p for _, p in pkts[:4]]
    missing = len(pkts[4][1]) - 10
    assert reader.warnings == [
        f"truncated: file ends inside packet record 5 ({missing} bytes missing); read 4 packets"
    ]


def test_pcap_truncated_inside_record_header(tmp_path: Path) -> None:
    pkts = [(T0 + i, p) for i, p in enumerate(payloads(3))]
    content = pcap_file(pkts) + b"\0" * 7
    batches, reader = read_all(write(tmp_path, content))
    assert len(flatten(batches)[0]) == 3
    assert reader.warnings == [
        "truncated: file ends inside packet record 4 (9 bytes missing); read 3 packets"
    ]


def test_pcap_corrupt_huge_caplen_stops_with_warning(tmp_path: Path) -> None:
    pkts = [(T0 + i, p) for i, p in enumerate(payloads(4))]
    content = bytearray(pcap_file(pkts))
    third = 24 + sum(16 + len(p) for _, p in pkts[:2])
    struct.pack_into("<I", content, third + 8, 0x7FFF_FFFF)
    tracemalloc.start()
    try:
        batches, reader = read_all(write(tmp_path, bytes(content)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert flatten(batches)[0] == [p for _, p in pkts[:2]]
    assert len(reader.warnings) == 1
    assert reader.warnings[0].startswith(f"corrupt record at byte offset {third}: ")


def test_pcap_caplen_far_above_snaplen_is_corrupt(tmp_path: Path) -> None:
    pkts = [(T0, b"x" * 100), (T0 + 1, b"y" * 70000)]
    batches, reader = read_all(write(tmp_path, pcap_file(pkts, snaplen=96)))
    assert flatten(batches)[0] == [b"x" * 100]
    assert "captured length 70000" in reader.warnings[0]


# --------------------------------------------------------------------------- pcapng


def pcapng_two_interfaces() -> tuple[bytes, list[tuple[float, bytes, int]]]:
    """Section 1 (LE): 3 interfaces, unknown blocks, EPB/SPB/PB; section 2 (BE)."""
    le, be = "<", ">"
    p = payloads(8)
    parts = [
        shb(le),
        idb(le, 1),  # default resolution: µs
        idb(le, 113, tsresol=9),  # ns
        block(le, 0x0BAD_0BAD, b"some unknown block body"),
        idb(le, 101, tsresol=0x80 | 20, tsoffset=1000),  # 2^-20 s, +1000 s
        epb(le, 0, 1_700_000_000_123_456, p[0]),
        epb(le, 1, 1_700_000_001_123_456_789, p[1], wirelen=500),
        spb(le, p[2]),  # interface 0, previous packet's time
        block(le, 5, b"interface statistics are skipped"),
        epb(le, 2, (1_699_999_000 << 20) + (1 << 19), p[3]),
        pb(le, 1, 1_700_000_002_000_000_000, p[4]),
        shb(be),
        idb(be, 276, tsresol=3),  # ms; a new section restarts interface numbering
        epb(be, 0, 1_700_000_005_250, p[5]),
        spb(be, p[6]),
        epb(be, 0, 1_700_000_006_500, p[7]),
    ]
    expected = [
        (1_700_000_000.123456, p[0], 1),
        (1_700_000_001.123456789, p[1], 113),
        (1_700_000_001.123456789, p[2], 1),
        (1_700_000_000.5, p[3], 101),
        (1_700_000_002.0, p[4], 113),
        (1_700_000_005.25, p[5], 276),
        (1_700_000_005.25, p[6], 276),
        (1_700_000_006.5, p[7], 276),
    ]
    return b"".join(parts), expected


def test_pcapng_interfaces_sections_and_block_kinds(tmp_path: Path) -> None:
    content, expected = pcapng_two_interfaces()
    batches, reader = read_all(write(tmp_path, content))
    data, ts, lt, wl = flatten(batches)
    assert data == [e[1] for e in expected]
    assert ts == pytest.approx([e[0] for e in expected], abs=1e-7)
    assert lt == [e[2] for e in expected]
    assert wl[1] == 500 and wl[0] == len(expected[0][1])
    assert reader.warnings == []


@pytest.mark.parametrize("chunk_packets", [1, 2, 3, 100])
@pytest.mark.parametrize("chunk_bytes", [1, 64, 1 << 20])
def test_pcapng_chunking(tmp_path: Path, chunk_packets: int, chunk_bytes: int) -> None:
    content, expected = pcapng_two_interfaces()
    path = write(tmp_path, content)
    batches, reader = read_all(path, chunk_packets=chunk_packets, chunk_bytes=chunk_bytes)
    assert all(0 < len(b) <= chunk_packets for b in batches)
    data, ts, lt, _ = flatten(batches)
    assert data == [e[1] for e in expected]
    assert ts == pytest.approx([e[0] for e in expected], abs=1e-7)
    assert lt == [e[2] for e in expected]
    assert reader.warnings == []


def test_pcapng_spb_before_any_timestamp_gets_zero(tmp_path: Path) -> None:
    content = shb() + idb("<", 1) + spb("<", b"first") + epb("<", 0, 5_000_000, b"second")
    batches, _ = read_all(write(tmp_path, content))
    assert flatten(batches)[1] == [0.0, 5.0]


def test_pcapng_spb_truncated_to_block(tmp_path: Path) -> None:
    # An SPB carries no captured length: it is min(original length, block body).
    body = struct.pack("<I", 1500) + b"abcd"
    content = shb() + idb("<", 1) + block("<", 3, body)
    batches, _ = read_all(write(tmp_path, content))
    data, _, _, wl = flatten(batches)
    assert data == [b"abcd"] and wl == [1500]


def test_pcapng_undescribed_interface_is_skipped(tmp_path: Path) -> None:
    content = shb() + idb("<", 1) + epb("<", 7, 0, b"orphan") + epb("<", 0, 0, b"ok")
    batches, reader = read_all(write(tmp_path, content))
    assert flatten(batches)[0] == [b"ok"]
    assert reader.warnings == ["skipped 1 packets that name an undescribed interface"]


def test_pcapng_truncated(tmp_path: Path) -> None:
    content, expected = pcapng_two_interfaces()
    batches, reader = read_all(write(tmp_path, content[:-10]))
    assert flatten(batches)[0] == [e[1] for e in expected[:7]]
    assert len(reader.warnings) == 1
    assert reader.warnings[0].startswith("truncated: file ends inside packet record 8 (10 bytes")
    assert reader.warnings[0].endswith("read 7 packets")


@pytest.mark.parametrize("bad_length", [0x7FFF_FFF0, 18, 8])
def test_pcapng_corrupt_block_length(tmp_path: Path, bad_length: int) -> None:
    head = shb() + idb("<", 1) + epb("<", 0, 0, b"good")
    content = bytearray(head + epb("<", 0, 1, b"lost") + epb("<", 0, 2, b"lost too"))
    struct.pack_into("<I", content, len(head) + 4, bad_length)
    batches, reader = read_all(write(tmp_path, bytes(content)))
    assert flatten(batches)[0] == [b"good"]
    assert reader.warnings == [
        f"corrupt record at byte offset {len(head)}: block length {bad_length} is invalid"
    ]


def test_pcapng_caplen_beyond_block_is_corrupt(tmp_path: Path) -> None:
    head = shb() + idb("<", 1) + epb("<", 0, 0, b"good")
    content = bytearray(head + epb("<", 0, 1, b"lost"))
    struct.pack_into("<I", content, len(head) + 20, 5000)  # caplen field of the 2nd EPB
    batches, reader = read_all(write(tmp_path, bytes(content)))
    assert flatten(batches)[0] == [b"good"]
    assert reader.warnings[0].startswith(f"corrupt record at byte offset {len(head)}: ")


# --------------------------------------------------------------------------- gzip

Builder = Callable[[], bytes]
BUILDERS: dict[str, Builder] = {
    "pcap-le-us": lambda: pcap_file([(T0 + i, p) for i, p in enumerate(payloads(5))]),
    "pcap-be-ns": lambda: pcap_file(
        [(T0 + i, p) for i, p in enumerate(payloads(5))], endian=">", nano=True
    ),
    "pcapng": lambda: pcapng_two_interfaces()[0],
}


# A window larger than the inflated file (the default 16 MiB) ends where the data
# does: a parser reading a block header past the last one sees the end of the stream,
# not zeros (a zeroed window once made every gzipped pcapng end "corrupt").
@pytest.mark.parametrize("chunk_bytes", [64, 16 << 20])
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_gzip_reads_like_plain(tmp_path: Path, kind: str, chunk_bytes: int) -> None:
    content = BUILDERS[kind]()
    plain, _ = read_all(write(tmp_path, content, "plain.pcap"))
    # Detection is by magic, not by name: call the gzip file .pcap.
    zipped_path = write(tmp_path, gzip.compress(content), "zipped.pcap")
    with open_capture(zipped_path, chunk_bytes=chunk_bytes) as r:
        zipped = list(r)
        assert r.warnings == []
        size = os.path.getsize(tmp_path / "zipped.pcap")
        assert r.progress() == (size, size)
    assert flatten(zipped) == flatten(plain)
    assert len(flatten(plain)[0]) > 0


def test_gzip_truncated_keeps_what_inflated(tmp_path: Path) -> None:
    pkts = [(T0 + i, bytes(200)) for i in range(50)]
    packed = gzip.compress(pcap_file(pkts))
    batches, reader = read_all(write(tmp_path, packed[: len(packed) - 12]))
    assert 0 < len(flatten(batches)[0]) <= 50
    assert any(w.startswith("truncated: gzip stream broken") for w in reader.warnings)


def test_progress_counts_bytes_on_disk(tmp_path: Path) -> None:
    content = pcap_file([(T0 + i, p) for i, p in enumerate(payloads(30))])
    path = write(tmp_path, content)
    with open_capture(path, chunk_bytes=256, chunk_packets=2) as reader:
        seen = [reader.progress()]
        for _ in reader:
            seen.append(reader.progress())
    assert all(total == len(content) for _, total in seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == len(content) and done[1] < len(content)


# --------------------------------------------------------------------------- not captures


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "is empty"),
        (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "not a pcap or pcapng"),
        (b"\xd4\xc3", "too short"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "file header truncated"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x00\x00\x00\x00", "bad byte order"),
        (gzip.compress(b"just some text, compressed"), "not a pcap or pcapng"),
        (gzip.compress(b""), "gzip-compressed file is empty"),
        (b"\x1f\x8b" + b"\xff" * 40, "gzip stream broken"),
    ],
)
def test_not_a_capture_raises_at_open(tmp_path: Path, content: bytes, reason: str) -> None:
    path = write(tmp_path, content, "notes.pcap")
    with pytest.raises(CaptureFormatError, match=reason) as info:
        open_capture(path)
    assert "notes.pcap" in str(info.value)


def test_missing_file_propagates(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_capture(tmp_path / "absent.pcap")


def test_closed_reader_yields_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, pcap_file([(T0, b"abc")]))
    reader = open_capture(path)
    reader.close()
    assert list(reader) == []


# --------------------------------------------------------------------------- fuzz

FUZZ_HEADERS = {
    "pcap": pcap_file([]),
    "pcapng": shb() + idb("<", 1) + idb("<", 113, tsresol=9),
}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(sorted(FUZZ_HEADERS)),
    tail=st.binary(max_size=600),
    chunk_bytes=st.sampled_from([1, 17, 256, 1 << 16]),
    gzipped=st.booleans(),
)
def test_random_bytes_after_header_never_raise(
    tmp_path: Path, kind: str, tail: bytes, chunk_bytes: int, gzipped: bool
) -> None:
    content = FUZZ_HEADERS[kind] + tail
    path = write(tmp_path, gzip.compress(content) if gzipped else content, "fuzz.pcap")
    tracemalloc.start()
    try:
        with open_capture(path, chunk_bytes=chunk_bytes, chunk_packets=7) as reader:
            total = 0
            for batch in reader:
                total += len(batch)
                assert len(batch) <= 7
                ends = batch.offset + batch.caplen
                assert bool(np.all(ends <= batch.data.shape[0]))
                assert bool(np.all(batch.wirelen >= batch.caplen))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == reader.packets
    # A plain file is never read into more than its size; a gzip stream may ask
    # for one block up to the 16 MiB pcapng limit before finding it cut short.
    assert peak < (20 << 20 if gzipped else 1 << 20)


# --------------------------------------------------------------------------- corpus

# Where capinfos is not the truth (corpus README: "tshark is a second opinion").
CAPINFOS_START_WRONG = {
    # Packet 1's record header says 0x4f30aa32 s (2012-02-07); capinfos 4.0 reports the
    # last packet's time (2092, past 2^31 s) as the start and a duration of 0.
    "heplify_sip_ipv6_udp.pcap": 1_328_589_362.251758,
}


def corpus_dir() -> Path:
    if not (CORPUS / "pcaps").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"corpus missing at {CORPUS} (CI must have shared/ beside the clone)")
        pytest.skip(f"corpus not found at {CORPUS}")
    return CORPUS


def capinfos_row(path: Path) -> dict[str, str]:
    """The first record of a `capinfos -M -T` file (a trailing comment may span lines)."""
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    return dict(zip(lines[0].split("\t"), lines[1].split("\t"), strict=False))


def parse_capinfos_time(text: str) -> float:
    """'2017-08-17 03:38:10.317366997' (UTC here) -> epoch seconds."""
    whole, _, frac = text.partition(".")
    secs = calendar.timegm(time.strptime(whole, "%Y-%m-%d %H:%M:%S"))
    return secs + (int(frac) / 10 ** len(frac) if frac else 0.0)


def corpus_files() -> list[str]:
    pcaps = CORPUS / "pcaps"
    return sorted(p.name for p in pcaps.iterdir()) if pcaps.is_dir() else ["<corpus missing>"]


@pytest.mark.parametrize("name", corpus_files())
def test_corpus_matches_capinfos(name: str) -> None:
    corpus = corpus_dir()
    row = capinfos_row(corpus / "oracle" / f"{name}.capinfos_machine.tsv")
    batches, reader = read_all(corpus / "pcaps" / name)
    _, ts, _, _ = flatten(batches)
    assert reader.warnings == []
    assert reader.packets == len(ts) == int(row["Number of packets"])
    first = CAPINFOS_START_WRONG.get(name, parse_capinfos_time(row["Start time"]))
    assert abs(ts[0] - first) < 1e-6
    assert abs(ts[-1] - parse_capinfos_time(row["End time"])) < 1e-6
    for batch in batches:
        assert bool(np.all(batch.offset + batch.caplen <= batch.data.shape[0]))
