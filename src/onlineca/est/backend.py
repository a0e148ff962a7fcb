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
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography import x509

from onlineca import pki
from onlineca.infra import files
from onlineca.proto.est import CsrAttrs
from onlineca.proto.results import Denied, EnrollRequest, EnrollResult, Issued, Pending

log = logging.getLogger("onlineca.est")


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


def pending_key(request: EnrollRequest) -> bytes:
    """What identifies "the same request" across retries: the public key, the subject, the
    subjectAltName, the CA label and who asks (the Basic user, else the client certificate).

    Not the CSR's bytes: a client may sign a new CSR for each retry (libEST does), and ECDSA
    signatures are randomised, so the bytes differ while the request is the same.  The key makes
    the request the requester's own: nobody else can collect a certificate for that key."""
    csr = request.csr
    h = hashlib.sha256()
    try:
        spki = pki.public_key_der(csr.public_key())
    except Exception:  # a key type pki does not know: its DER from the request itself
        spki = request.csr_der
    sans = pki.csr_sans(csr)
    if request.user is not None:
        who = "user:" + request.user.lower()
    elif request.client_cert is not None:
        who = "cert:" + pki.fingerprint(request.client_cert)
    else:
        who = "-"
    for part in (spki, csr.subject.public_bytes(), repr(sorted(map(repr, sans or []))).encode(),
                 (request.label or "").encode(), who.encode(), b"reenroll" if request.reenroll else b"enroll"):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


@dataclass(frozen=True)
class Remembered:
    """What a pending store holds for a key: the CA's ReqID of a request it holds pending, or the
    DER of a certificate the CA issued after the client had gone (collected by its retry)."""

    req_id: int | None = None
    cert_der: bytes | None = None


@runtime_checkable
class PendingStore(Protocol):
    """Where an EST server remembers requests between a client's retries (``pending_key``)."""

    async def lookup(self, key: bytes) -> Remembered | None: ...

    async def remember(self, key: bytes, req_id: int, request: EnrollRequest) -> None: ...

    async def keep_issued(self, key: bytes, cert_der: bytes, req_id: int | None, request: EnrollRequest) -> None: ...

    async def forget(self, key: bytes) -> None: ...


_orphans: set[asyncio.Future[None]] = set()


async def ask(store: PendingStore, backend: CABackend, request: EnrollRequest) -> EnrollResult:
    """``backend.enroll``, or ``backend.poll`` when this request is pending at the CA, or the
    certificate the CA issued for it after an earlier attempt was abandoned.

    The call to the backend is shielded: when the client goes away (or the server's deadline
    fires) before the CA answers, the CA's answer is still remembered under the request's key,
    so the client's retry collects that certificate (or polls that ReqID) instead of having the
    CA issue a second time."""
    key = pending_key(request)
    known = await store.lookup(key)
    if known is not None and known.cert_der is not None:
        issued = Issued(known.cert_der, req_id=known.req_id)
        try:
            ok = pki.same_public_key(issued.certificate.public_key(), request.csr.public_key())
        except Exception:
            ok = False
        await store.forget(key)
        if ok:
            return issued
        known = None
    call = backend.poll(known.req_id, request) if known is not None and known.req_id is not None \
        else backend.enroll(request)
    task: asyncio.Task[EnrollResult] = asyncio.ensure_future(call)
    try:
        result = await asyncio.shield(task)
    except asyncio.CancelledError:
        def _keep(done: asyncio.Task[EnrollResult]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            orphan = asyncio.ensure_future(keep_abandoned(store, key, done.result(), request))
            _orphans.add(orphan)
            orphan.add_done_callback(_orphans.discard)
        task.add_done_callback(_keep)
        raise
    await _settle(store, key, result, request, known=known is not None)
    return result


async def _settle(store: PendingStore, key: bytes, result: EnrollResult, request: EnrollRequest,
                  known: bool = True) -> None:
    """Remember a pending request; forget one that is no longer pending (a write only when
    there was something to forget: most requests are issued at once and never stored)."""
    if isinstance(result, Pending) and result.req_id is not None:
        await store.remember(key, result.req_id, request)
    elif known:
        await store.forget(key)


async def keep_abandoned(store: PendingStore, key: bytes, result: EnrollResult, request: EnrollRequest) -> None:
    """What the CA answered after the client had gone: a certificate is kept for the retry."""
    if isinstance(result, Issued):
        await store.keep_issued(key, result.cert_der, result.req_id, request)
        log.warning("the CA issued request %s for %s after the client had gone; the certificate is kept for "
                    "the client's retry", result.req_id, pki.name_to_slash(request.csr.subject)[:200],
                    extra={"func": "est_enroll"})
    else:
        await _settle(store, key, result, request)


class PendingRequests(OrderedDict[bytes, int]):
    """An in-memory ``PendingStore`` (a standalone EST server; the RA keeps its requests in the
    database): ``pending_key`` -> the CA's ReqID, oldest forgotten first beyond ``limit``.  An EST
    client sends the request again after Retry-After (RFC 7030 4.2.3); it then becomes a ``poll``
    of its ReqID instead of a new request."""

    def __init__(self, limit: int = 10000) -> None:
        super().__init__()
        self.limit = limit
        self.issued: OrderedDict[bytes, tuple[bytes, int | None]] = OrderedDict()

    async def lookup(self, key: bytes) -> Remembered | None:
        if key in self.issued:
            der, req_id = self.issued[key]
            return Remembered(req_id, der)
        req_id = self.get(key)
        return Remembered(req_id) if req_id is not None else None

    async def remember(self, key: bytes, req_id: int, request: EnrollRequest) -> None:
        self[key] = req_id
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)

    async def keep_issued(self, key: bytes, cert_der: bytes, req_id: int | None, request: EnrollRequest) -> None:
        self.pop(key, None)
        self.issued[key] = (cert_der, req_id)
        while len(self.issued) > self.limit:
            self.issued.popitem(last=False)

    async def forget(self, key: bytes) -> None:
        self.pop(key, None)
        self.issued.pop(key, None)

    async def ask(self, backend: CABackend, request: EnrollRequest) -> EnrollResult:
        """``ask(self, backend, request)``."""
        return await ask(self, backend, request)


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


__all__ = ["CABackend", "LocalSigner", "PendingRequests", "PendingStore", "Remembered", "ask", "keep_abandoned",
           "pending_key"]
