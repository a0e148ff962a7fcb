"""One vocabulary for the outcome of an enrollment: ``Issued | Pending | Denied``, and the
``EnrollRequest`` they answer.

The same three values travel the whole way: our CA's engine returns them, the certsrv page
parsers read them from a CA's pages (ours or a real AD CS), the RA's CA backends hand them to the
EST server, which answers 200, 202 + Retry-After, or the denial's status.  Each carries what
either end needs: the CA's ReqID, its HRESULT and disposition message, the HTTP status and
Retry-After of the EST answer.  An issued certificate travels as the DER the CA produced;
``Issued.certificate`` parses it once, when someone needs the object, and keeps it.
Values only: no I/O here, and nothing below ``pki`` and ``errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Final, Literal

from cryptography import x509

from onlineca import pki

# AD CS's dispositions, as our CA stores them (Issued, Taken Under Submission, Denied, Error).
ISSUED: Final = "issued"
PENDING: Final = "pending"
DENIED: Final = "denied"
FAILED: Final = "failed"
Disposition = Literal["issued", "pending", "denied", "failed"]


@dataclass(frozen=True)
class BasicCredentials:
    """HTTP Basic credentials as the client sent them (for passthrough to a CA); the password is
    kept out of ``repr`` and ``str``."""

    user: str
    password: str = field(repr=False)

    def __str__(self) -> str:
        return f"{self.user}:***"


@dataclass(frozen=True)
class EnrollRequest:
    """One enrollment, after the EST server parsed the CSR, checked its signature and
    authenticated the client (nobody after it checks the signature again).

    ``csr_der`` is the request as received (computed from ``csr`` when not given), for whoever
    forwards or hashes it.  ``user`` is the HTTP Basic user (None with certificate-only auth);
    ``client_cert`` the validated TLS client certificate.  ``reenroll`` marks simplereenroll, and
    ``renewing`` is then the certificate being renewed.  ``serverkeygen`` marks a request whose key
    the server generated.  ``credentials`` travel only for passthrough to a CA, and never print.
    ``voucher`` (capf10 branch) is the RA agent's certificate of a vouched request (``pki.vouch``):
    its signature is the agent's, checked by the EST server, not the key holder's.
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
    csr_der: bytes = b""
    voucher: x509.Certificate | None = None

    def __post_init__(self) -> None:
        if not self.csr_der:
            object.__setattr__(self, "csr_der", pki.csr_der(self.csr))


@dataclass(frozen=True)
class Issued:
    """The CA issued: ``cert_der`` as it produced it, the other certificates of the answer
    (``chain_der``, issuing CA first) and, from a CA that numbers requests, its ``req_id``."""

    cert_der: bytes
    chain_der: tuple[bytes, ...] = ()
    req_id: int | None = None
    disposition: ClassVar[Disposition] = ISSUED

    @cached_property
    def certificate(self) -> x509.Certificate:
        """The certificate, parsed on first use and kept (ParseError if the DER is not one)."""
        return pki.load_certificate(self.cert_der)

    @classmethod
    def of(cls, cert: x509.Certificate, chain_der: Sequence[bytes] = (), req_id: int | None = None) -> Issued:
        """From a certificate object just signed: serialised once, the object kept."""
        issued = cls(pki.cert_der(cert), tuple(chain_der), req_id)
        issued.__dict__["certificate"] = cert  # what cached_property would store
        return issued

    def with_chain(self, chain_der: Sequence[bytes]) -> Issued:
        """The same certificate with these chain certificates (the parsed object, if any, kept)."""
        out = Issued(self.cert_der, tuple(chain_der), self.req_id)
        if "certificate" in self.__dict__:
            out.__dict__["certificate"] = self.__dict__["certificate"]
        return out


@dataclass(frozen=True)
class Pending:
    """Accepted, not issued yet (AD CS: "Taken Under Submission").

    ``req_id`` is the CA's number for it (ask again with that); ``message`` the CA's disposition
    message; ``retry_after`` the seconds an EST client should wait (None: the server's default).
    """

    req_id: int | None = None
    message: str = ""
    retry_after: int | None = None
    disposition: ClassVar[Disposition] = PENDING


@dataclass(frozen=True)
class Denied:
    """Refused.  ``message`` is shown to the client (the CA's disposition message, or why the
    backend refused); ``http_status`` is the EST answer (400, 401, 403, 500 or 502); ``req_id`` and
    ``hresult`` are the CA's; ``failed`` marks a request the CA could not even read (AD CS's
    disposition "Error") rather than one it refused."""

    message: str
    http_status: int = 403
    req_id: int | None = None
    hresult: int | None = None
    failed: bool = False

    @property
    def disposition(self) -> Disposition:
        return FAILED if self.failed else DENIED


EnrollResult = Issued | Pending | Denied

__all__ = [
    "DENIED",
    "FAILED",
    "ISSUED",
    "PENDING",
    "BasicCredentials",
    "Denied",
    "Disposition",
    "EnrollRequest",
    "EnrollResult",
    "Issued",
    "Pending",
]
