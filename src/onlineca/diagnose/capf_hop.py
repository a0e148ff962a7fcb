"""diagnose's CAPF hop: CAPF's own port as a phone reaches it, and the RA CAPF really points at.

``check_capf_port`` opens TLS to ``[capf] host:port`` (a wildcard address is reached on
127.0.0.1) the way a phone does, reads the certificate CAPF serves without sending anything, and
checks it: valid now, not expiring within 30 days, and chaining to the CA that issued it (the RA's
``/cacerts``, else the configured trust stores).  A CAPF that does not answer is CAPF_CONNECT,
whatever its certificate file says.  ``check_capf_ra`` reads the RA host and port CAPF wrote in
its trace when it last started and compares them with ``[capf] ra_url``: a CAPF started with
another configuration points elsewhere.  Read-only; no device protocol message is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from onlineca import pki
from onlineca.config import Config
from onlineca.diagnose.findings import Finding, finding
from onlineca.errors import ChainError, ParseError
from onlineca.infra import tls
from onlineca.logs.capf_trace import TRACE_FILE

EXPIRING_DAYS = 30
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


async def peer_certificate(host: str, port: int, timeout: float) -> x509.Certificate:
    """The certificate a TLS server presents, read without verifying it (nothing else is sent).
    OSError / TimeoutError / ssl.SSLError when it cannot be had."""
    async with asyncio.timeout(timeout):
        _reader, writer = await asyncio.open_connection(host, port, ssl=tls.unverified_client_context(),
                                                        server_hostname=host)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(timeout):
                await writer.wait_closed()
    if not der:
        raise ssl.SSLError("the server sent no certificate")
    return pki.load_certificate(der)


def _served_findings(cert: x509.Certificate, trust: list[x509.Certificate], now: dt.datetime,
                     where: str) -> list[Finding]:
    ev: dict[str, Any] = dict(address=where, subject=pki.name_to_slash(cert.subject), issuer=pki.name_to_slash(cert.issuer),
              not_before=f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
              not_after=f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    if now < cert.not_valid_before_utc:
        return [finding("CAPF_CERT_NOT_YET_VALID", f"CAPF serves a certificate valid only from {ev['not_before']}: "
                        "phones refuse it until then", **ev)]
    if now >= cert.not_valid_after_utc:
        return [finding("CAPF_CERT_EXPIRED", f"CAPF serves a certificate that expired on {ev['not_after']}", **ev)]
    found = []
    if trust:
        try:
            pki.validate_chain(cert, [], pki.TrustStore(trust), at=now)
        except ChainError as exc:
            found.append(finding("CAPF_CERT_UNTRUSTED", f"CAPF's certificate does not chain to the CA that should "
                                 f"have issued it: {exc.message}", chain_error=exc.code,
                                 trusted=[pki.name_to_slash(c.subject) for c in trust], **ev))
    left = cert.not_valid_after_utc - now
    if left <= dt.timedelta(days=EXPIRING_DAYS):
        found.append(finding("CAPF_CERT_EXPIRING", f"CAPF serves a certificate that expires in {left.days} day(s), "
                             f"on {ev['not_after']}", severity="warning", days_left=left.days, **ev))
    return found


async def check_capf_port(cfg: Config, trust: list[x509.Certificate], now: dt.datetime,
                          timeout: float) -> list[Finding]:
    """CAPF's port as a phone reaches it: TCP, TLS, and the certificate it serves."""
    host = _WILDCARDS.get(cfg.capf.host, cfg.capf.host)
    where = f"{host}:{cfg.capf.port}"
    try:
        cert = await peer_certificate(host, cfg.capf.port, timeout)
    except (TimeoutError, ConnectionRefusedError, OSError) as exc:
        if isinstance(exc, ssl.SSLError):
            return [finding("CAPF_TLS", f"the TLS handshake with CAPF at {where} failed: {exc}", address=where)]
        errno = getattr(exc, "errno", None)
        why = ("no answer within the timeout" if isinstance(exc, TimeoutError) else
               os.strerror(errno) if isinstance(errno, int) and errno > 0 else (exc.strerror or str(exc)))
        return [finding("CAPF_CONNECT", f"nothing answers at CAPF's address {where} ({why}): CAPF is stopped, or "
                        "[capf] host/port is not where it listens; phones cannot enroll", address=where, reason=why)]
    except ParseError as exc:
        return [finding("CAPF_TLS", f"CAPF at {where} serves a certificate that does not parse: {exc.message}",
                        address=where)]
    return _served_findings(cert, trust, now, where)


_CAPF_RA_HOST = re.compile(r"Online CA hostname is (\S+)")
_CAPF_RA_PORT = re.compile(r"Online CA Port : (\d+)")


def check_capf_ra(cfg: Config, log_dir: Path) -> list[Finding]:
    """The RA CAPF said at its last start it would use, against ``[capf] ra_url``."""
    try:
        with (log_dir / TRACE_FILE).open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - 4 * 1024 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    hosts, ports = _CAPF_RA_HOST.findall(text), _CAPF_RA_PORT.findall(text)
    if not hosts:
        return []
    url = urlsplit(cfg.capf.ra_url)
    started = (hosts[-1].lower(), int(ports[-1]) if ports else None)
    wanted = ((url.hostname or "").lower(), url.port or 443)
    if started[0] == wanted[0] and started[1] in (None, wanted[1]):
        return []
    return [finding("CAPF_RA_MISMATCH", f"CAPF last started pointing at the RA {started[0]}:{started[1]}, but "
                    f"[capf] ra_url is {cfg.capf.ra_url}: CAPF runs with another configuration",
                    capf_ra=f"{started[0]}:{started[1]}", ra_url=cfg.capf.ra_url)]


__all__ = ["check_capf_port", "check_capf_ra", "peer_certificate"]
