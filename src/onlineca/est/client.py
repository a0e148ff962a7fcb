"""An async EST (RFC 7030) client for any EST server: every operation, both auth methods, retries.

Thin aiohttp glue around ``est.messages``: it builds the TLS context (explicit trust anchors, or a
bootstrap that fetches ``cacerts`` unverified and trusts them only after a human confirmed the
fingerprint), sends the request, honours ``Retry-After`` (202, 503) with bounded retries, and
turns every failure into an ``ESTCodedError`` carrying the libEST name and number, so a caller
can log ``Enrollment rv = 35 (EST_ERR_SSL_READ) with pkcs7 length = 0`` as CAPF does.  It never
disables certificate checks except in the explicit bootstrap step, and never logs a password.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import aiohttp.abc
import aiohttp.payload
from cryptography import x509

from onlineca import __version__, pki
from onlineca.errors import ESTCodedError, ParseError, fix_for
from onlineca.infra import files, tls, transport
from onlineca.proto import est as m

log = logging.getLogger("onlineca.est.client")

# X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_EMAIL_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH_CODES = {62, 63, 64}

_STATUS_CODES = {400: "EST_ERR_HTTP_BAD_REQ", 401: "EST_ERR_AUTH_FAIL", 403: "EST_ERR_AUTH_FAIL",
                 404: "EST_ERR_HTTP_NOT_FOUND", 405: "EST_ERR_WRONG_METHOD", 413: "EST_ERR_BAD_CONTENT_LEN",
                 415: "EST_ERR_BAD_CONTENT_TYPE", 423: "EST_ERR_HTTP_LOCKED", 501: "EST_ERR_HTTP_UNSUPPORTED",
                 500: "EST_ERR_CA_ENROLL_FAIL", 502: "EST_ERR_CA_ENROLL_FAIL", 503: "EST_ERR_CA_ENROLL_FAIL"}


@dataclass(frozen=True)
class EnrollResponse:
    """An issued certificate, the other certificates of the reply, and the raw base64 PKCS#7."""

    certificate: x509.Certificate
    certificates: list[x509.Certificate]
    pkcs7: bytes

    @property
    def pkcs7_length(self) -> int:
        return len(self.pkcs7)


def client_ssl_context(*, cafile: str | os.PathLike[str] | None = None,
                       trust_certs: Sequence[x509.Certificate] = (),
                       cert_file: str | os.PathLike[str] | None = None,
                       key_file: str | os.PathLike[str] | None = None,
                       insecure: bool = False) -> ssl.SSLContext:
    """TLS 1.2+ client context trusting exactly the given anchors (never the system store, so an
    EST client trusts only the CA it was configured for).  An issuing CA alone may be an anchor."""
    if insecure:
        ctx = tls.unverified_client_context()
    else:
        anchors = list(trust_certs) + (files.load_cert_file(cafile) if cafile else [])
        if not anchors:
            raise ESTCodedError("EST_ERR_LOAD_TRUST_CERTS", "no trust anchors for the EST server",
                                hint="Give the server's CA with --cafile, or use --insecure-bootstrap.")
        ctx = tls.client_context(anchors)
    if cert_file:
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ESTCodedError("EST_ERR_CLIENT_INVALID_KEY", f"cannot load the client certificate/key: {exc}",
                                hint="Give a PEM certificate and its matching unencrypted private key.") from None
    return ctx


_POP_SLACK = 16


class _LateBody(aiohttp.payload.Payload):
    """A request body made when it is written (on the open connection), with a size declared
    before: aiohttp sends ``Content-Length: size``, and the bytes made are padded with line
    breaks up to it."""

    def __init__(self, size: int, build: Callable[[], bytes], content_type: str) -> None:
        super().__init__(b"", content_type=content_type)
        self._size = size
        self._declared = size
        self._build = build

    def _bytes(self) -> bytes:
        data: bytes = self._build()
        if len(data) > self._declared:  # pragma: no cover - the slack covers any signature length
            raise ESTCodedError("EST_ERR_UNKNOWN", "the request body outgrew its Content-Length")
        return data + b"\n" * (self._declared - len(data))

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        await writer.write(self._bytes())

    async def write_with_length(self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None) -> None:
        await writer.write(self._bytes())

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return ""


class _PinningConnector(aiohttp.TCPConnector):
    """Checks the server's identity beyond the trust store on each connection it hands out
    (``tls.pin_mismatch``: serverAuth, an expected name, a fingerprint), and remembers the
    transport, so that a request body built after the handshake can read that connection's
    tls-unique (RFC 7030 3.5; PoP uses one connection per request, so "the last one" is the
    request's own)."""

    last_transport: asyncio.Transport | None = None

    def __init__(self, pin: dict[str, object] | None = None, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.pin = pin

    async def connect(self, req, traces, timeout):  # type: ignore[no-untyped-def]
        conn = await super().connect(req, traces, timeout)
        self.last_transport = conn.transport
        if self.pin is not None and conn.transport is not None:
            sslobj = conn.transport.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
            why = tls.pin_mismatch(der, **self.pin) if der else None  # type: ignore[arg-type]
            if why is not None:
                conn.close()
                raise ESTCodedError("EST_ERR_CACERT_VERIFICATION", f"{req.url.origin()}: the EST server is not the one "
                                    f"configured: {why}",
                                    hint="Check the server's certificate against the expected name and fingerprint "
                                         "(ra_expected_name / ra_fingerprint); it must carry serverAuth.")
        return conn


_ChannelBindingConnector = _PinningConnector


def map_transport_error(exc: BaseException, url: str) -> ESTCodedError:
    """A connection-level failure as the libEST code a CAPF operator knows."""
    f = transport.classify(exc)
    if f.kind == "tls_verify":
        if f.verify_code in _NAME_MISMATCH_CODES:
            return ESTCodedError("EST_ERR_FQDN_MISMATCH", f"{url}: {f.verify_message}")
        return ESTCodedError("EST_ERR_CACERT_VERIFICATION", f"{url}: server certificate not trusted: {f.verify_message}")
    if f.kind == "tls_handshake":
        return ESTCodedError("EST_ERR_SSL_CONNECT", f"{url}: TLS handshake failed: {f.detail}")
    if f.kind == "dns":
        return ESTCodedError("EST_ERR_IP_GETADDR", f"{url}: cannot resolve the host name: {f.detail}")
    if f.kind in ("refused", "connect"):
        return ESTCodedError("EST_ERR_IP_CONNECT", f"{url}: cannot connect: {f.detail}")
    if f.kind in ("timeout", "connect_timeout"):
        return ESTCodedError("EST_ERR_SSL_READ", f"{url}: no answer within the timeout")
    if f.kind in ("closed", "truncated"):
        return ESTCodedError("EST_ERR_SSL_READ", f"{url}: the server closed the connection without an answer")
    if f.kind == "reset":
        return ESTCodedError("EST_ERR_SSL_READ", f"{url}: connection reset by the server")
    if f.kind == "io":
        return ESTCodedError("EST_ERR_SSL_READ", f"{url}: {f.detail}")
    return ESTCodedError("EST_ERR_UNKNOWN", f"{url}: {type(exc).__name__}: {exc}")


def _status_error(status: int, body: bytes, url: str, retry_after: int | None = None) -> ESTCodedError:
    code = _STATUS_CODES.get(status, "EST_ERR_UNKNOWN")
    text = m.error_text(body)
    return ESTCodedError(code, f"{url}: HTTP {status}" + (f": {text}" if text else ""), http_status=status,
                         retry_after=retry_after)


def _pick_issued(certs: list[x509.Certificate], csr: x509.CertificateSigningRequest | None) -> x509.Certificate:
    if csr is not None:
        for c in certs:
            if pki.same_public_key(c.public_key(), csr.public_key()):
                return c
    return pki.order_chain(certs)[0]


class ESTClient:
    """``async with ESTClient(url, cafile=..., user=..., password=...) as est: await est.cacerts()``.

    ``url`` is the server (``https://host:port``) or its EST base (``.../.well-known/est``);
    ``label`` selects a CA label.  ``timeout`` bounds each request, ``connect_timeout`` the TCP/TLS
    set-up.  A 202 or 503 with Retry-After is retried at most ``max_retries`` times after the
    server's delay; a delay above ``max_retry_wait`` seconds ends in EST_ERR_CA_ENROLL_RETRY with
    ``retry_after`` set, for the caller to schedule (a retry is never sent sooner than asked).  ``keepalive=False`` opens a new TLS
    connection per request.
    """

    def __init__(self, url: str, *, label: str | None = None,
                 cafile: str | os.PathLike[str] | None = None, trust_certs: Sequence[x509.Certificate] = (),
                 user: str | None = None, password: str | None = None,
                 cert_file: str | os.PathLike[str] | None = None, key_file: str | os.PathLike[str] | None = None,
                 timeout: float = 30.0, connect_timeout: float = 10.0, max_retries: int = 3,
                 max_retry_wait: float = 300.0, keepalive: bool = True, insecure: bool = False,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 on_retry: Callable[[str], object] | None = None, connect_retries: int = 0,
                 connect_retry_wait: float = 1.0,
                 expected_name: str = "", fingerprint: str = "", require_server_auth: bool = True) -> None:
        base = url.rstrip("/")
        if not base.endswith(m.WELL_KNOWN):
            base += m.WELL_KNOWN
        self.base = base
        self.label = label
        self._tls = dict(cafile=cafile, trust_certs=list(trust_certs), cert_file=cert_file,
                         key_file=key_file, insecure=insecure)
        self._auth_header = {"Authorization": "Basic " + base64.b64encode(
            f"{user}:{password or ''}".encode()).decode()} if user is not None else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.keepalive = keepalive
        self._sleep = sleep
        # Each retry wait is said as it starts ("... retrying in 30 s (1/3)"): logged, and given
        # to ``on_retry`` (the command line prints it).
        self.on_retry = on_retry
        # Connection refused: at once when no retries are asked for (the default), else retried
        # ``connect_retries`` times (1 s, 2 s, ...): the server may be restarting.
        self.connect_retries = connect_retries
        self.connect_retry_wait = connect_retry_wait
        # The server's identity beyond the trust anchors (never checked on an insecure bootstrap).
        self._pin: dict[str, object] | None = None if insecure else dict(
            expected_name=expected_name, fingerprint=fingerprint, require_server_auth=require_server_auth)
        self._session: aiohttp.ClientSession | None = None

    def _announce(self, line: str) -> None:
        log.info("%s", line, extra={"func": "est_client_retry"})
        if self.on_retry is not None:
            self.on_retry(line)

    async def __aenter__(self) -> ESTClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            ctx = client_ssl_context(**self._tls)  # type: ignore[arg-type]
            connector = _PinningConnector(self._pin, ssl=ctx, force_close=not self.keepalive, limit=100)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout,
                headers={"User-Agent": f"onlineca-est/{__version__}"})
        return self._session

    def url_for(self, operation: str) -> str:
        return self.base + m.ESTPath(self.label, operation).url_path()[len(m.WELL_KNOWN):]

    async def request(self, operation: str, method: str = "GET",
                      body: bytes | Callable[[], aiohttp.payload.Payload] | None = None,
                      headers: dict[str, str] | None = None,
                      session: aiohttp.ClientSession | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange, retried on 202/503 + Retry-After; (status, headers, body) on 2xx.

        ``body`` may be a factory of a payload, called once per attempt (PoP builds each
        attempt's CSR from that attempt's TLS session); every body goes with a Content-Length."""
        url = self.url_for(operation)
        session = session or self._get_session()
        refused = 0
        attempt = -1
        while attempt < self.max_retries:
            attempt += 1
            data = body() if callable(body) else body
            try:
                async with session.request(method, url, data=data, headers={**self._auth_header, **(headers or {})},
                                           allow_redirects=False) as resp:
                    data = await resp.read()
                    status, rheaders = resp.status, dict(resp.headers.items())
            except aiohttp.ClientResponseError as exc:
                raise _status_error(exc.status, b"", url) from None
            except ESTCodedError:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                cause = exc.__cause__ or exc.__context__
                if isinstance(cause, ESTCodedError):  # raised while streaming the body (PoP)
                    raise cause from None
                err = map_transport_error(exc, url)
                log.info("%s %s failed: %s", method, url, err, extra={"func": "est_client_send_request"})
                # Nothing listens: with no retries asked for, say so at once; with retries, the
                # server may be starting (a restart, a reload): wait and try again, out loud.
                if err.code == "EST_ERR_IP_CONNECT" and refused < self.connect_retries:
                    wait = min(self.connect_retry_wait * 2 ** refused, self.max_retry_wait)
                    refused += 1
                    self._announce(f"{err.message}; retrying in {wait:g} s ({refused}/{self.connect_retries})")
                    await self._sleep(float(wait))
                    attempt -= 1  # a refused connection is not one of the 202/503 retries
                    continue
                raise err from None
            if status in (202, 503) and "Retry-After" in rheaders:
                try:
                    wait = m.parse_retry_after(rheaders["Retry-After"])
                except ParseError as exc:
                    raise ESTCodedError(exc.code, f"{url}: {exc.message}", http_status=status) from None
                # 202: the CA holds the request (a manager may approve it).  503: the server
                # cannot answer now, and says why (the RA is not ready: CA_TLS_UNTRUSTED ...):
                # not the same thing, not the same fix.
                why = m.error_text(data) if status == 503 else ""
                why = why or ("the server is unavailable" if status == 503 else "")
                # RFC 7030 4.2.3: never retry sooner than asked; a longer wait is the caller's.
                if attempt >= self.max_retries or wait > self.max_retry_wait:
                    if status == 503:
                        raise ESTCodedError("EST_ERR_CA_ENROLL_RETRY", f"{url}: {why} (Retry-After {wait} s; "
                                            f"{attempt} retries)", http_status=503, retry_after=wait,
                                            hint=fix_for("RA_NOT_READY") if "not ready" in why else
                                            fix_for("EST_ERR_UNKNOWN"))
                    raise ESTCodedError("EST_ERR_CA_ENROLL_RETRY",
                                        f"{url}: still pending after {self.max_retries} retries "
                                        f"(server asks to retry after {wait} s)", http_status=status,
                                        retry_after=wait)
                what = why if status == 503 else "pending at the CA"
                self._announce(f"{url}: {what}; retrying in {wait} s ({attempt + 1}/{self.max_retries})")
                await self._sleep(float(wait))
                continue
            if status == 202:
                raise ESTCodedError("EST_ERR_CA_ENROLL_RETRY", f"{url}: 202 without Retry-After", http_status=202)
            if not 200 <= status < 300:
                raise _status_error(status, data, url)
            return status, rheaders, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _parse(self, fn: Callable[..., object], url: str, *args: object) -> object:
        try:
            return fn(*args)
        except ParseError as exc:
            code = exc.code if exc.code.startswith("EST_ERR_") else "EST_ERR_BAD_X509"
            raise ESTCodedError(code, f"{url}: {exc.message}") from None

    async def cacerts(self) -> list[x509.Certificate]:
        """The CA certificates, issuing CA first (PKCS#7 is a SET: the wire order means nothing)."""
        _, headers, body = await self.request("cacerts")
        certs = self._parse(m.parse_certs_only, self.url_for("cacerts"), body, headers.get("Content-Type"))
        return pki.order_chain(certs)  # type: ignore[arg-type]

    async def csrattrs(self) -> m.CsrAttrs:
        try:
            status, headers, body = await self.request("csrattrs")
        except ESTCodedError as exc:
            if exc.http_status == 404:  # RFC 7030 4.5.2: 404 (like 204) means "no attributes"
                return m.CsrAttrs()
            raise
        if status == 204 or not body.strip():
            return m.CsrAttrs()
        return self._parse(m.parse_csrattrs, self.url_for("csrattrs"), body,  # type: ignore[return-value]
                           headers.get("Content-Type"))

    async def _enroll(self, operation: str, csr: x509.CertificateSigningRequest,
                      extra_headers: dict[str, str] | None = None) -> EnrollResponse:
        headers, body = m.encode_pkcs10(csr)
        _, rheaders, data = await self.request(operation, "POST", body, {**headers, **(extra_headers or {})})
        certs = self._parse(m.parse_certs_only, self.url_for(operation), data, rheaders.get("Content-Type"))
        return EnrollResponse(_pick_issued(certs, csr), certs, data)  # type: ignore[arg-type]

    async def simpleenroll(self, csr: x509.CertificateSigningRequest,
                           headers: dict[str, str] | None = None) -> EnrollResponse:
        # diag branch: ``headers`` carries CAPF's X-Request-ID (one id per enrollment, see proto.request_id)
        return await self._enroll("simpleenroll", csr, headers)

    async def simplereenroll(self, csr: x509.CertificateSigningRequest) -> EnrollResponse:
        return await self._enroll("simplereenroll", csr)

    async def enroll_with_pop(self, key: pki.PrivateKey, subject: str | x509.Name,
                              sans: Sequence[str | x509.GeneralName] = (), *,
                              reenroll: bool = False) -> EnrollResponse:
        """simpleenroll (or simplereenroll) with proof of possession linked to TLS (RFC 7030 3.5):
        the CSR is built on the open connection, its challengePassword set to that TLS session's
        tls-unique.  tls-unique exists only up to TLS 1.2, so this connection is capped at 1.2."""
        operation = "simplereenroll" if reenroll else "simpleenroll"
        ctx = client_ssl_context(**self._tls)  # type: ignore[arg-type]
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        connector = _ChannelBindingConnector(self._pin, ssl=ctx, force_close=True, limit=1)
        built: list[x509.CertificateSigningRequest] = []

        def csr_body() -> bytes:
            transport = connector.last_transport
            sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
            binding = sslobj.get_channel_binding("tls-unique") if sslobj is not None else None
            if not binding:
                raise ESTCodedError("EST_ERR_AUTH_FAIL_TLSUID", "this TLS session has no tls-unique value")
            csr = pki.build_csr(key, subject, sans, challenge_password=m.tls_unique_challenge(binding))
            built.append(csr)
            return m.encode_pkcs10(csr)[1]

        # The body is made on the connection, after the handshake, yet sent with a Content-Length
        # (never chunked: libEST's server refuses a body without one).  Its length is known
        # beforehand up to the few bytes an ECDSA signature varies by, so it is declared with room
        # to spare and the base64 padded with line breaks (RFC 8951: decoders skip whitespace).
        dummy = pki.build_csr(key, subject, sans, challenge_password=m.tls_unique_challenge(bytes(12)))
        size = len(m.encode_pkcs10(dummy)[1]) + _POP_SLACK

        def body() -> _LateBody:
            return _LateBody(size, csr_body, m.CT_PKCS10)

        async with aiohttp.ClientSession(connector=connector, timeout=self.timeout) as session:
            _, rheaders, data = await self.request(operation, "POST", body,
                                                   {"Content-Type": m.CT_PKCS10,
                                                    "Content-Transfer-Encoding": "base64"}, session=session)
        certs = self._parse(m.parse_certs_only, self.url_for(operation), data, rheaders.get("Content-Type"))
        return EnrollResponse(_pick_issued(certs, built[-1] if built else None), certs, data)  # type: ignore[arg-type]

    async def serverkeygen(self, csr: x509.CertificateSigningRequest) -> m.ServerKeygenResult:
        headers, body = m.encode_pkcs10(csr)
        _, rheaders, data = await self.request("serverkeygen", "POST", body, headers)
        return self._parse(m.parse_serverkeygen, self.url_for("serverkeygen"), data,  # type: ignore[return-value]
                           rheaders.get("Content-Type"))


async def bootstrap_cacerts(url: str, confirm: Callable[[list[x509.Certificate]], bool], *,
                            label: str | None = None, timeout: float = 30.0) -> list[x509.Certificate]:
    """RFC 7030 4.1.1 bootstrap: fetch ``cacerts`` without verifying the server, then trust the
    certificates only if ``confirm`` (a human comparing fingerprints) says so."""
    async with ESTClient(url, label=label, insecure=True, timeout=timeout) as est:
        certs = await est.cacerts()
    if not confirm(certs):
        raise ESTCodedError("EST_ERR_CACERT_VERIFICATION", "the CA certificates were not accepted",
                            hint="Compare the fingerprints with the CA administrator's before accepting.")
    return certs


__all__ = ["ESTClient", "EnrollResponse", "bootstrap_cacerts", "client_ssl_context", "map_transport_error"]
