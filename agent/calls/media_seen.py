"""Which directions of a call carried media past the probe: two-way, one-way or none.

Theory of operation
-------------------
One-way audio (one party hears the other, not the reverse: a NAT or firewall
pinhole, a wrong SDP address, an SBC that forwards one leg) is the classic
VoIP fault. The probe can only say what passed it, so the verdict is phrased
that way:

- A direction *carried media* when one of its streams has a packet that is not
  an RFC 4733 telephone-event (``packets - telephone_event_packets > 0``):
  DTMF alone is not audio, but RFC 3389 comfort noise is (a party silent
  behind VAD is still sending; one CN packet may be all a muted phone sends, so
  one packet is enough). For an answered call only streams still
  running at the answer count (``last_ts >= answer_ts``), so early media
  (183 with SDP, a ringback tone that stops at the answer) cannot make a call
  that went one-way after the answer look two-way.
- Audio only: a stream of a signalled call counts when its destination or
  source is an endpoint an ``m=audio`` section of the call advertised, so the
  video (or T.38) streams of the call neither make nor mend one-way audio;
  SDP directions are read from the audio sections alone.
- ``a_to_b`` is caller -> callee (the side the stream was sent toward, from
  the SDP it joined by), ``b_to_a`` the reverse; ``both``; ``none`` when no
  media of the call passed the probe. ``none`` is *not* a one-way fault: the
  call's media may take another path (a phone talking straight to the
  carrier's media server, media anchored elsewhere); see `media_at_probe`.
- The call is *judged* (``require_two_way_media``, the one-way metric) only
  when it was answered, lasted ``two_way_media_after_s`` from the answer to its
  end (a call hung up within a second may not have sent media yet), some
  media passed the probe, and no SDP of the call negotiated a one-way or held
  session (sendonly/recvonly/inactive, or ``c=0.0.0.0``) -- one-way media is
  then what the parties agreed on, not a fault.

Pure functions of the call's streams and signalling: packet time only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from agent.rtp.model import StreamStats
from agent.sip.events import CallSignalling, Side
from agent.sip.sdp import Direction, MediaDescription

MediaSeen = Literal["both", "a_to_b", "b_to_a", "none"]
OneWay = Literal["a_to_b", "b_to_a"]


@dataclass(frozen=True, slots=True)
class TwoWayMedia:
    """What the probe saw of a call's media directions, and whether that is judged."""

    seen: MediaSeen
    judged: bool  # answered, long enough, media at the probe, sendrecv throughout

    @property
    def directions(self) -> int:
        """Directions that carried media: 0, 1 or 2."""
        return {"both": 2, "none": 0}.get(self.seen, 1)

    @property
    def one_way(self) -> OneWay | None:
        """The one direction media flowed in, for a judged one-way call; else None."""
        if self.judged and self.seen in ("a_to_b", "b_to_a"):
            return "a_to_b" if self.seen == "a_to_b" else "b_to_a"
        return None


_AUDIO_MEDIA = frozenset({"audio", "comfort-noise", "unknown"})


def carries_media(s: StreamStats) -> bool:
    """An audio stream (by its kind: not video, T.38 or events alone) with a packet that
    is not an RFC 4733 event: audio or comfort noise (a muted phone may send CN only)."""
    return s.media in _AUDIO_MEDIA and s.packets - s.telephone_event_packets > 0


def media_seen(streams: Iterable[tuple[Side, StreamStats]],
               answer_ts: float | None = None) -> MediaSeen:
    """``both``/``a_to_b``/``b_to_a``/``none`` from (side sent toward, stream) pairs.

    With ``answer_ts`` (epoch seconds), a stream that ended before the answer
    (early media only) does not count."""
    toward = {
        side for side, s in streams
        if carries_media(s) and (answer_ts is None or s.last_ts >= answer_ts)
    }
    if len(toward) == 2:
        return "both"
    if Side.CALLEE in toward:
        return "a_to_b"
    if Side.CALLER in toward:
        return "b_to_a"
    return "none"


def not_sendrecv(sections: Iterable[MediaDescription]) -> bool:
    """Every one of these SDP media sections (there is one) is held or one-way
    (sendonly/recvonly/inactive, or the old-style ``c=0.0.0.0``): silence in a
    direction is agreed, not a fault."""
    held = [m.on_hold or m.direction != Direction.SENDRECV for m in sections]
    return bool(held) and all(held)


def two_way_media(streams: list[tuple[Side, StreamStats]], sig: CallSignalling | None,
                  end_ts: float, after_s: float) -> TwoWayMedia:
    """The call's `TwoWayMedia`; ``sig`` None for unsignalled media (never judged).

    ``end_ts`` is the call's end (epoch seconds); ``after_s`` the profile's
    ``two_way_media_after_s``."""
    if sig is None:
        return TwoWayMedia(media_seen(streams), judged=False)
    answer = sig.answer_ts
    seen = media_seen(streams, answer)
    judged = (
        answer is not None
        and end_ts - answer >= after_s
        and seen != "none"
        and not any(not_sendrecv(m for m in body.media if m.is_audio) for body in sig.media)
    )
    return TwoWayMedia(seen, judged)
