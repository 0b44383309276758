"""StreamTracker's API for the call layer: SDP hints (`MediaHints`), close, snapshot."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from framesbuild import Row, build_frames, g711_stream, rtp

from agent.decode.endpoint import Endpoint
from agent.media.payloads import PayloadInfo, PayloadKind
from agent.rtp.hints import EndpointMedia, PayloadMap
from agent.rtp.tracker import StreamTracker


class Hints:
    """`MediaHints` from a table: the destination's description, else the source's."""

    def __init__(self, table: Mapping[tuple[str, int], PayloadMap]) -> None:
        self.table = {Endpoint.of(a, p): EndpointMedia(m, "RTP/AVP") for (a, p), m in table.items()}

    @classmethod
    def of(cls, table: Mapping[tuple[str, int], EndpointMedia]) -> Hints:
        h = cls({})
        h.table = {Endpoint.of(a, p): m for (a, p), m in table.items()}
        return h

    def media_for(self, src: Endpoint, dst: Endpoint, now: float) -> EndpointMedia | None:
        return self.table.get(dst, self.table.get(src))


def hinted(table: Mapping[tuple[str, int], PayloadMap]) -> StreamTracker:
    return StreamTracker(hints=Hints(table))

T0 = 1_700_000_000.0
A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def dyn_stream(src: str, sport: int, dst: str, dport: int, ssrc: int, n: int, pt: int,
               step: int, payload: bytes = b"\x01" * 60) -> list[Row]:
    return [(T0 + 0.02 * i, src, sport, dst, dport, rtp(100 + i, 7000 + step * i, ssrc, pt,
                                                        payload=payload)) for i in range(n)]


def test_destination_hint_names_codec_and_clock() -> None:
    tracker = hinted({(B, 5000): {111: PayloadInfo("opus", 48000)}})
    tracker.feed(build_frames(dyn_stream(A, 4000, B, 5000, 0x11, 50, 111, 960)))
    (s,) = tracker.finish()
    assert (s.codec, s.clock_rate, s.clock_rate_estimated) == ("opus", 48000, False)


def test_source_hint_applies_to_symmetric_rtp() -> None:
    tracker = hinted({(A, 4000): {96: PayloadInfo("G7221", 16000)}})
    tracker.feed(build_frames(dyn_stream(A, 4000, B, 5000, 0x11, 50, 96, 320)))
    (s,) = tracker.finish()
    assert (s.codec, s.clock_rate, s.clock_rate_estimated) == ("G7221", 16000, False)


def test_destination_hint_wins_over_source_hint() -> None:
    tracker = hinted({(A, 4000): {96: PayloadInfo("wrong", 16000)},
                      (B, 5000): {96: PayloadInfo("AMR-WB", 16000)}})
    tracker.feed(build_frames(dyn_stream(A, 4000, B, 5000, 0x11, 50, 96, 320)))
    assert [s.codec for s in tracker.finish()] == ["AMR-WB"]


def test_wrong_sdp_clock_loses_to_the_timestamps() -> None:
    # wiki_sip-rtp-l16: SDP says L16/11025, timestamps advance 160 per 20 ms (8 kHz)
    tracker = hinted({(B, 5000): {97: PayloadInfo("L16", 11025)}})
    tracker.feed(build_frames(dyn_stream(A, 4000, B, 5000, 0x11, 50, 97, 160)))
    (s,) = tracker.finish()
    assert (s.codec, s.clock_rate, s.clock_rate_estimated) == ("L16", 8000, True)
    assert tracker.counters.sdp_clock_overridden == 1
    assert s.ptime_ms == 20.0 and s.jb_model == "adaptive" and s.jb_packets == 50


def test_sdp_clock_within_guard_is_kept() -> None:
    # a real 11025 Hz clock is not snapped to a common rate when SDP names it
    tracker = hinted({(B, 5000): {97: PayloadInfo("L16", 11025)}})
    tracker.feed(build_frames(dyn_stream(A, 4000, B, 5000, 0x11, 50, 97, 220)))
    (s,) = tracker.finish()
    assert (s.clock_rate, s.clock_rate_estimated) == (11025, False)


def test_endpoint_kinds_apply_to_that_stream_only() -> None:
    # PT 105 is CN in one SDP; the same number elsewhere (no SDP) is media
    cn = PayloadInfo("CN", 8000, PayloadKind.COMFORT_NOISE)
    rows = g711_stream(T0, A, 4000, B, 5000, 0x11, 30, pt=8)
    rows += g711_stream(T0 + 0.001, A, 4002, C, 6000, 0x22, 30, pt=8)
    for i, (dst, dport, ssrc) in enumerate([(B, 5000, 0x11), (C, 6000, 0x22)]):
        rows.append((T0 + 0.61 + i * 0.001, A, 4000 + 2 * i, dst, dport,
                     rtp(1030, 5000 + 160 * 30, ssrc, 105, payload=b"\x40" * 11)))
    rows.sort(key=lambda r: r[0])
    tracker = hinted({(B, 5000): {8: PayloadInfo("PCMA", 8000), 105: cn}})
    tracker.feed(build_frames(rows))
    a, b = tracker.finish()
    assert (a.codec, a.comfort_noise_packets, a.packets) == ("PCMA", 1, 31)
    assert (b.codec, b.comfort_noise_packets, b.packets) == ("PCMA", 0, 31)


def test_announced_stream_needs_no_probation() -> None:
    # one packet, then a reordered pair: SDP said media goes there, so every packet counts
    tracker = hinted({(B, 5000): {8: PayloadInfo("PCMA", 8000)}})
    rows = [(T0, A, 4000, B, 5000, rtp(101, 160, 0x11, 8)),
            (T0 + 0.04, A, 4000, B, 5000, rtp(103, 480, 0x11, 8)),
            (T0 + 0.05, A, 4000, B, 5000, rtp(102, 320, 0x11, 8))]
    out = tracker.feed(build_frames(rows[:1]))
    assert [(st.key.ssrc, st.first_ts) for st in out.started] == [(0x11, T0)]
    tracker.feed(build_frames(rows[1:]))
    (s,) = tracker.finish()
    assert (s.packets, s.expected, s.lost, s.reordered) == (3, 3, 0, 1)
    assert tracker.counters.streams_announced == 1


def test_heuristic_probation_tolerates_reordering_and_duplicates_at_the_start() -> None:
    # no SDP: 2nd packet before the 1st, a duplicate among the first four
    order = [1, 0, 2, 2, 3, 4, 5]
    rows = [(T0 + 0.02 * i + 0.03, A, 4000, B, 5000, rtp(500 + q, 160 * q, 0x11, 0))
            for i, q in enumerate(order)]
    tracker = StreamTracker()
    for r in rows:  # one packet at a time: the verdict must not depend on the batching
        tracker.feed(build_frames([r]))
    (s,) = tracker.finish()
    assert (s.packets, s.expected, s.lost, s.duplicates) == (7, 6, 0, 1)
    assert tracker.counters.candidates_rejected == 0


def test_close_and_snapshot() -> None:
    rows = g711_stream(T0, A, 4000, B, 5000, 0x11, 50)
    rows += g711_stream(T0 + 0.005, B, 5000, A, 4000, 0x22, 50)
    rows.sort(key=lambda r: r[0])
    tracker = StreamTracker()
    tracker.feed(build_frames(rows[:60]))
    keys = {k.ssrc: k for k in tracker.streams()}
    assert sorted(keys) == [0x11, 0x22]
    snap = tracker.snapshot(keys[0x11])
    assert snap is not None and (snap.packets, snap.expected, snap.lost) == (30, 30, 0)
    (closed,) = tracker.close([keys[0x22], keys[0x22]])
    assert (closed.key.ssrc, closed.packets) == (0x22, 30)
    assert tracker.snapshot(keys[0x22]) is None and tracker.close([keys[0x22]]) == []
    tracker.feed(build_frames(rows[60:]))
    assert tracker.snapshot(keys[0x11]).packets == 50  # type: ignore[union-attr]
    out = tracker.finish()
    # 0x22 went on after its close: a new stream from the packet after the close
    assert [(s.key.ssrc, s.packets) for s in out] == [(0x11, 50), (0x22, 20)]
    assert tracker.counters.streams_closed == 1


def srtp_with_events(trailers: tuple[int, ...]) -> list[Row]:
    """60 PCMA packets (170 bytes: 160 + an 80-bit tag), then two event runs on PT 100,
    not in any payload map: onset timestamps, payloads of 4 + each trailer (random)."""
    rows = [(T0 + 0.02 * i, A, 4000, B, 5000, rtp(1000 + i, 5000 + 160 * i, 0x11, 8,
                                                  payload=bytes(range(170))))
            for i in range(60)]
    seq, t = 1060, T0 + 1.2
    for trailer in trailers:
        for _k in range(5):
            rows.append((t, A, 4000, B, 5000, rtp(seq, 5000 + 160 * 60, 0x11, 100,
                                                  payload=b"\xa5" * (4 + trailer))))
            seq, t = seq + 1, t + 0.02
    return rows


@pytest.mark.parametrize(("trailer", "other"), [(10, 4), (4, 10), (16, 10), (11, 14)])
def test_srtp_event_length_from_sdp_crypto(trailer: int, other: int) -> None:
    # SDP a=crypto fixes the trailer (80-bit tag 10, 32-bit 4, GCM 16, 10 + a 1-byte MKI):
    # an event is 4 + that; a packet of another trailer's length is not an event; an
    # encrypted payload is not read (0xa5 has the R bit set: plain RTP would refuse it)
    rows = srtp_with_events((trailer, other))
    sdes = EndpointMedia({8: PayloadInfo("PCMA", 8000)}, "RTP/SAVP", (trailer,))
    tracker = StreamTracker(hints=Hints.of({(B, 5000): sdes}))
    tracker.feed(build_frames(rows))
    (s,) = tracker.finish()
    assert (s.telephone_event_packets, s.packets, s.profile, s.srtp_trailer_bytes) == (
        5, 70, "RTP/SAVP", trailer)


def test_srtp_event_length_without_sdp() -> None:
    # no SDP: 4 + a plausible trailer (4 or 10 bytes of tag, with or without a 4-byte MKI)
    tracker = StreamTracker()
    tracker.feed(build_frames(srtp_with_events((10, 4, 14, 8, 6))))
    (s,) = tracker.finish()
    assert (s.telephone_event_packets, s.packets, s.profile) == (20, 85, None)


def test_plain_rtp_sdp_takes_only_4_byte_events() -> None:
    plain = EndpointMedia({8: PayloadInfo("PCMA", 8000)}, "RTP/AVP")
    tracker = StreamTracker(hints=Hints.of({(B, 5000): plain}))
    tracker.feed(build_frames(srtp_with_events((10, 4))))
    (s,) = tracker.finish()
    assert (s.telephone_event_packets, s.profile, s.srtp_trailer_bytes) == (0, "RTP/AVP", None)


def test_event_length_batching_invariant() -> None:
    rows = srtp_with_events((10, 4, 14))
    whole = StreamTracker()
    whole.feed(build_frames(rows))
    one = StreamTracker()
    for r in rows:
        one.feed(build_frames([r]))
    # the JSON form: a running mean summed over other cuts may differ in the last ulp
    a, b = [s.to_json() for s in whole.finish()], [s.to_json() for s in one.finish()]
    assert a == b and a[0]["telephone_event_packets"] == 15


def test_flows_sharing_a_key_hash_stay_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracker groups rows by a 64-bit hash of the full key, which a flood can make
    collide (the mix is invertible). With a multiplier of 0 every flow of one SSRC and
    point shares a hash: three such flows, interleaved, must still be three streams with
    their own counts, as with the real mix."""
    def flows() -> list[Row]:
        rows = (g711_stream(T0, A, 4000, B, 5000, 0x77, 60)
                + g711_stream(T0 + 0.001, C, 4002, B, 5000, 0x77, 40, seq0=9000)
                + g711_stream(T0 + 0.002, A, 4004, C, 5002, 0x77, 30, seq0=50))
        return sorted(rows, key=lambda r: r[0])

    def streams() -> list[tuple[str, int, int, int, int]]:
        tracker = StreamTracker()
        for lo in range(0, 130, 7):  # several batches, keys split across them
            tracker.feed(build_frames(flows()[lo:lo + 7]))
        return sorted((str(s.key.src_endpoint), s.key.sport, s.packets, s.lost, s.expected)
                      for s in tracker.finish())

    want = [(f"{A}:4000", 4000, 60, 0, 60), (f"{A}:4004", 4004, 30, 0, 30),
            (f"{C}:4002", 4002, 40, 0, 40)]
    assert streams() == want
    monkeypatch.setattr("agent.rtp.tracker._M64", np.uint64(0))
    assert streams() == want
