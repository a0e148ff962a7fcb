"""Who is calling: a browser session, an API token, or a verified client certificate.

Every route needs one, except the login page and the static assets.  The API takes
``Authorization: Bearer <token>``, the session cookie (an unsafe method then needs the session's
CSRF token in ``X-CSRF-Token``), or a client certificate (an unsafe method then needs the header
``X-Onlineca-Client``, which no cross-site form can send).  Pages take the session cookie only;
every state-changing form carries the session's CSRF token, compared in constant time.  The
cookie is ``__Host-`` prefixed, Secure, HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import Request

from onlineca.errors import AuthenticationRequired, PermissionDenied
from onlineca.service import accounts
from onlineca.service.core import Actor, Services, Source

SESSION_COOKIE = "__Host-onlineca-session"
LOGIN_COOKIE = "__Host-onlineca-login"
CLIENT_HEADER = "x-onlineca-client"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    actor: Actor
    method: str  # session, token, certificate
    csrf: str = ""


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def peer_certificate_name(request: Request) -> str | None:
    """The CN of the client certificate the TLS handshake verified (None without one)."""
    state = request.scope.get("state") or {}
    der = state.get("onlineca.peer_cert") if isinstance(state, dict) else None
    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    return str(names[0].value) if names else None


def _session_principal(request: Request, source: Source) -> Principal | None:
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    info = accounts.resolve_session(services(request), secret)
    if info is None:
        return None
    return Principal(Actor(info.user, info.role, source, client_address(request), info.user_id), "session",
                     info.csrf)


def api_principal(request: Request) -> Principal:
    """The API's caller (dependency of every /api route)."""
    svc = services(request)
    address = client_address(request)
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise AuthenticationRequired("only 'Authorization: Bearer <token>' is accepted")
        found = accounts.resolve_token(svc, token.strip())
        if found is None:
            raise AuthenticationRequired("the API token is unknown, expired or revoked")
        user, role = found
        return Principal(Actor(user.name, role, "api", address, user.id), "token")
    principal = _session_principal(request, "api")
    if principal is not None:
        if request.method not in SAFE_METHODS and not _same(request.headers.get("x-csrf-token", ""), principal.csrf):
            raise PermissionDenied("a session's change needs its CSRF token in X-CSRF-Token", code="ADMIN_CSRF")
        return principal
    name = peer_certificate_name(request)
    if name is not None:
        user = accounts.user_for_certificate(svc, name)
        if request.method not in SAFE_METHODS and CLIENT_HEADER not in request.headers:
            raise PermissionDenied(f"a change made with a client certificate needs the {CLIENT_HEADER} header",
                                   code="ADMIN_CSRF")
        return Principal(Actor(user.name, user.role, "api", address, user.id), "certificate")
    raise AuthenticationRequired("log in: give an API token (Authorization: Bearer ...) or a session")


def page_principal(request: Request) -> Principal:
    """The pages' caller: a session, or the login page."""
    principal = _session_principal(request, "page")
    if principal is None:
        raise AuthenticationRequired("log in to use the console")
    return principal


def _same(given: str, expected: str) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


async def check_form_csrf(request: Request, principal: Principal) -> None:
    """A state-changing form must carry the session's CSRF token."""
    form = await request.form()
    given = form.get("csrf")
    if not isinstance(given, str) or not _same(given, principal.csrf):
        raise PermissionDenied("the form's CSRF token is missing or stale", code="ADMIN_CSRF")


def check_login_csrf(request: Request, given: str | None) -> None:
    """The login form's token must match its cookie (a double submit: no session exists yet)."""
    if not _same(given or "", request.cookies.get(LOGIN_COOKIE, "")):
        raise PermissionDenied("the login form's CSRF token is missing or stale", code="ADMIN_CSRF")


def cookie_options(max_age: int | None = None) -> dict[str, object]:
    return {"path": "/", "secure": True, "httponly": True, "samesite": "strict", "max_age": max_age}


__all__ = ["CLIENT_HEADER", "LOGIN_COOKIE", "SESSION_COOKIE", "Principal", "api_principal", "check_form_csrf",
           "check_login_csrf", "client_address", "cookie_options", "page_principal", "peer_certificate_name",
           "services"]
