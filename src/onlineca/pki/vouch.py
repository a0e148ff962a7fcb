"""A vouched certificate request: a PKCS#10 for a key whose holder cannot sign one, signed instead
by an RA agent that vouches for the key.

A public-flow phone returns its new public key and nothing else: no signature, so no ordinary
PKCS#10.  CAPF, authenticated to the RA with its own certificate (the "agent certificate") and
authorised there as an RA agent, builds the request for the phone's key and signs it with the
agent key.  The request says so in an attribute, ``id-onlineca-vouchedKey`` (a UUID-derived OID,
RFC 9562 / ITU-T X.667, so nobody needs to register it), whose one value is an OCTET STRING with
the SHA-256 of the agent certificate's DER: the signature covers it, so the request names the one
certificate that may verify it.  Such a request is well-formed DER, but its signature does not
verify with the key it carries: every CA that insists on a self-signed PKCS#10 (AD CS does)
refuses it, and only an RA and a CA that know this contract accept it (docs/ra.md, docs/ca.md).
This module builds and checks; it never decides who may vouch, and does no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ObjectIdentifier

from onlineca.errors import ParseError, PKIError
from onlineca.pki import der
from onlineca.pki.certs import cert_der
from onlineca.pki.keys import PrivateKey, PublicKey, public_key_der
from onlineca.pki.tbs import csr_info_der, sign_data, signature_algorithm_der, verify_data_signature

# 2.25.<UUID as an integer>: id-onlineca-vouchedKey.
VOUCHED_KEY_OID = "2.25.133862170586617694237584416638176559292"
CODE = "VOUCHED_REQUEST"
_HASH_NAMES = {hashes.SHA256.name: "sha256", hashes.SHA384.name: "sha384", hashes.SHA512.name: "sha512"}


def agent_hash(agent_cert: x509.Certificate) -> bytes:
    """What the attribute holds: SHA-256 of the agent certificate's DER."""
    return hashlib.sha256(cert_der(agent_cert)).digest()


def build_vouched_request(subject: x509.Name | str, public_key: PublicKey, agent_key: PrivateKey,
                          agent_cert: x509.Certificate, *, sans: Iterable[str | x509.GeneralName] = (),
                          extensions: Iterable[x509.Extension[x509.ExtensionType]] = (),
                          digest: str = "sha256") -> x509.CertificateSigningRequest:
    """The request for ``public_key`` (someone else's), signed by the agent's key."""
    if public_key_der(agent_key) != public_key_der(agent_cert.public_key()):
        raise PKIError("the agent key does not belong to the agent certificate", code="KEY_MISMATCH")
    value = der.tlv(0x04, agent_hash(agent_cert))
    info = csr_info_der(subject, public_key, sans, extensions, attributes=[(VOUCHED_KEY_OID, value)])
    signature = sign_data(agent_key, info, digest)
    request = der.tlv(der.SEQUENCE, info + signature_algorithm_der(agent_key, digest)
                      + der.tlv(0x03, b"\x00" + signature))
    return x509.load_der_x509_csr(request)


def vouched_by(csr: x509.CertificateSigningRequest) -> bytes | None:
    """The agent certificate hash a vouched request names, or None for any other request."""
    try:
        attribute = csr.attributes.get_attribute_for_oid(ObjectIdentifier(VOUCHED_KEY_OID))
    except x509.AttributeNotFound:
        return None
    except ValueError as exc:
        raise ParseError(f"the vouched-key attribute does not parse: {exc}", code=CODE) from None
    value = attribute.value
    if len(value) != 32:
        raise ParseError("the vouched-key attribute must hold a SHA-256 (32 bytes)", code=CODE)
    return bytes(value)


def verify_vouched_request(csr: x509.CertificateSigningRequest, agent_cert: x509.Certificate) -> None:
    """Raise ``ParseError`` (code ``VOUCHED_REQUEST``) unless ``csr`` is vouched for by exactly
    ``agent_cert``: it names that certificate and the agent's key signed it."""
    named = vouched_by(csr)
    if named is None:
        raise ParseError("the request is not a vouched request", code=CODE)
    if named != agent_hash(agent_cert):
        raise ParseError("the request is vouched for by another certificate than the agent's", code=CODE)
    algorithm = csr.signature_hash_algorithm
    digest = _HASH_NAMES.get(algorithm.name) if algorithm is not None else None
    if digest is None:
        raise ParseError("the vouched request is signed with an unsupported digest", code=CODE)
    try:
        verify_data_signature(agent_cert.public_key(), csr.tbs_certrequest_bytes, csr.signature,  # type: ignore[arg-type]
                              digest)
    except ParseError:
        raise ParseError("the vouched request's signature does not verify with the agent certificate's key",
                         code=CODE) from None


__all__ = ["VOUCHED_KEY_OID", "agent_hash", "build_vouched_request", "verify_vouched_request", "vouched_by"]
