"""Wire layouts (precompiled `struct.Struct`s) and protocol numbers used by decode."""

from __future__ import annotations

import struct

# Link types (tcpdump.org LINKTYPE_*). 12 and 14 are historical DLT_RAW values
# that some platforms write into pcap headers instead of 101.
LT_NULL = 0
LT_ETHERNET = 1
LT_RAW_BSD = 12
LT_RAW_OPENBSD = 14
LT_RAW = 101
LT_LOOP = 108
LT_LINUX_SLL = 113
LT_IPV4 = 228
LT_IPV6 = 229
LT_LINUX_SLL2 = 276
RAW_LINKTYPES = frozenset({LT_RAW, LT_RAW_BSD, LT_RAW_OPENBSD})

# EtherTypes (IEEE registry).
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100  # IEEE 802.1Q C-tag
ETH_QINQ = 0x88A8  # IEEE 802.1ad S-tag
ETH_QINQ_OLD = 0x9100  # pre-802.1ad vendor S-tag, still seen on the wire
VLAN_TPIDS = frozenset({ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD})
ETH_PPPOE_SESSION = 0x8864  # RFC 2516
ETH_TEB = 0x6558  # transparent Ethernet bridging (GRE carrying Ethernet, RFC 1701)
ETH_ERSPAN_II = 0x88BE  # Cisco ERSPAN type II (draft-foschiano-erspan)
ETH_ERSPAN_III = 0x22EB  # ERSPAN type III; type I is 0x88BE without GRE's S bit
ETH_PPP_GRE = 0x880B  # PPTP enhanced GRE (RFC 2637) carrying PPP

# PPP protocol numbers (RFC 1661 / RFC 5072).
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057

# BSD loopback address families: AF_INET is 2 everywhere; AF_INET6 is 24
# (NetBSD/OpenBSD), 28 (FreeBSD) or 30 (macOS) depending on the capturing host.
AF_INET = 2
AF_INET6 = frozenset({24, 28, 30})

# IP protocol numbers (IANA).
IPPROTO_HOPOPTS = 0
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_GRE = 47
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
# RFC 8200 §4 extension headers with the generic (next, hdr-ext-len in 8-octet
# units not counting the first 8) layout; AH (RFC 4302 §2.2) counts 4-octet units
# minus 2 and is handled apart; Mobility (135) shares the generic layout.
IPV6_GENERIC_EXT = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, 135})

ETH_HDR = struct.Struct("!6s6sH")  # dst, src, ethertype
VLAN_TAG = struct.Struct("!HH")  # TCI, next ethertype
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
U32_LE = struct.Struct("<I")
# RFC 791 §3.1: ver/ihl, tos, total length, id, flags/frag offset, ttl, proto, csum, src, dst
IPV4_HDR = struct.Struct("!BBHHHBBH4s4s")
# RFC 8200 §3: ver/tc/flow (32 bits), payload length, next header, hop limit, src, dst
IPV6_HDR = struct.Struct("!IHBB16s16s")
IPV6_EXT = struct.Struct("!BB")  # next header, length
IPV6_FRAG = struct.Struct("!BBHI")  # next header, reserved, offset/flags, identification
UDP_HDR = struct.Struct("!HHHH")  # RFC 768: sport, dport, length, checksum
TCP_HDR = struct.Struct("!HHIIBB")  # RFC 9293 §3.1: ports, seq, ack, offset, flags
GRE_HDR = struct.Struct("!HH")  # RFC 2784: flags/version, protocol type
PPPOE_HDR = struct.Struct("!BBHHH")  # RFC 2516 §4: ver/type, code, session, length, PPP proto

# ERSPAN (draft-foschiano-erspan-03 §4.2-4.3): type II header 8 bytes, type III
# 12 plus an 8-byte platform-specific sub-header when its O bit is set; type III's
# last 16 bits are P(1) FT(5) HW ID(6) D(1) Gra(2) O(1); frame type 0 = Ethernet,
# 2 = IP packet.
ERSPAN_II_LEN = 8
ERSPAN_III_LEN = 12
ERSPAN_III_PLATFORM_LEN = 8
ERSPAN_FT_ETHERNET = 0
ERSPAN_FT_IP = 2

# VXLAN (RFC 7348 §5): flags (I bit 0x08 = VNI valid), 24 reserved bits, VNI, 8 reserved.
VXLAN_HDR_LEN = 8
VXLAN_FLAG_I = 0x08

# TZSP (TaZmen Sniffer Protocol, MikroTik/Philips): version 1, type, encapsulation,
# then tags (0 padding and 1 end are single octets, others type/length/value).
TZSP_HDR = struct.Struct("!BBH")  # version, type, encapsulation
TZSP_VERSION = 1
TZSP_FRAME_TYPES = frozenset({0, 1})  # received tag list, packet for transmit
TZSP_ENCAP_ETHERNET = 1
TZSP_TAG_PADDING = 0
TZSP_TAG_END = 1
TZSP_MAX_TAGS = 64  # bounds the walk; senders put one END tag or a handful of radio tags

SLL_HDR_LEN = 16
SLL_PROTO_OFF = 14
SLL2_HDR_LEN = 20
SLL2_PROTO_OFF = 0
