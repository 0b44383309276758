"""The dialog state machine: the transition table and single-dialog behaviour."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sip_callflow import ALICE, ANSWER, BOB, CallFlow

from agent.sip.dialog import MAX_DEDUP_KEYS, MAX_MEDIA, TRANSITIONS, Dialog, Event, State
from agent.sip.events import EndReason
from agent.sip.message import parse_message

T0 = 1_700_000_000.0


def new_dialog(call: CallFlow) -> Dialog:
    invite = parse_message(call.invite())
    dialog = Dialog(invite, ALICE, BOB, T0, "udp")
    assert dialog.start(invite, ALICE, T0, 26) is True
    return dialog


def test_table_is_closed_and_ended_is_final() -> None:
    assert all(isinstance(v, State) for v in TRANSITIONS.values())
    assert not any(state is State.ENDED for state, _ in TRANSITIONS)
    live = [s for s in State if s is not State.ENDED]
    for state in live:  # the probe and the call layer can always end a dialog
        assert TRANSITIONS[(state, Event.SHUTDOWN)] is State.ENDED
        assert TRANSITIONS[(state, Event.END)] is State.ENDED
    # Only a confirmed call has no timer here: media idleness is the call layer's call.
    assert {s for s in live if (s, Event.TIMEOUT) in TRANSITIONS} == set(live) - {State.CONFIRMED}


@pytest.mark.parametrize(
    ("state", "event", "target"),
    [
        (State.CALLING, Event.PROVISIONAL, State.PROCEEDING),
        (State.PROCEEDING, Event.EARLY_PROVISIONAL, State.EARLY),
        (State.EARLY, Event.PROVISIONAL, State.EARLY),  # a late 100 does not undo the early dialog
        (State.EARLY, Event.CANCEL, State.EARLY),
        (State.EARLY, Event.SUCCESS, State.CONFIRMED),
        (State.PROCEEDING, Event.CHALLENGE, State.CHALLENGED),
        (State.CHALLENGED, Event.INVITE, State.CALLING),
        (State.CONFIRMED, Event.REINVITE, State.CONFIRMED),
        (State.CONFIRMED, Event.BYE, State.TERMINATING),
        (State.TERMINATING, Event.BYE_DONE, State.ENDED),
    ],
)
def test_transitions(state: State, event: Event, target: State) -> None:
    assert TRANSITIONS[(state, event)] is target


def test_unexpected_message_is_counted_not_raised() -> None:
    call = CallFlow()
    dialog = new_dialog(call)
    # An ACK before any final response does not fit the INVITE client transaction.
    out = dialog.handle(parse_message(call.request("ACK", to_tag="x")), ALICE, T0 + 1, 0)
    assert (out.ended, dialog.state, dialog.unexpected) == (False, State.CALLING, 1)


def test_bye_481_ends_dialog_without_disconnect_delay() -> None:
    call = CallFlow()
    dialog = new_dialog(call)
    for data, src, ts in [
        (call.response(200, body=ANSWER), BOB, T0 + 1),
        (call.request("BYE", cseq=call.cseq + 1, to_tag=call.callee_tag), ALICE, T0 + 9),
    ]:
        dialog.handle(parse_message(data), src, ts, 0)
    gone = call.response(481, method="BYE", cseq=call.cseq + 1)
    out = dialog.handle(parse_message(gone), BOB, T0 + 10, 0)
    call_end = dialog.snapshot()
    assert out.ended and call_end.end_reason is EndReason.NORMAL
    assert (call_end.end_ts, call_end.disconnect_ts) == (T0 + 9, None)  # §15.1.1: over anyway


def test_cancel_crossing_a_final_486_is_cancelled() -> None:
    call = CallFlow()
    dialog = new_dialog(call)
    dialog.handle(parse_message(call.request("CANCEL")), ALICE, T0 + 1, 0)
    dialog.handle(parse_message(call.response(486)), BOB, T0 + 1.01, 0)
    snap = dialog.snapshot()
    assert (snap.final_status, snap.end_reason) == (486, EndReason.CANCELLED)


def test_media_list_is_bounded() -> None:
    call = CallFlow()
    dialog = new_dialog(call)
    dialog.handle(parse_message(call.response(200, body=ANSWER)), BOB, T0 + 1, 0)
    for i in range(MAX_MEDIA + 10):
        data = call.invite(cseq=call.cseq + 1 + i, to_tag=call.callee_tag)
        assert dialog.handle(parse_message(data), ALICE, T0 + 2 + i, 0).new_media
    assert len(dialog.media) == MAX_MEDIA and dialog.media_dropped == 12
    assert dialog.media[-1].ts == T0 + 2 + MAX_MEDIA + 9  # the newest are kept
    assert len(dialog._dedup) <= MAX_DEDUP_KEYS


_MESSAGES = [
    ("caller", "invite"),
    ("callee", "100"),
    ("callee", "180"),
    ("callee", "183"),
    ("callee", "200"),
    ("callee", "407"),
    ("callee", "486"),
    ("callee", "487"),
    ("caller", "ack"),
    ("caller", "cancel"),
    ("caller", "bye"),
    ("callee", "bye"),
    ("callee", "bye200"),
    ("caller", "reinvite"),
    ("caller", "invite2"),
]


def _build(call: CallFlow, name: str) -> bytes:
    c = call.cseq
    table = {
        "invite": lambda: call.invite(),
        "invite2": lambda: call.invite(cseq=c + 1),
        "ack": lambda: call.request("ACK", to_tag=call.callee_tag),
        "cancel": lambda: call.request("CANCEL"),
        "bye": lambda: call.request("BYE", cseq=c + 5, to_tag=call.callee_tag),
        "bye200": lambda: call.response(200, method="BYE", cseq=c + 5),
        "reinvite": lambda: call.invite(cseq=c + 7, to_tag=call.callee_tag),
    }
    if name in table:
        return table[name]()
    body = ANSWER if name in ("183", "200") else None
    return call.response(int(name), body=body)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(range(len(_MESSAGES))), max_size=25), st.booleans())
def test_any_message_order_keeps_invariants(order: list[int], shut: bool) -> None:
    """Whatever order the probe sees messages in (loss, reordering, a capture that
    starts or stops mid-call), the machine never raises and its record is coherent."""
    call = CallFlow()
    dialog = new_dialog(call)
    ends = 0
    for i, index in enumerate(order):
        side, name = _MESSAGES[index]
        src = ALICE if side == "caller" else BOB
        ends += dialog.handle(parse_message(_build(call, name)), src, T0 + i, 0).ended
    ends += dialog.shutdown(T0 + 100) if shut else dialog.end(EndReason.TIMED_OUT, T0 + 100)
    snap = dialog.snapshot()
    assert ends == 1 and dialog.state is State.ENDED
    assert snap.end_reason is not None and snap.end_ts is not None
    assert snap.end_ts >= snap.invite_ts
    if snap.answer_ts is not None:
        assert snap.final_status is not None and 200 <= snap.final_status < 300
    if snap.end_reason is EndReason.NORMAL:
        assert snap.bye_ts == snap.end_ts
    if snap.end_reason is EndReason.CANCELLED:
        assert "CANCEL" in snap.requests or snap.final_status == 487
    assert sum(snap.signalling_dscp.values()) == len(order) + 1
