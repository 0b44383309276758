"""SRTP authentication tags: how many bytes follow an SRTP packet's encrypted payload.

An SRTP packet (RFC 3711 §3.1) is the RTP header, the encrypted payload, an
optional MKI and the authentication tag. The probe reads headers only; to tell
a 4-byte RFC 4733 event from audio it must know how many trailing bytes are
MKI + tag. SDES (RFC 4568) says so: the crypto suite fixes the tag length and
the key parameter's ``|<MKI value>:<MKI length>`` the MKI length in bytes.
Without SDP (or with DTLS-SRTP, whose suite is negotiated inside DTLS), a tag
of 4 or 10 bytes, with or without a 4-byte MKI, is what is plausible.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Crypto suite -> authentication tag bytes.
AUTH_TAG_BYTES: Mapping[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 10,  # RFC 4568 §6.2.1: 80-bit HMAC-SHA1 tag
    "AES_CM_128_HMAC_SHA1_32": 4,  # RFC 4568 §6.2.2: 32-bit tag
    "F8_128_HMAC_SHA1_80": 10,  # RFC 4568 §6.2.3
    "AES_192_CM_HMAC_SHA1_80": 10, "AES_192_CM_HMAC_SHA1_32": 4,  # RFC 6188 §7.1
    "AES_256_CM_HMAC_SHA1_80": 10, "AES_256_CM_HMAC_SHA1_32": 4,  # RFC 6188 §7.1
    "AEAD_AES_128_GCM": 16, "AEAD_AES_256_GCM": 16,  # RFC 7714 §14.2: 16-octet tag
}  # fmt: skip

#: Trailing bytes (MKI + tag) plausible when no SDP says: 32- or 80-bit HMAC-SHA1 tag
#: (RFC 3711 §5.2, RFC 4568), with or without a 4-byte MKI.
PLAUSIBLE_TRAILERS: tuple[int, ...] = (4, 8, 10, 14)

MAX_MKI_BYTES = 128  # RFC 4568 §9.2: MKI length 1..128 bytes


def trailer_bytes(suite: str, key_params: str) -> int | None:
    """MKI + tag bytes of one ``a=crypto`` line; None for a suite the table lacks.

    ``key_params`` is the attribute's third field, e.g. ``inline:KEY|2^20|1:4``
    (RFC 4568 §9.2: lifetime and ``MKI:length`` are optional). The key itself is
    never kept.
    """
    tag = AUTH_TAG_BYTES.get(suite.upper())
    if tag is None:
        return None
    mki = 0
    for param in key_params.split(";"):  # several keys: each names the same MKI length
        parts = param.split("|")[1:]
        for p in parts:
            value, sep, length = p.partition(":")
            if sep and _digits(value) and _digits(length) and len(length) <= 3:
                mki = int(length) if 0 < int(length) <= MAX_MKI_BYTES else mki
    return tag + mki


def _digits(text: str) -> bool:
    """ASCII digits only ('²'.isdigit() is true, yet int() refuses it)."""
    return text.isascii() and text.isdigit()
