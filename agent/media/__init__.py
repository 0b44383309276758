"""The one media registry: payload types, encoding names, media kinds, E-model figures.

- `agent.media.payloads`: RFC 3551 static payload types, SDP encoding names
  normalised once (`canonical_name`), clock rates, media kind and the packet
  kind the RTP statistics need (`PayloadInfo`).
- `agent.media.codecs`: per audio codec the E-model figures (Ie, Bpl, frame,
  look-ahead) with the source of each number.
- `agent.media.srtp`: SRTP (RFC 3711 / RFC 4568) authentication tag lengths.
- `agent.media.description`: what an SDP media section tells the RTP layer
  about one endpoint (payload map, transport profile, auth tag length).

SDP (`agent.sip.sdp`), RTP (`agent.rtp`) and quality (`agent.quality`) import
from here; nothing else keeps a payload or codec table.
"""
