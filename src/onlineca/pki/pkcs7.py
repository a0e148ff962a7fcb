"""PKCS#7 (CMS SignedData) certs-only structures: encode and decode, DER, PEM or bare base64.

EST (RFC 7030) answers ``cacerts`` and ``simpleenroll`` with certs-only PKCS#7 in base64; AD CS
serves ``certnew.p7b`` as DER or wrapped in CERTIFICATE markers.  Decoding is tolerant of all.
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from onlineca.errors import ParseError
from onlineca.pki import der as asn1
from onlineca.pki.certs import _b64_body

MAX_PKCS7_BYTES = 4 * 1024 * 1024


_SIGNED_DATA = asn1.oid("1.2.840.113549.1.7.2")
_DATA = asn1.oid("1.2.840.113549.1.7.1")


def pkcs7_der(certs: Sequence[x509.Certificate | bytes]) -> bytes:
    """A certs-only SignedData of the certificates, given as objects or as their DER.

    DER goes in as it is, never parsed nor re-encoded (the answer to an enrollment carries the
    CA's bytes); the output is what ``cryptography`` writes for the same certificates.
    """
    if not certs:
        raise ValueError("a certs-only PKCS#7 needs at least one certificate")
    if all(isinstance(c, x509.Certificate) for c in certs):
        return pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER)  # type: ignore[arg-type]
    ders = [c if isinstance(c, bytes) else c.public_bytes(serialization.Encoding.DER) for c in certs]
    # DER's SET OF is sorted by encoding, as cryptography (OpenSSL) writes it.
    signed_data = asn1.tlv(asn1.SEQUENCE, asn1.tlv(0x02, b"\x01") + asn1.tlv(asn1.SET, b"")
                           + asn1.tlv(asn1.SEQUENCE, _DATA)
                           + asn1.tlv(asn1.CONTEXT_0, b"".join(sorted(ders))) + asn1.tlv(asn1.SET, b""))
    return asn1.tlv(asn1.SEQUENCE, _SIGNED_DATA + asn1.tlv(asn1.CONTEXT_0, signed_data))


def pkcs7_b64(certs: Sequence[x509.Certificate | bytes], line_length: int = 64) -> bytes:
    """Base64 of the DER, in lines (as EST servers send it), ending with a newline."""
    raw = base64.b64encode(pkcs7_der(certs))
    if not line_length:
        return raw
    return b"\n".join(raw[i:i + line_length] for i in range(0, len(raw), line_length)) + b"\n"


def pkcs7_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return pkcs7.serialize_certificates(list(certs), serialization.Encoding.PEM)


def parse_pkcs7(data: bytes) -> list[x509.Certificate]:
    """The certificates of a certs-only PKCS#7 given as DER, PEM (PKCS7 or CERTIFICATE markers) or base64."""
    if not isinstance(data, (bytes, bytearray)):
        raise ParseError("PKCS#7 data must be bytes")
    data = bytes(data)
    if len(data) > MAX_PKCS7_BYTES:
        raise ParseError(f"PKCS#7 too large ({len(data)} bytes)")
    if data[:1] == b"\x30":
        der = data
    else:
        body = data
        if b"-----" in data:
            lines = [ln for ln in data.splitlines() if not ln.strip().startswith(b"-----")]
            body = b"".join(lines)
        decoded = _b64_body(body)
        if decoded is None:
            raise ParseError("PKCS#7 data is neither DER nor valid base64")
        der = decoded
    try:
        with warnings.catch_warnings():
            # OpenSSL's crl2pkcs7 and AD CS write the certificate SET unsorted (BER, not DER);
            # cryptography reads it with a warning that would otherwise reach our users' logs.
            warnings.filterwarnings("ignore", message="PKCS#7 certificates could not be parsed as DER")
            certs = pkcs7.load_der_pkcs7_certificates(der)
    except Exception as exc:
        raise ParseError(f"not a certs-only PKCS#7: {exc}") from None
    if not certs:
        raise ParseError("the PKCS#7 holds no certificate")
    return list(certs)
