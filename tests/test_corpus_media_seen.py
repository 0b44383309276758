"""`media_seen` / `one_way_media` on public captures, against tshark's view of them.

Truth from the packets, not from voipprobe: tshark's SDP fields give each answered
call's offer endpoint (the caller's, in the initial INVITE) and answer endpoint (the
callee's, in the 200 OK) and every media direction attribute; the corpus oracle's
``rtp_streams.txt`` (tshark's default, SDP-following decode) gives the streams. A
stream sent to the answer endpoint is ``a_to_b``, one sent to the offer endpoint
``b_to_a``; streams of telephone-events alone carry no media.

The Wireshark wiki's one-codec samples are one-way by design (the offer says
``recvonly``, the answer ``sendonly``: a playback toward the caller), so they are
``b_to_a`` and *not* a one-way fault; the two-party G.711 and sipp captures are two-way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from corpus_oracle import corpus_dir, oracle_streams
from test_corpus_calls import _calls
from tshark_table import endpoint

# capture -> (media of its answered call, one-way by SDP) as tshark's packets say (checked
# below): the wiki G.711 capture's second call is never answered; the sipp one is SIP over
# TCP with DTMF in the caller's stream.
CAPTURES: dict[str, tuple[str, bool]] = {
    "wiki_sip-rtp-g729a.pcap": ("b_to_a", True),
    "wiki_sip-rtp-ilbc.pcap": ("b_to_a", True),
    "wiki_SIP_CALL_RTP_G711.pcap": ("both", False),
    "sipp_sip-tcp_pcma_dtmf.pcap": ("both", False),
}
ONE_WAY_ATTRS = ("sendonly", "recvonly", "inactive")


@dataclass(frozen=True)
class SdpTruth:
    offer: str  # "ip:port" the caller asked media to be sent to
    answer: str  # the callee's
    one_way_by_sdp: bool  # some SDP of the call said sendonly/recvonly/inactive


def _tshark_sdp(path: str) -> dict[str, SdpTruth]:
    """Answered calls' SDP endpoints and attributes, from tshark's SIP/SDP dissectors."""
    if shutil.which("tshark") is None:
        if os.environ.get("CI"):
            pytest.fail("tshark missing in CI (scripts/test.sh installs it)")
        pytest.skip("tshark not installed")
    out = subprocess.run(
        ["tshark", "-r", path, "-Y", "sdp", "-T", "fields", "-E", "separator=|",
         "-e", "sip.Call-ID", "-e", "sip.CSeq.method", "-e", "sip.Status-Code",
         "-e", "sdp.connection_info.address", "-e", "sdp.media.port", "-e", "sdp.media_attr"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    offers: dict[str, str] = {}
    answers: dict[str, str] = {}
    held: set[str] = set()
    for line in out.splitlines():
        call_id, method, status, addr, port, attrs = line.split("|")
        if not call_id or method != "INVITE":
            continue
        ep = endpoint(addr.split(",")[0], port.split(",")[0])
        if not status:
            offers.setdefault(call_id, ep)
        elif status == "200":
            answers.setdefault(call_id, ep)
        if any(a.strip().lower() in ONE_WAY_ATTRS for a in attrs.split(",")):
            held.add(call_id)
    return {c: SdpTruth(offers[c], answers[c], c in held) for c in answers if c in offers}


@pytest.mark.needs_tshark
@pytest.mark.parametrize("capture", sorted(CAPTURES))
def test_media_seen_matches_tshark(capture: str) -> None:
    path = str(corpus_dir() / "pcaps" / capture)
    truth = _tshark_sdp(path)
    variant, streams = oracle_streams(capture)
    assert variant == "rtp_streams.txt" and truth, (variant, truth)
    ours = {c["call_id"]: c for c in _calls(path) if c["call_id"] in truth}
    assert sorted(ours) == sorted(truth)
    for call_id, sdp in truth.items():
        toward = set()
        for t in streams:
            if t.payload.strip() == "telephone-event":
                continue
            if t.dst_endpoint == sdp.answer:
                toward.add("a_to_b")
            elif t.dst_endpoint == sdp.offer:
                toward.add("b_to_a")
        want = "both" if len(toward) == 2 else next(iter(toward), "none")
        assert (want, sdp.one_way_by_sdp) == CAPTURES[capture], (streams, sdp)
        rec = ours[call_id]
        assert rec["media_seen"] == want, (CAPTURES[capture], rec["directions"])
        one_way = want if want in ("a_to_b", "b_to_a") and not sdp.one_way_by_sdp else None
        assert rec["duration_s"] > 5.0  # long enough: only the SDP can excuse one-way
        assert rec["one_way_media"] == one_way, (CAPTURES[capture], sdp)
