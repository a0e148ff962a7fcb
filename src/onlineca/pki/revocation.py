"""Revocation, pure: reason names, CRLs (base and delta, RFC 5280 §5), the CDP and AIA extensions
of issued certificates, and OCSP (RFC 6960) requests read and responses signed.

Values in, DER (or ``cryptography`` objects) out: the CA (``ca.revocation``) decides what is
revoked and when a CRL is due, keeps them in its database and serves them; this module only
builds and parses.  Reasons are RFC 5280's names (``keyCompromise``, ``superseded``...), as
``openssl ca -crl_reason`` and AD CS's ``certutil -revoke`` take them; ``certificateHold`` and
``removeFromCRL`` are left out (nothing here un-revokes).  No I/O, no clock: callers pass times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from onlineca.errors import ParseError, PKIError
from onlineca.pki.certs import ExternalSigner, resign_der, signature_hash_for, stand_in_key
from onlineca.pki.keys import PrivateKey

# RFC 5280 §5.3.1 CRLReason, by the names openssl and certutil use.
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}
_BY_FLAG = {flag: name for name, flag in REASONS.items()}


def parse_reason(text: str) -> str:
    """The canonical name of a CRL reason given in any case (``keycompromise``, ``KeyCompromise``)."""
    wanted = (text or "").strip().lower()
    for name in REASONS:
        if name.lower() == wanted:
            return name
    raise PKIError(f"{text!r} is not a revocation reason", code="REVOCATION_REASON",
                   hint=f"Use one of: {', '.join(REASONS)}.")


def parse_serial(text: str) -> int:
    """A certificate serial number as hex (``1a2b``, ``1A:2B``, ``0x1a2b``); PKIError otherwise."""
    cleaned = (text or "").strip().lower().replace(":", "").replace(" ", "")
    cleaned = cleaned.removeprefix("0x")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise PKIError(f"{text!r} is not a serial number (hexadecimal)", code="REVOCATION_SERIAL",
                       hint="Give the serial in hex as 'onlineca ca requests show' prints it.") from None
    if value <= 0 or value.bit_length() > 160:
        raise PKIError(f"{text!r} is not a serial number (1 to 20 octets)", code="REVOCATION_SERIAL",
                       hint="Give the serial in hex as 'onlineca ca requests show' prints it.")
    return value


@dataclass(frozen=True)
class Revoked:
    """One revoked certificate: its serial, when it was revoked, and the reason's name."""

    serial: int
    revoked_at: dt.datetime
    reason: str = "unspecified"


# --------------------------------------------------------------------------- CRLs


def build_crl(*, issuer_cert: x509.Certificate, issuer_key: PrivateKey | ExternalSigner, entries: Iterable[Revoked], number: int,
              this_update: dt.datetime, next_update: dt.datetime, delta_of: int | None = None,
              freshest_url: str | None = None) -> x509.CertificateRevocationList:
    """A CRL signed by the issuing CA: CRL number ``number``, the AKI of the issuer, each entry with
    its reason (none for ``unspecified``, as RFC 5280 recommends).  ``delta_of``: a delta CRL
    against the base CRL of that number (RFC 5280 §5.2.4); ``freshest_url``: a base CRL that
    names where its delta is (§5.2.6)."""
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer_cert.subject)
               .last_update(this_update.replace(microsecond=0))
               .next_update(next_update.replace(microsecond=0))
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_cert.public_key()), critical=False))  # type: ignore[arg-type]
    if delta_of is not None:
        builder = builder.add_extension(x509.DeltaCRLIndicator(delta_of), critical=True)
    if freshest_url:
        builder = builder.add_extension(x509.FreshestCRL([_point(freshest_url)]), critical=False)
    for entry in sorted(entries, key=lambda e: e.serial):
        revoked = (x509.RevokedCertificateBuilder().serial_number(entry.serial)
                   .revocation_date(entry.revoked_at.replace(microsecond=0)))
        if entry.reason != "unspecified":
            revoked = revoked.add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    if isinstance(issuer_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        return builder.sign(issuer_key, signature_hash_for(issuer_key))
    # A key in a token: the stand-in's signature gives the to-be-signed bytes, the token signs them.
    stand_in = stand_in_key(issuer_key.public_key())
    crl = builder.sign(stand_in, signature_hash_for(stand_in))
    digest = crl.signature_hash_algorithm.name if crl.signature_hash_algorithm else "sha256"
    return x509.load_der_x509_crl(resign_der(crl.tbs_certlist_bytes, crl.signature_algorithm_oid, digest, issuer_key))


def crl_der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from DER or PEM; ParseError otherwise."""
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise ParseError(f"not a CRL: {exc}") from None


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def revoked_reason(entry: x509.RevokedCertificate) -> str:
    try:
        flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return "unspecified"
    return _BY_FLAG.get(flag, "unspecified")


# --------------------------------------------------------------------------- CDP and AIA


def _point(url: str) -> x509.DistributionPoint:
    return x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(url)], relative_name=None,
                                  reasons=None, crl_issuer=None)


def revocation_extensions(*, crl_url: str, ca_issuers_url: str,
                          ocsp_url: str | None = None) -> list[x509.Extension[x509.ExtensionType]]:
    """The CRL distribution point and authority information access (CA certificate and, when
    given, OCSP) of a certificate, as AD CS puts them in what it issues."""
    access = [x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                     x509.UniformResourceIdentifier(ca_issuers_url))]
    if ocsp_url:
        access.append(x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                             x509.UniformResourceIdentifier(ocsp_url)))
    return [
        x509.Extension(ExtensionOID.CRL_DISTRIBUTION_POINTS, False, x509.CRLDistributionPoints([_point(crl_url)])),
        x509.Extension(ExtensionOID.AUTHORITY_INFORMATION_ACCESS, False, x509.AuthorityInformationAccess(access)),
    ]


def distribution_points(cert: x509.Certificate) -> list[str]:
    """The URIs of a certificate's CRL distribution points."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for p in points for n in (p.full_name or []) if isinstance(n, x509.UniformResourceIdentifier)]


def access_urls(cert: x509.Certificate) -> dict[str, list[str]]:
    """A certificate's AIA URIs: ``{"ca_issuers": [...], "ocsp": [...]}``."""
    out: dict[str, list[str]] = {"ca_issuers": [], "ocsp": []}
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return out
    for d in aia:
        key = "ocsp" if d.access_method == AuthorityInformationAccessOID.OCSP else "ca_issuers"
        if isinstance(d.access_location, x509.UniformResourceIdentifier):
            out[key].append(str(d.access_location.value))
    return out


# --------------------------------------------------------------------------- OCSP

OCSPStatus = Literal["good", "revoked", "unknown"]


@dataclass(frozen=True)
class OCSPQuery:
    """What an OCSP request asks: one certificate, named by serial and by its issuer's hashes."""

    serial: int
    algorithm: hashes.HashAlgorithm
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    nonce: bytes | None = None


def parse_ocsp_request(der: bytes) -> OCSPQuery:
    """The one certificate an OCSP request asks about; ParseError for anything malformed (a
    request for several certificates included: cryptography reads one, as most responders do)."""
    try:
        req = ocsp.load_der_ocsp_request(der)
        nonce = None
        for ext in req.extensions:
            if isinstance(ext.value, x509.OCSPNonce):
                nonce = ext.value.nonce
        return OCSPQuery(req.serial_number, req.hash_algorithm, req.issuer_name_hash, req.issuer_key_hash, nonce)
    except (ValueError, TypeError) as exc:
        raise ParseError(f"not an OCSP request: {exc}", code="OCSP_MALFORMED") from None


def issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """RFC 6960 CertID's issuerNameHash and issuerKeyHash of ``issuer`` under ``algorithm`` (the
    key hash is over the subjectPublicKey BIT STRING's value only, not the whole SPKI)."""
    name = hashes.Hash(algorithm)
    name.update(issuer.subject.public_bytes())
    key = hashes.Hash(algorithm)
    key.update(_subject_public_key_bits(issuer))
    return name.finalize(), key.finalize()


def _tlv(data: bytes) -> tuple[int, bytes, bytes]:
    """(tag, contents, what follows) of the DER element at the start of ``data``."""
    tag, first = data[0], data[1]
    if first < 0x80:
        size, start = first, 2
    else:
        octets = first & 0x7F
        size, start = int.from_bytes(data[2:2 + octets], "big"), 2 + octets
    return tag, data[start:start + size], data[start + size:]


def _subject_public_key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's value (without its unused-bits octet)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    _tag, body, _rest = _tlv(spki)          # SubjectPublicKeyInfo SEQUENCE
    _tag, _alg, rest = _tlv(body)           # AlgorithmIdentifier
    _tag, bits, _rest = _tlv(rest)          # subjectPublicKey BIT STRING
    return bits[1:]


def asks_about(query: OCSPQuery, issuer: x509.Certificate) -> bool:
    """True if the request names ``issuer`` (its name and key hashes under the request's algorithm)."""
    try:
        name_hash, key_hash = issuer_hashes(issuer, query.algorithm)
    except (TypeError, ValueError):
        return False
    return (name_hash, key_hash) == (query.issuer_name_hash, query.issuer_key_hash)


def ocsp_response(query: OCSPQuery, *, status: OCSPStatus, responder_cert: x509.Certificate,
                  responder_key: PrivateKey, this_update: dt.datetime, next_update: dt.datetime,
                  revoked_at: dt.datetime | None = None, reason: str | None = None,
                  certificates: Sequence[x509.Certificate] = ()) -> bytes:
    """A signed (``successful``) OCSP response about the query's certificate, by the responder
    (the issuing CA itself, or a delegated responder whose certificate goes in ``certificates``);
    the request's nonce is echoed."""
    cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                   "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status]
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=query.issuer_name_hash, issuer_key_hash=query.issuer_key_hash,
        serial_number=query.serial, algorithm=query.algorithm, cert_status=cert_status,
        this_update=this_update.replace(microsecond=0), next_update=next_update.replace(microsecond=0),
        revocation_time=revoked_at.replace(microsecond=0) if status == "revoked" and revoked_at else None,
        revocation_reason=(REASONS[reason] if status == "revoked" and reason and reason != "unspecified" else None))
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, responder_cert)
    if certificates:
        builder = builder.certificates(list(certificates))
    if query.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    resp = builder.sign(responder_key, signature_hash_for(responder_key))
    return resp.public_bytes(serialization.Encoding.DER)


def ocsp_error(kind: Literal["malformed", "unauthorized", "internal", "try_later"]) -> bytes:
    """An unsigned OCSP error response (RFC 6960 §2.3)."""
    status = {"malformed": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
              "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED,
              "internal": ocsp.OCSPResponseStatus.INTERNAL_ERROR,
              "try_later": ocsp.OCSPResponseStatus.TRY_LATER}[kind]
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


__all__ = [
    "REASONS",
    "OCSPQuery",
    "OCSPStatus",
    "Revoked",
    "access_urls",
    "asks_about",
    "build_crl",
    "crl_der",
    "crl_number",
    "distribution_points",
    "issuer_hashes",
    "load_crl",
    "ocsp_error",
    "ocsp_response",
    "parse_ocsp_request",
    "parse_reason",
    "parse_serial",
    "revocation_extensions",
    "revoked_reason",
]
