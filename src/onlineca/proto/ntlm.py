"""Just enough of NTLM, sans-I/O: the NT hash of a password (MD4, RFC 1320) for the CA's NTLM
store, and the channel binding of a login, to check Extended Protection.

MD4: OpenSSL 3 moved it to its legacy provider, so ``hashlib.new("md4")`` fails on many systems,
and pyspnego's own copy lives in a private module; a hash of a few short passwords does not need
speed, so this is the RFC's algorithm as written.  Never use MD4 for anything but the NT hash.

Extended Protection: an NTLMv2 AUTHENTICATE message (MS-NLMP 2.2.1.3) carries, inside its
NtChallengeResponse, a list of AV_PAIRs; ``MsvAvChannelBindings`` (0x000A) is the MD5 of the
client's gss_channel_bindings_struct (RFC 2744 3.11), which for HTTPS holds
``tls-server-end-point:`` and the hash of the server certificate the client saw (RFC 5929).  A
server that requires Extended Protection compares it with the MD5 of its own.  SPNEGO (RFC 4178)
may wrap the NTLM token: its NegTokenInit carries it as ``mechToken``, its NegTokenResp as
``responseToken``.  The proof that the user knows the password is the NTLM acceptor's job, not
this module's.  Bytes in, values out; no I/O.
"""

from __future__ import annotations

import hashlib
import struct

from onlineca.errors import ParseError

_MASK = 0xFFFFFFFF


def _rotl(x: int, n: int) -> int:
    x &= _MASK
    return ((x << n) | (x >> (32 - n))) & _MASK


def md4(data: bytes) -> bytes:
    """The 16-byte MD4 digest of ``data`` (RFC 1320)."""
    length_bits = (len(data) * 8) & 0xFFFFFFFFFFFFFFFF
    msg = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", length_bits)
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for offset in range(0, len(msg), 64):
        x = struct.unpack("<16I", msg[offset:offset + 64])
        aa, bb, cc, dd = a, b, c, d
        # Round 1: F(x, y, z) = (x & y) | (~x & z)
        for i in range(16):
            k, s = i, (3, 7, 11, 19)[i % 4]
            f = (b & c) | (~b & d)
            a, b, c, d = d, _rotl(a + f + x[k], s), b, c
        # Round 2: G(x, y, z) = majority, constant 0x5A827999
        for i in range(16):
            k, s = (i % 4) * 4 + i // 4, (3, 5, 9, 13)[i % 4]
            g = (b & c) | (b & d) | (c & d)
            a, b, c, d = d, _rotl(a + g + x[k] + 0x5A827999, s), b, c
        # Round 3: H(x, y, z) = x ^ y ^ z, constant 0x6ED9EBA1
        for i in range(16):
            k, s = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)[i], (3, 9, 11, 15)[i % 4]
            h = b ^ c ^ d
            a, b, c, d = d, _rotl(a + h + x[k] + 0x6ED9EBA1, s), b, c
        a, b, c, d = (a + aa) & _MASK, (b + bb) & _MASK, (c + cc) & _MASK, (d + dd) & _MASK
    return struct.pack("<4I", a, b, c, d)


def nt_hash(password: str) -> bytes:
    """NTOWFv1: MD4 of the password in UTF-16LE (MS-NLMP 3.3.1)."""
    return md4(password.encode("utf-16-le"))


# --------------------------------------------------------------------------- Extended Protection

NTLM_SIGNATURE = b"NTLMSSP\x00"
MESSAGE_AUTHENTICATE = 3
AV_EOL = 0x0000
AV_CHANNEL_BINDINGS = 0x000A
_NTLMV2_CHALLENGE_HEADER = 28  # RespType, HiRespType, 6 reserved bytes, TimeStamp, ChallengeFromClient, 4 reserved


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise ParseError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ParseError("bad DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ParseError("DER element longer than its container")
    return tag, pos, pos + length


def spnego_inner_token(token: bytes) -> bytes | None:
    """The mechanism token inside a SPNEGO NegTokenInit (``[APPLICATION 0]`` GSS wrapper) or
    NegTokenResp (``[1]``); None when there is none."""
    tag, start, _end = _der(token, 0)
    if tag == 0x60:  # InitialContextToken: the SPNEGO OID, then NegTokenInit [0]
        oid_tag, _s, oid_end = _der(token, start)
        if oid_tag != 0x06:
            raise ParseError("GSS token without a mechanism OID")
        tag, start, _end = _der(token, oid_end)
    elif tag != 0xA1:
        raise ParseError(f"not SPNEGO (tag 0x{tag:02x})")
    if tag not in (0xA0, 0xA1):
        raise ParseError("SPNEGO without NegTokenInit or NegTokenResp")
    seq_tag, pos, seq_end = _der(token, start)
    if seq_tag != 0x30:
        raise ParseError("SPNEGO token body is not a SEQUENCE")
    while pos < seq_end:
        field_tag, fstart, fend = _der(token, pos)
        if field_tag == 0xA2:  # mechToken [2] of NegTokenInit, responseToken [2] of NegTokenResp
            inner_tag, istart, iend = _der(token, fstart)
            if inner_tag != 0x04:
                raise ParseError("SPNEGO mechanism token is not an OCTET STRING")
            return token[istart:iend]
        pos = fend
    return None


def is_authenticate(token: bytes) -> bool:
    return token.startswith(NTLM_SIGNATURE) and token[8:12] == struct.pack("<I", MESSAGE_AUTHENTICATE)


def av_pairs(authenticate: bytes) -> dict[int, bytes]:
    """The AV_PAIRs of an NTLMv2 AUTHENTICATE message's NtChallengeResponse (``ParseError`` for
    NTLMv1 or a malformed message)."""
    if not is_authenticate(authenticate) or len(authenticate) < 28:
        raise ParseError("not an NTLM AUTHENTICATE message")
    length, _max, offset = struct.unpack_from("<HHI", authenticate, 20)  # NtChallengeResponseFields
    response = authenticate[offset:offset + length]
    if len(response) != length or length <= 24:
        raise ParseError("no NTLMv2 response (NTLMv1, or truncated)")
    pos = 16 + _NTLMV2_CHALLENGE_HEADER  # after NTProofStr and the fixed part of the client challenge
    pairs: dict[int, bytes] = {}
    while pos + 4 <= len(response):
        av_id, av_len = struct.unpack_from("<HH", response, pos)
        pos += 4
        if av_id == AV_EOL:
            return pairs
        if pos + av_len > len(response):
            raise ParseError("AV_PAIR longer than the response")
        pairs[av_id] = response[pos:pos + av_len]
        pos += av_len
    raise ParseError("AV_PAIR list without MsvAvEOL")


def channel_binding_hash(gss_channel_bindings: bytes) -> bytes:
    """What an NTLMv2 client puts in MsvAvChannelBindings for these packed bindings."""
    return hashlib.md5(gss_channel_bindings, usedforsecurity=False).digest()


__all__ = ["AV_CHANNEL_BINDINGS", "NTLM_SIGNATURE", "av_pairs", "channel_binding_hash", "is_authenticate", "md4",
           "nt_hash", "spnego_inner_token"]
