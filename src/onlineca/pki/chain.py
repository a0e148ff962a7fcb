"""Trust stores, chain building and chain validation with reasons an administrator can act on.

``validate_chain`` builds a path from a leaf through the given intermediates to a certificate of
the trust store, checking signatures, validity dates and CA constraints on the way.  Each failure
is a ``ChainError`` whose ``code`` says which (``UNTRUSTED_ISSUER``, ``SELF_SIGNED``,
``NOT_YET_VALID``, ``EXPIRED``, ``NOT_A_CA``, ``BAD_SIGNATURE``, ``PATH_LENGTH``) and whose message names the
certificate concerned, in OpenSSL's one-line name form.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509

from onlineca.errors import ChainError
from onlineca.pki.certs import is_self_signed, name_to_slash

MAX_DEPTH = 8


@dataclass
class TrustStore:
    """A set of trust anchors.  Intermediates placed here are trusted as anchors too."""

    certs: list[x509.Certificate] = field(default_factory=list)

    def add(self, cert: x509.Certificate) -> bool:
        if any(c == cert for c in self.certs):
            return False
        self.certs.append(cert)
        return True

    def add_all(self, certs: Iterable[x509.Certificate]) -> None:
        for c in certs:
            self.add(c)

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        return [c for c in self.certs if c.subject == cert.issuer]

    def __contains__(self, cert: object) -> bool:
        return any(c == cert for c in self.certs)

    def __len__(self) -> int:
        return len(self.certs)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:
        return False


def _check_dates(cert: x509.Certificate, at: dt.datetime) -> None:
    who = name_to_slash(cert.subject) or "(empty subject)"
    if at < cert.not_valid_before_utc:
        skew = cert.not_valid_before_utc - at
        raise ChainError(f"certificate is not yet valid: {who} (valid from "
                         f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC, {skew} from now)",
                         code="NOT_YET_VALID",
                         hint="Check the clock (NTP) on both machines, or wait until the certificate is valid.")
    if at > cert.not_valid_after_utc:
        raise ChainError(f"certificate has expired: {who} (expired "
                         f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC)",
                         code="EXPIRED", hint="Renew the certificate, or check the clock (NTP).")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return cert.version == x509.Version.v1  # legacy v1 roots
    if not bc.ca:
        return False
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return True


def _check_path_lengths(path: list[x509.Certificate]) -> None:
    """RFC 5280 6.1.4 (l)-(m): a CA's pathLenConstraint bounds the CAs below it (self-issued excepted)."""
    for depth, ca in enumerate(path[1:], start=1):
        try:
            limit = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        except x509.ExtensionNotFound:
            continue
        below = [c for c in path[1:depth] if c.subject != c.issuer]
        if limit is not None and len(below) > limit:
            raise ChainError(f"path length constraint exceeded: {name_to_slash(ca.subject)} allows {limit} "
                             f"CA certificate(s) below it, the chain has {len(below)}", code="PATH_LENGTH",
                             hint="The intermediate was issued by a CA that may not have sub-CAs; "
                                  "have the leaf issued by a CA higher up.")


def order_chain(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Certificates ordered leaf first, each followed by its issuer (as far as they link)."""
    remaining = list(certs)
    if not remaining:
        return []
    issuers = {c.issuer for c in remaining if not is_self_signed(c)}
    leaves = [c for c in remaining if c.subject not in issuers] or remaining[:1]
    chain = [leaves[0]]
    remaining.remove(leaves[0])
    while remaining:
        nxt = next((c for c in remaining if c.subject == chain[-1].issuer and c != chain[-1]), None)
        if nxt is None or is_self_signed(chain[-1]):
            break
        chain.append(nxt)
        remaining.remove(nxt)
    return chain + remaining


def validate_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust: TrustStore,
    at: dt.datetime | None = None,
) -> list[x509.Certificate]:
    """The validated path ``[leaf, ..., anchor]``; ChainError with the reason otherwise."""
    now = at or dt.datetime.now(dt.UTC)
    if leaf in trust:
        _check_dates(leaf, now)
        return [leaf]
    path = [leaf]
    current = leaf
    _check_dates(current, now)
    for _ in range(MAX_DEPTH):
        anchors = [c for c in trust.issuers_of(current) if _signed_by(current, c)]
        if anchors:
            anchor = anchors[0]
            _check_dates(anchor, now)
            if not _is_ca(anchor) and anchor != current:
                raise ChainError(f"issuer is not a CA: {name_to_slash(anchor.subject)}", code="NOT_A_CA",
                                 hint="The trust store holds a certificate that may not issue others.")
            path.append(anchor)
            _check_path_lengths(path)
            return path
        if is_self_signed(current):
            raise ChainError(f"self-signed certificate is not trusted: {name_to_slash(current.subject)}",
                             code="SELF_SIGNED",
                             hint="Use a certificate issued by a CA whose root is in the trust store.")
        candidates = [c for c in intermediates if c.subject == current.issuer and c not in path]
        if not candidates and trust.issuers_of(current):
            # The trust store knows the issuer's name but not the key that signed: an impostor
            # certificate, or the CA was re-keyed and the trust store holds the old one.
            raise ChainError(f"certificate signature does not verify with the trusted "
                             f"{name_to_slash(current.issuer)}", code="BAD_SIGNATURE",
                             hint="The trust store holds a different certificate with this issuer's name; "
                                  "install the CA's current certificate.")
        if not candidates:
            raise ChainError(f"unable to get local issuer certificate: {name_to_slash(current.issuer)} "
                             f"(issuer of {name_to_slash(current.subject)}) is not in the trust store",
                             code="UNTRUSTED_ISSUER",
                             hint=f"Add the certificate of {name_to_slash(current.issuer)} (and its root) "
                                  "to the trust store.")
        signed = [c for c in candidates if _signed_by(current, c)]
        if not signed:
            raise ChainError(f"certificate signature does not verify with its issuer "
                             f"{name_to_slash(current.issuer)}", code="BAD_SIGNATURE",
                             hint="The chain holds a different certificate with the same issuer name.")
        issuer = signed[0]
        _check_dates(issuer, now)
        if not _is_ca(issuer):
            raise ChainError(f"issuer is not a CA: {name_to_slash(issuer.subject)}", code="NOT_A_CA")
        path.append(issuer)
        current = issuer
    raise ChainError("certificate chain too long", code="CHAIN_TOO_LONG")
