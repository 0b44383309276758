"""Call captures for the media registry (issue 8): one codec per call, SRTP with DTMF, VAD.

Like ``callgen`` (whose emissions, truth and pcap writer it uses), this module
imports nothing from ``agent``: its truth (codec names as the SDP writes them,
event and CN packet counts, RFC 3550 jitter over the audio packets alone) is
computed from the packets it writes.

Scenarios (each returns ``(packets, truth)``):

``codec_tour``       sequential calls 198.18.11.1:20000 <-> 198.18.12.1:30000, one
                     codec each (`TOUR`: G.726 at every rate, GSM, AMR, G.729, G.722,
                     Opus, iLBC, speex and a vendor name nobody has figures for).
``srtp_dtmf``        one call over RTP/SAVP (``a=crypto`` of the suite given, an
                     MKI if asked) with four RFC 4733 events per direction; every
                     payload is random bytes + MKI + tag; ``signalled=False``: the
                     very same RTP without SIP.
``pcma_vad``         one PCMA call with silence suppression: three silences per
                     direction (a CN packet every 10 slots), the next talkspurt
                     with the marker bit; ``vad=False``: the same call talking
                     throughout (the reference its quality must equal).
"""

from __future__ import annotations

import random

from callgen import (
    BASE_EPOCH_NS,
    MS,
    PCMA,
    CallPlan,
    Codec,
    MediaPlan,
    S,
    ScenarioTruth,
    _build,
    _Capture,
    emit_call,
    stream_truth,
)
from synth import CapturedPacket

#: One call per codec. Payload sizes per 20 ms: the codec's bit rate (G.726: k kbit/s,
#: GSM 33 B (RFC 3551 §4.5.8), AMR 12.2 octet-aligned 32 B, G.729 20 B, G.722 160 B,
#: Opus ~32 kbit/s, iLBC 20 ms mode 38 B, speex narrowband mode 5 38 B).
TOUR: tuple[Codec, ...] = (
    *(Codec(99, f"G726-{k}", 8000, k * 20 // 8) for k in (16, 24, 32, 40)),
    Codec(99, "AAL2-G726-16", 8000, 40),
    Codec(3, "GSM", 8000, 33),
    Codec(99, "AMR", 8000, 32),
    Codec(18, "G729", 8000, 20),
    Codec(9, "G722", 8000, 160),
    Codec(99, "opus", 48000, 80),
    Codec(99, "iLBC", 8000, 38),
    Codec(99, "speex", 8000, 38),
    Codec(99, "X-VENDOR-VOICE", 8000, 40),
)


def codec_tour(seed: int = 23) -> tuple[list[CapturedPacket], ScenarioTruth]:
    """Each call talks 3 s; the next INVITE follows the BYE by 0.5-2 s."""
    rng = random.Random(seed)
    plans = []
    t = BASE_EPOCH_NS
    for i, codec in enumerate(TOUR):
        setup, talk = 1 * S, 3 * S
        plans.append(CallPlan(
            call_id=f"tour-{i}-{rng.getrandbits(32):08x}@198.18.11.1", start_ns=t,
            caller_ip="198.18.11.1", callee_ip="198.18.12.1", caller_media=20000,
            callee_media=30000, codec=codec, outcome="answered", setup_ns=setup,
            talk_ns=talk))
        t += setup + talk + 15 * MS + rng.randrange(500 * MS, 2 * S)
    return _build(rng, plans)


def _one_call(plan: CallPlan, rng: random.Random, signalled: bool
              ) -> tuple[list[CapturedPacket], ScenarioTruth]:
    if signalled:
        return _build(rng, [plan])
    cap = _Capture()  # the same RTP (same draws) with every SIP message left out
    pending = emit_call(cap, rng, plan)
    rtp_only = [e for e in cap.finish() if e.stream is not None]
    streams = tuple(stream_truth(rtp_only, leg.sid, plan.codec.name, plan.codec.clock_rate)
                    for leg in pending.legs)
    return _Capture.packets(rtp_only), ScenarioTruth((), unsignalled=streams)


def srtp_dtmf(suite: str = "AES_CM_128_HMAC_SHA1_80", mki_bytes: int = 0,
              signalled: bool = True, seed: int = 29
              ) -> tuple[list[CapturedPacket], ScenarioTruth]:
    """PCMA over SRTP, 600 slots per direction, events at slots 60, 200, 340, 480."""
    rng = random.Random(seed)
    media = MediaPlan(srtp_suite=suite, srtp_mki_bytes=mki_bytes, dtmf_at=(60, 200, 340, 480))
    plan = CallPlan(
        call_id=f"srtp-{seed}@198.18.13.1", start_ns=BASE_EPOCH_NS, caller_ip="198.18.13.1",
        callee_ip="198.18.13.2", caller_media=41000, callee_media=41002, codec=PCMA,
        outcome="answered", setup_ns=500 * MS, talk_ns=(600 * 20 + 200) * MS, media=media)
    return _one_call(plan, rng, signalled)


def pcma_vad(vad: bool = True, seed: int = 31) -> tuple[list[CapturedPacket], ScenarioTruth]:
    """PCMA, 800 slots per direction; silences at slots 100-250, 400-460, 600-700."""
    rng = random.Random(seed)
    media = MediaPlan(silence=((100, 250), (400, 460), (600, 700))) if vad else MediaPlan()
    plan = CallPlan(
        call_id=f"vad-{seed}@198.18.14.1", start_ns=BASE_EPOCH_NS, caller_ip="198.18.14.1",
        callee_ip="198.18.14.2", caller_media=42000, callee_media=42002, codec=PCMA,
        outcome="answered", setup_ns=500 * MS, talk_ns=(800 * 20 + 200) * MS, media=media)
    return _one_call(plan, rng, True)


SCENARIOS = {
    "codec_tour": codec_tour,
    "srtp_dtmf_80": lambda: srtp_dtmf("AES_CM_128_HMAC_SHA1_80"),
    "srtp_dtmf_32_mki": lambda: srtp_dtmf("AES_CM_128_HMAC_SHA1_32", mki_bytes=4),
    "srtp_dtmf_80_unsignalled": lambda: srtp_dtmf("AES_CM_128_HMAC_SHA1_80", signalled=False),
    "srtp_dtmf_32_unsignalled": lambda: srtp_dtmf("AES_CM_128_HMAC_SHA1_32", signalled=False),
    "srtp_dtmf_32_mki_unsignalled": lambda: srtp_dtmf("AES_CM_128_HMAC_SHA1_32", 4,
                                                      signalled=False),
    "pcma_vad": pcma_vad,
    "pcma_no_vad": lambda: pcma_vad(vad=False),
}
