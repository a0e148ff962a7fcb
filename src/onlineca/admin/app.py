"""The console's application: the API, the pages, the static assets, and what guards them all.

``make_app(services)`` builds a FastAPI application: ``/api/...`` (OpenAPI 3.1 document at
``/api/openapi.json``, generated from the pydantic models; no Swagger page, which would load
scripts from a CDN), the pages, and ``/static`` (shipped in the wheel).  Around them, as plain
ASGI middleware: a body size limit, a per-request time limit, and security headers (a strict
Content-Security-Policy that allows nothing but this origin, no framing, no referrer, no caching
of authenticated answers).  Every error becomes RFC 9457 problem details under ``/api`` and an
error page elsewhere (a missing login: a redirect to ``/login``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onlineca import __version__
from onlineca.admin import api, pages, problems
from onlineca.admin.auth import api_principal
from onlineca.errors import AuthenticationRequired, LoginThrottled, OnlineCAError
from onlineca.service.core import Services
from onlineca.service.health import HealthState

log = logging.getLogger("onlineca.admin")
HERE = Path(__file__).parent

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"strict-transport-security", b"max-age=31536000"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class Guard:
    """Limits and headers around the whole application (pure ASGI, so streamed bodies count)."""

    def __init__(self, app: ASGIApp, *, max_body: int, timeout: float) -> None:
        self.app, self.max_body, self.timeout = app, max_body, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _send_problem(send, problems.problem(413, "ADMIN", f"the body is larger than {self.max_body} bytes",
                                                       hint="Send less at once (the limit is [admin] max_body_bytes)."))
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise OnlineCAError(f"the body is larger than {self.max_body} bytes", code="ADMIN")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                path = scope.get("path", "")
                extra = list(SECURITY_HEADERS)
                if not path.startswith("/static/"):
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, limited_receive, guarded_send), self.timeout)
        except TimeoutError:
            if not started:
                await _send_problem(send, problems.problem(504, "ADMIN", f"the request took longer than {self.timeout} s",
                                                           hint="Try again; raise [admin] request_timeout if it "
                                                                "keeps happening."))


async def _send_problem(send: Send, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": body["status"],
                "headers": [(b"content-type", problems.PROBLEM_JSON.encode()),
                            (b"content-length", str(len(data)).encode()), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": data})


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api")


def _error_page(request: Request, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    try:
        from onlineca.admin.auth import _session_principal
        principal = _session_principal(request, "page")
    except OnlineCAError:
        principal = None
    response = pages.render(request, "error.html", principal, int(body["status"]), problem=body)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _answer(request: Request, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    if _is_api(request):
        return problems.response(body, headers)
    return _error_page(request, body, headers)


def build(svc: Services, *, health: HealthState | None = None) -> FastAPI:
    """The console's FastAPI application for ``svc`` (its databases migrated by the caller)."""
    app = FastAPI(title="onlineca administration API", version=__version__, openapi_url="/api/openapi.json",
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  description="Devices, operations, reports, CA requests, diagnose, logs, configuration and "
                              "accounts of an onlineca installation. Authenticate with 'Authorization: Bearer "
                              "<token>' (make one on the console's Account page or with 'onlineca admin tokens "
                              "create'). Errors are RFC 9457 problem details with onlineca's error codes.")
    app.state.services = svc
    app.state.health = health or HealthState()
    app.state.secret = secrets.token_bytes(32)

    @app.middleware("http")
    async def openapi_needs_login(request: Request, call_next: Any) -> Response:
        if request.url.path == "/api/openapi.json":
            try:
                api_principal(request)
            except OnlineCAError as exc:
                return problems.response(problems.from_error(exc, request.url.path))
        response: Response = await call_next(request)
        return response

    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(OnlineCAError)
    async def onlineca_error(request: Request, exc: OnlineCAError) -> Response:
        if isinstance(exc, AuthenticationRequired) and not _is_api(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, LoginThrottled) else {}
        if isinstance(exc, AuthenticationRequired):
            headers["WWW-Authenticate"] = 'Bearer realm="onlineca"'
        return _answer(request, problems.from_error(exc, request.url.path), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", ""))}
                  for e in exc.errors()][:50]
        first = errors[0] if errors else {"field": "request", "message": "is not valid"}
        return _answer(request, problems.problem(422, "ADMIN_VALIDATION", f"{first['field']}: {first['message']}",
                                                 instance=request.url.path, errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "ADMIN_NOT_FOUND" if exc.status_code == 404 else "ADMIN"
        return _answer(request, problems.problem(exc.status_code, code, str(exc.detail), instance=request.url.path),
                       dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _answer(request, problems.problem(500, "ADMIN", "an unexpected error happened; it is in the log",
                                                 instance=request.url.path))

    return app


def make_app(svc: Services, *, health: HealthState | None = None) -> Guard:
    """The console as served: ``build`` inside its limits and headers (``.app`` is the FastAPI one)."""
    return Guard(build(svc, health=health), max_body=svc.config.admin.max_body_bytes,
                 timeout=svc.config.admin.request_timeout)


__all__ = ["CSP", "Guard", "build", "make_app"]
