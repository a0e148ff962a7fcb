"""PKCS#10 certificate signing requests: build, parse (PEM, DER, bare base64), verify."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from cryptography import x509
from cryptography.x509.oid import AttributeOID

from onlineca.errors import ParseError
from onlineca.pki.certs import _b64_body, _general_names, parse_name, signature_hash_for
from onlineca.pki.keys import PrivateKey

_PEM_CSR_RE = re.compile(rb"-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----(.*?)-----END (?:NEW )?CERTIFICATE REQUEST-----", re.S)
_ANY_PEM_LINE = re.compile(rb"-----(BEGIN|END)[^-]*-----")

MAX_CSR_BYTES = 64 * 1024


def build_csr(
    key: PrivateKey,
    subject: str | x509.Name,
    sans: Iterable[str | x509.GeneralName] = (),
    challenge_password: str | None = None,
    extensions: Iterable[x509.Extension[x509.ExtensionType]] = (),
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(parse_name(subject))
    names = _general_names(sans)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    for ext in extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    if challenge_password is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge_password.encode())
    return builder.sign(key, signature_hash_for(key))


def csr_der_from_text(data: bytes) -> bytes:
    """The DER inside a PEM (any BEGIN/END lines, LF or CRLF), bare base64 or raw DER body."""
    if len(data) > MAX_CSR_BYTES:
        raise ParseError(f"certificate request too large ({len(data)} bytes, limit {MAX_CSR_BYTES})")
    m = _PEM_CSR_RE.search(data)
    if m:
        body = m.group(1)
    elif b"-----" in data:
        body = _ANY_PEM_LINE.sub(b"", data)
    elif data[:1] == b"\x30":
        return data
    else:
        body = data
    der = _b64_body(body)
    if der is None:
        raise ParseError("certificate request is not valid base64")
    return der


def parse_csr(data: bytes | str, verify: bool = True) -> x509.CertificateSigningRequest:
    """A PKCS#10 request from PEM, DER or base64.  With ``verify``, its self-signature must hold."""
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    der = csr_der_from_text(bytes(data))
    try:
        csr = x509.load_der_x509_csr(der)
    except Exception as exc:
        raise ParseError(f"not a PKCS#10 certificate request: {exc}") from None
    if verify:
        verify_csr(csr)
    return csr


# Requests whose signature this process has verified (digest of the signed bytes and signature):
# a request that crosses several tiers in one process (the lab, the benches, the CAPF-with-RA
# flows) is verified once.  Only good signatures are kept; oldest dropped first.
_VERIFIED: dict[bytes, None] = {}
_VERIFIED_MAX = 4096


def verify_csr(csr: x509.CertificateSigningRequest) -> None:
    """Raise ParseError unless the request is signed by the key it carries (proof of possession)."""
    try:
        key = hashlib.sha256(csr.tbs_certrequest_bytes + b"\0" + csr.signature).digest()
    except Exception:  # a request too broken to name: let the check below report it
        key = b""
    if key and key in _VERIFIED:
        return
    try:
        ok = csr.is_signature_valid
    except Exception as exc:
        raise ParseError(f"certificate request signature cannot be checked: {exc}") from None
    if not ok:
        raise ParseError("certificate request signature does not verify with its own public key",
                         code="BAD_SIGNATURE")
    if key:
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.pop(next(iter(_VERIFIED)), None)
        _VERIFIED[key] = None


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return csr.public_bytes(serialization.Encoding.DER)


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_challenge_password(csr: x509.CertificateSigningRequest) -> bytes | None:
    try:
        return csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        return None
    except Exception:
        return None


def csr_sans(csr: x509.CertificateSigningRequest) -> x509.SubjectAlternativeName | None:
    try:
        return csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
