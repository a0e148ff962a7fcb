"""The few DER encoders onlineca hand-writes (no library builds these pieces for us).

Used by ``pki.tbs`` (a CertificationRequestInfo signed by a device) and ``est.messages``
(RFC 7030 CsrAttrs).  Encoding only, definite lengths; parsing stays with its callers, which
know which error to raise.
"""

from __future__ import annotations

SEQUENCE, SET, OID, CONTEXT_0 = 0x30, 0x31, 0x06, 0xA0


def length(n: int) -> bytes:
    """A DER definite length."""
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + length(len(content)) + content


def oid(dotted: str) -> bytes:
    """The DER of an OBJECT IDENTIFIER; ValueError for anything that is not one."""
    try:
        arcs = [int(a) for a in dotted.split(".")]
    except ValueError:
        raise ValueError(f"not an OID: {dotted[:60]!r}") from None
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40) or any(a < 0 for a in arcs):
        raise ValueError(f"not an OID: {dotted[:60]!r}")
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(OID, bytes(body))
