"""How an EST server reaches its CA: the ``CABackend`` contract, and ``LocalSigner``, the backend
that signs in-process.

A backend is small on purpose (certbot's plug-in interfaces are the model): four async methods,
values from ``proto.results`` in and out.  Two implementations exist: ``LocalSigner`` (here; the
embedded default, the lab and the tests) and ``ra.connector.CertsrvConnector`` (AD CS web
enrollment, at a real AD CS or our CA).  The EST server parses, checks the CSR's signature once
and authenticates; a backend decides, or asks the CA.  What a remote CA needs besides (start-up
checks, passthrough credential checks, closing its connections) is the RA's business with its
certsrv connector, not part of this contract.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from cryptography import x509

from onlineca import pki
from onlineca.infra import files
from onlineca.proto.est import CsrAttrs
from onlineca.proto.results import Denied, EnrollRequest, EnrollResult, Issued, Pending


@runtime_checkable
class CABackend(Protocol):
    """What an EST server needs of a CA.

    ``cacerts(label)``
        The CA certificates to publish for that CA label (None: the default CA), issuing CA
        first.  Called on every ``/cacerts``: answer from what is kept, do not ask the CA.
    ``enroll(request)``
        Decide and sign, or submit to the CA: ``Issued`` (the certificate's DER as the CA made
        it), ``Pending`` or ``Denied`` (``http_status`` and a ``message`` the client may see).  A
        ``Pending`` with a ``req_id`` is remembered by the EST server for that CSR, and the same
        CSR sent again becomes a ``poll``; its ``retry_after`` (None: the server's default) is
        the Retry-After of the 202.
    ``poll(req_id, request)``
        Ask again about a request the CA holds pending (same CSR, same client): the same triad.
    ``csrattrs(label)``
        What a CSR should contain; an empty ``CsrAttrs`` makes the server answer 204.

    A CA that cannot answer now (unreachable, slower than its timeout) is not a result: raise
    ``ESTCodedError`` with ``http_status`` 503 and ``retry_after``.  Anything else raised is a
    defect: the server logs it and answers 500 without details.  A backend never logs a password;
    ``request.credentials`` travel only for passthrough to a CA.
    """

    async def cacerts(self, label: str | None) -> list[x509.Certificate]: ...

    async def enroll(self, request: EnrollRequest) -> EnrollResult: ...

    async def poll(self, req_id: int, request: EnrollRequest) -> EnrollResult: ...

    async def csrattrs(self, label: str | None) -> CsrAttrs: ...


class PendingRequests(OrderedDict[bytes, int]):
    """The requests a CA holds pending: SHA-256 of the CSR's DER -> the CA's ReqID, oldest
    forgotten first beyond ``limit``.  An EST client sends the same CSR again after Retry-After
    (RFC 7030 4.2.3); that CSR then becomes a ``poll`` of its ReqID instead of a new request."""

    def __init__(self, limit: int = 10000) -> None:
        super().__init__()
        self.limit = limit

    async def ask(self, backend: CABackend, request: EnrollRequest) -> EnrollResult:
        """``backend.enroll``, or ``backend.poll`` when this CSR is pending; remember what is."""
        key = hashlib.sha256(request.csr_der).digest()
        req_id = self.get(key)
        result = await (backend.poll(req_id, request) if req_id is not None else backend.enroll(request))
        if isinstance(result, Pending) and result.req_id is not None:
            self[key] = result.req_id
            self.move_to_end(key)
            while len(self) > self.limit:
                self.popitem(last=False)
        else:
            self.pop(key, None)
        return result


class LocalSigner:
    """Signs in-process with an issuing key and certificate (never pending).

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
        # Serialised once: every Issued carries the chain's DER.
        self.chain_der = tuple(pki.cert_der(c) for c in (issuer_cert, *self.ca_chain))

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
        return Issued.of(cert, self.chain_der)

    async def poll(self, req_id: int, request: EnrollRequest) -> EnrollResult:
        return Denied("the local signer keeps no pending requests", 404, req_id=req_id)


__all__ = ["CABackend", "LocalSigner", "PendingRequests"]
