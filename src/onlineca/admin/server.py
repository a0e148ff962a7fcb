"""Serving the console: its TLS certificate, uvicorn, and the client certificate of each connection.

``ensure_tls`` gives the console a certificate when none is configured: ``<data>/admin/admin.pem``
(key ``admin.key``, 0600), issued by the CA in the data dir when there is one (so a browser that
trusts the lab's root trusts the console), self-signed otherwise, for ``localhost``, ``127.0.0.1``
and the bind host; it is made again when it has less than 30 days left.  ``start_admin`` serves
the application with uvicorn over TLS 1.2+ (HTTP/1.1, at most ``[admin] max_connections`` at
once, idle keep-alive 5 s, 16 KiB of headers) and, with ``[admin] client_trust_store``, asks for a
client certificate, verified at the handshake, whose DER it hands to the application in the
ASGI scope's state.  ``RunningAdmin.close()`` stops it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from onlineca import pki
from onlineca.admin.app import make_app
from onlineca.errors import ConfigError, OnlineCAError
from onlineca.infra import files, tls
from onlineca.infra.serving import cannot_listen
from onlineca.service.core import Services
from onlineca.service.health import HealthState

log = logging.getLogger("onlineca.admin")
RENEW_BEFORE = dt.timedelta(days=30)


def _names(host: str) -> list[str]:
    names = ["localhost", "127.0.0.1"]
    if host and host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    return names


def ensure_tls(svc: Services, host: str) -> tuple[Path, Path]:
    """The console's certificate and key: the configured ones, or ``<data>/admin/admin.pem`` (made
    when missing or near its end)."""
    cfg = svc.config.admin
    if cfg.tls_cert:
        return Path(cfg.tls_cert), Path(cfg.tls_key or cfg.tls_cert)
    folder = svc.config.paths.admin
    cert_path, key_path = folder / "admin.pem", folder / "admin.key"
    if cert_path.exists() and key_path.exists():
        try:
            cert = files.load_cert_file(cert_path)[0]
            if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE:
                return cert_path, key_path
        except (OSError, OnlineCAError, IndexError):
            pass
    key = pki.generate_key("ec", 256)
    ca = svc.config.paths.ca
    issuer_key: Any = key
    issuer_cert = None
    chain = []
    if ca.issuing_key.exists() and ca.issuing_cert.exists():
        try:
            issuer_key = files.read_private_key(ca.issuing_key, svc.config.ca.key_passphrase())
            issuer_cert = pki.load_certificate(ca.issuing_cert.read_bytes())
            chain = [issuer_cert]
        except (OSError, OnlineCAError):
            issuer_key, issuer_cert, chain = key, None, []
    cert = pki.build_certificate(subject="CN=onlineca console", public_key=key.public_key(), issuer_key=issuer_key,
                                 issuer_cert=issuer_cert, sans=_names(host), extended_key_usage=["server_auth"],
                                 validity_days=397)
    files.write_private_key(key_path, key)
    files.write_file(cert_path, pki.certs_pem([cert, *chain]))  # 0600: in a 0700 folder 0644 gives nothing
    log.info("made the console's TLS certificate %s (%s)", cert_path,
             "issued by " + pki.name_to_slash(issuer_cert.subject) if issuer_cert else "self-signed")
    return cert_path, key_path


def ssl_context(svc: Services, cert: Path, key: Path) -> ssl.SSLContext:
    trust = svc.config.admin.client_trust_store
    try:
        anchors = files.load_trust_store(trust).certs if trust else ()
        return tls.server_context(cert, key, client_trust=anchors)
    except (OSError, ssl.SSLError, OnlineCAError) as exc:
        raise ConfigError(f"cannot load the console's TLS certificate {cert} or client trust store: {exc}",
                          hint="Check [admin] tls_cert, tls_key and client_trust_store.") from None


class PeerCertProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, plus the verified client certificate (DER) of the connection in
    each request's scope state (``onlineca.peer_cert``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.app_state = {**self.app_state, "onlineca.peer_cert": der}


@dataclass
class RunningAdmin:
    host: str
    port: int
    cert: Path
    server: uvicorn.Server
    task: asyncio.Task[None]
    health: HealthState

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{shown}:{self.port}/"

    async def close(self) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), 10)
        except TimeoutError:
            self.task.cancel()
        if self.server.started:
            await self.server.shutdown()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise cannot_listen(host, port, exc) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def start_admin(svc: Services, *, host: str | None = None, port: int | None = None,
                      health: HealthState | None = None) -> RunningAdmin:
    """Serve the console for ``svc`` (databases migrated here) until ``close()``."""
    cfg = svc.config.admin
    host = host or cfg.host
    port = cfg.port if port is None else port
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError(f"[admin] host {host!r} is not an IP address or localhost") from None
    await asyncio.to_thread(svc.migrate)
    cert, key = await asyncio.to_thread(ensure_tls, svc, host)
    context = ssl_context(svc, cert, key)
    state = health or HealthState()
    app = make_app(svc, health=state)
    config = uvicorn.Config(app, http=PeerCertProtocol, ws="none", lifespan="off", log_config=None,
                            access_log=False, server_header=False, date_header=True,
                            limit_concurrency=cfg.max_connections, timeout_keep_alive=5,
                            h11_max_incomplete_event_size=16 * 1024, timeout_graceful_shutdown=5,
                            ssl_context_factory=lambda _config, _default: context)
    config.load()
    sock = _bind(host, port)
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)  # what Server.serve() sets up before startup()
    await server.startup(sockets=[sock])
    if server.should_exit:
        raise ConfigError(f"the console could not start on {host}:{port}")
    task = asyncio.get_running_loop().create_task(server.main_loop())
    bound = sock.getsockname()[1]
    return RunningAdmin(host, bound, cert, server, task, state)


__all__ = ["PeerCertProtocol", "RunningAdmin", "ensure_tls", "ssl_context", "start_admin"]
