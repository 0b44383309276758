"""Small builders for call-layer tests: signalling snapshots and stream statistics."""

from __future__ import annotations

from dataclasses import replace

from agent.decode.frames import addr_to_words
from agent.rtp.model import StreamKey, StreamStats
from agent.sip.events import CallSignalling, Endpoint, EndReason, MediaSdp, Side
from agent.sip.sdp import parse_sdp

T0 = 1_700_000_000.0


def sdp(addr: str, port: int, pt: int = 8) -> bytes:
    ver = "IP6" if ":" in addr else "IP4"
    return (f"v=0\r\no=- 1 1 IN {ver} {addr}\r\ns=-\r\nc=IN {ver} {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {pt} 101\r\na=rtpmap:101 telephone-event/8000\r\n"
            f"a=ptime:20\r\n").encode()


def media(ts: float, side: Side, addr: str, port: int, status: int | None = None) -> MediaSdp:
    return MediaSdp(ts=ts, side=side, media=parse_sdp(sdp(addr, port)).audio,
                    source=Endpoint.of(addr, 5060), in_response=status)


def call(call_id: str = "c1@test", *, caller: tuple[str, int] = ("198.18.7.1", 16000),
         callee: tuple[str, int] = ("198.19.8.2", 20000), t0: float = T0,
         answered: bool = True, ended: bool = True, status: int = 200) -> CallSignalling:
    sdps = (media(t0, Side.CALLER, *caller),)
    if answered:
        sdps += (media(t0 + 1.0, Side.CALLEE, *callee, status=200),)
    return CallSignalling(
        call_id=call_id, from_uri="sip:alice@example.org", to_uri="sip:bob@example.org",
        from_display=None, caller=Endpoint.of(caller[0], 5060), callee=Endpoint.of(callee[0], 5060),
        transport="udp", invite_ts=t0, first_provisional_ts=t0 + 0.1, first_response_ts=t0 + 0.01,
        answer_ts=t0 + 1.0 if answered else None, final_status=status,
        bye_ts=t0 + 31.0 if ended else None, bye_side=Side.CALLER if ended else None,
        disconnect_ts=t0 + 31.02 if ended else None, end_ts=t0 + 31.0 if ended else None,
        end_reason=EndReason.NORMAL if ended else None, media=sdps,
        signalling_dscp={24: 6}, requests={"INVITE": 1, "ACK": 1, "BYE": 1},
        responses={100: 1, 180: 1, 200: 2},
    )


def stream(src: tuple[str, int], dst: tuple[str, int], ssrc: int, *, t0: float = T0 + 1.2,
           packets: int = 1500, lost: int = 0, jitter_ms: float = 0.5, dscp: int = 46,
           codec: str = "PCMA") -> StreamStats:
    sh, sl = addr_to_words(src[0])
    dh, dl = addr_to_words(dst[0])
    expected = packets + lost
    return StreamStats(
        key=StreamKey(sh, sl, src[1], dh, dl, dst[1], ssrc), payload_types=(8,), codec=codec,
        clock_rate=8000, clock_rate_estimated=False, packets=packets, expected=expected,
        lost=lost, duplicates=0, reordered=0, seq_wraps=0, restarts=0,
        loss_bursts=1 if lost else 0, loss_burst_max=lost, loss_burst_mean=float(lost),
        max_seq_gap=lost + 1, jitter_ms=jitter_ms, jitter_mean_ms=jitter_ms,
        jitter_max_ms=jitter_ms * 2, max_delta_ms=21.0, mean_delta_ms=20.0, markers=1,
        telephone_event_packets=0, comfort_noise_packets=0, dscp={dscp: packets}, vlan=None,
        pcp=None, first_ts=t0, last_ts=t0 + expected * 0.02,
    )


def with_jb(s: StreamStats, discarded: int, model: str = "adaptive") -> StreamStats:
    return replace(s, jb_model=model, jb_nominal_ms=20.0, jb_max_ms=200.0,
                   jb_packets=s.packets, jb_discarded=discarded, jb_mean_delay_ms=30.0,
                   jb_max_delay_ms=60.0, ptime_ms=20.0)
