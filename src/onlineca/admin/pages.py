"""The console's pages: server-rendered HTML (Jinja2) over the same service layer as the API.

No JavaScript is needed: every action is a form (POST, with the session's CSRF token), every
chart is inline SVG drawn here; ``static/admin.js`` only adds conveniences (select all, auto
refresh) when scripts run.  A viewer sees no change buttons, and the service refuses the change
anyway.  Failures render an error page with the problem's code and fix; success redirects
(303) back with a short message in a signed, one-time cookie.  Secrets shown once (a generated
auth string, password or API token) are rendered in the answer itself, never put in a cookie.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import io
import json
import secrets
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from onlineca.admin import charts
from onlineca.admin.api import dashboard_data
from onlineca.admin.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Principal,
    check_form_csrf,
    check_login_csrf,
    client_address,
    cookie_options,
    page_principal,
    peer_certificate_name,
    services,
)
from onlineca.errors import AuthenticationRequired, PolicyError
from onlineca.policy.capf import (
    EC_KEY_SIZES,
    RSA_KEY_SIZES,
    AuthMode,
    CertStatus,
    KeyOrder,
    Operation,
    default_deadline,
    format_deadline,
)
from onlineca.service import accounts, audit, ca, devices, health, logs, reports
from onlineca.service.core import ROLES

HERE = Path(__file__).parent
FLASH_COOKIE = "__Host-onlineca-flash"
PAGE_SIZE = 50

env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
env.filters["zip"] = lambda a, b: list(zip(a, b, strict=False))
router = APIRouter(include_in_schema=False)


# ---- rendering, flash messages, forms --------------------------------------------------------

def _sign(request: Request, text: str) -> str:
    key: bytes = request.app.state.secret
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:32]


def _flash_value(request: Request, message: str) -> str:
    payload = base64.urlsafe_b64encode(message.encode()).decode()
    return f"{payload}.{_sign(request, payload)}"


def _read_flash(request: Request) -> str | None:
    raw = request.cookies.get(FLASH_COOKIE, "")
    payload, _, mac = raw.partition(".")
    if not payload or not hmac.compare_digest(mac.encode(), _sign(request, payload).encode()):
        return None
    try:
        return base64.urlsafe_b64decode(payload.encode()).decode()[:500]
    except (ValueError, UnicodeDecodeError):
        return None


def render(request: Request, template: str, principal: Principal | None, status: int = 200,
           **context: Any) -> HTMLResponse:
    flash = _read_flash(request)
    actor = principal.actor if principal else None
    html = env.get_template(template).render(
        request=request, actor=actor, csrf=principal.csrf if principal else "", flash=flash,
        can=(lambda p: actor is not None and actor.can(p)), path=request.url.path, **context)
    response = HTMLResponse(html, status_code=status)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


def redirect(request: Request, to: str, message: str | None = None) -> RedirectResponse:
    response = RedirectResponse(to, status_code=303)
    if message:
        response.set_cookie(FLASH_COOKIE, _flash_value(request, message), **cookie_options(60))  # type: ignore[arg-type]
    return response


async def _form(request: Request) -> tuple[Principal, FormData]:
    principal = page_principal(request)
    await check_form_csrf(request, principal)
    return principal, await request.form()


def _text(form: FormData, key: str, limit: int = 256) -> str:
    value = form.get(key)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


# ---- login ---------------------------------------------------------------------------------

@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", None, login_csrf=token, next=_safe_next(next),
                      certificate=peer_certificate_name(request), error=None)
    response.set_cookie(LOGIN_COOKIE, token, **cookie_options(1800))  # type: ignore[arg-type]
    return response


def _logged_in(request: Request, user: Any, method: str, target: str) -> RedirectResponse:
    secret, _ = accounts.start_session(services(request), user, method=method, address=client_address(request))
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(SESSION_COOKIE, secret, **cookie_options())  # type: ignore[arg-type]
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    check_login_csrf(request, form.get("csrf") if isinstance(form.get("csrf"), str) else None)  # type: ignore[arg-type]
    name, password, target = _text(form, "name", 64), str(form.get("password") or "")[:256], _text(form, "next", 512)
    try:
        user = await run_in_threadpool(accounts.authenticate, services(request), name, password,
                                       client_address(request))
    except AuthenticationRequired as exc:
        token = request.cookies.get(LOGIN_COOKIE, "")
        return render(request, "login.html", None, 401, login_csrf=token, next=_safe_next(target),
                      certificate=peer_certificate_name(request), error=exc.message)
    return _logged_in(request, user, "password", target)


@router.post("/login/certificate")
async def login_certificate(request: Request) -> Response:
    form = await request.form()
    check_login_csrf(request, form.get("csrf") if isinstance(form.get("csrf"), str) else None)  # type: ignore[arg-type]
    name = peer_certificate_name(request)
    if name is None:
        raise AuthenticationRequired("this connection presented no client certificate the console trusts")
    user = await run_in_threadpool(accounts.user_for_certificate, services(request), name)
    return _logged_in(request, user, "certificate", _text(form, "next", 512))


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _form(request)
    accounts.end_session(services(request), request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


# ---- dashboard -----------------------------------------------------------------------------

@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request) -> HTMLResponse:
    principal = page_principal(request)
    data = dashboard_data(services(request), principal, request.app.state.health)
    weeks = data["expiring_per_week"]
    week_chart = charts.bar_chart("expiring", "LSCs expiring per week, next 26 weeks",
                                  [dt.date.fromisoformat(w["week_of"]).strftime("%d %b") for w in weeks],
                                  {"lscs": [w["lscs"] for w in weeks]}, label_every=4)
    days = data["renewals_per_day"]
    day_chart = charts.bar_chart("renewals", "LSCs installed, renewed and failed per day, last 14 days",
                                 [dt.date.fromisoformat(d["day"]).strftime("%d %b") for d in days],
                                 {k: [d[k] for d in days] for k in ("installed", "renewed", "failed")}, label_every=2)
    return render(request, "dashboard.html", principal, data=data, week_chart=week_chart, day_chart=day_chart)


@router.post("/diagnose")
async def run_diagnose(request: Request) -> Response:
    principal, _ = await _form(request)
    state: health.HealthState = request.app.state.health
    async with state.lock:
        report = await health.diagnose(services(request), principal.actor, state)
    return redirect(request, "/#health", f"diagnose: {report['errors']} error(s), {report['warnings']} warning(s)")


@router.post("/logs/collect")
async def collect(request: Request) -> Response:
    principal, _ = await _form(request)
    path: Path = await run_in_threadpool(logs.collect, services(request), principal.actor)
    return FileResponse(path, media_type="application/gzip", filename="onlineca-bundle.tar.gz",
                        background=BackgroundTask(shutil.rmtree, path.parent, ignore_errors=True))


# ---- devices -------------------------------------------------------------------------------

def _choices() -> dict[str, Any]:
    statuses: list[Any] = [*CertStatus]  # (the functional-API enum is iterable)
    return {"operations": list(Operation), "auth_modes": list(AuthMode), "key_orders": list(KeyOrder),
            "rsa_sizes": RSA_KEY_SIZES, "ec_sizes": EC_KEY_SIZES, "statuses": statuses}


@router.get("/devices", response_class=HTMLResponse)
def device_list(request: Request, status: str = "", operation: str = "", profile: str = "", name: str = "",
                model: str = "", page: int = 1) -> HTMLResponse:
    principal = page_principal(request)
    svc = services(request)
    page = max(1, min(page, 100_000))
    query = devices.DeviceQuery(status=status[:64] or None, operation=operation[:64] or None,
                                profile=profile[:64] or None, name=name[:64] or None, model=model[:64] or None)
    total, items = devices.list_devices(svc, principal.actor, query, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    filters = {"status": status, "operation": operation, "profile": profile, "name": name, "model": model}
    base = urlencode({k: v for k, v in filters.items() if v})
    return render(request, "devices.html", principal, items=items, total=total, page=page,
                  pages=max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE), filters=filters, base=base,
                  profiles=devices.list_profiles(svc, principal.actor),
                  default_deadline=format_deadline(default_deadline(dt.datetime.now(dt.UTC))), **_choices())


@router.post("/devices/bulk")
async def device_bulk(request: Request) -> Response:
    principal, form = await _form(request)
    names = [n for n in form.getlist("names") if isinstance(n, str)][:devices.MAX_BULK]
    action = _text(form, "action", 32)
    if not names:
        raise PolicyError("names", "select at least one device")
    svc = services(request)
    if action == "delete":
        n = await run_in_threadpool(devices.delete_devices, svc, principal.actor, names)
        return redirect(request, "/devices", f"deleted {n} device(s)")
    if action == "operation":
        done = await run_in_threadpool(devices.start_operation, svc, principal.actor, names,
                                       _text(form, "operation", 64), _text(form, "deadline", 32) or None)
        return redirect(request, "/devices", f"{_text(form, 'operation', 64)} set on {len(done)} device(s)")
    raise PolicyError("action", "choose 'operation' or 'delete'")


_DEVICE_FIELDS = ("model", "description", "profile", "operation", "auth_mode", "key_order", "rsa_key_size",
                  "ec_key_size", "deadline")


def _device_settings(form: FormData, *, new: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _DEVICE_FIELDS:
        if key in form:
            value = _text(form, key)
            if new and not value:
                continue
            out[key] = value or None
    auth_string = _text(form, "auth_string", 16)
    if auth_string:
        out["auth_string"] = auth_string
    return out


@router.get("/devices/new", response_class=HTMLResponse)
def device_new(request: Request) -> HTMLResponse:
    principal = page_principal(request)
    principal.actor.require("devices.write", "add devices")
    return render(request, "device_new.html", principal, profiles=devices.list_profiles(services(request),
                                                                                          principal.actor),
                  default_deadline=format_deadline(default_deadline(dt.datetime.now(dt.UTC))), **_choices())


@router.post("/devices/new", response_class=HTMLResponse)
async def device_add(request: Request) -> Response:
    principal, form = await _form(request)
    settings = _device_settings(form, new=True)
    name = _text(form, "name", 64)
    generate = form.get("generate_auth_string") == "on"
    device, generated = await run_in_threadpool(lambda: devices.add_device(
        services(request), principal.actor, name, generate_auth_string=generate, **settings))
    if generated:
        return render(request, "shown_once.html", principal, title=f"{device['name']} added",
                      what="authentication string", secret=generated, back=f"/devices/{quote(device['name'])}")
    return redirect(request, f"/devices/{quote(device['name'])}", f"added {device['name']}")


@router.get("/devices/{name}", response_class=HTMLResponse)
def device_page(request: Request, name: str) -> HTMLResponse:
    principal = page_principal(request)
    svc = services(request)
    device = devices.get_device(svc, principal.actor, name)
    timeline = logs.trace(svc, principal.actor, device["name"], limit=200)
    return render(request, "device.html", principal, d=device, timeline=timeline,
                  lscs=devices.lsc_history(svc, principal.actor, device["name"]),
                  profiles=devices.list_profiles(svc, principal.actor), **_choices())


@router.post("/devices/{name}", response_class=HTMLResponse)
async def device_save(request: Request, name: str) -> Response:
    principal, form = await _form(request)
    settings = _device_settings(form, new=False)
    svc = services(request)
    generated = None
    if form.get("generate_auth_string") == "on":
        generated = settings["auth_string"] = f"{secrets.randbelow(10**6):06d}"
    device = await run_in_threadpool(lambda: devices.change_device(svc, principal.actor, name, **settings))
    if generated:
        return render(request, "shown_once.html", principal, title=f"{device['name']} saved",
                      what="authentication string", secret=generated, back=f"/devices/{quote(device['name'])}")
    return redirect(request, f"/devices/{quote(device['name'])}", f"saved {device['name']}")


@router.post("/devices/{name}/delete")
async def device_delete(request: Request, name: str) -> Response:
    principal, _ = await _form(request)
    await run_in_threadpool(devices.delete_devices, services(request), principal.actor, [name])
    return redirect(request, "/devices", f"deleted {name.upper()}")


# ---- CA requests ---------------------------------------------------------------------------

@router.get("/ca/requests", response_class=HTMLResponse)
def ca_requests(request: Request, disposition: str = "", page: int = 1) -> HTMLResponse:
    principal = page_principal(request)
    page = max(1, min(page, 100_000))
    wanted = disposition if disposition in ca.DISPOSITIONS else None
    total, items = ca.list_requests(services(request), principal.actor, wanted, limit=PAGE_SIZE,
                                    offset=(page - 1) * PAGE_SIZE, newest_first=True)
    from onlineca.pki.revocation import REASONS
    from onlineca.service import revocations
    svc = services(request)
    waiting = [r for r in revocations.list_revocations(svc, principal.actor, limit=1000) if r["state"] != "revoked"]
    return render(request, "ca_requests.html", principal, items=items, total=total, page=page,
                  pages=max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE), disposition=wanted or "",
                  dispositions=ca.DISPOSITIONS, ours=ca.ca_is_ours(svc), reasons=list(REASONS),
                  lsc_revocations=waiting)


@router.post("/ca/requests/{req_id}/revoke")
async def ca_revoke(request: Request, req_id: int) -> Response:
    principal, form = await _form(request)
    got = await run_in_threadpool(ca.revoke, services(request), principal.actor, req_id,
                                  _text(form, "reason", 32) or "unspecified")
    return redirect(request, "/ca/requests", f"ReqID {req_id}: {got['outcome']} ({got['revoked']})")


@router.post("/ca/requests/{req_id}/{action}")
async def ca_resolve(request: Request, req_id: int, action: str) -> Response:
    principal, _ = await _form(request)
    if action not in ("approve", "deny"):
        raise PolicyError("action", "choose approve or deny")
    got = await run_in_threadpool(ca.resolve, services(request), principal.actor, req_id, action)
    return redirect(request, "/ca/requests", f"ReqID {req_id}: {got['outcome']}")


# ---- online CA settings ----------------------------------------------------------------------

_ONLINE_FIELDS = ("connector", "ca_url", "ca_auth", "ca_user", "ca_password", "template", "trust_store",
                  "connect_timeout", "login_timeout", "enroll_timeout")


def _online_changes(form: FormData) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _ONLINE_FIELDS:
        if key in form:
            out[key] = str(form.get(key) or "")[:1024].strip() if key != "ca_password" else str(form.get(key) or "")
    return out


@router.get("/settings/online-ca", response_class=HTMLResponse)
def online_ca(request: Request) -> HTMLResponse:
    principal = page_principal(request)
    current = health.online_ca_settings(services(request), principal.actor)
    return render(request, "online_ca.html", principal, s=current, test=None, config_path=services(request).config_path)


@router.post("/settings/online-ca", response_class=HTMLResponse)
async def online_ca_save(request: Request) -> Response:
    principal, form = await _form(request)
    from onlineca.service import settings as config_service
    changes = _online_changes(form)
    svc = services(request)
    health.candidate_config(svc.config, changes)
    await run_in_threadpool(config_service.change, svc, principal.actor, {"ra": changes})
    return redirect(request, "/settings/online-ca", "online-CA settings saved (the RA applies them at its next start)")


@router.post("/settings/online-ca/test", response_class=HTMLResponse)
async def online_ca_test(request: Request) -> Response:
    principal, form = await _form(request)
    svc = services(request)
    changes = _online_changes(form)
    report = await health.test_online_ca(svc, principal.actor, changes)
    shown = {**health.online_ca_settings(svc, principal.actor, health.candidate_config(svc.config, changes))}
    return render(request, "online_ca.html", principal, s=shown, test=report, config_path=svc.config_path)


# ---- CAPF report ---------------------------------------------------------------------------

@router.get("/report", response_class=HTMLResponse)
def report_page(request: Request) -> HTMLResponse:
    principal = page_principal(request)
    return render(request, "report.html", principal, r=reports.capf_report(services(request), principal.actor))


@router.get("/report.csv")
def report_csv(request: Request) -> Response:
    principal = page_principal(request)
    out = io.StringIO()
    reports.report_csv(services(request), principal.actor, out)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="capf-report.csv"'})


# ---- audit log -----------------------------------------------------------------------------

def _audit_query(actor: str, action: str, target: str, text: str) -> audit.AuditQuery:
    return audit.AuditQuery(actor=actor[:128] or None, action=action[:64] or None, target=target[:256] or None,
                            text=text[:128] or None)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, actor: str = "", action: str = "", target: str = "", text: str = "",
               page: int = 1) -> HTMLResponse:
    principal = page_principal(request)
    page = max(1, min(page, 100_000))
    total, items = audit.entries(services(request), principal.actor, _audit_query(actor, action, target, text),
                                 limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    filters = {"actor": actor, "action": action, "target": target, "text": text}
    return render(request, "audit.html", principal, items=items, total=total, page=page,
                  pages=max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE), filters=filters,
                  base=urlencode({k: v for k, v in filters.items() if v}), dumps=json.dumps)


@router.get("/audit.csv")
def audit_csv(request: Request, actor: str = "", action: str = "", target: str = "", text: str = "") -> Response:
    principal = page_principal(request)
    out = io.StringIO()
    audit.export_csv(services(request), principal.actor, out, _audit_query(actor, action, target, text))
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="audit.csv"'})


# ---- own account, accounts -------------------------------------------------------------------

@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request) -> HTMLResponse:
    principal = page_principal(request)
    tokens = accounts.list_tokens(services(request), principal.actor)
    return render(request, "account.html", principal, tokens=tokens, roles=ROLES)


@router.post("/account/password")
async def account_password(request: Request) -> Response:
    principal, form = await _form(request)
    if str(form.get("password") or "") != str(form.get("confirm") or ""):
        raise PolicyError("password", "the two new passwords differ")
    await run_in_threadpool(lambda: accounts.change_user(
        services(request), principal.actor, principal.actor.name, password=str(form.get("password") or "")[:256],
        current_password=str(form.get("current_password") or "")[:256]))
    response = redirect(request, "/login", "password changed: log in again")
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.post("/account/tokens", response_class=HTMLResponse)
async def account_token(request: Request) -> Response:
    principal, form = await _form(request)
    try:
        days = int(_text(form, "days", 6) or "90")
    except ValueError:
        raise PolicyError("days", "is not a number") from None
    info, token = await run_in_threadpool(lambda: accounts.create_token(
        services(request), principal.actor, _text(form, "name", 64), role=_text(form, "role", 16) or None, days=days))
    return render(request, "shown_once.html", principal, title=f"API token {info['name']}", what="API token",
                  secret=token, back="/account")


@router.post("/account/tokens/{token_id}/revoke")
async def account_token_revoke(request: Request, token_id: int) -> Response:
    principal, _ = await _form(request)
    await run_in_threadpool(accounts.revoke_token, services(request), principal.actor, token_id)
    return redirect(request, "/account", f"token {token_id} revoked")


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request) -> HTMLResponse:
    principal = page_principal(request)
    svc = services(request)
    return render(request, "users.html", principal, users=accounts.list_users(svc, principal.actor), roles=ROLES,
                  tokens=accounts.list_tokens(svc, principal.actor, "*"))


@router.post("/users", response_class=HTMLResponse)
async def users_add(request: Request) -> Response:
    principal, form = await _form(request)
    account, password = await run_in_threadpool(lambda: accounts.create_user(
        services(request), principal.actor, _text(form, "name", 64), _text(form, "role", 16)))
    return render(request, "shown_once.html", principal, title=f"account {account['name']} added",
                  what="password", secret=password, back="/users")


@router.post("/users/{name}")
async def users_change(request: Request, name: str) -> Response:
    principal, form = await _form(request)
    await run_in_threadpool(lambda: accounts.change_user(
        services(request), principal.actor, name, role=_text(form, "role", 16) or None,
        disabled=form.get("disabled") == "on"))
    return redirect(request, "/users", f"account {name} saved")


@router.post("/users/{name}/password", response_class=HTMLResponse)
async def users_reset(request: Request, name: str) -> Response:
    principal, _ = await _form(request)
    password = await run_in_threadpool(accounts.reset_password, services(request), principal.actor, name)
    return render(request, "shown_once.html", principal, title=f"new password for {name}", what="password",
                  secret=password, back="/users")


__all__ = ["env", "render", "router"]
