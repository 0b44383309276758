"""HEP RTCP-as-JSON (type 5 with a JSON body) -> the RFC 3550 SR or RR it describes.

Theory of operation
-------------------
Media relays do not mirror RTCP to HOMER as bytes: they send what they parsed
out of it as a JSON object, with HEP type 5 (RTCP). `report_from_json` reads
that object back into the `SenderReport` / `ReceiverReport` it describes, and
`agent.decode.hep_unwrap` rebuilds it as a binary RTCP datagram
(`agent.rtcp.packets.encode_report`) at the HEP capture time, so the RTCP
monitor takes it like any RTCP the probe sees and the call record's ``rtcp``
block of the direction with that media SSRC shows it.

The format has no specification; it is what the senders write, and they agree
on the field names (sipcapture/heplify ``protos/rtcp.go``, the de facto schema
heplify-server reads; sipwise/rtpengine ``daemon/rtcp.c``, its ``homer_*``
handlers; sipcapture/hepipe.js for FreeSWITCH; hepgen's sample in
sipcapture/hep-wireshark)::

    {"ssrc": 451916597, "type": 200, "report_count": 1,
     "sender_information": {"ntp_timestamp_sec": ..., "ntp_timestamp_usec": ...,
                            "rtp_timestamp": ..., "packets": ..., "octets": ...},
     "report_blocks": [{"source_ssrc": ..., "fraction_lost": 0, "packets_lost": 0,
                        "highest_seq_no": 20881, "ia_jitter": 1, "lsr": ..., "dlsr": ...}]}

Values are the wire fields, not converted: ``ntp_timestamp_sec``/``_usec`` are
the NTP timestamp's two 32-bit words (the second is the binary fraction, despite
its name), ``fraction_lost`` the 8-bit fixed point, ``packets_lost`` the 24-bit
cumulative count, ``ia_jitter`` timestamp units, ``lsr``/``dlsr`` as on the wire
(1/65536 s). Where the senders differ:

- ``type``: rtpengine and hepipe.js write the SR's or RR's type; heplify the type
  of the *last* packet of the compound (202 after an SR + SDES). So 200 is an SR
  and 201 an RR; another RTCP type (202..207) or none is an SR when the sender
  information carries anything, else an RR.
- hepipe.js writes the SSRCs as decimal strings and the jitter as a float (from
  FreeSWITCH's event headers); heplify writes ``report_blocks: null`` for none;
  hepgen a negative ``lsr`` (a signed 32-bit print). Decimal strings, integral
  floats and signed 32-bit prints of 32-bit fields are taken; the jitter is
  rounded. ``report_count`` is not trusted (hepgen writes 0 beside one block):
  the list is the count.
- Extra keys (rtpengine's ``sdes_information``, heplify's ``report_blocks_xr``)
  are ignored.

Anything else raises `RtcpJsonError`, the one error type (counted, dropped): not
JSON, not an object, no reporter ``ssrc``, a field that is not a number or is
out of its wire range, more than 31 blocks, a ``type`` outside RTCP's 200..207.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from agent.rtcp.packets import (
    MAX_REPORT_BLOCKS,
    PT_RR,
    PT_SR,
    PT_XR,
    ReceiverReport,
    ReportBlock,
    SenderReport,
)

_U32 = (-(1 << 31), (1 << 32) - 1)  # unsigned, or a signed 32-bit print of it
_U24_LOST = (-(1 << 23), (1 << 24) - 1)  # §6.4.1: 24-bit two's complement
_U8 = (0, 255)
_SENDER_FIELDS = ("ntp_timestamp_sec", "ntp_timestamp_usec", "rtp_timestamp", "packets",
                  "octets")


class RtcpJsonError(ValueError):
    """A HEP RTCP JSON payload that is not a report this module can read."""


def report_from_json(payload: bytes) -> SenderReport | ReceiverReport:
    """The SR or RR a HEP RTCP-as-JSON payload describes (see the module docstring).
    Raises `RtcpJsonError` and nothing else, for any input."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise RtcpJsonError(f"not JSON: {str(err)[:60]}") from None
    if not isinstance(obj, dict):
        raise RtcpJsonError(f"a JSON {type(obj).__name__}, not an object")
    if "ssrc" not in obj:
        raise RtcpJsonError("no reporter ssrc: not an RTCP report")
    ssrc = _int(obj, "ssrc", _U32)
    blocks = _blocks(obj.get("report_blocks"))
    sender = obj.get("sender_information")
    if sender is None:
        sender = {}
    elif not isinstance(sender, dict):
        raise RtcpJsonError("sender_information is not an object")
    ntp_msw, ntp_lsw, rtp_ts, packets, octets = (
        _int(sender, k, _U32, default=0) & 0xFFFFFFFF for k in _SENDER_FIELDS)
    packet_type = _int(obj, "type", (PT_SR, PT_XR), default=0)
    is_sr = packet_type == PT_SR or (
        packet_type != PT_RR and any((ntp_msw, ntp_lsw, rtp_ts, packets, octets)))
    if is_sr:
        return SenderReport(ssrc & 0xFFFFFFFF, (ntp_msw << 32) | ntp_lsw, rtp_ts, packets,
                            octets, blocks)
    return ReceiverReport(ssrc & 0xFFFFFFFF, blocks)


def _blocks(value: object) -> tuple[ReportBlock, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RtcpJsonError("report_blocks is not a list")
    if len(value) > MAX_REPORT_BLOCKS:
        raise RtcpJsonError(f"{len(value)} report blocks, at most {MAX_REPORT_BLOCKS}")
    out = []
    for b in value:
        if not isinstance(b, dict):
            raise RtcpJsonError("a report block is not an object")
        lost = _int(b, "packets_lost", _U24_LOST, default=0) & 0xFFFFFF
        out.append(ReportBlock(
            ssrc=_int(b, "source_ssrc", _U32) & 0xFFFFFFFF,
            fraction_lost_raw=_int(b, "fraction_lost", _U8, default=0),
            cumulative_lost=lost - (1 << 24) if lost & 0x800000 else lost,
            extended_highest_seq=_int(b, "highest_seq_no", _U32, default=0) & 0xFFFFFFFF,
            jitter_ts_units=_int(b, "ia_jitter", (0, (1 << 32) - 1), default=0, rounded=True),
            lsr=_int(b, "lsr", _U32, default=0) & 0xFFFFFFFF,
            dlsr=_int(b, "dlsr", _U32, default=0) & 0xFFFFFFFF,
        ))
    return tuple(out)


def _int(obj: Mapping[str, object], key: str, bounds: tuple[int, int], *,
         default: int | None = None, rounded: bool = False) -> int:
    """``obj[key]`` as an int within ``bounds``: a JSON integer, an integral number (any
    number when ``rounded``) or a decimal string; absent or null gives ``default``
    (None: required)."""
    value = obj.get(key)
    if value is None:
        if default is None:
            raise RtcpJsonError(f"{key} missing")
        return default
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if not digits.isascii() or not digits.isdigit() or len(digits) > 10:
            raise RtcpJsonError(f"{key} is not a number: {value[:20]!r}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RtcpJsonError(f"{key} is not a number")
    if isinstance(value, float):
        if not math.isfinite(value) or (not rounded and not value.is_integer()):
            raise RtcpJsonError(f"{key} is not an integer: {value!r}")
        value = round(value)
    if not bounds[0] <= value <= bounds[1]:
        raise RtcpJsonError(f"{key} {value} out of range {bounds}")
    return value
