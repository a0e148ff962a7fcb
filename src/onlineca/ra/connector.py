"""The RA's CA connector: how an RA enrolls at a CA, behind one small interface.

A connector has five async methods.  ``prepare()`` runs the start-up checks (log in, fetch and
validate the CA chain, check the template) and returns the CA chain, issuing CA first;
``enroll(csr, credentials)`` submits a request and fetches the certificate once issued;
``poll(req_id)`` asks again about a pending request; ``check_credentials(user, password)`` tells
whether a client's Basic credentials are valid CA credentials (passthrough); ``close()``.  Results
are certsrv's ``Issued`` | ``Pending`` | ``Denied``; failures are ``CertsrvFailure``s (coded
``CA_*``, with curl's wording).  Two connectors exist: ``CertsrvConnector`` (AD CS web enrollment:
a real AD CS or our CA) and ``LocalConnector`` (signs in-process).  A connector never logs a
password and never keeps one as a dictionary key (credentials are keyed by a keyed hash).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, runtime_checkable

from cryptography import x509

from onlineca import pki
from onlineca.certsrv.client import CertsrvClient
from onlineca.config import RAConfig
from onlineca.errors import (
    CAAuthError,
    CAChainError,
    CATemplateError,
    CATimeoutError,
    CertsrvFailure,
    ChainError,
    ConfigError,
)
from onlineca.est.backend import LocalSigner
from onlineca.infra.users import BasicCredentials
from onlineca.proto.certsrv import client as p

log = logging.getLogger("onlineca.ra")

CAResult = p.Issued | p.Pending | p.Denied
T = TypeVar("T")
# Called around every CA call: (operation, awaitable) -> result; the RA measures latency and errors.
Observe = Callable[[str, Awaitable[T]], Awaitable[T]]


async def _unobserved(operation: str, call: Awaitable[T]) -> T:
    return await call


@runtime_checkable
class CAConnector(Protocol):
    """How the RA reaches its CA (see the module docstring)."""

    name: str

    async def prepare(self) -> list[x509.Certificate]: ...

    async def enroll(self, csr: x509.CertificateSigningRequest,
                     credentials: BasicCredentials | None = None) -> CAResult: ...

    async def poll(self, req_id: int, credentials: BasicCredentials | None = None) -> CAResult: ...

    async def check_credentials(self, user: str, password: str) -> bool: ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------- local


class LocalConnector:
    """Signs in-process with ``local_key``/``local_cert`` (no CA round trip; never pending)."""

    name = "local"

    def __init__(self, signer: LocalSigner) -> None:
        self.signer = signer
        self._next_id = 0

    @classmethod
    def from_config(cls, ra: RAConfig) -> LocalConnector:
        if not (ra.local_key and ra.local_cert):
            raise ConfigError("connector = 'local' needs local_key and local_cert in [ra]",
                              hint="Point them at the issuing CA's key and certificate (chain allowed).")
        try:
            return cls(LocalSigner.from_files(ra.local_cert, ra.local_key))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load local_cert/local_key: {exc}") from None

    async def prepare(self) -> list[x509.Certificate]:
        return [self.signer.issuer_cert, *self.signer.ca_chain]

    async def enroll(self, csr: x509.CertificateSigningRequest,
                     credentials: BasicCredentials | None = None) -> CAResult:
        self._next_id += 1
        if not csr.subject.rdns and pki.csr_sans(csr) is None:
            return p.Denied(self._next_id, None, "the request has neither a subject nor a subjectAltName")
        return p.Issued(self._next_id, self.signer.sign(csr))

    async def poll(self, req_id: int, credentials: BasicCredentials | None = None) -> CAResult:
        return p.Denied(req_id, None, "the local connector keeps no pending requests")

    async def check_credentials(self, user: str, password: str) -> bool:
        raise ConfigError("client_auth = 'passthrough' needs connector = 'certsrv'",
                          hint="Use client_auth = 'users' or 'certificate' with the local connector.")

    async def close(self) -> None:
        return None


# --------------------------------------------------------------------------- certsrv


class CertsrvConnector:
    """AD CS web enrollment through ``CertsrvClient``, with the source document's start-up log lines.

    The configured credentials (``ca_user``) serve the start-up checks and the users/certificate
    client-auth modes.  In passthrough, each EST client's credentials get their own kept-alive
    client (a few, least recently used first out), verified by one login and trusted for
    ``auth_cache_seconds``; enrollments then cost two CA requests (submit, fetch).
    """

    name = "certsrv"
    MAX_PASSTHROUGH_CLIENTS = 16

    def __init__(self, ra: RAConfig, *, trust: pki.TrustStore, observe: Observe = _unobserved) -> None:
        self.ra = ra
        self.trust = trust
        self.observe = observe
        self.client = CertsrvClient.from_config(ra, trust=trust)
        self.base = self.client.base
        self._hash_key = secrets.token_bytes(32)
        # digest(user, password) -> (client, verified until (monotonic))
        self._clients: OrderedDict[bytes, tuple[CertsrvClient, float]] = OrderedDict()
        self._lock = asyncio.Lock()

    def _fail(self, func: str, exc: CertsrvFailure, what: str) -> None:
        log.error("%s %s", what, exc.reason, extra={"func": func, "fix": exc.hint})
        fired = ""
        if isinstance(exc, CATimeoutError):
            phase = exc.details.get("phase", "")
            fired = f" ({phase}_timeout = {exc.details.get('timeout', 0):g} s fired)"
        # diag branch: context of the line above, at warn as the original RA writes it
        log.warning("URL used: %s%s", exc.details.get("url") or self.client.last_url or self.base, fired,
                    extra={"func": func})

    async def prepare(self) -> list[x509.Certificate]:
        """Log in, fetch and validate the CA chain, check the template: each step logged as the
        source document logs it; the first failure is logged and raised."""
        login_url = p.login_url(self.base).rstrip("/")
        try:
            await self.observe("login", self.client.login())
        except CertsrvFailure as exc:
            self._fail("login_to_certsrv_ca", exc, "Curl call for MS CA login failed with")
            log.error("Unable to execute login to certsrv with curl", extra={"func": "retrieve_cacerts"})
            log.error("Unable to retrieve CA Cert chain from CA", extra={"func": "ra_certsrv_ca_plugin_postconf"})
            raise
        log.info("Secure connection to MS CertServ completed successfully using the following URL %s",
                 login_url, extra={"func": "login_to_certsrv_ca"})
        chain_url = p.certnew_p7b_url(self.base, 0, "bin")
        try:
            chain = await self.observe("cacerts", self.client.ca_chain(0))
            chain = self._validate(chain)
        except CertsrvFailure as exc:
            self._fail("retrieve_cacerts", exc, "Curl request failed with")
            log.error("Unable to retrieve CA Cert chain from CA", extra={"func": "ra_certsrv_ca_plugin_postconf"})
            raise
        log.info("Secure connection to MS CertServ completed successfully using the following URL %s",
                 chain_url, extra={"func": "retrieve_cacerts"})
        log.info("CA Cert chain retrieved from CA, will be passed to EST", extra={"func": "ra_certsrv_ca_plugin_postconf"})
        for cert in chain:
            log.info("CA chain: %s (issuer %s, valid until %s)", pki.name_to_slash(cert.subject),
                     pki.name_to_slash(cert.issuer), f"{cert.not_valid_after_utc:%Y-%m-%d}",
                     extra={"func": "ra_certsrv_ca_plugin_postconf"})
        rqxt = p.page_url(self.base, "certrqxt.asp")
        try:
            offered = await self.observe("templates", self.client.check_template(self.ra.template))
        except CATemplateError as exc:
            log.error("%s", exc.message, extra={"func": "check_certsrv_template", "fix": exc.hint})
            raise
        except CertsrvFailure as exc:
            self._fail("navigate_to_certsrv_page", exc, "Curl request failed with")
            raise
        log.info("Secure connection to MS CertServ completed successfully using the following URL %s", rqxt,
                 extra={"func": "navigate_to_certsrv_page"})
        log.info("certificate template %r is offered to %s (offered: %s)", self.ra.template,
                 self.client.username or "the client certificate", ", ".join(t.name for t in offered),
                 extra={"func": "check_certsrv_template"})
        return chain

    def _validate(self, chain: list[x509.Certificate]) -> list[x509.Certificate]:
        """The chain from certnew.p7b, ordered issuing CA first, must lead to the trust store."""
        if not chain:
            raise CAChainError("certnew.p7b holds no certificate")
        ordered = pki.order_chain(chain)
        try:
            pki.validate_chain(ordered[0], ordered[1:], self.trust)
        except ChainError as exc:
            raise CAChainError(f"the CA chain does not validate against the trust store: {exc.message}",
                                 curl_message=f"CA chain validation failed: {exc.message}",
                                 hint=exc.hint or CAChainError.hint,
                                 details={"url": p.certnew_p7b_url(self.base, 0, "bin")}) from None
        return ordered

    # -- enrollment -------------------------------------------------------------------------

    def _digest(self, creds: BasicCredentials) -> bytes:
        return hmac.new(self._hash_key, f"{creds.user}\x00{creds.password}".encode(), hashlib.sha256).digest()

    async def _client_for(self, creds: BasicCredentials | None, *, verify: bool = False) -> CertsrvClient:
        if creds is None or self.ra.client_auth != "passthrough":
            return self.client
        key = self._digest(creds)
        now = time.monotonic()
        async with self._lock:
            entry = self._clients.get(key)
            if entry is not None and (not verify or entry[1] > now):
                self._clients.move_to_end(key)
                return entry[0]
        client = CertsrvClient(self.ra.ca_url, auth="basic" if self.ra.ca_auth == "cert" else self.ra.ca_auth,
                               username=creds.user, password=creds.password, trust=self.trust,
                               connect_timeout=self.ra.connect_timeout, login_timeout=self.ra.login_timeout,
                               enroll_timeout=self.ra.enroll_timeout)
        try:
            await self.observe("login", client.login())
        except BaseException:
            await client.close()
            raise
        async with self._lock:
            entry = self._clients.get(key)
            if entry is not None:
                # Another request verified the same credentials meanwhile (or the entry expired):
                # keep the client others may be using, drop ours.
                self._clients[key] = (entry[0], now + self.ra.auth_cache_seconds)
                self._clients.move_to_end(key)
                spare: list[CertsrvClient] = [client]
                client = entry[0]
            else:
                self._clients[key] = (client, now + self.ra.auth_cache_seconds)
                spare = []
                while len(self._clients) > self.MAX_PASSTHROUGH_CLIENTS:
                    spare.append(self._clients.popitem(last=False)[1][0])
        for unused in spare:
            await unused.close()
        return client

    async def check_credentials(self, user: str, password: str) -> bool:
        """True when the CA accepts these credentials (one login, then cached); CA_AUTH is False;
        other failures (CA unreachable, slow) are raised: they say nothing about the password."""
        try:
            await self._client_for(BasicCredentials(user, password), verify=True)
        except CAAuthError:
            return False
        return True

    async def enroll(self, csr: x509.CertificateSigningRequest,
                     credentials: BasicCredentials | None = None) -> CAResult:
        client = await self._client_for(credentials)
        return await self.observe("enroll", client.enroll(csr, self.ra.template))

    async def poll(self, req_id: int, credentials: BasicCredentials | None = None) -> CAResult:
        client = await self._client_for(credentials)
        return await self.observe("poll", client.fetch(req_id))

    @property
    def requests_sent(self) -> int:
        return self.client.requests_sent + sum(c.requests_sent for c, _t in self._clients.values())

    async def close(self) -> None:
        await self.client.close()
        for client, _t in self._clients.values():
            await client.close()
        self._clients.clear()


__all__ = ["CAConnector", "CAResult", "CertsrvConnector", "LocalConnector"]
