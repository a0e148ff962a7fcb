"""The EST server (RFC 7030) as an aiohttp application: thin glue between HTTP/TLS and a backend.

``make_est_app`` serves ``/.well-known/est/[<label>/]{cacerts,simpleenroll,simplereenroll,
csrattrs,serverkeygen}``; messages are parsed and built by ``proto.est``, the CSR's signature is
checked here (once: nobody after the server checks it again), and a ``CABackend`` decides or asks
the CA; a request the CA holds pending is asked about again when its CSR comes back
(``PendingRequests``).  Authentication follows RFC 7030 3.2.3: a TLS client certificate
validated against the client trust store (at the handshake, ``CERT_OPTIONAL``), else HTTP Basic
checked in constant time; ``simplereenroll`` also follows 4.2.2.  Hostile input gets a 4xx with a
plain reason, never a traceback; passwords and keys are never logged.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from cryptography import x509

from onlineca import pki
from onlineca.errors import ConfigError, ESTCodedError, ParseError
from onlineca.est.backend import CABackend, PendingRequests, PendingStore, ask
from onlineca.infra import tls
from onlineca.infra.serving import ConnectionLimits, RunningServer, start_https
from onlineca.infra.users import UsersFile, basic_credentials
from onlineca.logs.access import format_line as format_access_line
from onlineca.pki import vouch
from onlineca.proto import est as m
from onlineca.proto.request_id import REQUEST_ID_HEADER
from onlineca.proto.results import BasicCredentials, Denied, EnrollRequest, Pending

if TYPE_CHECKING:
    from onlineca.config import ESTConfig

log = logging.getLogger("onlineca.est")
access_log = logging.getLogger("onlineca.est.access")

EST_SETTINGS = web.AppKey("est_settings", object)
# The handler (its ``backend`` and settings ``s`` may be swapped by a reload).
EST_HANDLER = web.AppKey("est_handler", object)
# The user name the access log shows (as NGINX's $remote_user: the name sent, even if refused).
EST_USER = web.RequestKey("est_user", str)

PasswordCheck = Callable[[str, str], Awaitable[bool]]
# The address of the client whose password is being checked (a password check may throttle by it).
CLIENT_ADDRESS: contextvars.ContextVar[str] = contextvars.ContextVar("est_client_address", default="")

# The keys serverkeygen makes (the CSR's key type and size say which).
SERVERKEYGEN_KEYS = frozenset({("rsa", 2048), ("rsa", 3072), ("rsa", 4096), ("ec", 256), ("ec", 384), ("ec", 521)})

# id-kp-cmcRA (RFC 6402): "this certificate is a registration authority's"; CAPF's holds it.
ID_KP_CMC_RA = "1.3.6.1.5.5.7.3.28"

# Status codes for the parse errors clients can cause.
_PARSE_STATUS = {"EST_ERR_BAD_CONTENT_TYPE": 415, "EST_ERR_HTTP_NOT_FOUND": 404,
                 "EST_ERR_HTTP_INVALID_PATH_SEGMENT": 404, "EST_ERR_AUTH_FAIL_TLSUID": 401,
                 "EST_ERR_BUF_EXCEEDS_MAX_LEN": 413}


# --------------------------------------------------------------------------- settings, TLS

@dataclass
class ESTServerSettings:
    """How the EST server behaves (the ``[est]`` config section maps onto this)."""

    serverkeygen: bool = True
    pop_tls_unique: bool = False
    max_body_bytes: int = 65536
    request_timeout: float = 30.0
    # Seconds to read a request body (a client that sends it slower gets 408).
    body_timeout: float = 30.0
    # Retry-After sent with 503 when the backend does not answer within request_timeout.
    retry_after: int = 60
    # Retry-After sent with 202 when the backend's Pending names none.
    pending_retry_after: int = 60
    # CA labels served besides the unlabeled path; "*" accepts any label.
    labels: Sequence[str] = ()
    csrattrs_requires_auth: bool = False
    realm: str = "estrealm"
    # HTTP Basic: a users file or any async (user, password) -> bool; None disables Basic.
    password_check: PasswordCheck | None = None
    # RFC 7030 3.3.2 / 4.2.2: a client authenticated by its certificate alone may ask only for its
    # own subject and subjectAltName, unless it is an RA agent: its certificate names one of
    # ``ra_agents`` (subject DNs) or carries the EKU ``ra_agent_eku`` (id-kp-cmcRA by default).
    ra_agents: Sequence[str] = ()
    ra_agent_eku: str = ID_KP_CMC_RA
    # capf10 branch: vouched requests (pki.vouch) come only from RA agents (``ra_agents`` /
    # ``ra_agent_eku``); ``vouch_agents``, if any, pins which agent certificates
    # ("sha256:<hex>" fingerprints) besides.
    vouch_agents: Sequence[str] = ()


def settings_from_config(cfg: ESTConfig) -> ESTServerSettings:
    """Server settings from the ``[est]`` configuration section (users file read here)."""
    return ESTServerSettings(
        serverkeygen=cfg.serverkeygen, pop_tls_unique=cfg.pop_tls_unique, max_body_bytes=cfg.max_body_bytes,
        request_timeout=cfg.request_timeout, retry_after=cfg.retry_after, labels=tuple(cfg.labels),
        ra_agents=tuple(cfg.ra_agents), ra_agent_eku=cfg.ra_agent_eku,
        password_check=UsersFile.from_path(cfg.users_file) if cfg.users_file else None)


# --------------------------------------------------------------------------- access log

class ESTAccessLogger(AbstractAccessLogger):
    """NGINX-style access lines, as the RA's log in the source document shows them:
    ``127.0.0.1 - ciscora [05/Mar/2019:12:31:21 +0000] "POST /.well-known/est/simpleenroll HTTP/1.1" 401 0 "-" "ua" 0.004``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_: float) -> None:
        self.logger.info(access_line(request, response.status, response.body_length, time_,
                                     response.headers.get(REQUEST_ID_HEADER)))


def access_line(request: web.BaseRequest, status: int, length: int, elapsed: float,
                request_id: str | None = None) -> str:
    """One NGINX access line (also written by hand for a request the client abandoned: 499); its
    format lives beside its parser, in ``logs.access``, with the request id."""
    return format_access_line(
        client=request.remote or "-", user=request.get(EST_USER) or "-", when=dt.datetime.now(dt.UTC),
        method=request.method, path=request.path, version=f"{request.version.major}.{request.version.minor}",
        status=status, length=length, agent=request.headers.get("User-Agent", "-"), seconds=elapsed,
        request_id=request_id or request.headers.get(REQUEST_ID_HEADER))


# --------------------------------------------------------------------------- the application

@dataclass
class _Identity:
    user: str | None = None
    client_cert: x509.Certificate | None = None
    credentials: BasicCredentials | None = None


def _reply(r: m.Reply) -> web.Response:
    return web.Response(status=r.status, headers=dict(r.headers), body=r.body)


def _error(status: int, message: str, code: str, **headers: str) -> web.Response:
    log.info("%s: %s (%s)", status, message, code, extra={"func": "est_http_error"})
    return _reply(m.error_reply(status, message, tuple(headers.items())))


def _peer_cert(request: web.Request) -> x509.Certificate | None:
    sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    return pki.load_certificate(der) if der else None


def _tls_unique(request: web.Request) -> bytes | None:
    sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
    if sslobj is None or sslobj.version() != "TLSv1.2":
        return None
    binding: bytes | None = sslobj.get_channel_binding("tls-unique")
    return binding


def _same_sans(a: x509.SubjectAlternativeName | None, b: x509.SubjectAlternativeName | None) -> bool:
    return sorted(map(repr, a or [])) == sorted(map(repr, b or []))


class _ESTHandler:
    def __init__(self, backend: CABackend, settings: ESTServerSettings, pending: PendingStore) -> None:
        self.backend = backend
        self.s = settings
        self.pending = pending

    def _label_ok(self, label: str | None) -> bool:
        return label is None or "*" in self.s.labels or label in self.s.labels

    async def _authenticate(self, request: web.Request) -> _Identity | web.Response:
        """RFC 7030 3.2.3: the TLS client certificate first; HTTP Basic when there is none (and,
        if the client sends Basic anyway, it must be right)."""
        ident = _Identity(client_cert=_peer_cert(request))
        try:
            creds = basic_credentials(request.headers.get("Authorization", ""))
        except ParseError as exc:
            return self._challenge(exc.message)
        if creds is not None:
            request[EST_USER] = creds.user[:64]
            CLIENT_ADDRESS.set(request.remote or "")
            if self.s.password_check is None or not await self.s.password_check(creds.user, creds.password):
                log.warning("HTTP authentication failed. Auth type=1 user=%s", creds.user[:64],
                            extra={"func": "est_http_authenticate"})
                return self._challenge("authentication failed")
            ident.user, ident.credentials = creds.user, creds
        if ident.client_cert is None and ident.user is None:
            # The first ask of every libEST client: the HTTP authentication handshake, not a failure.
            log.info("asking the client for HTTP authentication (it sent no credentials yet)",
                     extra={"func": "est_http_authenticate"})
            return _reply(m.error_reply(401, "[Error 401: Unauthorized] authentication required",
                                        (("WWW-Authenticate", f'Basic realm="{self.s.realm}"'),)))
        if ident.user is None and ident.client_cert is not None:
            request[EST_USER] = pki.common_name(ident.client_cert.subject)[:64] or "cert"
        return ident

    def _is_agent(self, cert: x509.Certificate) -> bool:
        """The client is an RA agent (RFC 7030 3.7): named in ``ra_agents`` or holding ``ra_agent_eku``."""
        for name in self.s.ra_agents:
            try:
                if pki.parse_name(name) == cert.subject:
                    return True
            except Exception:
                continue
        if self.s.ra_agent_eku:
            try:
                ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except x509.ExtensionNotFound:
                return False
            return any(oid.dotted_string == self.s.ra_agent_eku for oid in ekus)
        return False

    def _challenge(self, why: str) -> web.Response:
        return _error(401, f"[Error 401: Unauthorized] {why}", "EST_ERR_AUTH_FAIL",
                      **{"WWW-Authenticate": f'Basic realm="{self.s.realm}"'})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            path = m.parse_est_path(request.path)
        except ParseError as exc:
            return _error(404, exc.message, exc.code)
        if not self._label_ok(path.label):
            return _error(404, f"unknown CA label {path.label!r}", "EST_ERR_HTTP_NOT_FOUND")
        get_ops = ("cacerts", "csrattrs")
        want = "GET" if path.operation in get_ops else "POST"
        if request.method != want:
            return _error(405, f"{path.operation} takes {want}", "EST_ERR_WRONG_METHOD", Allow=want)
        if path.operation == "fullcmc" or (path.operation == "serverkeygen" and not self.s.serverkeygen):
            return _error(501, f"{path.operation} is not supported by this server", "EST_ERR_HTTP_UNSUPPORTED")
        try:
            operation: Callable[[web.Request, m.ESTPath], Awaitable[web.StreamResponse]] = getattr(
                self, "op_" + path.operation)
            async with asyncio.timeout(self.s.request_timeout):
                return await operation(request, path)
        except TimeoutError:
            return _error(503, "the CA did not answer in time", "EST_ERR_CA_ENROLL_RETRY",
                          **{"Retry-After": str(self.s.retry_after)})
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body larger than {self.s.max_body_bytes} bytes", "EST_ERR_BAD_CONTENT_LEN")
        except ParseError as exc:
            return _error(_PARSE_STATUS.get(exc.code, 400), exc.message, exc.code)
        except ESTCodedError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
            return _error(exc.http_status or 500, exc.message, exc.code, **headers)
        except Exception:  # a backend bug: log it here, never show a traceback to the client
            log.exception("internal error serving %s", path.operation, extra={"func": "est_http_error"})
            return _error(500, "internal error (see the EST server log)", "EST_ERR_UNKNOWN")

    async def op_cacerts(self, request: web.Request, path: m.ESTPath) -> web.Response:
        # RFC 7030 4.1.1: no client authentication for the CA certificates.
        certs = await self.backend.cacerts(path.label)
        if not certs:
            return _error(500, "no CA certificates configured", "EST_ERR_LOAD_CACERTS")
        return _reply(m.certs_only_reply(certs))

    async def op_csrattrs(self, request: web.Request, path: m.ESTPath) -> web.Response:
        if self.s.csrattrs_requires_auth:
            ident = await self._authenticate(request)
            if isinstance(ident, web.Response):
                return ident
        return _reply(m.csrattrs_reply(await self.backend.csrattrs(path.label)))

    async def _csr(self, request: web.Request,
                   ident: _Identity) -> tuple[x509.CertificateSigningRequest, bytes, x509.Certificate | None]:
        """The CSR, its signature checked (the only check in the process), its DER, and the RA
        agent's certificate when it is a vouched request (signed by that agent, not the key holder)."""
        if request.content_length is not None and request.content_length > self.s.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=self.s.max_body_bytes, actual_size=request.content_length)
        try:
            async with asyncio.timeout(self.s.body_timeout):
                body = await request.read()
        except TimeoutError:
            raise ESTCodedError("EST_ERR_HTTP_BAD_REQ", f"the request body did not arrive within "
                                f"{self.s.body_timeout:g} s", http_status=408) from None
        content_type = request.headers.get("Content-Type")
        try:
            csr, der = m.read_pkcs10(body, content_type)
        except ParseError as exc:
            if exc.code != "EST_ERR_BAD_PKCS10":
                raise
            csr, der = m.read_pkcs10(body, content_type, verify=False)  # a vouched request, or the refusal
            if vouch.vouched_by(csr) is None:
                raise exc from None
            return csr, der, self._voucher(csr, ident)
        if self.s.pop_tls_unique:
            m.check_tls_unique(csr, _tls_unique(request))
        return csr, der, None

    def _voucher(self, csr: x509.CertificateSigningRequest, ident: _Identity) -> x509.Certificate:
        """capf10 branch: the agent of a vouched request, authorised and its signature checked."""
        agent = ident.client_cert
        # The RA-agent role, as for enrolling other identities (a subject pattern such as
        # CN=CAPF-* is a name anyone allowed a template that takes the request's subject can get);
        # vouch_agents only pins which agents besides.
        if agent is None or not self._is_agent(agent) or (self.s.vouch_agents
                                                          and not agent_allowed(agent, self.s.vouch_agents)):
            who = pki.name_to_slash(agent.subject) if agent is not None else "a client without a TLS certificate"
            raise ESTCodedError("EST_ERR_AUTH_FAIL", f"a vouched request from {who[:200]}: only an RA agent (the "
                                f"id-kp-cmcRA EKU or [est] ra_agents{', pinned by [ra] vouch_agents' if self.s.vouch_agents else ''}) "
                                "may vouch for a key", http_status=403)
        try:
            vouch.verify_vouched_request(csr, agent)
        except ParseError as exc:
            raise ParseError(f"bad vouched request: {exc.message}", code="EST_ERR_BAD_PKCS10") from None
        log.info("request for %s vouched for by RA agent %s", pki.name_to_slash(csr.subject)[:200],
                 pki.name_to_slash(agent.subject)[:200], extra={"func": "est_enroll"})
        return agent

    async def _enroll(self, request: web.Request, path: m.ESTPath, *, reenroll: bool,
                      keygen: bool) -> web.Response:
        ident = await self._authenticate(request)
        if isinstance(ident, web.Response):
            return ident
        csr, csr_der, voucher = await self._csr(request, ident)
        if voucher is not None and (reenroll or keygen):
            return _error(400, "a vouched request is an enrollment (simpleenroll), nothing else", "EST_ERR_BAD_PKCS10")
        renewing = None
        if reenroll:
            # RFC 7030 4.2.2: renew the certificate the client authenticated with, same names.
            renewing = ident.client_cert
            if renewing is None:
                return _error(403, "simplereenroll needs the certificate being renewed as TLS client "
                                   "certificate", "EST_ERR_AUTH_FAIL")
            if csr.subject != renewing.subject or not _same_sans(pki.csr_sans(csr), _cert_sans(renewing)):
                return _error(400, "the request's subject or subjectAltName differs from the certificate "
                                   f"being renewed ({pki.name_to_slash(renewing.subject)})", "EST_ERR_X509_CN")
        elif ident.user is None and ident.client_cert is not None and not self._is_agent(ident.client_cert):
            cert = ident.client_cert
            if csr.subject != cert.subject or not _same_sans(pki.csr_sans(csr), _cert_sans(cert)):
                log.warning("client certificate %s may enroll only its own identity; the request names %s",
                            pki.name_to_slash(cert.subject)[:200], pki.name_to_slash(csr.subject)[:200],
                            extra={"func": "est_enroll",
                                   "fix": "Give the client its own name in the request, or make it an RA agent "
                                          "([est] ra_agents, or the id-kp-cmcRA EKU in its certificate)."})
                return _error(403, "a client authenticated by its certificate may ask only for its own subject and "
                                   f"subjectAltName ({pki.name_to_slash(cert.subject)})", "EST_ERR_AUTH_FAIL")
        key = None
        if keygen:
            try:
                kind, size = pki.key_spec(csr.public_key())
            except Exception:
                kind, size = "", 0
            if (kind, size) not in SERVERKEYGEN_KEYS:
                # The server makes the key like the CSR's: only sizes it can make safely and quickly
                # (16384-bit RSA takes minutes; 512 and 1536 are not allowed).
                return _error(400, f"serverkeygen makes RSA 2048/3072/4096 or EC P-256/P-384/P-521 keys, not "
                                   f"{kind.upper() or 'this'} {size or ''}".rstrip(), "EST_ERR_BAD_KEY")
            key = await asyncio.to_thread(pki.generate_key, kind, size)
            sans = pki.csr_sans(csr)
            csr = pki.build_csr(key, csr.subject, list(sans) if sans else ())
            csr_der = pki.csr_der(csr)
        req = EnrollRequest(csr=csr, label=path.label, user=ident.user, client_cert=ident.client_cert,
                            reenroll=reenroll, renewing=renewing, credentials=ident.credentials,
                            serverkeygen=keygen, peer=request.remote or "", csr_der=csr_der, voucher=voucher)
        result = await ask(self.pending, self.backend, req)
        if isinstance(result, Pending):
            retry_after = result.retry_after or self.s.pending_retry_after
            log.info("enrollment pending for %s, Retry-After %s", pki.name_to_slash(csr.subject)[:200],
                     retry_after, extra={"func": "est_enroll"})
            return _reply(m.retry_reply(retry_after, 202))
        if isinstance(result, Denied):
            if result.http_status == 401:  # e.g. passthrough credentials the CA refused
                return self._challenge(result.message)
            return _error(result.http_status, result.message, "EST_ERR_CA_ENROLL_FAIL")
        log.info("certificate issued for %s serial %x", pki.name_to_slash(result.certificate.subject)[:200],
                 result.certificate.serial_number, extra={"func": "est_enroll"})
        # The CA's DER goes out as it came: no re-encoding between the CA and the client.
        if key is not None:
            return _reply(m.serverkeygen_reply(pki.private_key_der(key), [result.cert_der]))
        return _reply(m.certs_only_reply([result.cert_der]))

    async def op_simpleenroll(self, request: web.Request, path: m.ESTPath) -> web.Response:
        return await self._enroll(request, path, reenroll=False, keygen=False)

    async def op_simplereenroll(self, request: web.Request, path: m.ESTPath) -> web.Response:
        return await self._enroll(request, path, reenroll=True, keygen=False)

    async def op_serverkeygen(self, request: web.Request, path: m.ESTPath) -> web.Response:
        return await self._enroll(request, path, reenroll=False, keygen=True)


def agent_allowed(cert: x509.Certificate, pins: Sequence[str]) -> bool:
    """capf10 branch: whether ``cert`` is one of the agent certificates ``pins`` names
    (``sha256:<hex>`` fingerprints; subject patterns are refused by the
    configuration, since a subject is no proof of the agent role)."""
    fingerprint = pki.fingerprint(cert).replace(":", "").lower()
    return any(pin.lower().startswith("sha256:") and pin[7:].replace(":", "").lower() == fingerprint
               for pin in pins)


def _cert_sans(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def make_est_app(backend: CABackend, settings: ESTServerSettings | None = None, *,
                 pending: PendingStore | None = None) -> web.Application:
    """The aiohttp application serving EST under ``/.well-known/est/``; ``pending`` remembers the
    requests the CA holds pending (the RA keeps it in its state)."""
    settings = settings or ESTServerSettings()
    for label in settings.labels:
        if label != "*":
            try:
                m.parse_est_path(f"{m.WELL_KNOWN}/{label}/cacerts")
            except ParseError:
                raise ConfigError(f"EST CA label {label!r} is not allowed",
                                  hint="Use letters, digits, '.', '_', '~' or '-', and not an operation name.") from None
    handler = _ESTHandler(backend, settings, PendingRequests() if pending is None else pending)
    app = web.Application(client_max_size=settings.max_body_bytes)
    app.router.add_route("*", m.WELL_KNOWN + "/{tail:.*}", handler.handle)
    app[EST_SETTINGS] = settings
    app[EST_HANDLER] = handler
    return app


@dataclass
class RunningESTServer(RunningServer):
    """A started EST server: ``url`` is the ``https://host:port/.well-known/est`` base."""

    url_path: ClassVar[str] = m.WELL_KNOWN


async def start_est_server(backend: CABackend, *, cert_file: str | os.PathLike[str],
                           key_file: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0,
                           settings: ESTServerSettings | None = None,
                           client_trust: pki.TrustStore | None = None,
                           url_host: str | None = None,
                           limits: ConnectionLimits | None = None) -> RunningESTServer:
    """Start an EST server (port 0: any free port) and return once it accepts connections (a port
    that cannot be had raises ``ConfigError``)."""
    settings = settings or ESTServerSettings()
    ctx = tls.server_context(cert_file, key_file, client_trust=client_trust.certs if client_trust else (),
                             tls12_only=settings.pop_tls_unique)
    app = make_est_app(backend, settings)
    runner, bound = await start_https(app, host, port, ctx, limits=limits, logger=log,
                                      tls_hint="The client's certificate must chain to the server's client trust "
                                               "store (--client-ca).",
                                      access_log_class=ESTAccessLogger, access_log=access_log)
    log.info("EST server listening on %s:%s (serverkeygen %s, PoP %s)", host, bound,
             "on" if settings.serverkeygen else "off", "on" if settings.pop_tls_unique else "off",
             extra={"func": "est_server_start"})
    return RunningESTServer(url_host or host, bound, runner, app, ctx)


__all__ = [
    "CLIENT_ADDRESS",
    "EST_HANDLER",
    "EST_USER",
    "ESTAccessLogger",
    "ESTServerSettings",
    "RunningESTServer",
    "access_line",
    "make_est_app",
    "settings_from_config",
    "start_est_server",
]
