"""A PKCS#10 request signed elsewhere: the to-be-signed CertificationRequestInfo, its signature
by the device, and the assembled request.

CAPF's online-CA mode needs a CSR whose proof of possession comes from a key that never leaves the
phone: CAPF builds the ``CertificationRequestInfo`` (RFC 2986 section 4.1) here, the phone signs those
exact bytes with ``sign_csr_info``, and CAPF glues info, algorithm identifier and signature into a
``CertificationRequest`` with ``assemble_csr``, which refuses a signature that does not verify.
``cryptography``'s builder cannot wrap an external signature, so this module hand-writes the little
DER it needs (definite lengths, nothing else).  It must never hold or ask for the device's private
key on the CAPF side, and never return a request whose signature does not verify.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from onlineca.errors import ParseError, PKIError
from onlineca.pki import der
from onlineca.pki.certs import _general_names, parse_name
from onlineca.pki.csr import verify_csr
from onlineca.pki.keys import PrivateKey, PublicKey, public_key_der

DIGESTS: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512(),
}
# RFC 4055 section 5 (RSA PKCS#1 v1.5) and RFC 5758 section 3.2 (ECDSA) signature algorithm OIDs.
_RSA_SIG_OIDS = {"sha256": "1.2.840.113549.1.1.11", "sha384": "1.2.840.113549.1.1.12",
                 "sha512": "1.2.840.113549.1.1.13"}
_ECDSA_SIG_OIDS = {"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3",
                   "sha512": "1.2.840.10045.4.3.4"}
_EXTENSION_REQUEST_OID = "1.2.840.113549.1.9.14"

_SEQUENCE, _SET, _CONTEXT_0 = 0x30, 0x31, 0xA0


# --------------------------------------------------------------------------- minimal DER


_tlv, _oid = der.tlv, der.oid


def _extension(ext: x509.Extension[x509.ExtensionType]) -> bytes:
    # critical is DEFAULT FALSE, so DER leaves it out when false.
    critical = _tlv(0x01, b"\xff") if ext.critical else b""
    return _tlv(_SEQUENCE, _oid(ext.oid.dotted_string) + critical + _tlv(0x04, ext.value.public_bytes()))


# --------------------------------------------------------------------------- the request


def digest_algorithm(digest: str) -> hashes.HashAlgorithm:
    """The hash for ``"sha256"``, ``"sha384"`` or ``"sha512"`` (the only ones a CSR may use here)."""
    try:
        return DIGESTS[digest]
    except KeyError:
        raise PKIError(f"digest {digest!r} is not supported for certificate requests", code="DIGEST",
                       hint="Use sha256, sha384 or sha512.") from None


def csr_info_der(
    subject: x509.Name | str,
    public_key: PublicKey | PrivateKey,
    sans: Iterable[str | x509.GeneralName] = (),
    extensions: Iterable[x509.Extension[x509.ExtensionType]] = (),
    attributes: Iterable[tuple[str, bytes]] = (),
) -> bytes:
    """The DER ``CertificationRequestInfo``: version 0, subject, the device's public key, and an
    extensionRequest attribute holding the SAN (when ``sans``) and ``extensions`` in that order,
    then ``attributes`` (OID, the DER of its one value) as given."""
    exts: list[x509.Extension[x509.ExtensionType]] = []
    names = _general_names(sans)
    if names:
        san = x509.SubjectAlternativeName(names)
        exts.append(x509.Extension(san.oid, False, san))
    exts.extend(extensions)
    oids = [e.oid for e in exts]
    if len(set(oids)) != len(oids):
        raise PKIError("the same extension is requested twice", code="CSR_EXTENSION",
                       hint="Give each extension once (the SAN comes from 'sans').")
    encoded = b""
    if exts:
        ext_seq = _tlv(_SEQUENCE, b"".join(_extension(e) for e in exts))
        encoded = _tlv(_SEQUENCE, _oid(_EXTENSION_REQUEST_OID) + _tlv(_SET, ext_seq))
    for oid, value in attributes:
        encoded += _tlv(_SEQUENCE, _oid(oid) + _tlv(_SET, value))
    version = _tlv(0x02, b"\x00")
    body = version + parse_name(subject).public_bytes() + public_key_der(public_key) + _tlv(_CONTEXT_0, encoded)
    return _tlv(_SEQUENCE, body)


def signature_algorithm_der(public_key: PublicKey | PrivateKey, digest: str) -> bytes:
    """The DER ``AlgorithmIdentifier`` for RSA PKCS#1 v1.5 (NULL parameters, RFC 4055) or ECDSA
    (absent parameters, RFC 5758) with ``digest``."""
    digest_algorithm(digest)
    pub = public_key.public_key() if isinstance(public_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) else public_key
    if isinstance(pub, rsa.RSAPublicKey):
        return _tlv(_SEQUENCE, _oid(_RSA_SIG_OIDS[digest]) + b"\x05\x00")
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return _tlv(_SEQUENCE, _oid(_ECDSA_SIG_OIDS[digest]))
    raise PKIError(f"unsupported key algorithm {type(pub).__name__}", code="KEY_TYPE")


def sign_csr_info(private_key: PrivateKey, info_der: bytes, digest: str = "sha256") -> bytes:
    """The device side: sign the exact ``CertificationRequestInfo`` bytes CAPF sent (PKCS#1 v1.5
    for RSA, DER ECDSA-Sig-Value for EC)."""
    return sign_data(private_key, info_der, digest)


def sign_data(private_key: PrivateKey, data: bytes, digest: str = "sha256") -> bytes:
    """A signature over ``data`` as the device protocol carries it (PKCS#1 v1.5 or DER ECDSA)."""
    algorithm = digest_algorithm(digest)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, padding.PKCS1v15(), algorithm)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(algorithm))
    raise PKIError(f"unsupported key algorithm {type(private_key).__name__}", code="KEY_TYPE")


def verify_data_signature(public_key: PublicKey, data: bytes, signature: bytes, digest: str = "sha256") -> None:
    """Raise ``ParseError`` (code ``BAD_SIGNATURE``) unless ``signature`` over ``data`` verifies."""
    algorithm = digest_algorithm(digest)
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            raise PKIError(f"unsupported key algorithm {type(public_key).__name__}", code="KEY_TYPE")
    except InvalidSignature:
        raise ParseError("signature does not verify with the device's public key", code="BAD_SIGNATURE",
                         hint="The device signed other data or with another key; start a new session.") from None


def csr_info_public_key(info_der: bytes) -> PublicKey:
    """The public key inside a ``CertificationRequestInfo``: the phone checks that what CAPF asks
    it to sign is a request for its own new key, and nothing else (ParseError otherwise)."""
    # Wrapped with a placeholder algorithm and an empty signature only to let cryptography parse it.
    placeholder = _tlv(_SEQUENCE, info_der + _tlv(_SEQUENCE, _oid(_ECDSA_SIG_OIDS["sha256"])) + _tlv(0x03, b"\x00"))
    try:
        key = x509.load_der_x509_csr(placeholder).public_key()
    except Exception as exc:
        raise ParseError(f"not a certificate request info: {exc}") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise ParseError(f"certificate request info holds an unsupported key ({type(key).__name__})")
    return key


def assemble_csr(info_der: bytes, signature: bytes, public_key: PublicKey | PrivateKey,
                 digest: str = "sha256") -> x509.CertificateSigningRequest:
    """The ``CertificationRequest`` of ``info_der`` with the device's ``signature``.

    ``public_key`` must be the key inside ``info_der`` (it picks the algorithm identifier); the
    result's signature is verified, so a signature by any other key raises ``ParseError``."""
    algorithm = signature_algorithm_der(public_key, digest)
    der = _tlv(_SEQUENCE, info_der + algorithm + _tlv(0x03, b"\x00" + signature))
    try:
        csr = x509.load_der_x509_csr(der)
        inner = csr.public_key()
        if not isinstance(inner, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise ParseError(f"unsupported key algorithm {type(inner).__name__}")
        inner_key = public_key_der(inner)
    except Exception as exc:
        raise ParseError(f"assembled certificate request does not parse: {exc}") from None
    if inner_key != public_key_der(public_key):
        raise ParseError("the request info carries another public key than the device's", code="KEY_MISMATCH",
                         hint="Build the request info from the public key the device returned.")
    verify_csr(csr)
    return csr


__all__ = [
    "DIGESTS", "assemble_csr", "csr_info_der", "csr_info_public_key", "digest_algorithm", "sign_csr_info", "sign_data",
    "signature_algorithm_der", "verify_data_signature",
]
