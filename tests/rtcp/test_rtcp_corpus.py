"""RTCP of real corpus captures: every datagram that sniffs as RTCP parses, with
the values the capture holds (checked by hand against tshark's decode)."""

from __future__ import annotations

from collections import Counter

import pytest
from rtcp_corpus import capture_path, udp_payloads

from agent.rtcp import (
    ProbeRoundTrip,
    ReceiverReport,
    SenderReport,
    SourceDescription,
    looks_like_rtcp,
    parse_compound,
)


def test_wiki_g711_rtcp() -> None:
    probe = ProbeRoundTrip()
    kinds: Counter[tuple[str, ...]] = Counter()
    cnames: set[str | None] = set()
    rtts: list[float] = []
    for ts, _sport, _dport, payload in udp_payloads(capture_path("wiki_SIP_CALL_RTP_G711.pcap")):
        if not looks_like_rtcp(payload):
            continue
        packets = parse_compound(payload)
        kinds[tuple(type(p).__name__ for p in packets)] += 1
        assert isinstance(packets[0], SenderReport)  # RFC 3550 §6.1: compound starts SR/RR
        for packet in packets:
            if isinstance(packet, SenderReport):
                probe.sender_report(packet.ssrc, packet.ntp_timestamp, ts)
            if isinstance(packet, SenderReport | ReceiverReport):
                for block in packet.reports:
                    rtt = probe.report_block(block, ts, reporter_ssrc=packet.ssrc)
                    if rtt is not None:
                        rtts.append(rtt)
            if isinstance(packet, SourceDescription):
                cnames.update(chunk.cname for chunk in packet.chunks)
    # tshark decodes 26 of these 28 as RTCP (oracle io_phs): it only dissects
    # ports that signalling announced; the sniff finds every one.
    assert sum(kinds.values()) == 28
    assert kinds == {
        ("SenderReport", "ReceiverReport"): 12,
        ("SenderReport", "SourceDescription"): 12,
        ("SenderReport", "ReceiverReport", "SourceDescription"): 4,
    }
    assert cnames == {"ACLTP ChannelHandle 30", "unknown@200.57.7.204"}
    # The gateway (SSRC 0x58f33dea) answers the phone's SRs: probe <-> gateway is LAN-short.
    assert rtts and all(0.0 <= rtt < 0.005 for rtt in rtts)


def test_rtpproxy_rtcp_single_sr() -> None:
    found = [
        parse_compound(payload)
        for _ts, _s, _d, payload in udp_payloads(capture_path("rtpproxy_rtcp.o.pcap"))
        if looks_like_rtcp(payload)
    ]
    assert len(found) == 1  # tshark: 1 RTCP packet (200, 202)
    sr, sdes = found[0]
    assert isinstance(sr, SenderReport) and isinstance(sdes, SourceDescription)
    assert sdes.chunks[0].ssrc == sr.ssrc and sdes.chunks[0].cname


@pytest.mark.parametrize("name", ["sipp_g722_rtp.pcap", "rtpproxy_lost.a.pcap"])
def test_rtp_only_captures_have_no_rtcp_false_positives(name: str) -> None:
    assert not any(looks_like_rtcp(p) for *_, p in udp_payloads(capture_path(name)))
