"""Every ``ssl.SSLContext`` onlineca makes: TLS 1.2 or newer, and exactly the trust it was given.

A client context trusts the anchors it is handed (certificates, already loaded) and never the
system store, so an EST client or a phone trusts only the CA it was configured for; only
``client_context(None)`` (an AD CS web server with no trust store configured) uses the system
store.  A server context may ask for a client certificate and validate it at the handshake.
Loading errors are ``OSError``/``ssl.SSLError``: each caller names the setting in its message.
``PeerCheckingConnector`` applies a policy the TLS library cannot express (the RA refuses a
self-signed CA web certificate even when it is in its trust store) before a request is sent.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from cryptography import x509

from onlineca import pki

MIN_TLS = ssl.TLSVersion.TLSv1_2


def server_context(cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str] | None, *,
                   client_trust: Sequence[x509.Certificate] = (), tls12_only: bool = False,
                   password: bytes | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ server context.  With ``client_trust`` it asks for (but does not require) a
    client certificate and validates it at the handshake.  ``tls12_only`` caps it at TLS 1.2
    (tls-unique, RFC 7030 proof of possession, exists only up to 1.2)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_TLS
    if tls12_only:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    # ``password`` decrypts an encrypted key (OpenSSL ignores it for a key in clear).
    ctx.load_cert_chain(os.fspath(cert_file), os.fspath(key_file) if key_file else None, password=password)
    if client_trust:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cadata=pki.certs_pem(client_trust).decode("ascii"))
    return ctx


def client_context(anchors: Sequence[x509.Certificate] | None, *, partial_chain: bool = True,
                   cert_file: str | os.PathLike[str] | None = None,
                   key_file: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ client context that verifies the server's certificate and host name against
    exactly ``anchors`` (``None``: the system store).  With ``partial_chain`` an intermediate
    among the anchors is enough (an EST client may be given the issuing CA alone)."""
    if anchors is None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if anchors:
            ctx.load_verify_locations(cadata=pki.certs_pem(anchors).decode("ascii"))
        if partial_chain:
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.minimum_version = MIN_TLS
    if cert_file:
        ctx.load_cert_chain(os.fspath(cert_file), os.fspath(key_file) if key_file else None)
    return ctx


def pin_mismatch(cert_der: bytes, *, expected_name: str = "", fingerprint: str = "",
                 require_server_auth: bool = True) -> str | None:
    """Why a server's certificate (already verified against the trust store) is not the one a
    client expects, or None: it must carry the serverAuth EKU (a certificate from the same root
    for another purpose, e.g. a device's, is refused), name ``expected_name`` in its
    subjectAltName or CN, and have the SHA-256 ``fingerprint`` (hex, colons optional).

    A client asks on every request of a kept-alive connection, about the same few certificates:
    the answer is a function of the arguments alone, so it is kept (not the parsed certificate)."""
    return _pin_mismatch(bytes(cert_der), expected_name, fingerprint, require_server_auth)


@functools.lru_cache(maxsize=64)
def _pin_mismatch(cert_der: bytes, expected_name: str, fingerprint: str, require_server_auth: bool) -> str | None:
    cert = pki.load_certificate(cert_der)
    if require_server_auth:
        try:
            ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return "its certificate has no extendedKeyUsage (serverAuth required)"
        if x509.oid.ExtendedKeyUsageOID.SERVER_AUTH not in ekus:
            return "its certificate is not a server certificate (no serverAuth extendedKeyUsage)"
    if expected_name:
        names = {n.lower() for n in pki.san_names(cert)} | {pki.common_name(cert.subject).lower()}
        if expected_name.lower() not in names:
            return f"its certificate does not name {expected_name!r} (it names {', '.join(sorted(names))[:200]})"
    if fingerprint:
        want = fingerprint.replace(":", "").strip().upper()
        got = pki.fingerprint(cert).replace(":", "").upper()
        if got != want:
            return f"its certificate's SHA-256 fingerprint is {pki.fingerprint(cert)}, not the pinned one"
    return None


def unverified_client_context() -> ssl.SSLContext:
    """A client context that verifies nothing: only to read a peer's certificate or clock for a
    diagnosis, never to send a credential or a request that matters."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class PeerCheckingConnector(aiohttp.TCPConnector):
    """An aiohttp connector that shows each connection's peer certificate (DER) and host to
    ``check`` before any request is sent on it; ``check`` raises to refuse the connection."""

    def __init__(self, check: Callable[[bytes, str], None], **kw: Any) -> None:
        super().__init__(**kw)
        self._check = check

    async def connect(self, req, traces, timeout):  # type: ignore[no-untyped-def]
        conn = await super().connect(req, traces, timeout)
        transport = conn.transport
        sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if der:
            try:
                self._check(der, req.url.host or "")
            except BaseException:
                conn.close()
                raise
        return conn


__all__ = ["MIN_TLS", "PeerCheckingConnector", "client_context", "pin_mismatch", "server_context",
           "unverified_client_context"]
