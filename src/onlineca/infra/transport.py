"""Classify a network failure once: an aiohttp, asyncio, ssl or socket exception in, a small typed
``TransportFailure`` out.

Each client then words the failure its own way from the value, never from the exception: the
EST client as libEST codes (``EST_ERR_IP_CONNECT``...), the certsrv client as curl return codes
and messages (``return code 7 (Failed to connect to ...)``).  The kinds:

``dns``              the host name does not resolve
``refused``          nothing listens there (ECONNREFUSED)
``connect``          the connection could not be made otherwise (unreachable network or host...)
``tls_verify``       the peer's certificate failed verification (OpenSSL's verify code and message)
``tls_handshake``    the TLS handshake failed otherwise (versions, ciphers, a client certificate)
``connect_timeout``  the connection (TCP or TLS) was not made within the connect timeout
``timeout``          no (complete) answer within the timeout
``closed``           the peer closed the connection without an answer
``truncated``        the answer was cut short
``reset``            the connection was reset (ECONNRESET, EPIPE)
``io``               another error of the operating system on the connection
``unknown``          not a network failure this module knows

This module only reads exceptions: it sends nothing, logs nothing and raises nothing.
"""

from __future__ import annotations

import asyncio
import errno as errnos
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

import aiohttp

Kind = Literal["dns", "refused", "connect", "tls_verify", "tls_handshake", "connect_timeout", "timeout", "closed",
               "truncated", "reset", "io", "unknown"]
_RESET_ERRNOS = frozenset({errnos.ECONNRESET, errnos.EPIPE, errnos.ECONNABORTED})


@dataclass(frozen=True)
class TransportFailure:
    """One network failure.

    ``reason`` is the operating system's (or OpenSSL's) words for the cause, e.g. ``Connection
    refused`` (from the errno, since asyncio's own text, ``Connect call failed (...)``, names no
    cause); ``detail`` is the exception's own text, as log lines have always quoted it;
    ``errno`` the OS error number, if any; ``verify_code`` and ``verify_message`` OpenSSL's
    verification result for ``tls_verify`` (``X509_V_ERR_*``: 18 self-signed, 20 unknown issuer,
    62 host name mismatch...).
    """

    kind: Kind
    reason: str
    detail: str = ""
    errno: int | None = None
    verify_code: int | None = None
    verify_message: str = ""

    @property
    def during_connect(self) -> bool:
        """True when no request reached the peer (safe to send again elsewhere)."""
        return self.kind in ("dns", "refused", "connect", "tls_verify", "tls_handshake", "connect_timeout")


def os_reason(exc: BaseException) -> str:
    """The operating system's words for a socket failure (``Connection refused``)."""
    inner = getattr(exc, "os_error", None) or exc
    number = getattr(inner, "errno", None)
    if isinstance(number, int) and number > 0:
        return os.strerror(number)  # asyncio's own strerror ("Connect call failed ...") names no cause
    return getattr(inner, "strerror", None) or str(inner) or type(inner).__name__


def _errno(exc: BaseException) -> int | None:
    inner = getattr(exc, "os_error", None) or exc
    number = getattr(inner, "errno", None)
    return number if isinstance(number, int) else None


def _verify_failure(err: BaseException) -> TransportFailure:
    message = getattr(err, "verify_message", "") or str(err)
    return TransportFailure("tls_verify", message, message, verify_code=getattr(err, "verify_code", None),
                            verify_message=message)


def _os_failure(exc: OSError, detail: str) -> TransportFailure:
    """An OSError (bare, or the one inside an aiohttp connector error)."""
    number = _errno(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _verify_failure(exc)
    if isinstance(exc, ssl.SSLError):
        return TransportFailure("tls_handshake", os_reason(exc), detail, number)
    if isinstance(exc, socket.gaierror):
        return TransportFailure("dns", os_reason(exc), detail, number)
    if isinstance(exc, ConnectionRefusedError) or number == errnos.ECONNREFUSED:
        return TransportFailure("refused", os_reason(exc), detail, number)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)) or number in _RESET_ERRNOS:
        return TransportFailure("reset", os_reason(exc), detail, number)
    if isinstance(exc, TimeoutError):
        return TransportFailure("timeout", os_reason(exc), detail, number)
    return TransportFailure("io", os_reason(exc), detail, number)


def classify(exc: BaseException) -> TransportFailure:
    """What kind of network failure ``exc`` is (see the module docstring)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _verify_failure(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientSSLError):  # the handshake failed (verification is above)
        return TransportFailure("tls_handshake", os_reason(exc), str(exc), _errno(exc))
    if isinstance(exc, aiohttp.ClientConnectorError):
        oserr = exc.os_error
        if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(oserr, socket.gaierror):
            return TransportFailure("dns", os_reason(exc), str(oserr), _errno(exc))
        got = _os_failure(oserr, str(oserr) if isinstance(oserr, ssl.SSLError) else oserr.strerror or str(oserr))
        # Refused, unreachable, or cut during the connect: all are "could not connect".
        return got if got.kind in ("refused", "tls_verify", "tls_handshake") else \
            TransportFailure("connect", got.reason, got.detail, got.errno)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransportFailure("connect_timeout", "connection timed out", str(exc))
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return TransportFailure("timeout", "no answer within the timeout", str(exc))
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return TransportFailure("closed", "the peer closed the connection without an answer", str(exc))
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportFailure("truncated", os_reason(exc), str(exc))
    if isinstance(exc, asyncio.IncompleteReadError):
        return TransportFailure("closed" if not exc.partial else "truncated",
                                "the peer closed the connection", str(exc))
    if isinstance(exc, OSError):  # aiohttp.ClientOSError, and bare socket/ssl errors
        return _os_failure(exc, str(exc))
    return TransportFailure("unknown", str(exc) or type(exc).__name__, str(exc))


__all__ = ["Kind", "TransportFailure", "classify", "os_reason"]
