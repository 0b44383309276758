"""Calls in every corpus capture with SIP, against tshark's view of the same file.

Reference: the corpus README's "SIP calls (final INVITE codes)" column (distinct
Call-IDs of INVITEs and the final codes of INVITE transactions, from tshark) and
tshark's ``-z sip,stat``. `EXPECTED` pins, per capture, our number of calls and
the final status of each initial INVITE; `WHY` explains every place where that
differs from the README's column. Media: every stream tshark's default decode
(which follows SDP) reports must be a direction of one of our calls.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from corpus_oracle import corpus_dir, oracle_streams

# capture -> (final status of each call's initial INVITE, sorted; None = no final response)
EXPECTED: dict[str, list[int | None]] = {
    "wiki_SIP_CALL_RTP_G711.pcap": [200, None],
    "wiki_sip-rtp-dvi4.pcap": [200, 200],
    "wiki_sip-rtp-g729a.pcap": [200],
    "wiki_sip-rtp-ilbc.pcap": [200],
    "wiki_sip-rtp-l16.pcap": [200, 200, 200, 200],
    "sipp_sip-tcp_pcma_dtmf.pcap": [200],
    "heplify_FAX-Call-t38.pcap": [200, 200],
    "heplify_gre-teb_sip.pcapng": [200, 200, 200],
    "ndpi_qinq_pppoe_gre_sip.pcapng": [200, 200, 487, 487, 487],
    "sngrep_ipip_sip_tcp.pcap": [200],
    "heplify_rawip_sip.pcap": [None],
    "heplify_sip_ipv6_udp.pcap": [None],
    "sngrep_ipv6frag_sip.pcap": [200],
    "heplify_sip_websocket.pcap": [200, 200],
    "rtpdump_vowifi_esp_null.pcap": [],
    "hep3_sip.pcap": [407],
    "heplify_sip_sctp.pcap": [],
}
WHY = {
    "heplify_sip_ipv6_udp.pcap": "the packets' times jump by years (INVITE 2012-02-07, 100 "
    "Trying 2018-06-22, 200 OK 2018-06-26; tshark -e frame.time_epoch): in packet time the "
    "INVITE's setup timer (RFC 3261 Timer C, 180 s) runs out long before any response, so "
    "the call times out with no final status (README: 1 call, code 200)",
    "wiki_SIP_CALL_RTP_G711.pcap": "the second INVITE only gets 100/180 before the capture "
    "ends: no final status (README: 2 calls, codes {200})",
    "heplify_FAX-Call-t38.pcap": "README's 488 answers a re-INVITE (to T.38), not an "
    "initial INVITE: both calls were answered 200",
    "heplify_gre-teb_sip.pcapng": "README's 407 challenges are followed by an "
    "authenticated INVITE on the same Call-ID that gets 200: one call each",
    "heplify_sip_websocket.pcap": "the 407 is a challenge; the retried INVITE gets 200",
    "heplify_rawip_sip.pcap": "scanner traffic: the 403 carries a different Call-ID than "
    "the INVITE (corpus README note 9), so it answers no dialog we know",
    "rtpdump_vowifi_esp_null.pcap": "the INVITE itself is not in the capture (only 1xx/200 "
    "inside ESP-NULL): no dialog can start",
    "heplify_sip_sctp.pcap": "SIP over SCTP is not decoded (rare; RFC 4168)",
}


# tshark streams that no SDP of ours explains, with the reason.
UNMATCHED = {
    # 6 packets from 200.57.7.202:30000 to 200.57.7.196:40362 during the unanswered second
    # call, whose INVITE offered port 40360 and which never got an SDP answer: tshark
    # links it through its conversation table; we report it as unsignalled media.
    "wiki_SIP_CALL_RTP_G711.pcap": {0x00002E3D},
}


def _calls(path: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", "--no-progress", path],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [o for o in map(json.loads, proc.stdout.splitlines()) if o["kind"] == "call"]


@pytest.mark.parametrize("capture", sorted(EXPECTED))
def test_calls_and_final_statuses(capture: str) -> None:
    calls = _calls(str(corpus_dir() / "pcaps" / capture))
    signalled = [c for c in calls if c["call_id"] is not None]
    got = sorted((c["final_status"] for c in signalled), key=lambda x: (x is None, x or 0))
    want = sorted(EXPECTED[capture], key=lambda x: (x is None, x or 0))
    assert got == want, WHY.get(capture, "")
    for c in signalled:
        if c["final_status"] == 200:
            assert c["answer_ts"] is not None and c["setup_delay_s"] is not None
            assert 0 <= c["setup_delay_s"] <= c["answer_delay_s"]
        if c["final_status"] == 487:
            assert c["end_reason"] == "cancelled"


@pytest.mark.parametrize("capture", [
    "wiki_SIP_CALL_RTP_G711.pcap", "wiki_sip-rtp-dvi4.pcap", "wiki_sip-rtp-g729a.pcap",
    "wiki_sip-rtp-ilbc.pcap", "wiki_sip-rtp-l16.pcap", "sipp_sip-tcp_pcma_dtmf.pcap",
    "heplify_FAX-Call-t38.pcap",
])
def test_signalled_streams_belong_to_calls(capture: str) -> None:
    """tshark's default decode lists exactly the streams SDP announced: each of them
    must be a direction (or an event stream) of one of our signalled calls."""
    variant, theirs = oracle_streams(capture)
    assert variant == "rtp_streams.txt"
    calls = [c for c in _calls(str(corpus_dir() / "pcaps" / capture)) if c["call_id"]]
    ours = {(d["stream"]["src"], d["stream"]["dst"], d["stream"]["ssrc"])
            for c in calls for d in c["directions"]}
    ours |= {(e["src"], e["dst"], e["ssrc"])
             for c in calls for d in c["directions"] for e in d["event_streams"]}
    missing = {t.ssrc for t in theirs if (t.src_endpoint, t.dst_endpoint, t.ssrc) not in ours}
    assert missing == UNMATCHED.get(capture, set())
