"""The CA's web server: the AD CS web-enrollment pages (``/certsrv``) as an aiohttp application.

``create_app`` wires HTTP to the issuing engine: logins as IIS takes them (``ca.auth``: Basic
against the users file, NTLM with ``[ca] ntlm_auth``), one middleware that answers 401/301 as IIS
does and writes every request to the IIS W3C log, and one handler per page (``certrqxt.asp``, ``certfnsh.asp``, ``certnew.cer``,
``certnew.p7b``, ``certcarc.asp``, ``certckpn.asp``).  Paths and query keys are matched
case-insensitively, as IIS and ASP do.  Signing and the database run off the event loop, in a
small pool of worker threads, so a slow or locked database delays only the requests that need it.
Certificates go out as the DER the engine stored.  Hostile input gets the page AD CS would give
(200 with a disposition message, or an IIS 4xx page), never a traceback or a 500; passwords,
Authorization headers and keys are never logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from aiohttp import web
from sqlalchemy.exc import OperationalError

from onlineca import pki
from onlineca.ca import engine as eng, published
from onlineca.ca.auth import CA_USER, IIS_STATUS, NEGOTIATE_REPLY, CALogin
from onlineca.ca.metrics import CAMetrics, page_label
from onlineca.ca.users import ntlm_path
from onlineca.config import Config, DataDir
from onlineca.errors import ConfigError, StoreError
from onlineca.infra import files, tls
from onlineca.infra.serving import ConnectionLimits, RunningServer, start_https
from onlineca.logs import attach_log
from onlineca.logs.iis import IISEntry, IISLog
from onlineca.policy import ca as policy
from onlineca.proto.certsrv import hresults as hr, server as pages
from onlineca.proto.request_id import REQUEST_ID_HEADER
from onlineca.proto.results import ISSUED, PENDING, Issued, Pending
from onlineca.store import CARequest, Database

log = logging.getLogger("onlineca.ca")

IIS_LOG_NAME = "ca-iis.log"
SERVER_HEADER = "Microsoft-IIS/10.0"
# Threads that sign and talk to the database: a few, so a busy database queues work here instead
# of piling up connections (SQLite has one writer anyway).
WORKERS = 4
R = TypeVar("R")
# Seconds a client is asked to wait when the database is busy.
BUSY_RETRY_AFTER = 5
# Seconds certnew.cer may answer from what certfnsh.asp just issued: the RA fetches
# its certificate right after the POST, so the second request needs no database read.
ISSUED_CACHE_SECONDS = 10.0
ISSUED_CACHE_MAX = 4096


class IssuedCache:
    """DER certificates this process just issued, by ReqID, for their requester only, briefly.

    The database stays the record: an entry is taken once (the RA's one GET after the POST) and
    lives ``ISSUED_CACHE_SECONDS`` at most, so a revocation or a restart is seen within seconds;
    anything else (another worker's request, a second download, the PKCS#7) reads the database.
    """

    def __init__(self, ttl: float = ISSUED_CACHE_SECONDS, size: int = ISSUED_CACHE_MAX) -> None:
        self.ttl, self.size = ttl, size
        self._entries: dict[int, tuple[str, bytes, float]] = {}

    def put(self, req_id: int, requester: str, der: bytes) -> None:
        now = time.monotonic()
        if len(self._entries) >= self.size:  # drop the expired, then the oldest (dicts keep order)
            self._entries = {k: v for k, v in self._entries.items() if v[2] > now}
            while len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
        self._entries[req_id] = (requester.lower(), der, now + self.ttl)

    def take(self, req_id: int, requester: str) -> bytes | None:
        entry = self._entries.get(req_id)
        if entry is None or entry[0] != requester.lower():
            return None
        del self._entries[req_id]
        return entry[1] if entry[2] > time.monotonic() else None


@dataclass
class CAState:
    config: Config
    engine: eng.CAEngine
    login: CALogin
    iis: IISLog | None
    ca_name: str
    db: Database
    worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(WORKERS, thread_name_prefix="ca-worker"))
    data_dir: Path = Path(".")
    metrics: CAMetrics | None = None
    issued: IssuedCache = field(default_factory=IssuedCache)

    async def blocking(self, func: Callable[..., R], *args: Any) -> R:
        """``func(*args)`` (signing, the database) in a worker thread, never on the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.worker, func, *args)


CA_STATE = web.AppKey("ca_state", CAState)


# --------------------------------------------------------------------------- helpers

def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/html", charset="utf-8")


def _query(request: web.Request) -> dict[str, str]:
    """Query keys lower-cased (ASP's Request.QueryString ignores case); the first value wins."""
    out: dict[str, str] = {}
    for key, value in request.query.items():
        out.setdefault(key.lower(), value)
    return out


def _is_browser(request: web.Request) -> bool:
    return "mozilla/" in request.headers.get("User-Agent", "").lower()


def _error_page(state: CAState, disposition: str, message: str, code: int) -> web.Response:
    return _html(pages.error(state.ca_name, disposition, message, hr.result_text(code)))


def _iis_page(status: int, reason: str, detail: str) -> web.Response:
    return _html(pages.http_error(status, reason, detail), status)


# --------------------------------------------------------------------------- the middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _iis_entry(request: web.Request, response: web.StreamResponse, started: float, state: CAState) -> IISEntry:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    s_ip, s_port = (sockname[0], sockname[1]) if sockname else ("-", 0)
    user = request.get(CA_USER)
    substatus, win32 = request.get(IIS_STATUS, (0, 0))
    return IISEntry(
        when=dt.datetime.now(dt.UTC), s_ip=s_ip, method=request.method, uri_stem=request.path,
        uri_query=request.query_string, s_port=s_port,
        username=f"{state.config.ca.domain}\\{user}" if user else "",
        c_ip=request.remote or "", user_agent=request.headers.get("User-Agent", ""),
        referer=request.headers.get("Referer", ""), status=response.status, substatus=substatus,
        win32_status=win32, time_taken_ms=int((time.perf_counter() - started) * 1000),
        request_id=request.headers.get(REQUEST_ID_HEADER, ""))  # diag branch: an IIS custom field


@web.middleware
async def iis_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[CA_STATE]
    started = time.perf_counter()
    response = await _guarded(request, handler, state)
    response.headers["Server"] = SERVER_HEADER
    if state.metrics is not None:
        state.metrics.latency.labels(page=page_label(request.path)).observe(time.perf_counter() - started)
    if request.get(NEGOTIATE_REPLY) and response.status < 400:
        response.headers["WWW-Authenticate"] = request[NEGOTIATE_REPLY]
    if state.iis is not None:
        try:
            state.iis.write(_iis_entry(request, response, started, state))
        except (OSError, ValueError) as exc:
            log.error("cannot write the IIS log: %s", exc)
    return response


async def _guarded(request: web.Request, handler: Handler, state: CAState) -> web.StreamResponse:
    path = request.path.lower()
    if not request.secure and not published.plain_http_path(path):
        # The plain HTTP port ([ca] http_port) publishes CRLs, the CA certificate and OCSP only.
        return _iis_page(403, "Forbidden: SSL is required to view this resource.",
                         "The page you are trying to access is secured with Secure Sockets Layer (SSL).")
    if path == "/certsrv" or path.startswith("/certsrv/"):
        who = await state.login.authenticate(request)
        if isinstance(who, web.Response):
            return who
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return _too_large(state)
    except web.HTTPException as exc:
        return _iis_page(exc.status, exc.reason, exc.text or exc.reason)
    except (OperationalError, StoreError) as exc:
        # The database is busy (another writer holds its lock past busy_timeout) or away: answer as
        # a busy IIS does, 503 with Retry-After, so clients come back instead of giving up.
        log.error("database busy or unavailable on %s %s: %s", request.method, request.path,
                  str(getattr(exc, "orig", exc))[:200])
        busy = _iis_page(503, "Service Unavailable", "The server is too busy to complete this operation "
                         "(0x800706bb RPC_S_SERVER_TOO_BUSY); try again later.")
        busy.headers["Retry-After"] = str(BUSY_RETRY_AFTER)
        return busy
    except Exception:  # a defect of ours: log it, answer as IIS does, keep serving
        log.exception("internal error on %s %s", request.method, request.path)
        return _iis_page(500, "Internal server error.",
                         "There is a problem with the resource you are looking for, and it cannot be displayed.")


def _too_large(state: CAState) -> web.Response:
    return _iis_page(413, "Request Entity Too Large",
                     f"The request is larger than the CA accepts ({state.config.ca.max_request_bytes} bytes).")


# --------------------------------------------------------------------------- pages

async def dispatch(request: web.Request) -> web.StreamResponse:
    path = request.path.lower().rstrip("/")
    extra = published.route(path)  # /CertEnroll/, /ocsp, /metrics, the revoke endpoint
    if extra is not None:
        return await extra(request, request.app[CA_STATE])
    page = PAGES.get(path)
    if page is None:
        return _iis_page(404, "File or directory not found.",
                         "The resource you are looking for might have been removed, had its name changed, "
                         "or is temporarily unavailable.")
    methods, func = page
    if request.method not in methods:
        return _iis_page(405, "HTTP verb used to access this page is not allowed.",
                         "The page you are looking for cannot be displayed because an invalid method "
                         "(HTTP verb) was used to attempt access.")
    return await func(request, request.app[CA_STATE])


async def certsrv_root(request: web.Request, state: CAState) -> web.StreamResponse:
    if request.path.endswith("/"):
        return _html(pages.home(state.ca_name))
    # IIS's courtesy redirect of a folder without its slash: the 301 of the source document's log.
    location = f"https://{request.host}/certsrv/"
    body = (f'<head><title>Document Moved</title></head>\n<body><h1>Object Moved</h1>This document may be '
            f'found <a HREF="{location}">here</a></body>')
    return web.Response(status=301, text=body, content_type="text/html", headers={"Location": location})


async def certrqxt(request: web.Request, state: CAState) -> web.StreamResponse:
    offered = policy.offered_templates(state.engine.templates, request[CA_USER])
    return _html(pages.certrqxt(state.ca_name, offered))


async def certcarc(request: web.Request, state: CAState) -> web.StreamResponse:
    return _html(pages.certcarc(state.ca_name, 0))


async def certckpn(request: web.Request, state: CAState) -> web.StreamResponse:
    rows = await state.blocking(state.engine.list, PENDING, request[CA_USER])
    return _html(pages.certckpn(state.ca_name, [(r.req_id, r.submitted_at) for r in rows]))


def _form_text(form, name: str) -> str | None:  # type: ignore[no-untyped-def]
    for key, value in form.items():
        if key.lower() == name.lower():
            if isinstance(value, str):
                return value
            try:  # a file upload of the saved request
                return str(value.file.read(1 << 20).decode("utf-8", "replace"))
            except Exception:
                return None
    return None


def _bad_parameter(state: CAState) -> web.Response:
    return _html(pages.denied(state.ca_name, None, hr.parse_failure(hr.E_INVALIDARG)))


async def certfnsh(request: web.Request, state: CAState) -> web.StreamResponse:
    limit = state.config.ca.max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        return _too_large(state)
    try:
        async with asyncio.timeout(state.config.connections.body_timeout):
            form = await request.post()
    except TimeoutError:
        return _iis_page(408, "Request Timeout", "The server timed out waiting for the request body.")
    except web.HTTPRequestEntityTooLarge:
        return _too_large(state)
    except Exception:  # a body aiohttp cannot read as a form (broken multipart, bad encoding): bad parameter
        return _bad_parameter(state)
    user = request[CA_USER]
    mode = (_form_text(form, "Mode") or "").strip().lower()
    if mode == "newreq":
        cert_request = _form_text(form, "CertRequest")
        if not cert_request or not cert_request.strip():
            return _bad_parameter(state)
        outcome = await state.blocking(state.engine.submit, user, cert_request,
                                       _form_text(form, "CertAttrib") or "")
    elif mode == "chkpnd":
        req_id = _req_id(_form_text(form, "ReqID"))
        found = await state.blocking(state.engine.outcome, req_id, user) if req_id is not None else None
        if found is None:
            return _html(pages.denied(state.ca_name, req_id, f"Error retrieving request  "
                                      f"{hr.HRESULT_TEXT[hr.CRYPT_E_NOT_FOUND]}"))
        outcome = found
    else:
        return _bad_parameter(state)
    if isinstance(outcome, Issued):
        if mode == "newreq" and outcome.req_id is not None:
            state.issued.put(outcome.req_id, user, outcome.cert_der)
        return _html(pages.issued(state.ca_name, outcome.req_id, _is_browser(request)))  # type: ignore[arg-type]
    if isinstance(outcome, Pending):
        return _html(pages.pending(state.ca_name, outcome.req_id))  # type: ignore[arg-type]
    return _html(pages.denied(state.ca_name, outcome.req_id, outcome.message))


def _req_id(text: str | None) -> int | None:
    text = (text or "").strip()
    if not text.isdigit() or len(text) > 9:
        return None
    return int(text)


def _encoding(query: dict[str, str]) -> str | None:
    enc = query.get("enc", "bin").strip().lower()
    return enc if enc in ("b64", "bin") else None


def _download(request: web.Request, body: bytes, content_type: str, filename: str) -> web.Response:
    # AD CS picks the download type from the User-Agent: browsers get the certificate type,
    # other clients the same bytes as text/html (clients must cope with both).
    ctype = content_type if _is_browser(request) else "text/html"
    return web.Response(body=body, content_type=ctype,
                        headers={"Content-Disposition": f"attachment; filename={filename}"})


async def _lookup(request: web.Request, state: CAState,
                  query: dict[str, str]) -> tuple[CARequest | None, tuple[bytes, ...]] | web.Response:
    """The certificates (DER, as stored) a certnew.* ReqID names, or the AD CS error page."""
    raw = query.get("reqid", "").strip()
    if raw.lower() == "cacert":
        renewal = query.get("renewal", "0").strip() or "0"
        if renewal != "0":
            return _error_page(state, "", f"Error retrieving CA certificate  renewal {renewal[:20]} does not exist",
                               hr.E_INVALIDARG)
        return None, state.engine.chain_der
    req_id = _req_id(raw)
    if req_id is None:
        return _error_page(state, "", "Error retrieving request  the ReqID must be a number or CACert",
                           hr.E_INVALIDARG)
    row = await state.blocking(state.engine.get, req_id)
    if row is None:
        return _error_page(state, "", f"Error retrieving request {req_id}", hr.CRYPT_E_NOT_FOUND)
    if row.requester.lower() != request[CA_USER].lower():
        return _error_page(state, "", f"Error retrieving request {req_id}", hr.E_ACCESSDENIED)
    if row.disposition != ISSUED or not row.cert_der:
        return _error_page(state, row.disposition, row.disposition_message, hr.to_unsigned(row.hresult))
    return row, (row.cert_der,)


async def _download_request(request: web.Request,
                            state: CAState) -> tuple[str, CARequest | None, tuple[bytes, ...]] | web.Response:
    """certnew.cer / certnew.p7b: (encoding, row or None for CACert, DER certificates) or an error page."""
    query = _query(request)
    enc = _encoding(query)
    if enc is None:
        return _error_page(state, "", "Error  the encoding (Enc) must be b64 or bin", hr.E_INVALIDARG)
    found = await _lookup(request, state, query)
    return found if isinstance(found, web.Response) else (enc, *found)


async def certnew_cer(request: web.Request, state: CAState) -> web.StreamResponse:
    query = _query(request)
    req_id, enc = _req_id(query.get("reqid")), _encoding(query)
    cached = state.issued.take(req_id, request[CA_USER]) if req_id is not None and enc is not None else None
    if cached is not None:
        return _download(request, cached if enc == "bin" else pki.pem_armor(cached, eol=b"\r\n"),
                         "application/pkix-cert", "certnew.cer")
    found = await _download_request(request, state)
    if isinstance(found, web.Response):
        return found
    enc, _row, (der, *_rest) = found
    # The DER as stored, byte for byte; b64 is its PEM armour with CRLF, as AD CS sends it.
    body = der if enc == "bin" else pki.pem_armor(der, eol=b"\r\n")
    return _download(request, body, "application/pkix-cert", "certnew.cer")


async def certnew_p7b(request: web.Request, state: CAState) -> web.StreamResponse:
    found = await _download_request(request, state)
    if isinstance(found, web.Response):
        return found
    enc, row, certs = found
    if row is not None:
        certs = certs + state.engine.chain_der
    der = pki.pkcs7_der(certs)
    body = der if enc == "bin" else pki.pem_armor(der, eol=b"\r\n")
    return _download(request, body, "application/x-pkcs7-certificates", "certnew.p7b")


PageFunc = Callable[[web.Request, CAState], Awaitable[web.StreamResponse]]
PAGES: dict[str, tuple[tuple[str, ...], PageFunc]] = {
    "/certsrv": (("GET", "HEAD"), certsrv_root),
    "/certsrv/default.asp": (("GET", "HEAD"), certsrv_root),
    "/certsrv/certrqxt.asp": (("GET", "HEAD"), certrqxt),
    "/certsrv/certfnsh.asp": (("POST",), certfnsh),
    "/certsrv/certnew.cer": (("GET", "HEAD"), certnew_cer),
    "/certsrv/certnew.p7b": (("GET", "HEAD"), certnew_p7b),
    "/certsrv/certcarc.asp": (("GET", "HEAD"), certcarc),
    "/certsrv/certckpn.asp": (("GET", "HEAD"), certckpn),
}


# --------------------------------------------------------------------------- the application

def make_login(config: Config, data_dir: str | Path, server_cert_der: bytes | None = None) -> CALogin:
    """The CA's logins for this configuration (checked: at least one method, its packages present)."""
    upath = eng.users_path(config, data_dir)
    ca = config.ca
    if not (ca.basic_auth or ca.ntlm_auth or ca.kerberos_auth):
        raise ConfigError("ca.basic_auth, ca.ntlm_auth and ca.kerberos_auth are all false: nobody could log in",
                          hint="Enable at least one of them.")
    if ca.kerberos_auth:
        try:
            import gssapi  # noqa: F401  (optional dependency: onlineca[kerberos])
            import spnego
        except ImportError:
            raise ConfigError("ca.kerberos_auth needs pyspnego with GSSAPI",
                              hint="Install it (pip install 'onlineca[kerberos]') or set kerberos_auth = false.") from None
        if ca.keytab:
            if not Path(ca.keytab).is_file():
                raise ConfigError(f"[ca] keytab {ca.keytab}: no such file",
                                  hint="Export the keytab of HTTP/<the CA's host name> (ktadd / ktpass) there.")
            # GSSAPI's acceptor reads its keys from this variable (process-wide).
            os.environ["KRB5_KTNAME"] = f"FILE:{Path(ca.keytab).resolve()}"
    if ca.require_epa and server_cert_der is None:
        raise ConfigError("[ca] require_epa needs the CA's TLS certificate to bind logins to")
    if config.ca.ntlm_auth:
        try:
            import spnego  # noqa: F401  (optional dependency: onlineca[ntlm])
        except ImportError:
            raise ConfigError("ca.ntlm_auth needs the pyspnego package",
                              hint="Install it (pip install 'onlineca[ntlm]') or set ntlm_auth = false.") from None
        # pyspnego's acceptor reads its credential store from this variable (process-wide).
        os.environ["NTLM_USER_FILE"] = str(ntlm_path(upath))
    return CALogin(upath, ntlm=ca.ntlm_auth, basic=ca.basic_auth, kerberos=ca.kerberos_auth, domain=ca.domain,
                   realm=ca.kerberos_realm, require_epa=ca.require_epa, server_cert_der=server_cert_der)


def create_app(config: Config, data_dir: str | Path, log_dir: str | Path, *, log_format: str | None = None,
               db: Database | None = None, server_cert_der: bytes | None = None) -> web.Application:
    """The CA web application; the database is migrated and the CA keys are read here, once.
    ``server_cert_der`` is the TLS certificate served (Extended Protection binds logins to it)."""
    login = make_login(config, data_dir, server_cert_der)
    detach_log = attach_log("onlineca.ca", Path(log_dir) / "ca.log", log_format or config.logging.format,
                            config.logging.level)
    db = db or Database(config.ca_database_url, busy_timeout=config.database.busy_timeout)
    db.migrate()
    engine = eng.CAEngine(config, data_dir, db)
    iis = IISLog(Path(log_dir) / IIS_LOG_NAME)
    state = CAState(config, engine, login, iis, pki.common_name(engine.issuing.subject) or "onlineca CA", db,
                    data_dir=Path(data_dir))
    app = web.Application(middlewares=[iis_middleware], client_max_size=config.ca.max_request_bytes)
    app[CA_STATE] = state
    app.router.add_route("*", "/{tail:.*}", dispatch)
    published.attach(app, state)  # metrics and the CRL refresh task

    async def _close(_app: web.Application) -> None:
        # Requests still in a worker finish (their certificates are stored) before the pool closes.
        await asyncio.get_running_loop().run_in_executor(None, lambda: state.worker.shutdown(wait=True))
        iis.close()
        db.dispose()
        detach_log()

    app.on_cleanup.append(_close)
    return app


@dataclass
class RunningCA(RunningServer):
    """A started CA: ``url`` is its ``https://host:port/certsrv``; ``server`` is what certsrv clients take."""

    url_path: ClassVar[str] = "/certsrv"

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def engine(self) -> eng.CAEngine:
        return self.app[CA_STATE].engine

    # The --tls-cert/--tls-key the CA was started with (they win over the file on reload too).
    tls_args: tuple[str | os.PathLike[str] | None, str | os.PathLike[str] | None] = (None, None)

    async def reload(self, config: Config) -> list[str]:
        """SIGHUP: templates, users file, login methods, web certificate and connection limits
        from the new configuration, all checked before anything changes (a ``ConfigError``
        leaves the CA as it was).  The database and the CA keys need a restart."""
        state = self.app[CA_STATE]
        old = state.config
        if config.ca_database_url != old.ca_database_url:
            raise ConfigError("the CA's database url changed: restart the CA to change its database")
        cert_file, key_file = tls_files(config, state.data_dir, *self.tls_args)
        try:
            ctx = tls.server_context(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the web certificate {cert_file} / {key_file}: {exc}") from None
        login = make_login(config, state.data_dir, _served_cert_der(cert_file))
        changes = [f"[ca] {k}" for k in type(config.ca).model_fields if getattr(config.ca, k) != getattr(old.ca, k)]
        changes += [f"[connections] {k}" for k in type(config.connections).model_fields
                    if getattr(config.connections, k) != getattr(old.connections, k)]
        state.config, state.login = config, login
        state.engine.config, state.engine.templates = config, list(config.ca.templates)
        self.set_ssl_context(ctx)
        self.set_limits(ConnectionLimits(**config.connections.model_dump()))
        log.warning("configuration reloaded (SIGHUP): %s", ", ".join(changes) or "nothing changed")
        return changes


def tls_files(config: Config, data_dir: str | Path, tls_cert: str | os.PathLike[str] | None = None,
              tls_key: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """The web certificate to serve: the arguments, else ``[ca] tls_cert``, else the one ``ca init`` made."""
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if tls_cert and tls_key:
        return Path(tls_cert), Path(tls_key)
    if config.ca.tls_cert and config.ca.tls_key:
        return Path(config.ca.tls_cert), Path(config.ca.tls_key)
    ca_paths = DataDir(Path(data_dir)).ca
    return ca_paths.web_cert, ca_paths.web_key


def _served_cert_der(cert_file: str | os.PathLike[str]) -> bytes | None:
    try:
        return pki.cert_der(files.load_cert_file(cert_file)[0])
    except (OSError, ValueError, IndexError):
        return None


async def start_ca(config: Config, data_dir: str | Path, log_dir: str | Path, *, host: str | None = None,
                   port: int | None = None, tls_cert: str | os.PathLike[str] | None = None,
                   tls_key: str | os.PathLike[str] | None = None, log_format: str | None = None,
                   db: Database | None = None, http_port: int | None = None) -> RunningCA:
    """Start the CA over HTTPS (port 0: any free port); returns once it accepts connections.
    ``http_port`` (default ``[ca] http_port``; 0 off) also publishes CRLs and OCSP over plain HTTP."""
    files.private_umask()  # its database, logs and keys are its owner's only
    cert_file, key_file = tls_files(config, data_dir, tls_cert, tls_key)
    try:
        ctx = tls.server_context(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the web certificate {cert_file} / {key_file}: {exc}",
                          hint="Run 'onlineca ca init' or pass --tls-cert and --tls-key.") from None
    app = create_app(config, data_dir, log_dir, log_format=log_format, db=db,
                     server_cert_der=_served_cert_der(cert_file))
    host = host or config.ca.host
    runner, bound = await start_https(app, host, config.ca.port if port is None else port, ctx,
                                      reuse_address=True, access_log=None, logger=log,
                                      limits=ConnectionLimits(**config.connections.model_dump()))
    log.info("CA %s serving /certsrv on https://%s:%s", app[CA_STATE].ca_name, host, bound)
    try:
        await published.start_http(app, runner, host, bound, http_port)
    except BaseException:
        await runner.cleanup()
        raise
    running = RunningCA(host, bound, runner, app, ctx)
    running.tls_args = (tls_cert, tls_key)
    return running


__all__ = ["CA_STATE", "IIS_LOG_NAME", "RunningCA", "create_app", "start_ca", "tls_files"]
