"""Streams join calls by the SDP endpoints they are sent to (NAT-proof), with the
symmetric-RTP fallback, and port reuse resolved by time."""

from __future__ import annotations

from callsbuild import T0, call, stream

from agent.calls.correlate import MediaIndex
from agent.sip.events import Side


def test_stream_to_an_advertised_endpoint_flows_toward_its_advertiser() -> None:
    idx = MediaIndex()
    idx.update(call())
    to_callee = stream(("198.18.7.1", 16000), ("198.19.8.2", 20000), 1)
    to_caller = stream(("198.19.8.2", 20000), ("198.18.7.1", 16000), 2)
    m1 = idx.match_key(to_callee.key, to_callee.first_ts)
    m2 = idx.match_key(to_caller.key, to_caller.first_ts)
    assert m1 is not None and (m1.call_id, m1.toward, m1.by) == ("c1@test", Side.CALLEE, "both")
    assert m2 is not None and m2.toward == Side.CALLER


def test_nat_source_is_latched_by_destination() -> None:
    # the callee sits behind a NAT: its media comes from a public address the SDP never named
    idx = MediaIndex()
    idx.update(call())
    s = stream(("198.19.200.9", 61234), ("198.18.7.1", 16000), 3)
    m = idx.match_key(s.key, s.first_ts)
    assert m is not None and m.toward == Side.CALLER and m.by == "destination"


def test_symmetric_rtp_fallback_when_destination_is_rewritten() -> None:
    idx = MediaIndex()
    idx.update(call())
    s = stream(("198.18.7.1", 16000), ("198.19.250.1", 40000), 4)
    m = idx.match_key(s.key, s.first_ts)
    assert m is not None and m.toward == Side.CALLEE and m.by == "source"


def test_port_reuse_goes_to_the_call_that_advertised_it_last_before_the_stream() -> None:
    idx = MediaIndex()
    idx.update(call("early@test", t0=T0))
    idx.update(call("later@test", t0=T0 + 100.0))
    early = stream(("198.18.7.1", 16000), ("198.19.8.2", 20000), 5, t0=T0 + 2)
    late = stream(("198.18.7.1", 16000), ("198.19.8.2", 20000), 6, t0=T0 + 102)
    assert idx.match_key(early.key, early.first_ts).call_id == "early@test"  # type: ignore[union-attr]
    assert idx.match_key(late.key, late.first_ts).call_id == "later@test"  # type: ignore[union-attr]
    idx.remove("later@test")
    assert idx.match_key(late.key, late.first_ts).call_id == "early@test"  # type: ignore[union-attr]
    idx.remove("early@test")
    assert len(idx) == 0 and idx.match_key(late.key, late.first_ts) is None


def test_unrelated_stream_matches_nothing() -> None:
    idx = MediaIndex()
    idx.update(call())
    s = stream(("198.18.9.9", 7000), ("198.19.9.9", 7002), 7)
    assert idx.match_key(s.key, s.first_ts) is None


def test_callee_reusing_its_port_for_every_call_is_told_apart_by_the_caller_port() -> None:
    # sipp's uas answers every call on 198.19.8.2:20000; the caller uses a new port per
    # call. A stream that starts just before the next call's answer still belongs to its
    # own call because both of its ends were advertised by that call.
    idx = MediaIndex()
    idx.update(call("one@test", caller=("198.18.7.1", 6000), t0=T0))
    idx.update(call("two@test", caller=("198.18.7.1", 6004), t0=T0 + 8.5))
    late = stream(("198.18.7.1", 6000), ("198.19.8.2", 20000), 9, t0=T0 + 8.4)
    m = idx.match_key(late.key, late.first_ts)
    assert m is not None and (m.call_id, m.by) == ("one@test", "both")
