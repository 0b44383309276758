"""SipTracker: call flows built as bytes, parsed, fed; timings and end reasons checked."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from sip_callflow import ALICE, ANSWER, BOB, OFFER, CallFlow, Wire, sdp

from agent.capture.pcapfile import open_capture
from agent.decode import Decoder, Frames
from agent.decode.frames import IPPROTO_TCP
from agent.sip.events import (
    CallSignalling,
    DialogEnded,
    DialogStarted,
    Endpoint,
    EndReason,
    MediaChanged,
    Side,
    SipEvent,
)
from agent.sip.message import SipMessage, looks_like_sip, parse_message
from agent.sip.sdp import Direction
from agent.sip.tcpstream import SipTcpReassembler
from agent.sip.tracker import SipTracker

T0 = 1_700_000_000.0


def kinds(events: Sequence[object]) -> list[str]:
    return [type(e).__name__ for e in events]


def last_call(wire: Wire) -> CallSignalling:
    event = wire.events[-1]
    assert isinstance(event, DialogStarted | MediaChanged | DialogEnded)
    return event.call


def answered(wire: Wire, call: CallFlow) -> None:
    """INVITE t0, 100 +0.05, 180 +1.2, 200+SDP +5.0, ACK +5.1."""
    wire.caller(call.invite(), T0)
    wire.callee(call.response(100), T0 + 0.05)
    wire.callee(call.response(180), T0 + 1.2)
    wire.callee(call.response(200, body=ANSWER), T0 + 5.0)
    wire.caller(call.request("ACK", to_tag=call.callee_tag), T0 + 5.1)


def test_normal_call_timings_and_media() -> None:
    wire, call = Wire(), CallFlow()
    answered(wire, call)
    started = wire.events[0]
    assert isinstance(started, DialogStarted)
    assert [m.media[0].port for m in started.call.media] == [40000]  # the offer
    bye = wire.caller(call.request("BYE", cseq=call.cseq + 1, to_tag=call.callee_tag), T0 + 65.0)
    assert bye == []
    ended = wire.callee(call.response(200, method="BYE", cseq=call.cseq + 1), T0 + 65.02)
    assert kinds(wire.events) == ["DialogStarted", "MediaChanged", "DialogEnded"]
    assert kinds(ended) == ["DialogEnded"]
    c = ended[0].call
    assert (c.caller, c.callee, c.transport) == (ALICE, BOB, "udp")
    assert c.from_uri == "sip:alice@atlanta.example.com"
    assert c.to_uri == "sip:bob@biloxi.example.com"
    assert c.first_response_ts == T0 + 0.05
    assert c.first_provisional_ts == T0 + 1.2
    assert c.setup_delay_s == pytest.approx(1.2)  # RFC 6076 SRD: INVITE -> 180
    assert c.answer_delay_s == pytest.approx(5.0)
    assert (c.final_status, c.end_reason) == (200, EndReason.NORMAL)
    assert (c.bye_ts, c.bye_side, c.disconnect_ts) == (T0 + 65.0, Side.CALLER, T0 + 65.02)
    assert c.end_ts == T0 + 65.0  # the session ends at the BYE (RFC 3261 §15.1.1)
    assert c.answer_ts is not None and c.end_ts - c.answer_ts == pytest.approx(60.0)
    assert [(m.side, m.in_response, m.source, m.media[0].port) for m in c.media] == [
        (Side.CALLER, None, ALICE, 40000),
        (Side.CALLEE, 200, BOB, 50000),
    ]
    assert c.requests == {"INVITE": 1, "ACK": 1, "BYE": 1}
    assert c.responses == {100: 1, 180: 1, 200: 2}
    assert c.signalling_dscp == {26: 7}
    assert (c.retransmissions, c.early_dialogs, c.user_agent) == (0, 1, "TestPhone/1.0")
    assert wire.tracker.active() == []
    counters = wire.tracker.counters.as_dict()
    assert counters["requests_invite"] == 1 and counters["responses_2xx"] == 2
    assert counters["dialogs_started"] == counters["dialogs_ended"] == 1


def test_active_snapshot_while_ringing() -> None:
    wire, call = Wire(), CallFlow()
    wire.caller(call.invite(), T0)
    wire.callee(call.response(180), T0 + 0.5)
    (c,) = wire.tracker.active()
    assert (c.end_ts, c.end_reason, c.final_status, c.answer_ts) == (None, None, None, None)
    assert c.setup_delay_s == pytest.approx(0.5)


def test_early_media_sdp_in_183() -> None:
    wire, call = Wire(), CallFlow()
    wire.caller(call.invite(), T0)
    early = wire.callee(call.response(183, body=sdp("198.51.100.20", 50002)), T0 + 0.3)
    assert kinds(early) == ["MediaChanged"]
    c = early[0].call
    assert c.media[-1].in_response == 183 and c.media[-1].media[0].port == 50002
    assert c.first_provisional_ts == T0 + 0.3 and c.early_dialogs == 1
    wire.callee(call.response(200, body=ANSWER), T0 + 4)
    assert [m.in_response for m in last_call(wire).media] == [None, 183, 200]


@pytest.mark.parametrize(("code", "reason"), [(486, EndReason.FAILED), (503, EndReason.FAILED)])
def test_failed_call(code: int, reason: EndReason) -> None:
    wire, call = Wire(), CallFlow()
    wire.caller(call.invite(), T0)
    wire.callee(call.response(100), T0 + 0.01)
    ended = wire.callee(call.response(code), T0 + 0.4)
    assert kinds(ended) == ["DialogEnded"]
    c = ended[0].call
    assert (c.final_status, c.end_reason, c.end_ts) == (code, reason, T0 + 0.4)
    assert c.answer_ts is None and c.first_provisional_ts is None
    assert c.setup_delay_s == pytest.approx(0.4)  # no 18x: SRD ends at the final response
    # The ACK of the failure (same branch as the INVITE, §17.1.1.3) is absorbed.
    assert wire.caller(call.request("ACK", to_tag=call.callee_tag), T0 + 0.41) == []
    assert wire.tracker.counters.orphan_requests == 0


def test_cancel_then_487_is_cancelled() -> None:
    wire, call = Wire(), CallFlow()
    wire.caller(call.invite(), T0)
    wire.callee(call.response(180), T0 + 0.2)
    assert wire.caller(call.request("CANCEL"), T0 + 3.0) == []
    assert wire.callee(call.response(200, method="CANCEL"), T0 + 3.01) == []
    ended = wire.callee(call.response(487), T0 + 3.02)
    c = ended[0].call
    assert (c.final_status, c.end_reason, c.end_ts) == (487, EndReason.CANCELLED, T0 + 3.02)
    assert c.requests == {"INVITE": 1, "CANCEL": 1}


def test_setup_timeout_without_final_response() -> None:
    tracker = SipTracker(setup_timeout_s=180.0)
    wire, call = Wire(tracker), CallFlow()
    wire.caller(call.invite(), T0)
    wire.callee(call.response(180), T0 + 1.0)
    assert tracker.expire(T0 + 180.0) == []  # Timer C counts from the last message
    ended = tracker.expire(T0 + 181.0)
    assert kinds(ended) == ["DialogEnded"]
    c = ended[0].call
    assert (c.end_reason, c.final_status, c.end_ts) == (EndReason.TIMED_OUT, None, T0 + 1.0)
    assert tracker.counters.dialogs_timed_out == 1
    assert len(tracker) == 1  # lingers to absorb late messages
    tracker.expire(T0 + 181.0 + 32.0)
    assert len(tracker) == 0


def test_retransmitted_invite_and_200_counted_once() -> None:
    wire, call = Wire(), CallFlow()
    wire.caller(call.invite(), T0)
    assert wire.caller(call.invite(), T0 + 0.5) == []  # Timer A retransmission
    wire.callee(call.response(180), T0 + 1.0)
    wire.callee(call.response(200, body=ANSWER), T0 + 2.0)
    assert wire.callee(call.response(200, body=ANSWER), T0 + 2.5) == []  # 2xx retransmitted
    wire.caller(call.request("ACK", to_tag=call.callee_tag), T0 + 2.6)
    wire.caller(call.request("ACK", to_tag=call.callee_tag), T0 + 3.0)  # ACK of the 2nd 200
    (c,) = wire.tracker.active()
    assert c.requests == {"INVITE": 1, "ACK": 1}
    assert c.responses == {180: 1, 200: 1}
    assert c.retransmissions == 3
    assert (c.answer_ts, len(c.media)) == (T0 + 2.0, 2)
    assert c.signalling_dscp == {26: 7}  # every packet, retransmissions included
    assert wire.tracker.counters.retransmissions == 3
    assert wire.tracker.counters.requests_by_method == {"INVITE": 2, "ACK": 2}


def test_forking_two_early_dialogs_first_2xx_wins() -> None:
    wire, call = Wire(), CallFlow()
    wire.caller(call.invite(), T0)
    wire.callee(call.response(180, to_tag="fork-a"), T0 + 0.2)
    wire.callee(call.response(180, to_tag="fork-b"), T0 + 0.3)
    wire.callee(call.response(200, to_tag="fork-b", body=ANSWER), T0 + 2.0)
    wire.callee(call.response(200, to_tag="fork-a", body=sdp("203.0.113.5", 6000)), T0 + 2.1)
    # The caller ACKs and BYEs the losing fork (§13.2.2.4): the call goes on.
    wire.caller(call.request("ACK", to_tag="fork-a"), T0 + 2.2)
    bye_a = call.request("BYE", cseq=call.cseq + 1, to_tag="fork-a")
    assert wire.caller(bye_a, T0 + 2.3) == []
    (c,) = wire.tracker.active()
    assert (c.early_dialogs, c.final_status, c.answer_ts) == (2, 200, T0 + 2.0)
    assert c.bye_ts is None and c.end_reason is None


def test_reinvite_moves_media_then_hold() -> None:
    wire, call = Wire(), CallFlow()
    answered(wire, call)
    moved = sdp("192.0.2.10", 40100, version=2)
    reinvite = call.invite(body=moved, cseq=call.cseq + 1, to_tag=call.callee_tag)
    changed = wire.caller(reinvite, T0 + 20)
    assert kinds(changed) == ["MediaChanged"]
    assert changed[0].call.media[-1].media[0].port == 40100
    wire.callee(call.response(200, cseq=call.cseq + 1, body=ANSWER), T0 + 20.1)
    hold = sdp("192.0.2.10", 40100, direction="sendonly", version=3)
    held = wire.caller(call.invite(body=hold, cseq=call.cseq + 2, to_tag=call.callee_tag), T0 + 30)
    media = held[0].call.media[-1].media[0]
    assert (media.direction, media.on_hold) == (Direction.SENDONLY, True)
    assert held[0].call.final_status == 200  # re-INVITE responses never change it
    assert wire.tracker.active()[0].end_reason is None


def test_update_with_sdp_and_old_style_hold() -> None:
    wire, call = Wire(), CallFlow()
    answered(wire, call)
    hold = sdp("0.0.0.0", 40000, version=2)
    update = call.request("UPDATE", from_callee=True, to_tag=call.callee_tag, body=hold)
    out = wire.callee(update, T0 + 9)
    assert kinds(out) == ["MediaChanged"]
    last = out[0].call.media[-1]
    assert (last.side, last.source, last.media[0].on_hold) == (Side.CALLEE, BOB, True)


def test_bye_from_callee() -> None:
    wire, call = Wire(), CallFlow()
    answered(wire, call)
    bye = call.request("BYE", cseq=1, from_callee=True, to_tag=call.callee_tag)
    wire.callee(bye, T0 + 30)
    ended = wire.caller(call.response(200, method="BYE", cseq=1, from_callee=True), T0 + 30.2)
    c = ended[0].call
    assert (c.bye_side, c.end_reason, c.end_ts, c.disconnect_ts) == (
        Side.CALLEE,
        EndReason.NORMAL,
        T0 + 30,
        T0 + 30.2,
    )


def test_bye_never_answered_ends_normal_after_timer_f() -> None:
    wire, call = Wire(), CallFlow()
    answered(wire, call)
    wire.caller(call.request("BYE", cseq=call.cseq + 1, to_tag=call.callee_tag), T0 + 40)
    assert wire.tracker.expire(T0 + 71) == []
    (ended,) = wire.tracker.expire(T0 + 72)
    c = ended.call
    assert (c.end_reason, c.end_ts, c.disconnect_ts) == (EndReason.NORMAL, T0 + 40, None)


def test_confirmed_call_is_not_timed_out_but_can_be_ended() -> None:
    wire, call = Wire(), CallFlow()
    answered(wire, call)
    assert wire.tracker.expire(T0 + 10_000) == []
    (ended,) = wire.tracker.end(call.call_id, EndReason.TIMED_OUT, T0 + 400)
    assert (ended.call.end_reason, ended.call.end_ts) == (EndReason.TIMED_OUT, T0 + 400)
    assert wire.tracker.end(call.call_id, EndReason.TIMED_OUT, T0 + 401) == []
    assert wire.tracker.end("unknown", EndReason.TIMED_OUT, T0 + 401) == []


def test_shutdown_at_finish() -> None:
    wire = Wire()
    talking, ringing, leaving = CallFlow("c1"), CallFlow("c2"), CallFlow("c3")
    answered(wire, talking)
    wire.caller(ringing.invite(), T0 + 1)
    answered(wire, leaving)
    wire.caller(leaving.request("BYE", cseq=9, to_tag=leaving.callee_tag), T0 + 50)
    ended = {e.call.call_id: e.call for e in wire.tracker.finish(T0 + 60)}
    assert {k: (c.end_reason, c.end_ts) for k, c in ended.items()} == {
        "c1": (EndReason.SHUTDOWN, T0 + 60),
        "c2": (EndReason.SHUTDOWN, T0 + 60),
        "c3": (EndReason.NORMAL, T0 + 50),  # BYE seen: over at the BYE
    }
    assert wire.tracker.active() == []
    assert wire.tracker.finish(T0 + 61) == []


def test_auth_challenge_then_retry_is_one_call() -> None:
    wire, call = Wire(), CallFlow()
    wire.caller(call.invite(), T0)
    assert wire.callee(call.response(407), T0 + 0.1) == []
    wire.caller(call.request("ACK", to_tag=call.callee_tag), T0 + 0.11)
    wire.caller(call.invite(cseq=call.cseq + 1), T0 + 0.2)
    wire.callee(call.response(180, cseq=call.cseq + 1), T0 + 0.5)
    wire.callee(call.response(200, cseq=call.cseq + 1, body=ANSWER), T0 + 2)
    (c,) = wire.tracker.active()
    assert (c.final_status, c.invite_ts, c.answer_ts) == (200, T0, T0 + 2)
    assert c.responses == {407: 1, 180: 1, 200: 1}
    assert wire.tracker.counters.dialogs_started == 1


def test_auth_challenge_not_retried_fails_with_407() -> None:
    wire, call = Wire(), CallFlow()
    wire.caller(call.invite(), T0)
    wire.callee(call.response(407), T0 + 0.1)
    (ended,) = wire.tracker.expire(T0 + 40)
    c = ended.call
    assert (c.final_status, c.end_reason, c.end_ts) == (407, EndReason.FAILED, T0 + 0.1)


def test_register_and_options_make_no_calls() -> None:
    wire = Wire()
    reg = CallFlow("reg-1")
    assert wire.caller(reg.request("REGISTER"), T0) == []
    assert wire.callee(reg.response(401, method="REGISTER"), T0 + 0.1) == []
    assert wire.caller(reg.request("REGISTER", cseq=reg.cseq + 1), T0 + 0.2) == []
    assert wire.callee(reg.response(200, method="REGISTER", cseq=reg.cseq + 1), T0 + 0.3) == []
    opt = CallFlow("opt-1")
    assert wire.caller(opt.request("OPTIONS"), T0 + 1) == []
    assert wire.callee(opt.response(200, method="OPTIONS"), T0 + 1.1) == []
    assert len(wire.tracker) == 0 and wire.events == []
    counters = wire.tracker.counters
    assert counters.requests_by_method == {"REGISTER": 2, "OPTIONS": 1}
    assert counters.responses_by_class == {"4xx": 1, "2xx": 2}
    assert counters.orphan_requests == counters.orphan_responses == 0
    # A BYE of a call the probe never saw start is an orphan, and makes no call.
    stray = CallFlow("stray")
    wire.caller(stray.request("BYE", to_tag="x"), T0 + 2)
    wire.callee(stray.response(200, method="BYE"), T0 + 2.1)
    assert (counters.orphan_requests, counters.orphan_responses, len(wire.tracker)) == (1, 1, 0)


def test_unknown_methods_are_bounded_in_counters() -> None:
    wire = Wire()
    for i in range(50):
        wire.caller(CallFlow(f"x{i}").request(f"FOO{i}"), T0)
    assert wire.tracker.counters.requests_by_method == {"OTHER": 50}


def test_bad_sdp_is_counted_not_raised() -> None:
    wire, call = Wire(), CallFlow()
    (started,) = wire.caller(call.invite(body=b"not sdp"), T0)
    assert isinstance(started, DialogStarted) and started.call.media == ()
    assert wire.tracker.counters.sdp_errors == 1


def test_flood_of_unanswered_invites_stays_within_cap() -> None:
    cap = 1000
    tracker = SipTracker(max_dialogs=cap)
    base = parse_message(CallFlow().invite(body=None))  # SDP parsing is not under test
    answered_call = CallFlow("keep-me")
    wire = Wire(tracker)
    answered(wire, answered_call)
    evicted = 0
    for i in range(100_000):
        msg = dataclasses.replace(base, call_id=f"flood-{i}")
        out = tracker.feed(msg, ALICE, BOB, T0 + 10 + i * 1e-4, 0, "udp")
        evicted += sum(isinstance(e, DialogEnded) for e in out)
        assert len(tracker) <= cap
    assert len(tracker) == cap
    assert tracker.counters.dialogs_evicted == evicted == 100_000 - cap + 1
    # The confirmed call survives: the flood evicted its own kind first.
    assert tracker.get("keep-me") is not None
    assert tracker.get("flood-0") is None and tracker.get("flood-99999") is not None
    assert tracker.get("flood-99999").end_reason is None  # type: ignore[union-attr]


def test_offer_in_invite_is_in_dialog_started_not_media_changed() -> None:
    wire, call = Wire(), CallFlow()
    events = wire.caller(call.invite(body=OFFER), T0)
    assert kinds(events) == ["DialogStarted"]
    assert len(events[0].call.media) == 1


# -- corpus: real captures through the project's decoder, reassembler and tracker ----

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def corpus() -> Path:
    if not (CORPUS / "pcaps").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"corpus missing at {CORPUS}")
        pytest.skip(f"corpus not found at {CORPUS}")
    return CORPUS


@dataclasses.dataclass
class Replay:
    tracker: SipTracker
    tcp: SipTcpReassembler
    events: list[SipEvent]
    invite_finals: set[int]  # final status codes of every INVITE response seen

    def calls(self) -> list[CallSignalling]:
        return [e.call for e in self.events if isinstance(e, DialogEnded)]


def replay(path: Path) -> Replay:
    """Capture -> Decoder -> (TCP: SipTcpReassembler) -> parse_message -> SipTracker."""
    decoder, tcp, tracker = Decoder(), SipTcpReassembler(), SipTracker()
    out = Replay(tracker, tcp, [], set())
    last = 0.0
    with open_capture(path) as reader:
        for batch in reader:
            frames = decoder.decode(batch)
            for i in range(len(frames)):
                last = float(frames.ts[i])
                for transport, data in _sip_payloads(frames, i, tcp):
                    _feed_message(out, frames, i, transport, parse_message(data))
            out.events += tracker.expire(last)
    out.events += tracker.finish(last)
    return out


def _feed_message(out: Replay, frames: Frames, i: int, transport: str, msg: SipMessage) -> None:
    code = msg.status_code
    if msg.method == "INVITE" and code is not None and code >= 200:
        out.invite_finals.add(code)
    src = Endpoint(int(frames.src_hi[i]), int(frames.src_lo[i]), int(frames.sport[i]))
    dst = Endpoint(int(frames.dst_hi[i]), int(frames.dst_lo[i]), int(frames.dport[i]))
    ts, dscp = float(frames.ts[i]), int(frames.dscp[i])
    out.events += out.tracker.feed(msg, src, dst, ts, dscp, transport)


def _sip_payloads(frames: Frames, i: int, tcp: SipTcpReassembler) -> list[tuple[str, bytes]]:
    payload = frames.payload(i)
    if int(frames.proto[i]) == IPPROTO_TCP:
        key = (
            int(frames.src_hi[i]), int(frames.src_lo[i]), int(frames.sport[i]),
            int(frames.dst_hi[i]), int(frames.dst_lo[i]), int(frames.dport[i]),
        )  # fmt: skip
        segs = tcp.feed(key, int(frames.tcp_seq[i]), int(frames.tcp_flags[i]), payload, 0.0)
        return [("tcp", m) for m in segs]
    return [("udp", payload)] if looks_like_sip(payload) else []


def readme_calls(capture: str) -> tuple[int, set[int]]:
    """README table column "SIP calls (final INVITE codes)": `3 (200,407)` -> (3, {200, 407})."""
    for line in (corpus() / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 5 and cells[2] == capture:
            match = re.fullmatch(r"(\d+)(?: \(([\d,]+)\))?", cells[5])
            assert match, cells[5]
            return int(match.group(1)), {int(c) for c in (match.group(2) or "").split(",") if c}
    raise AssertionError(f"{capture} not in the README table")


def oracle_stat(capture: str) -> tuple[dict[str, int], dict[str, int], int]:
    """tshark `-z sip,stat`: requests by method, responses by class, resent messages."""
    methods: dict[str, int] = {}
    classes: dict[str, int] = {}
    resent = -1
    for line in (corpus() / "oracle" / f"{capture}.sip_stat.txt").read_text().splitlines():
        if m := re.match(r"\s+SIP (\d)\d\d\b.*:\s*(\d+) Packets", line):
            classes[f"{m.group(1)}xx"] = classes.get(f"{m.group(1)}xx", 0) + int(m.group(2))
        elif m := re.match(r"\s+([A-Z]+)\s*:\s*(\d+) Packets", line):
            methods[m.group(1)] = int(m.group(2))
        elif m := re.match(r"Number of resent SIP messages: (\d+)", line):
            resent = int(m.group(1))
    return methods, classes, resent


# capture -> (transport, final_status of each call in order of ending)
CORPUS_CALLS = {
    "wiki_SIP_CALL_RTP_G711.pcap": ("udp", [200, None]),  # the 2nd INVITE rings to the end
    "sipp_sip-tcp_pcma_dtmf.pcap": ("tcp", [200]),
    "heplify_gre-teb_sip.pcapng": ("udp", [200, 200, 200]),  # two after a 407 challenge
}


@pytest.mark.parametrize("capture", sorted(CORPUS_CALLS))
def test_corpus_calls_and_counts_match_tshark(capture: str) -> None:
    run = replay(corpus() / "pcaps" / capture)
    n_calls, finals = readme_calls(capture)
    transport, statuses = CORPUS_CALLS[capture]
    calls = run.calls()
    assert run.tracker.counters.dialogs_started == len(calls) == n_calls
    assert run.invite_finals == finals
    assert {c.final_status for c in calls} - {None} <= finals
    assert [c.final_status for c in calls] == statuses
    assert {c.transport for c in calls} == {transport}
    methods, classes, resent = oracle_stat(capture)
    counters = run.tracker.counters
    assert counters.requests_by_method == methods
    assert counters.responses_by_class == classes
    assert counters.retransmissions == resent
    assert counters.unexpected == counters.orphan_requests == counters.orphan_responses == 0
    for call in calls:
        assert call.invite_ts <= (call.end_ts or 0) and call.media
        assert call.end_reason in (EndReason.NORMAL, EndReason.SHUTDOWN)


def test_corpus_sip_over_tcp_call_values() -> None:
    run = replay(corpus() / "pcaps" / "sipp_sip-tcp_pcma_dtmf.pcap")
    assert run.tcp.counters.messages == 10
    assert run.tcp.counters.resyncs == run.tcp.counters.not_sip == 0
    (call,) = run.calls()
    assert call.setup_delay_s == pytest.approx(0.15887, abs=1e-4)  # INVITE -> 180
    assert call.answer_delay_s == pytest.approx(0.53766, abs=1e-4)
    assert call.requests == {"INVITE": 1, "ACK": 1} and call.responses == {180: 1, 200: 1}
    offer, answer = call.media
    assert (offer.side, offer.media[0].address, offer.media[0].port) == (
        Side.CALLER,
        "213.64.235.116",
        28832,
    )
    assert (answer.side, answer.in_response, answer.media[0].port) == (Side.CALLEE, 200, 40000)


def test_corpus_hold_reinvite_and_challenge() -> None:
    run = replay(corpus() / "pcaps" / "heplify_gre-teb_sip.pcapng")
    calls = run.calls()
    assert sum(407 in c.responses for c in calls) == 2  # challenged, retried, answered
    assert all(c.end_reason is EndReason.NORMAL and c.disconnect_ts is not None for c in calls)
    held = [c for c in calls if any(d.on_hold for m in c.media for d in m.media)]
    assert len(held) == 3  # every call is put on hold by a sendonly re-INVITE
