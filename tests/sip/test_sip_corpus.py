"""Every SIP datagram of real corpus captures parses, and the request methods and
response codes counted match tshark's `-z sip,stat` (oracle/<capture>.sip_stat.txt)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from corpus_udp import corpus_dir, udp_payloads

from agent.sip import is_keepalive, looks_like_sip, parse_message, parse_sdp

CAPTURES = [
    "wiki_SIP_CALL_RTP_G711.pcap",
    "heplify_sip_ipv6_udp.pcap",
    "wiki_sip-rtp-dvi4.pcap",
    "wiki_sip-rtp-g729a.pcap",
    "wiki_sip-rtp-ilbc.pcap",
    "wiki_sip-rtp-l16.pcap",
]
SIP_PORT = 5060
ANSWER_CODECS = ["PCMA", "PCMU", "GSM", "ILBC", "SPEEX", "TELEPHONE-EVENT"]  # written lower case


def oracle_counts(path: Path) -> Counter[str]:
    """`SIP 200 OK : 4 Packets` -> "200": 4; `INVITE : 2 Packets` -> "INVITE": 2."""
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        match = re.match(r"\s+(?:SIP (\d{3})\b.*|([A-Z]+))\s*:\s*(\d+) Packets", line)
        if match:
            counts[match.group(1) or match.group(2)] += int(match.group(3))
    return counts


@pytest.mark.parametrize("capture", CAPTURES)
def test_sip_messages_match_tshark(capture: str) -> None:
    corpus = corpus_dir()
    seen: Counter[str] = Counter()
    keepalives = 0
    for sport, dport, payload in udp_payloads(corpus / "pcaps" / capture):
        if SIP_PORT not in (sport, dport):
            continue
        if is_keepalive(payload):
            keepalives += 1
            continue
        assert looks_like_sip(payload)
        msg = parse_message(payload)
        seen[msg.method if msg.is_request else str(msg.status_code)] += 1
        assert msg.call_id and msg.cseq.number > 0 and msg.from_tag
        if msg.sdp is not None:
            desc = parse_sdp(msg.sdp)
            assert desc.audio, "every SDP in these calls offers audio"
            for media in desc.audio:
                assert media.connection is not None and media.connection.ip is not None
                assert media.port > 0 and media.payloads
    expected = oracle_counts(corpus / "oracle" / f"{capture}.sip_stat.txt")
    assert expected, "oracle lists no SIP"
    assert seen == expected
    if capture == "wiki_SIP_CALL_RTP_G711.pcap":
        assert keepalives == 3  # CRLF keep-alives between REGISTERs, not SIP messages


def test_g711_call_sdp_values() -> None:
    corpus = corpus_dir()
    found = []
    for sport, dport, payload in udp_payloads(corpus / "pcaps" / "wiki_SIP_CALL_RTP_G711.pcap"):
        if SIP_PORT in (sport, dport) and looks_like_sip(payload):
            msg = parse_message(payload)
            if msg.sdp is not None:
                (audio,) = parse_sdp(msg.sdp).audio
                codecs = [p.encoding_upper for p in audio.payloads]
                ports = (audio.rtp_port, audio.rtcp_port)
                found.append((msg.status_code, audio.address, *ports, codecs))
    assert found == [
        (None, "200.57.7.196", 40376, 40377, ["PCMA", "G729", "G723", "PCMU"]),
        (200, "200.57.7.204", 8000, 8001, ANSWER_CODECS),
        (None, "200.57.7.196", 40360, 40361, ["PCMA", "G729", "G723"]),
    ]
