"""The NTLM one-way function: MD4 (RFC 1320) and the NT hash of a password, in pure Python.

The CA's NTLM store holds each user's NT hash (MD4 of the UTF-16LE password).  OpenSSL 3 moved
MD4 to its legacy provider, so ``hashlib.new("md4")`` fails on many systems, and pyspnego's own
copy lives in a private module; a hash of a few short passwords does not need speed, so this is
the RFC's algorithm as written.  No I/O here; never use MD4 for anything but NTLM's NT hash.
"""

from __future__ import annotations

import struct

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


__all__ = ["md4", "nt_hash"]
