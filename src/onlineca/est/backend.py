"""What signs for the EST server: a small pluggable interface and the in-process ``LocalSigner``.

The EST server parses and authenticates; a backend decides and signs.  A backend implements
``EnrollBackend`` (three async methods: ``cacerts``, ``enroll``, ``csrattrs``); the RA issue adds
a certsrv backend without touching the server.  ``enroll`` answers with one of ``Issued``,
``Pending`` (the server turns it into 202 + Retry-After) or ``Denied`` (an HTTP status and a reason
the client may see).  A backend must never see a password it does not need: the raw Basic
credentials travel in ``EnrollRequest.credentials`` only for passthrough to a CA, and never print.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography import x509

from onlineca import pki
from onlineca.infra import files
from onlineca.infra.users import BasicCredentials
from onlineca.proto.est import CsrAttrs


@dataclass(frozen=True)
class EnrollRequest:
    """One enrollment, after the server parsed the CSR and authenticated the client.

    ``user`` is the HTTP Basic user (None with certificate-only auth); ``client_cert`` is the
    validated TLS client certificate (None without one).  ``reenroll`` marks simplereenroll, and
    ``renewing`` is then the certificate being renewed.  ``serverkeygen`` marks a request whose
    key the server generated.
    """

    csr: x509.CertificateSigningRequest
    label: str | None = None
    user: str | None = None
    client_cert: x509.Certificate | None = None
    reenroll: bool = False
    renewing: x509.Certificate | None = None
    credentials: BasicCredentials | None = None
    serverkeygen: bool = False
    peer: str = ""


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class Pending:
    """Accepted, not issued yet: the client should retry after ``retry_after`` seconds."""

    retry_after: int


@dataclass(frozen=True)
class Denied:
    """Refused: ``reason`` is shown to the client; ``http_status`` is 400, 401, 403, 500 or 502."""

    reason: str
    http_status: int = 403


EnrollResult = Issued | Pending | Denied


@runtime_checkable
class EnrollBackend(Protocol):
    """The signing backend of an EST server.

    ``cacerts(label)``: the CA certificates to publish for that CA label (None: the default CA),
    issuing CA first.  ``enroll(request)``: decide and sign.  ``csrattrs(label)``: what a CSR
    should contain (an empty CsrAttrs makes the server answer 204).
    """

    async def cacerts(self, label: str | None) -> list[x509.Certificate]: ...

    async def enroll(self, request: EnrollRequest) -> EnrollResult: ...

    async def csrattrs(self, label: str | None) -> CsrAttrs: ...


class LocalSigner:
    """Signs in-process with an issuing key and certificate (the embedded default, and tests).

    Certificates carry the CSR's subject and subjectAltName, digitalSignature+keyEncipherment and
    the extended key usages given (clientAuth by default), valid ``validity_days``.  ``ca_chain``
    is what ``cacerts`` publishes besides the issuing certificate (e.g. the root).
    """

    def __init__(self, issuer_key: pki.PrivateKey, issuer_cert: x509.Certificate, *,
                 ca_chain: Sequence[x509.Certificate] = (), validity_days: float = 365,
                 key_usage: Sequence[str] = ("digital_signature", "key_encipherment"),
                 extended_key_usage: Sequence[str] = ("client_auth",),
                 attrs: CsrAttrs | None = None) -> None:
        if not pki.same_public_key(issuer_key, issuer_cert.public_key()):
            raise ValueError("the issuing key does not match the issuing certificate")
        self.issuer_key = issuer_key
        self.issuer_cert = issuer_cert
        self.ca_chain = tuple(c for c in ca_chain if c != issuer_cert)
        self.validity_days = validity_days
        self.key_usage = tuple(key_usage)
        self.extended_key_usage = tuple(extended_key_usage)
        self.attrs = attrs or CsrAttrs()

    @classmethod
    def from_files(cls, cert_file: str, key_file: str, chain_file: str | None = None, **kw: object) -> LocalSigner:
        certs = files.load_cert_file(cert_file)
        chain = files.load_cert_file(chain_file) if chain_file else certs[1:]
        return cls(files.read_private_key(key_file), certs[0], ca_chain=chain, **kw)  # type: ignore[arg-type]

    async def cacerts(self, label: str | None) -> list[x509.Certificate]:
        return [self.issuer_cert, *self.ca_chain]

    async def csrattrs(self, label: str | None) -> CsrAttrs:
        return self.attrs

    def sign(self, csr: x509.CertificateSigningRequest) -> x509.Certificate:
        sans = pki.csr_sans(csr)
        return pki.build_certificate(
            subject=csr.subject, public_key=csr.public_key(), issuer_key=self.issuer_key,  # type: ignore[arg-type]
            issuer_cert=self.issuer_cert, validity_days=self.validity_days, key_usage=self.key_usage,
            extended_key_usage=self.extended_key_usage, sans=list(sans) if sans else ())

    async def enroll(self, request: EnrollRequest) -> EnrollResult:
        if not request.csr.subject.rdns and pki.csr_sans(request.csr) is None:
            return Denied("the request has neither a subject nor a subjectAltName", 400)
        # An RSA-2048 signature takes about a millisecond: cheaper inline than in a thread.
        cert = self.sign(request.csr)
        await asyncio.sleep(0)
        return Issued(cert, (self.issuer_cert, *self.ca_chain))
