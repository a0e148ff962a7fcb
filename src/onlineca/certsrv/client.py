"""An async AD CS web-enrollment (``/certsrv``) client on aiohttp: login, templates, enrollment,
pending requests, the CA certificate and chain.

It keeps one authenticated keep-alive connection pool per CA, sends Basic credentials
pre-emptively (or authenticates with a TLS client certificate), so an enrollment costs two
requests to the CA after login: the certfnsh.asp POST and the certnew.cer GET.  Each phase has
its own timeout (connect, login, enroll).  Every failure is raised as a ``CertsrvFailure`` with a
stable code, a hint and curl's wording of the same cause; nothing else escapes.  Page parsing
lives in ``protocol`` (no I/O there); this module never logs and never prints a credential.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509

from onlineca import pki
from onlineca.errors import (
    CAAuthError,
    CAChainError,
    CAConnectError,
    CAPageError,
    CATemplateError,
    CATLSError,
    CertsrvFailure,
    ConfigError,
    ParseError,
)
from onlineca.infra import files, tls, transport
from onlineca.proto.certsrv import client as p
from onlineca.proto.request_id import REQUEST_ID_HEADER, current_request_id
from onlineca.proto.results import EnrollResult, Issued

if TYPE_CHECKING:
    from onlineca.config import RAConfig

Phase = Literal["login", "enroll"]
AuthKind = Literal["basic", "ntlm", "cert", "kerberos"]
TrustSource = str | os.PathLike[str] | pki.TrustStore | Sequence[x509.Certificate] | None


def make_ssl_context(trust: TrustSource = None, client_cert: str | os.PathLike[str] | None = None,
                     client_key: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ client context that verifies the CA's web certificate and its host name."""
    anchors: list[x509.Certificate] | None = None
    if trust is not None:
        if isinstance(trust, (str, os.PathLike)):
            try:
                store = files.load_trust_store(trust)
            except (OSError, ParseError) as exc:
                raise ConfigError(f"trust store {os.fspath(trust)}: {exc}") from None
        elif isinstance(trust, pki.TrustStore):
            store = trust
        else:
            store = pki.TrustStore(list(trust))
        # Only the configured anchors: the system store must not make an unexpected CA trusted.
        anchors = list(store.certs)
    ctx = tls.client_context(anchors, partial_chain=False)
    if client_cert:
        try:
            ctx.load_cert_chain(os.fspath(client_cert), os.fspath(client_key) if client_key else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"client certificate {os.fspath(client_cert)}: {exc}") from None
    return ctx


class CertsrvClient:
    """One CA's /certsrv pages, as one user.  Use ``async with`` (or ``close()``)."""

    def __init__(
        self,
        url: str,
        *,
        auth: AuthKind = "basic",
        username: str = "",
        password: str = "",
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        trust: TrustSource = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        login_timeout: float = 10.0,
        enroll_timeout: float = 10.0,
        user_agent: str = p.BROWSER_USER_AGENT,
        max_connections: int = 8,
        channel_binding: bool = True,
        service_host: str = "",
        expected_name: str = "",
        fingerprint: str = "",
        require_server_auth: bool = True,
    ) -> None:
        try:
            self.base = p.certsrv_base(url)
        except ParseError as exc:
            raise ConfigError(f"ca_url: {exc.message}", hint=exc.hint) from None
        parts = urlsplit(self.base)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        if auth in ("basic", "ntlm") and not username:
            raise ConfigError("ca_user is empty", hint=f"Set ca_user (and ca_password) for {auth} authentication.")
        if auth in ("ntlm", "kerberos"):
            try:
                import spnego  # noqa: F401  (optional dependency: onlineca[ntlm])
                if auth == "kerberos":
                    import gssapi  # noqa: F401  (optional dependency: onlineca[kerberos])
            except ImportError:
                extra = "kerberos" if auth == "kerberos" else "ntlm"
                raise ConfigError(f"ca_auth = '{auth}' needs the pyspnego package"
                                  + (" with GSSAPI (gssapi, krb5)" if auth == "kerberos" else ""),
                                  hint=f"Install it (pip install 'onlineca[{extra}]') or set ca_auth = 'basic'.") from None
        if auth == "cert" and not client_cert:
            raise ConfigError("ca_auth = 'cert' needs ca_client_cert (and ca_client_key)")
        for name, value in (("connect_timeout", connect_timeout), ("login_timeout", login_timeout),
                            ("enroll_timeout", enroll_timeout)):
            if not value > 0:
                raise ConfigError(f"{name} must be more than 0 seconds (got {value!r})")
        self.auth = auth
        self.username = username
        self._authorization = ("Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
                               if auth == "basic" else None)
        self._ntlm_password = password if auth in ("ntlm", "kerberos") else ""
        # NTLM and Negotiate authenticate a connection, not a request: one connection, one request
        # at a time.
        self._ntlm_lock = asyncio.Lock()
        # Extended Protection (EPA): NTLM and Kerberos tokens carry the TLS channel binding of the
        # CA's certificate (RFC 5929 tls-server-end-point), read from the connection itself.
        self.channel_binding = channel_binding
        self.server_cert_der: bytes | None = None
        # The Kerberos service principal is HTTP/<host> unless given (an alias, another realm).
        self.service_host = service_host or None
        # Pinning the CA's identity beyond its trust store (a certificate from the same root for
        # another purpose is refused): serverAuth, a name, a fingerprint.
        self.expected_name, self.fingerprint = expected_name, fingerprint
        self.require_server_auth = require_server_auth
        if parts.scheme == "https":
            self._ssl: ssl.SSLContext | bool = ssl_context or make_ssl_context(
                trust, client_cert if auth == "cert" else None, client_key if auth == "cert" else None)
        else:
            self._ssl = False
        self.connect_timeout = connect_timeout
        self.timeouts: dict[Phase, float] = {"login": login_timeout, "enroll": enroll_timeout}
        self.user_agent = user_agent
        # Concurrent enrollments share a few kept-alive connections instead of a handshake each.
        self.max_connections = 1 if auth in ("ntlm", "kerberos") else max(1, max_connections)
        self._session: aiohttp.ClientSession | None = None
        self.logged_in = False
        self.requests_sent = 0
        self.last_url = ""
        self.last_latency = 0.0

    @classmethod
    def from_config(cls, ra: RAConfig, trust: TrustSource = None) -> CertsrvClient:
        """A client for the ``[ra]`` section's CA settings."""
        return cls(ra.ca_url, auth=ra.ca_auth, username=ra.ca_user, password=ra.ca_password.get_secret_value(),
                   client_cert=ra.ca_client_cert or None, client_key=ra.ca_client_key or None,
                   trust=trust if trust is not None else (ra.trust_store or None),
                   connect_timeout=ra.connect_timeout, login_timeout=ra.login_timeout,
                   enroll_timeout=ra.enroll_timeout, channel_binding=ra.ca_channel_binding,
                   service_host=ra.ca_service_host, expected_name=ra.ca_expected_name,
                   fingerprint=ra.ca_fingerprint)

    def __repr__(self) -> str:  # never shows the password
        return f"CertsrvClient({self.base!r}, auth={self.auth!r}, user={self.username!r})"

    async def __aenter__(self) -> CertsrvClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.logged_in = False

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Every connection's CA certificate is checked before a request goes out on it (_check_peer).
            connector = tls.PeerCheckingConnector(self._check_peer, ssl=self._ssl, keepalive_timeout=60,
                                                  ttl_dns_cache=300, limit=self.max_connections)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False,  # no proxy or CA-bundle override from the env
                headers={"User-Agent": self.user_agent, "Accept": "*/*"},
                cookie_jar=aiohttp.CookieJar(unsafe=True),  # ASP session cookies from IP-address hosts too
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout))
        return self._session

    def _check_peer(self, der: bytes, host: str) -> None:
        """Each connection's CA certificate, before any request on it: kept for the channel binding
        of an NTLM or Kerberos token sent on it; refused when self-signed (the original RA refuses
        one even in its trust store) or when it is not the CA configured ([ra] pins)."""
        self.server_cert_der = der
        _refuse_self_signed(der, host)
        why = tls.pin_mismatch(der, expected_name=self.expected_name, fingerprint=self.fingerprint,
                               require_server_auth=self.require_server_auth)
        if why is not None:
            raise CATLSError(f"the CA at {self.host}:{self.port} is not the one configured: {why}",
                             code="CA_TLS_PIN", curl_code=60, curl_message=f"SSL certificate problem: {why}")

    # -- transport ---------------------------------------------------------------------------

    async def _request(self, method: str, url: str, phase: Phase, *, data: Mapping[str, str] | None = None,
                       allow_redirects: bool = False) -> p.Reply:
        """One authenticated request; every failure as a CertsrvFailure."""
        if self.auth not in ("ntlm", "kerberos"):
            # A kept-alive connection the CA closed just as we reused it: aiohttp asks a GET again
            # on a new one, never a POST (it could file the request twice).
            headers = {"Authorization": self._authorization} if self._authorization else {}
            return await self._exchange(method, url, phase, data=data, headers=headers,
                                        allow_redirects=allow_redirects)
        async with self._ntlm_lock:
            reply = await self._exchange(method, url, phase, data=data, allow_redirects=allow_redirects)
            if reply.status == 401 and p.offers(reply.www_authenticate, self._scheme):
                # A new connection (the last one closed): authenticate it, then ask again once.
                await self._ntlm_handshake(phase)
                reply = await self._exchange(method, url, phase, data=data, allow_redirects=allow_redirects)
            return reply

    @property
    def _scheme(self) -> str:
        return "Negotiate" if self.auth == "kerberos" else "NTLM"

    async def _ntlm_handshake(self, phase: Phase) -> None:
        """NTLM's negotiate and authenticate legs (or Kerberos in Negotiate, one leg) on the one
        pooled connection, each token bound to the CA's TLS certificate (EPA)."""
        import spnego
        import spnego.exceptions
        from spnego.channel_bindings import GssChannelBindings

        url = p.login_url(self.base)
        scheme = self._scheme

        def bindings() -> GssChannelBindings | None:
            if not (self.channel_binding and self.server_cert_der is not None):
                return None
            return GssChannelBindings(application_data=p.tls_server_end_point(self.server_cert_der))

        def ntlm_context() -> spnego.ContextProxy:
            return spnego.client(self.username, self._ntlm_password, hostname=self.host, service="HTTP",
                                 protocol="ntlm", channel_bindings=bindings())

        try:
            if self.auth == "kerberos":
                if self.channel_binding and self.server_cert_der is None:
                    # Kerberos binds its one token: learn this connection's certificate first, by
                    # the unauthenticated ask every client gets a 401 for.
                    await self._exchange("GET", url, phase)
                ctx = spnego.client(self.username or None, self._ntlm_password or None,
                                    hostname=self.service_host or self.host, service="HTTP", protocol="kerberos",
                                    channel_bindings=bindings())
            else:
                # NTLM binds only its last message: the certificate is known once the negotiate leg
                # went out on the connection (the negotiate message is the same either way).
                ctx = ntlm_context()
            negotiate = ctx.step()
        except Exception as exc:  # no ticket: the KDC refused the password, or cannot be reached
            why = exc.message if isinstance(exc, spnego.exceptions.SpnegoError) else str(exc)
            raise CAAuthError(f"{scheme} authentication to the CA failed before any request: {why[:300]}",
                              curl_message="The requested URL returned error: 401") from None
        try:
            reply = await self._exchange("GET", url, phase,
                                         headers={"Authorization": p.ntlm_header(negotiate or b"", scheme)})
            if 200 <= reply.status < 300:
                return  # one leg was enough (Kerberos), or the connection was authenticated already
            challenge = p.ntlm_challenge(reply.www_authenticate, scheme) if reply.status == 401 else None
            if challenge is None:
                if reply.status == 401:
                    raise CAAuthError(f"the CA did not accept the {scheme} token (is {scheme} enabled on /certsrv, "
                                      "and Extended Protection satisfied?)",
                                      curl_message="The requested URL returned error: 401")
                raise p.http_status_error(reply.status, url)
            if self.auth == "ntlm" and self.channel_binding:
                bound = ntlm_context()
                if bound.step() == negotiate:  # the MIC covers the negotiate message: same bytes
                    ctx = bound
            authenticate = ctx.step(challenge)
        except CertsrvFailure:
            raise
        except Exception as exc:
            why = exc.message if isinstance(exc, spnego.exceptions.SpnegoError) else f"bad {scheme} challenge ({exc})"
            raise CAAuthError(f"{scheme} authentication to the CA failed: {why}",
                                curl_message="The requested URL returned error: 401") from None
        if not authenticate:
            raise CAAuthError(f"the CA did not accept the {scheme} token",
                              curl_message="The requested URL returned error: 401")
        reply = await self._exchange("GET", url, phase, headers={"Authorization": p.ntlm_header(authenticate, scheme)})
        if not 200 <= reply.status < 300:
            raise p.http_status_error(reply.status, url)

    async def _exchange(self, method: str, url: str, phase: Phase, *, data: Mapping[str, str] | None = None,
                        headers: Mapping[str, str] | None = None, allow_redirects: bool = False) -> p.Reply:
        """One HTTP exchange, read whole within the phase's timeout; every failure as a CertsrvFailure."""
        session = self._open()
        headers = dict(headers or {})
        if (request_id := current_request_id()) is not None:  # diag branch: the EST request this one serves
            headers[REQUEST_ID_HEADER] = request_id
        if method == "POST":
            headers["Referer"] = p.page_url(self.base, "certrqxt.asp")
        timeout = self.timeouts[phase]
        received = 0
        started = time.monotonic()
        self.last_url = url
        try:
            async with asyncio.timeout(timeout):
                self.requests_sent += 1
                async with session.request(method, url, data=data, headers=headers,
                                           allow_redirects=allow_redirects) as resp:
                    chunks = []
                    async for chunk in resp.content.iter_chunked(65536):
                        received += len(chunk)
                        if received > p.MAX_PAGE_BYTES:
                            raise CAPageError(f"the answer to {urlsplit(url).path} exceeds "
                                                f"{p.MAX_PAGE_BYTES} bytes")
                        chunks.append(chunk)
                    self.last_latency = time.monotonic() - started
                    return p.Reply(resp.status, resp.headers.get("Content-Type", ""),
                                   resp.headers.getall("WWW-Authenticate", []), b"".join(chunks))
        except CertsrvFailure:
            raise
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            elapsed = int((time.monotonic() - started) * 1000)
            raise await self._transport_failure(transport.classify(exc), url, phase, elapsed, received) from None

    async def _transport_failure(self, f: transport.TransportFailure, url: str, phase: Phase, elapsed: int,
                                 received: int) -> CertsrvFailure:
        """A network failure worded as curl words it (return code and message)."""
        if f.kind == "tls_verify":
            return p.tls_error(self.host, f.verify_code, f.verify_message, await self._peer_certificate())
        if f.kind == "dns":
            return p.dns_error(self.host)
        if f.kind == "tls_handshake":
            return p.tls_handshake_error(self.host, f.reason)
        if f.kind in ("refused", "connect"):
            return p.connect_error(self.host, self.port, elapsed, f.reason)
        if f.kind == "connect_timeout":
            return p.timeout_error("connect", url, self.connect_timeout, elapsed, 0)
        if f.kind == "timeout":  # the phase's own deadline (asyncio.timeout) or a socket read timeout
            return p.timeout_error(phase, url, self.timeouts[phase], elapsed, received)
        if f.kind == "closed":
            return CAConnectError(f"the CA closed the connection without answering {urlsplit(url).path}",
                                  curl_code=52, curl_message="Empty reply from server")
        return CAConnectError(f"receiving {urlsplit(url).path} from the CA failed: {f.reason}", curl_code=56,
                              curl_message=f"Failure when receiving data from the peer ({f.reason})")

    async def _peer_certificate(self) -> p.PeerCertificate | None:
        """The CA's web certificate read without verification, to name what it holds (diagnosis only:
        no request is sent on this connection)."""
        ctx = tls.unverified_client_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _reader, writer = await asyncio.open_connection(self.host, self.port, ssl=ctx,
                                                                server_hostname=self.host)
            try:
                der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    async with asyncio.timeout(self.connect_timeout):
                        await writer.wait_closed()
            return p.PeerCertificate.from_der(der) if der else None
        except (OSError, TimeoutError, ssl.SSLError, ParseError, AttributeError):
            return None

    async def _get_ok(self, url: str, phase: Phase = "enroll", **kw: object) -> tuple[str, bytes]:
        reply = await self._request("GET", url, phase, **kw)  # type: ignore[arg-type]
        if not 200 <= reply.status < 300:
            raise p.http_status_error(reply.status, url, offered=reply.www_authenticate, auth=self.auth)
        return reply.content_type, reply.body

    async def _post_ok(self, url: str, form: Mapping[str, str]) -> str:
        reply = await self._request("POST", url, "enroll", data=form)
        if not 200 <= reply.status < 300:
            raise p.http_status_error(reply.status, url, offered=reply.www_authenticate, auth=self.auth)
        return p.decode_page(reply.body)

    # -- the pages ---------------------------------------------------------------------------

    async def login(self) -> None:
        """Authenticate on /certsrv/ (CA_AUTH on 401) within the login timeout."""
        if self.auth in ("ntlm", "kerberos"):
            async with self._ntlm_lock:
                await self._ntlm_handshake("login")
        else:
            await self._get_ok(p.login_url(self.base), "login", allow_redirects=True)
        self.logged_in = True

    async def templates(self) -> list[p.Template]:
        """The certificate templates certrqxt.asp offers to this user."""
        _ctype, body = await self._get_ok(p.page_url(self.base, "certrqxt.asp"))
        return p.parse_templates(p.decode_page(body))

    async def check_template(self, template: str) -> list[p.Template]:
        """The offered templates; CA_TEMPLATE (with the nearest offered name) when ``template`` is not one."""
        offered = await self.templates()
        err = p.template_error(template, offered)
        if err is not None:
            raise err
        return offered

    async def submit(self, csr: bytes | str | x509.CertificateSigningRequest, template: str,
                     attributes: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> p.Disposition:
        """POST a new request on certfnsh.asp: IssuedPage, Pending or Denied (one request)."""
        if isinstance(csr, x509.CertificateSigningRequest):
            csr = pki.csr_pem(csr)
        try:
            form = p.newreq_form(csr, template, attributes)
        except (ValueError, UnicodeDecodeError) as exc:
            # A template or attribute with a line break, or a CSR that is not PEM text: never sent.
            raise CATemplateError(f"cannot build the certfnsh.asp request: {exc}") from None
        return p.parse_certfnsh(await self._post_ok(p.page_url(self.base, "certfnsh.asp"), form))

    async def enroll(self, csr: bytes | str | x509.CertificateSigningRequest, template: str,
                     attributes: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> EnrollResult:
        """Submit and, when issued, fetch: Issued, Pending or Denied, in at most two requests.

        The issued certificate must hold the CSR's public key: a certificate for another request
        (a wrong ReqID on the page) is a CA_PROTOCOL failure, never handed on.
        """
        result = await self.submit(csr, template, attributes)
        if not isinstance(result, p.IssuedPage):
            return result
        issued = await self.fetch(result.req_id)
        if isinstance(issued, Issued) and not _holds_key_of(issued.certificate, csr):
            raise CAPageError(f"the CA's certificate for request {issued.req_id} does not hold the "
                                "public key of the CSR submitted", details={"req_id": issued.req_id})
        return issued

    async def fetch(self, req_id: int, enc: str = "bin") -> EnrollResult:
        """certnew.cer?ReqID=N: Issued (the DER as downloaded, parsed once), or Pending ("Taken
        Under Submission") or Denied."""
        url = p.certnew_cer_url(self.base, req_id, enc)
        ctype, body = await self._get_ok(url)
        return p.parse_certnew_cer(ctype, body, req_id)

    async def check_pending(self, req_id: int) -> EnrollResult:
        """Ask about a pending request (certfnsh.asp Mode=chkpnd), fetching it once issued."""
        page = await self._post_ok(p.page_url(self.base, "certfnsh.asp"), p.chkpnd_form(req_id))
        result = p.parse_certfnsh(page)
        if isinstance(result, p.IssuedPage):
            return await self.fetch(result.req_id)
        return result

    async def pending_requests(self) -> list[int]:
        """The request IDs certckpn.asp lists as pending for this client."""
        _ctype, body = await self._get_ok(p.page_url(self.base, "certckpn.asp"))
        return p.parse_certckpn(p.decode_page(body))

    async def renewal_count(self) -> int:
        """How many times the CA certificate was renewed (certcarc.asp's nRenewals)."""
        _ctype, body = await self._get_ok(p.page_url(self.base, "certcarc.asp"))
        return p.parse_certcarc(p.decode_page(body))

    async def ca_certificate(self, renewal: int | None = None, enc: str = "bin") -> x509.Certificate:
        """The CA certificate (certnew.cer?ReqID=CACert), of the newest renewal by default."""
        if renewal is None:
            renewal = await self.renewal_count()
        url = p.certnew_cer_url(self.base, "CACert", enc, renewal)
        ctype, body = await self._get_chain_page(url)
        got = p.parse_certnew_cer(ctype, body)
        if not isinstance(got, Issued):
            raise CAChainError(f"cannot retrieve the CA certificate: {got.message}")
        return got.certificate

    async def ca_chain(self, renewal: int | None = 0, enc: str = "bin") -> list[x509.Certificate]:
        """The CA chain from certnew.p7b?ReqID=CACert&Renewal=N, ordered CA certificate first
        (``renewal=None`` asks certcarc.asp for the newest renewal first)."""
        if renewal is None:
            renewal = await self.renewal_count()
        ctype, body = await self._get_chain_page(p.certnew_p7b_url(self.base, renewal, enc))
        return p.parse_certnew_p7b(ctype, body)

    async def _get_chain_page(self, url: str) -> tuple[str, bytes]:
        reply = await self._request("GET", url, "enroll")
        status, ctype, body = reply.status, reply.content_type, reply.body
        if status in (401, 403):
            raise p.http_status_error(status, url, offered=reply.www_authenticate, auth=self.auth)
        if not 200 <= status < 300:
            err = p.http_status_error(status, url)
            raise CAChainError(f"cannot retrieve the CA chain: {err.message}", curl_code=err.curl_code,
                                 curl_message=err.curl_message, details=err.details)
        return ctype, body


def _refuse_self_signed(der: bytes, host: str) -> None:
    if _self_signed(bytes(der)):
        peer = p.PeerCertificate.from_der(der)
        raise p.tls_error(host, p.X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, "self-signed certificate", peer)


@functools.lru_cache(maxsize=64)
def _self_signed(der: bytes) -> bool:
    """Asked on every request of a kept-alive connection about the same certificate: kept."""
    return p.PeerCertificate.from_der(der).self_signed


def _holds_key_of(cert: x509.Certificate, csr: bytes | str | x509.CertificateSigningRequest) -> bool:
    if not isinstance(csr, x509.CertificateSigningRequest):
        try:
            csr = pki.parse_csr(csr, verify=False)
        except ParseError:
            return True  # the CA accepted what we cannot read: nothing to compare against
    return pki.same_public_key(cert.public_key(), csr.public_key())
