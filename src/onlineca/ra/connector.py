"""The RA's CA backends: ``CertsrvConnector`` (AD CS web enrollment) and the local signer.

Both are ``est.backend.CABackend``s: the RA's EST server calls ``cacerts``, ``enroll``, ``poll``
and ``csrattrs`` on them and nothing else.  The certsrv connector is also the RA's link to a
remote CA, so the RA calls three more methods on it alone: ``prepare()`` (the start-up checks:
log in, fetch and validate the CA chain, check the template, each step logged as the source
document logs it), ``check_password(user, password)`` (passthrough: the EST client's Basic
credentials must log in to the CA) and ``close()``.  CA failures (``CertsrvFailure``, coded
``CA_*`` with curl's wording) end here: logged once with the hop and the fix, then answered as
the contract says (a denial, or 503 + Retry-After, and the RA re-runs its start-up checks when
the CA became unreachable).  A connector never logs a password and never keeps one as a
dictionary key (credentials are keyed by a keyed hash).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from cryptography import x509

from onlineca import pki
from onlineca.certsrv.client import CertsrvClient
from onlineca.config import RAConfig
from onlineca.errors import (
    CAAuthError,
    CAChainError,
    CAConnectError,
    CADeniedError,
    CADNSError,
    CAHTTPError,
    CAPageError,
    CATemplateError,
    CATimeoutError,
    CATLSError,
    CertsrvFailure,
    ChainError,
    ConfigError,
    ESTCodedError,
    fix_for,
)
from onlineca.est.backend import LocalSigner
from onlineca.est.server import CLIENT_ADDRESS
from onlineca.infra import workers
from onlineca.proto import est as m
from onlineca.proto.certsrv import client as p
from onlineca.proto.results import BasicCredentials, Denied, EnrollRequest, EnrollResult, Pending

log = logging.getLogger("onlineca.ra")

T = TypeVar("T")


class Observe(Protocol):
    """Called around every CA call: (operation, awaitable) -> result; the RA measures latency and errors."""

    def __call__(self, operation: str, call: Awaitable[T], /) -> Awaitable[T]: ...


# Failures that mean the CA cannot be reached at all: the RA goes back to its start-up checks.
UNREACHABLE = (CADNSError, CAConnectError, CATLSError)
_TIMEOUT_NAMES = {"connect": "connect_timeout", "login": "login_timeout", "enroll": "enroll_timeout"}


async def _unobserved(operation: str, call: Awaitable[T]) -> T:
    return await call


def _ignore(why: str) -> None:
    return None


def local_signer(ra: RAConfig) -> LocalSigner:
    """The local backend of ``connector = 'local'``: ``local_key``/``local_cert`` (chain allowed)."""
    if not (ra.local_key and ra.local_cert):
        raise ConfigError("connector = 'local' needs local_key and local_cert in [ra]",
                          hint="Point them at the issuing CA's key and certificate (chain allowed).")
    try:
        return LocalSigner.from_files(ra.local_cert, ra.local_key)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load local_cert/local_key: {exc}") from None


class CertsrvConnector:
    """AD CS web enrollment through ``CertsrvClient``, with the source document's log lines.

    The configured credentials (``ca_user``) serve the start-up checks and the users/certificate
    client-auth modes.  In passthrough, each EST client's credentials get their own kept-alive
    client (a few, least recently used first out), verified by one login and trusted for
    ``auth_cache_seconds``; enrollments then cost two CA requests (submit, fetch).
    ``unreachable(why)`` is called when the CA cannot be reached after start-up.
    """

    name = "certsrv"

    def __init__(self, ra: RAConfig, *, trust: pki.TrustStore, observe: Observe = _unobserved,
                 unreachable: Callable[[str], None] = _ignore) -> None:
        self.ra = ra
        self.trust = trust
        self.observe = observe
        self.unreachable = unreachable
        self.client = CertsrvClient.from_config(ra, trust=trust)
        self.base = self.client.base
        self.chain: list[x509.Certificate] = []
        self._chain_der: tuple[bytes, ...] = ()
        self._hash_key = secrets.token_bytes(32)
        # account -> (client, verified until (monotonic), digest of the verified password)
        self._clients: OrderedDict[str, tuple[CertsrvClient, float, bytes]] = OrderedDict()
        # digest(user, password) of recently refused logins -> refused until (monotonic)
        self._failed: OrderedDict[bytes, float] = OrderedDict()
        # refused logins per account and per client address (monotonic times), for the throttle
        self._fail_by_principal: OrderedDict[str, deque[float]] = OrderedDict()
        self._fail_by_address: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = asyncio.Lock()

    # -- the RA's start-up checks ------------------------------------------------------------

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
        source document logs it; the first failure is logged and raised.  The chain (issuing CA
        first) is kept for ``cacerts`` and returned."""
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
        self.chain, self._chain_der = chain, tuple(pki.cert_der(c) for c in chain)
        return chain

    async def probe(self) -> None:
        """Is the CA still there?  One login page request with the RA's account (background check)."""
        await self.observe("login", self.client.login())

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
                               hint=exc.hint or fix_for("CA_CHAIN"),
                               details={"url": p.certnew_p7b_url(self.base, 0, "bin")}) from None
        return ordered

    # -- passthrough credentials --------------------------------------------------------------

    def _digest(self, creds: BasicCredentials) -> bytes:
        return hmac.new(self._hash_key, f"{creds.user}\x00{creds.password}".encode(), hashlib.sha256).digest()

    @staticmethod
    def principal(user: str) -> str:
        """One name per account, whatever the spelling: ``DOMAIN\\alice``, ``alice@domain`` and
        ``ALICE`` are all ``alice`` here (the CA decides which domains it accepts; the cache and
        the throttle must not count them as different people)."""
        name = user.rsplit("\\", 1)[-1]
        return name.split("@", 1)[0].strip().lower()[:256]

    def _throttled(self, principal: str, peer: str) -> str | None:
        """Why a login from ``peer`` for ``principal`` is not forwarded to the CA now, if it is not."""
        now = time.monotonic()
        window = self.ra.login_throttle_seconds
        # Under --workers each worker counts in its own memory, so each allows its share.
        for bucket, key, limit, what in ((self._fail_by_principal, principal,
                                          workers.share(self.ra.max_failed_logins_per_user), f"user {principal}"),
                                         (self._fail_by_address, peer,
                                          workers.share(self.ra.max_failed_logins_per_address), f"address {peer}")):
            times = bucket.get(key)
            if times is None:
                continue
            while times and times[0] < now - window:
                times.popleft()
            if len(times) >= limit:
                return (f"{len(times)} refused logins for {what} in {window:g} s (at most "
                        f"{limit}); not asking the CA again before they age out")
        return None

    def _count_failure(self, digest: bytes, principal: str, peer: str) -> None:
        now = time.monotonic()
        self._failed[digest] = now + self.ra.login_failure_cache_seconds
        self._failed.move_to_end(digest)
        while len(self._failed) > 4 * self.ra.passthrough_cache_size:
            self._failed.popitem(last=False)
        for bucket, key in ((self._fail_by_principal, principal), (self._fail_by_address, peer)):
            times = bucket.setdefault(key, deque(maxlen=1000))
            times.append(now)
            bucket.move_to_end(key)
            while len(bucket) > 4 * self.ra.passthrough_cache_size:
                bucket.popitem(last=False)

    async def _client_for(self, creds: BasicCredentials | None, *, verify: bool = False) -> CertsrvClient:
        """The kept-alive client of these passthrough credentials: one per account (``principal``),
        so that one account's logins never push another's client out; at most
        ``passthrough_cache_size`` accounts, the least recently used leaving first."""
        if creds is None or self.ra.client_auth != "passthrough":
            return self.client
        key = self.principal(creds.user)
        digest = self._digest(creds)
        now = time.monotonic()
        async with self._lock:
            entry = self._clients.get(key)
            if entry is not None and hmac.compare_digest(entry[2], digest) and (not verify or entry[1] > now):
                self._clients.move_to_end(key)
                return entry[0]
        client = CertsrvClient(self.ra.ca_url, auth="basic" if self.ra.ca_auth == "cert" else self.ra.ca_auth,
                               username=creds.user, password=creds.password, trust=self.trust,
                               connect_timeout=self.ra.connect_timeout, login_timeout=self.ra.login_timeout,
                               enroll_timeout=self.ra.enroll_timeout, channel_binding=self.ra.ca_channel_binding,
                               service_host=self.ra.ca_service_host, expected_name=self.ra.ca_expected_name,
                               fingerprint=self.ra.ca_fingerprint)
        try:
            await self.observe("login", client.login())
        except BaseException:
            await client.close()
            raise
        async with self._lock:
            entry = self._clients.get(key)
            spare: list[CertsrvClient] = []
            if entry is not None and hmac.compare_digest(entry[2], digest):
                # Another request verified the same credentials meanwhile (or the entry expired):
                # keep the client others may be using, drop ours.
                self._clients[key] = (entry[0], now + self.ra.auth_cache_seconds, digest)
                spare.append(client)
                client = entry[0]
            else:
                if entry is not None:  # the account's new password: its old client goes
                    spare.append(entry[0])
                self._clients[key] = (client, now + self.ra.auth_cache_seconds, digest)
                while len(self._clients) > self.ra.passthrough_cache_size:
                    spare.append(self._clients.popitem(last=False)[1][0])
            self._clients.move_to_end(key)
        for unused in spare:
            await unused.close()
        return client

    async def check_credentials(self, user: str, password: str, peer: str = "") -> bool:
        """True when the CA accepts these credentials (one login, then cached); CA_AUTH is False.
        A login that failed recently with the same credentials is not forwarded again, and failed
        logins are throttled per account and per client address, so that nobody can lock an
        account or flood the CA through the RA.  Other failures (CA unreachable, slow) are raised:
        they say nothing about the password."""
        creds = BasicCredentials(user, password)
        digest, principal = self._digest(creds), self.principal(user)
        now = time.monotonic()
        entry = self._clients.get(principal)
        if entry is not None and entry[1] > now and hmac.compare_digest(entry[2], digest):
            self._clients.move_to_end(principal)
            return True
        failed_until = self._failed.get(digest)
        if failed_until is not None and failed_until > now:
            log.warning("login for user %s not forwarded to the CA: the same credentials failed less than %g s ago",
                        user[:64], self.ra.login_failure_cache_seconds, extra={"func": "ra_certsrv_auth_throttle"})
            return False
        known_good = entry is not None and hmac.compare_digest(entry[2], digest)
        # The password last verified for this account is always asked again when its time is up:
        # someone else's wrong guesses must not lock CAPF out.
        why = None if known_good else self._throttled(principal, peer)
        if why is not None:
            log.warning("login for user %s from %s not forwarded to the CA: %s", user[:64], peer or "-", why,
                        extra={"func": "ra_certsrv_auth_throttle",
                               "fix": "If this is CAPF, correct its RA password; otherwise someone is guessing: "
                                      "find the address in access.log."})
            return False
        try:
            await self._client_for(creds, verify=True)
        except CAAuthError:
            self._count_failure(digest, principal, peer)
            return False
        self._failed.pop(digest, None)
        return True

    async def check_password(self, user: str, password: str) -> bool:
        """The EST server's password check in passthrough: the CA decides, and each refusal or
        failure is logged; a CA that cannot answer is a 503 (ESTCodedError), not a refusal."""
        try:
            ok = await self.check_credentials(user, password, CLIENT_ADDRESS.get())
        except CertsrvFailure as exc:
            log.error("cannot check the EST client's credentials at the CA: Curl request failed with %s (%s)",
                      exc.reason, self._hop(exc),
                      extra={"func": "ra_certsrv_auth_curl_data_cb", "fix": exc.hint})
            if isinstance(exc, UNREACHABLE):
                self.unreachable(f"{exc.code}: {exc.message}")
            raise ESTCodedError("EST_ERR_CA_ENROLL_RETRY", "the CA is unavailable to check credentials",
                                http_status=503, retry_after=self.ra.unavailable_retry_after) from None
        if not ok:
            log.error("the CA refused the EST client's credentials for user %s (HTTP 401 on %s)", user[:64],
                      p.login_url(self.base),
                      extra={"func": "ra_certsrv_auth_curl_data_cb",
                             "fix": "The EST client (CAPF) must send the CA user name and password of the "
                                    "RA's template; check both on the client and on the CA."})
        return ok

    # -- CABackend -----------------------------------------------------------------------------

    async def cacerts(self, label: str | None) -> list[x509.Certificate]:
        return list(self.chain)

    async def csrattrs(self, label: str | None) -> m.CsrAttrs:
        return m.CsrAttrs()

    async def enroll(self, request: EnrollRequest) -> EnrollResult:
        return await self._ask("enroll", request, None)

    async def poll(self, req_id: int, request: EnrollRequest) -> EnrollResult:
        return await self._ask("poll", request, req_id)

    async def _ask(self, operation: str, request: EnrollRequest, req_id: int | None) -> EnrollResult:
        subject = pki.name_to_slash(request.csr.subject)[:200]
        if self.ra.client_auth == "passthrough" and request.credentials is None:
            # Passthrough enrolls with the client's own CA account: a client certificate is not
            # one, and must never become the RA's own (ca_user).
            log.warning("passthrough needs the EST client's CA credentials (HTTP Basic); %s sent a client "
                        "certificate only", request.peer or "a client",
                        extra={"func": "ra_certsrv_ca_plugin_enroll",
                               "fix": "The client must send its CA user name and password; a certificate alone "
                                      "is not a CA account."})
            return Denied("passthrough needs your CA user name and password (HTTP Basic)", 401)
        try:
            client = await self._client_for(request.credentials)
            if req_id is None:
                template, attributes = self._template_for(request)
                result = await self.observe(operation, client.enroll(request.csr, template, attributes))
            else:
                result = await self.observe(operation, client.fetch(req_id))
        except CertsrvFailure as exc:
            return self._failure(exc, subject)
        if isinstance(result, Pending):
            log.info("request %d for %s is pending at the CA (%s); Retry-After %d", result.req_id, subject,
                     result.message or "Taken Under Submission", self.ra.pending_retry_after,
                     extra={"func": "ra_certsrv_ca_plugin_enroll"})
            return dataclasses.replace(result, retry_after=self.ra.pending_retry_after)
        if isinstance(result, Denied):
            log.error("the CA denied request %s for %s: %s", result.req_id, subject, result.message,
                      extra={"func": "ra_certsrv_ca_plugin_enroll", "fix": fix_for("CA_DENIED")})
            return dataclasses.replace(result, message=f"the CA denied request {result.req_id}: {result.message}",
                                       http_status=403)
        # The client parsed the certificate once (its key was checked): the serial comes from there.
        log.info("request %d for %s issued, serial %x", result.req_id, subject, result.certificate.serial_number,
                 extra={"func": "ra_certsrv_ca_plugin_enroll"})
        return result.with_chain(self._chain_der)

    def _template_for(self, request: EnrollRequest) -> tuple[str, dict[str, str]]:
        """capf10 branch: a vouched request goes under ``vouched_template`` with the agent's
        certificate (base64 DER) as ``onlinecaVoucher``, for the CA to check (docs/ra.md)."""
        if request.voucher is None:  # a label may name its own template (CAPF's agent certificate)
            return self.ra.label_templates.get(request.label or "", self.ra.template), {}
        voucher = base64.b64encode(pki.cert_der(request.voucher)).decode()
        return self.ra.vouched_template, {"onlinecaVoucher": voucher}

    def _hop(self, exc: CertsrvFailure) -> str:
        """Which hop failed and, for a timeout, which configured timeout fired."""
        hop = f"hop RA -> CA {exc.details.get('url') or self.ra.ca_url}"
        if isinstance(exc, CATimeoutError):
            phase = exc.details.get("phase", "enroll")
            hop += f", {_TIMEOUT_NAMES.get(phase, phase)} = {exc.details.get('timeout', 0):g} s fired"
        return hop

    def _failure(self, exc: CertsrvFailure, subject: str) -> EnrollResult:
        log.error("Curl request failed with %s (%s; enrollment of %s)", exc.reason, self._hop(exc), subject,
                  extra={"func": "ra_certsrv_ca_plugin_enroll", "fix": exc.hint})
        if isinstance(exc, (CATemplateError, CADeniedError)):
            return Denied(exc.message, 403)
        if isinstance(exc, CAAuthError) and self.ra.client_auth == "passthrough":
            return Denied("the CA refused these credentials", 401)
        if isinstance(exc, (UNREACHABLE, CAAuthError)):
            self.unreachable(f"{exc.code}: {exc.message}")
        if isinstance(exc, CAHTTPError) and exc.details.get("status") == 503:  # the CA is busy: come back
            raise ESTCodedError("EST_ERR_CA_ENROLL_RETRY", f"the CA is busy: {exc.message}",
                                http_status=503, retry_after=self.ra.unavailable_retry_after)
        if isinstance(exc, (CAPageError, CAHTTPError)):
            return Denied(f"the CA answered what the RA cannot use: {exc.message}", 502)
        raise ESTCodedError("EST_ERR_CA_ENROLL_RETRY", f"the CA is unavailable: {exc.message}",
                            http_status=503, retry_after=self.ra.unavailable_retry_after)

    @property
    def requests_sent(self) -> int:
        return self.client.requests_sent + sum(c.requests_sent for c, _t, _d in self._clients.values())

    async def close(self) -> None:
        await self.client.close()
        for client, _t, _d in self._clients.values():
            await client.close()
        self._clients.clear()


__all__ = ["UNREACHABLE", "CertsrvConnector", "local_signer"]
