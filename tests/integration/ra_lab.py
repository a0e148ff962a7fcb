"""What the RA tests share: our CA (onlineca.ca) on disk with EC keys, its web certificates good
and bad, config builders for the RA, a delaying HTTPS proxy in front of the CA, and log readers.

Fixtures here are imported by the ``test_ra_*`` modules.  Servers run on 127.0.0.1 on free ports;
nothing waits on a sleep: tests wait on the RA's state (``RAState.wait_until``) or on events.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from onlineca import pki
from onlineca.ca.engine import init_ca
from onlineca.ca.users import add_user
from onlineca.ca.web import IIS_LOG_NAME, RunningCA, start_ca
from onlineca.config import Config, DataDir
from onlineca.infra import files as fs
from onlineca.ra.app import RunningRA, start_ra

USER, PASSWORD = "ciscora", "ra-Passw0rd!"
TEMPLATES = [
    {"name": "CiscoRA", "display_name": "Cisco RA", "extended_key_usage": ["client_auth", "server_auth"]},
    {"name": "Approval", "display_name": "Manager Approval", "manager_approval": True},
    {"name": "RSAOnly", "display_name": "RSA only", "allowed_key_types": ["rsa"]},
]
# Timeouts short enough for a fast suite, long enough for a loaded 2-core machine.
FAST_RA = {"connect_timeout": 2.0, "login_timeout": 2.0, "enroll_timeout": 2.0, "backoff_initial": 0.05,
           "backoff_max": 0.2, "pending_retry_after": 1, "unavailable_retry_after": 2, "auth_cache_seconds": 60}


@dataclass
class CALab:
    dir: Path
    data_dir: Path
    files: object
    ca_templates: list = field(default_factory=lambda: list(TEMPLATES))

    @property
    def root_pem(self) -> Path:
        return self.files.root_cert

    @property
    def ra_cert(self) -> Path:
        return self.dir / "ra.pem"

    @property
    def ra_key(self) -> Path:
        return self.dir / "ra.key"

    def config(self, ra: dict | None = None, est: dict | None = None, templates: list | None = None,
               log_dir: Path | None = None, database: str | None = None) -> Config:
        return Config.model_validate({
            **({"database": {"url": database}} if database else {}),
            "data_dir": str(self.data_dir), "log_dir": str(log_dir or self.dir / "logs"),
            "ca": {"key_type": "ec", "users_file": str(self.dir / "ca-users"),
                   "templates": templates or self.ca_templates},
            "ra": {"ca_user": USER, "ca_password": PASSWORD, "trust_store": str(self.root_pem),
                   "template": "CiscoRA", **FAST_RA, **(ra or {})},
            "est": est or {},
        })

    def web_cert(self, name: str, *, sans=("localhost", "127.0.0.1"), self_signed: bool = False,
                 not_before: dt.datetime | None = None, validity_days: float = 30) -> tuple[Path, Path]:
        """A web server certificate for the CA (issued by our issuing CA unless self-signed)."""
        key = pki.generate_key("ec", 256)
        issuer_key = key if self_signed else fs.read_private_key(self.files.issuing_key)
        issuing = pki.load_certificate(self.files.issuing_cert.read_bytes())
        cert = pki.build_certificate(subject=f"CN={name}", public_key=key.public_key(), issuer_key=issuer_key,
                                     issuer_cert=None if self_signed else issuing, sans=list(sans),
                                     extended_key_usage=["server_auth"], not_before=not_before,
                                     validity_days=validity_days)
        cert_path, key_path = self.dir / f"web-{name}.pem", self.dir / f"web-{name}.key"
        cert_path.write_bytes(pki.certs_pem([cert] if self_signed else [cert, issuing]))
        fs.write_private_key(key_path, key)
        return cert_path, key_path


@pytest.fixture(scope="session")
def ca_lab(tmp_path_factory) -> CALab:
    d = tmp_path_factory.mktemp("ralab")
    lab = CALab(d, d / "data", DataDir(Path(d / "data")).ca)
    cfg = lab.config()
    init_ca(cfg, lab.data_dir)
    add_user(d / "ca-users", USER, PASSWORD)
    add_user(d / "ca-users", "capf2", "other-Passw0rd")
    # The RA's own TLS certificate, from the same CA (EST clients trust its root).
    key = pki.generate_key("ec", 256)
    cert = pki.build_certificate(subject="CN=ra.lab", public_key=key.public_key(),
                                 issuer_key=fs.read_private_key(lab.files.issuing_key),
                                 issuer_cert=pki.load_certificate(lab.files.issuing_cert.read_bytes()),
                                 sans=["localhost", "127.0.0.1"], extended_key_usage=["server_auth"])
    lab.ra_cert.write_bytes(pki.certs_pem([cert, pki.load_certificate(lab.files.issuing_cert.read_bytes())]))
    fs.write_private_key(lab.ra_key, key)
    return lab


async def run_ca(lab: CALab, log_dir: Path, *, port: int = 0, tls: tuple[Path, Path] | None = None,
                 templates: list | None = None) -> RunningCA:
    cert, key = tls or (None, None)
    return await start_ca(lab.config(templates=templates), lab.data_dir, log_dir, host="127.0.0.1", port=port,
                          tls_cert=cert, tls_key=key)


async def run_ra(lab: CALab, log_dir: Path, ca_url: str, *, ra: dict | None = None,
                 est: dict | None = None, database: str | None = None) -> RunningRA:
    cfg = lab.config(ra={"ca_url": ca_url, **(ra or {})}, est=est, log_dir=log_dir, database=database)
    return await start_ra(cfg, log_dir, host="127.0.0.1", port=0, tls_cert=lab.ra_cert, tls_key=lab.ra_key)


@contextlib.asynccontextmanager
async def ra_running(lab: CALab, log_dir: Path, ca_url: str, **kw):  # type: ignore[no-untyped-def]
    """A started RA that passed its start-up checks, closed on exit."""
    r = await run_ra(lab, log_dir, ca_url, **kw)
    try:
        await r.wait_ready()
        yield r
    finally:
        await r.close()


def local_ra(lab: CALab, d: Path) -> dict:
    """run_ra arguments for the local connector with a users file holding USER."""
    from onlineca.infra.users import hash_password
    (d / "est-users").write_text(f"{USER}:{hash_password(PASSWORD, n=2 ** 10)}\n")
    return {"ra": {"connector": "local", "client_auth": "users", "local_key": str(lab.files.issuing_key),
                   "local_cert": str(lab.files.chain)}, "est": {"users_file": str(d / "est-users")}}


def error_log(log_dir: Path) -> str:
    return (log_dir / "error.log").read_text()


def iis_requests(log_dir: Path) -> list[str]:
    path = log_dir / IIS_LOG_NAME
    return [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")] if path.exists() else []


async def attempts_at_least(r: RunningRA, n: int, timeout: float = 30.0) -> None:
    await r.state.wait_until(lambda s: s.failures >= n and not s.ready, timeout)


def est_csr(subject: str = "CN=SEP74A02FC0A675,O=onlineca tests", key_type: str = "ec"):
    key = pki.generate_key(key_type, 256 if key_type == "ec" else 2048)
    return key, pki.build_csr(key, subject, [])


async def raw_enroll(r: RunningRA, csr, user: str = USER, password: str = PASSWORD,
                     cafile: Path | None = None) -> tuple[int, dict, bytes]:
    """One simpleenroll as bytes on the wire (no client-side retry), for status and headers."""
    from onlineca.proto import est as m
    headers, body = m.encode_pkcs10(csr)
    ctx = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s,
                s.post(r.url + "/simpleenroll", data=body, headers=headers) as resp):
        return resp.status, dict(resp.headers), await resp.read()


async def get(url: str, cafile: Path) -> tuple[int, dict, bytes]:
    ctx = ssl.create_default_context(cafile=str(cafile))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s, s.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.read()


class HoldingProxy:
    """An HTTPS reverse proxy in front of the CA that holds the requests of chosen paths until
    released: a CA slower than any timeout, without sleeping."""

    def __init__(self, upstream: str, root_pem: Path, cert: tuple[Path, Path]) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/certsrv")  # the origin
        self.root_pem = root_pem
        self.cert = cert
        self.hold: set[str] = set()
        self.release = asyncio.Event()
        self.held = 0
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path in self.hold and not self.release.is_set():
            self.held += 1
            await self.release.wait()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "content-type", "referer", "user-agent", "accept")}
        body = await request.read()
        assert self.session is not None
        async with self.session.request(request.method, self.upstream + request.path_qs, data=body or None,
                                        headers=headers, allow_redirects=False) as up:
            data = await up.read()
            out = web.Response(status=up.status, body=data)
            for k in ("Content-Type", "Location", "Content-Disposition"):
                if k in up.headers:
                    out.headers[k] = up.headers[k]
            for v in up.headers.getall("WWW-Authenticate", []):
                out.headers.add("WWW-Authenticate", v)
            return out

    async def start(self) -> str:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(self.root_pem))))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return f"https://127.0.0.1:{self.port}/certsrv"

    async def close(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()
