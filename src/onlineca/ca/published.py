"""What the CA serves beside /certsrv: CRLs and its certificate at AD CS's
``/CertEnroll/`` paths, OCSP at ``/ocsp``, ``/metrics``, and the revoke endpoint for a service
account, ``/certsrv/onlineca/revoke``.

``/CertEnroll/<CA name>.crl`` (and ``<CA name>+.crl``, the delta) and ``<CA name>.crt`` answer
anyone, over HTTPS and, with ``[ca] http_port``, over plain HTTP, as a revocation check must not
need TLS (RFC 5280 §4.2.1.13); so does ``/ocsp`` (RFC 6960 appendix A: ``GET /ocsp/<base64>`` and
``POST /ocsp``).  ``/metrics`` answers only the addresses in ``[ca] metrics_allow`` (loopback by
default): a scraper given a CA account could enroll with it, since every CA account is an
enrollment account, so the CA does not let one in by password.  The revoke endpoint sits under
/certsrv, so the CA's login guards it; an account in ``[ca] revokers`` may revoke the
certificates it requested itself, nothing else.  ``GET`` on it describes it (an AD CS answers
404: that is how a client learns the CA is not ours).  Hostile input gets 4xx, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily

from onlineca import pki
from onlineca.ca.auth import CA_USER
from onlineca.ca.metrics import CAMetrics
from onlineca.ca.revocation import PublicURLs, published_file
from onlineca.errors import CAError, PKIError
from onlineca.infra import workers
from onlineca.infra.metrics import certificate_expiry_family
from onlineca.pki import revocation as rev
from onlineca.proto.results import PENDING

if TYPE_CHECKING:
    from onlineca.ca.web import CAState

log = logging.getLogger("onlineca.ca")

REVOKE_PATH = "/certsrv/onlineca/revoke"
# What a client reads to learn this CA revokes over the network (GET on REVOKE_PATH).
EXTENSION = "onlineca-revoke"
EXTENSION_VERSION = 1
OCSP_MAX_BYTES = 16384
REFRESH_CHECK_SECONDS = 60.0
Page = Callable[[web.Request, "CAState"], Awaitable[web.StreamResponse]]


def plain_http_path(path: str) -> bool:
    """What the plain HTTP port serves: the published CRLs and certificate, OCSP, /metrics."""
    return path.startswith("/certenroll/") or path == "/ocsp" or path.startswith("/ocsp/") or path == "/metrics"


def route(path: str) -> Page | None:
    """The handler of a (lower-cased) path of this module, or None for /certsrv's pages."""
    if path.startswith("/certenroll/"):
        return cert_enroll
    if path == "/ocsp" or path.startswith("/ocsp/"):
        return ocsp
    if path == "/metrics":
        return metrics
    if path == REVOKE_PATH:
        return revoke
    return None


def _not_found() -> web.Response:
    from onlineca.proto.certsrv import server as pages
    return web.Response(status=404, content_type="text/html", charset="utf-8", text=pages.http_error(
        404, "File or directory not found.", "The resource you are looking for might have been removed, had its "
        "name changed, or is temporarily unavailable."))


def _method_not_allowed() -> web.Response:
    return web.Response(status=405, text="405 - HTTP verb used to access this page is not allowed.\n",
                        content_type="text/plain")


def _http_date(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


# --------------------------------------------------------------------------- /CertEnroll/


async def cert_enroll(request: web.Request, state: CAState) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed()
    revocation = state.engine.revocation
    name = request.path.rsplit("/", 1)[-1]
    what = published_file(name, revocation.ca_name, revocation.root_name)
    if what is None:
        return _not_found()
    if what == "crt":
        return web.Response(body=revocation.issuing_der, content_type="application/pkix-cert")
    if what == "root":
        arl = await state.blocking(revocation.root_crl)
        return _not_found() if arl is None else web.Response(body=arl, content_type="application/pkix-crl")
    row = await state.blocking(revocation.current, what)
    if row is None:  # a delta CRL while delta CRLs are off
        return _not_found()
    next_update = row.next_update if row.next_update.tzinfo else row.next_update.replace(tzinfo=dt.UTC)
    return web.Response(body=row.der, content_type="application/pkix-crl",
                        headers={"Expires": _http_date(next_update)})


# --------------------------------------------------------------------------- /ocsp


def _ocsp_answer(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/ocsp-response")


async def ocsp(request: web.Request, state: CAState) -> web.StreamResponse:
    if not state.config.ca.ocsp:
        return _not_found()
    if request.method == "POST":
        if request.content_length is not None and request.content_length > OCSP_MAX_BYTES:
            return _ocsp_answer(rev.ocsp_error("malformed"))
        try:
            async with asyncio.timeout(state.config.connections.body_timeout):
                der = await request.content.read(OCSP_MAX_BYTES + 1)
        except TimeoutError:
            return web.Response(status=408, text="request body timeout\n")
        if len(der) > OCSP_MAX_BYTES:
            return _ocsp_answer(rev.ocsp_error("malformed"))
    elif request.method in ("GET", "HEAD"):
        # RFC 6960 A.1: GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest}
        raw = request.rel_url.raw_path
        encoded = unquote(raw[len("/ocsp/"):]) if raw.lower().startswith("/ocsp/") else ""
        try:
            der = base64.b64decode(encoded, validate=True) if encoded else b""
        except (binascii.Error, ValueError):
            der = b""
        if not der or len(der) > OCSP_MAX_BYTES:
            return _ocsp_answer(rev.ocsp_error("malformed"))
    else:
        return _method_not_allowed()
    body, status = await state.blocking(state.engine.revocation.ocsp, der)
    if state.metrics is not None:
        state.metrics.ocsp.labels(status=status).inc()
    return _ocsp_answer(body)


# --------------------------------------------------------------------------- /metrics


def _allowed(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


async def metrics(request: web.Request, state: CAState) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed()
    allowed = state.config.ca.metrics_allow
    if state.metrics is None or not allowed:
        return _not_found()
    if not _allowed(request.remote or "", allowed):
        log.warning("/metrics refused to %s (not in [ca] metrics_allow)", request.remote)
        return web.Response(status=403, text="403 - Forbidden: this address may not read /metrics ([ca] "
                            "metrics_allow).\n", content_type="text/plain")
    body = await state.blocking(state.metrics.exposition)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def _scrape(state: CAState, now: dt.datetime) -> Iterator[GaugeMetricFamily]:
    engine = state.engine
    certs: list[tuple[str, x509.Certificate]] = [("ca_root", engine.root), ("ca_issuing", engine.issuing)]
    if state.login.server_cert_der:
        with contextlib.suppress(PKIError):
            certs.append(("ca_web", pki.load_certificate(state.login.server_cert_der)))
    responder = engine.revocation._responder
    if responder is not None:
        certs.append(("ca_ocsp", responder[0]))
    yield certificate_expiry_family(certs, now)
    next_update = GaugeMetricFamily("onlineca_ca_crl_next_update_seconds",
                                    "Seconds until the published CRL's nextUpdate", labels=["kind"])
    entries = GaugeMetricFamily("onlineca_ca_crl_entries", "Certificates the published CRL lists", labels=["kind"])
    number = GaugeMetricFamily("onlineca_ca_crl_number", "The published CRL's number", labels=["kind"])
    for kind in ("base", "delta"):
        row = engine.revocation.store.latest(kind)
        if row is None:
            continue
        nu = row.next_update if row.next_update.tzinfo else row.next_update.replace(tzinfo=dt.UTC)
        next_update.add_metric([kind], (nu - now).total_seconds())
        entries.add_metric([kind], row.entries)
        number.add_metric([kind], row.number)
    yield next_update
    yield entries
    yield number
    yield GaugeMetricFamily("onlineca_ca_revoked_certificates", "Certificates this CA revoked",
                            value=engine.revocation.store.count())
    yield GaugeMetricFamily("onlineca_ca_pending_requests", "Requests waiting for a certificate manager",
                            value=engine.requests.count(PENDING))


# --------------------------------------------------------------------------- the revoke endpoint


def _json(obj: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(obj), content_type="application/json")


async def _fields(request: web.Request) -> dict[str, str]:
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError):
            return {}
        return {str(k).lower(): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    try:
        form = await request.post()
    except Exception:  # a body aiohttp cannot read as a form: nothing
        return {}
    return {k.lower(): v for k, v in form.items() if isinstance(v, str)}


async def revoke(request: web.Request, state: CAState) -> web.StreamResponse:
    user = request[CA_USER]
    if request.method in ("GET", "HEAD"):
        return _json({"extension": EXTENSION, "version": EXTENSION_VERSION, "method": "POST",
                      "fields": ["serial", "req_id", "reason"], "reasons": list(rev.REASONS),
                      "may_revoke": user.lower() in {u.lower() for u in state.config.ca.revokers}})
    if request.method != "POST":
        return _method_not_allowed()
    if user.lower() not in {u.lower() for u in state.config.ca.revokers}:
        log.warning("revoke refused: %s is not in [ca] revokers", user)
        return _json({"error": "CA_REVOKE_FORBIDDEN", "message": f"{user} may not revoke ([ca] revokers)"}, 403)
    fields = await _fields(request)
    serial, req_id = fields.get("serial", "").strip(), fields.get("req_id", "").strip()
    if bool(serial) == bool(req_id) or (req_id and not (req_id.isdigit() and len(req_id) <= 9)):
        return _json({"error": "CA_REVOKE_BAD_REQUEST", "message": "give serial (hex) or req_id, not both"}, 400)
    domain_user = f"{state.config.ca.domain}\\{user}"
    try:
        record = await state.blocking(lambda: state.engine.revocation.revoke(
            serial=serial or None, req_id=int(req_id) if req_id else None,
            reason=fields.get("reason", "unspecified") or "unspecified", by=domain_user, requester=user))
    except PKIError as exc:
        return _json({"error": exc.code, "message": exc.message}, 400)
    except CAError as exc:
        status = {"CA_REVOKE_UNKNOWN": 404, "CA_REVOKE_FORBIDDEN": 403}.get(exc.code, 500)
        if status == 500:
            raise
        return _json({"error": exc.code, "message": exc.message}, status)
    if state.metrics is not None and not record.already:
        state.metrics.revocations.labels(reason=record.reason).inc()
    return _json({"serial": record.serial, "req_id": record.req_id, "reason": record.reason,
                  "revoked_at": record.revoked_at.isoformat(), "revoked_by": record.revoked_by,
                  "already": record.already})


# --------------------------------------------------------------------------- wiring


def attach(app: web.Application, state: CAState) -> None:
    """The CA's metrics, and the task that keeps the CRLs fresh while the CA serves."""
    metrics_ = CAMetrics(lambda: [t.name for t in state.engine.templates])
    state.metrics = metrics_
    state.engine.on_result = metrics_.observe_result
    metrics_.read_with(lambda now: _scrape(state, now))
    tasks: list[asyncio.Task[None]] = []

    async def refresh_loop() -> None:
        while True:
            try:
                await state.blocking(state.engine.revocation.refresh)
            except Exception as exc:  # the database may be busy: the next pass
                log.error("CRL refresh failed: %s", exc)
            await asyncio.sleep(REFRESH_CHECK_SECONDS)  # a period, not a synchronisation

    async def start(_app: web.Application) -> None:
        tasks.append(asyncio.get_running_loop().create_task(refresh_loop()))

    async def stop(_app: web.Application) -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


async def start_http(app: web.Application, runner: web.AppRunner, host: str, https_port: int,
                     http_port: int | None) -> int:
    """Serve the published files, OCSP and /metrics over plain HTTP on ``http_port`` (default
    ``[ca] http_port``; 0: not at all), and point the CDP/AIA at the ports really bound."""
    from onlineca.ca.web import CA_STATE
    from onlineca.infra.serving import listen

    state = app[CA_STATE]
    port = state.config.ca.http_port if http_port is None else http_port
    if port:
        site = web.TCPSite(runner, host, port, backlog=128, reuse_address=True,
                       reuse_port=workers.reuse_port() or None)
        await listen(site.start, host, port)
        log.info("CA publishing /CertEnroll/ and /ocsp on http://%s:%s", host, port)
    if not state.config.ca.public_url:
        name = state.config.ca.web_names[0] if state.config.ca.web_names else host
        base = f"http://{name}:{port}" if port else f"https://{name}:{https_port}"
        revocation = state.engine.revocation
        revocation.urls = PublicURLs(base, revocation.ca_name)
    return port


__all__ = ["EXTENSION", "REVOKE_PATH", "attach", "plain_http_path", "route", "start_http"]
