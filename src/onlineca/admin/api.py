"""The REST API under ``/api``: thin routes over ``onlineca.service``, the same functions the
command line calls.  Each route names its pydantic models (the OpenAPI document is generated
from them), takes its caller from ``auth.api_principal`` and lets every failure become a problem
details answer (``problems``).  Routes that touch the database are plain functions (FastAPI runs
them in its thread pool); the ones that reach the network (diagnose, the connection test) are
coroutines.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from starlette.background import BackgroundTask

from onlineca import pki
from onlineca.admin import schemas as m
from onlineca.admin.auth import Principal, api_principal, services
from onlineca.admin.problems import PROBLEM_JSON
from onlineca.errors import PolicyError
from onlineca.service import accounts, audit, ca, devices, health, logs, reports, settings
from onlineca.service.core import PERMISSIONS, Services

Caller = Annotated[Principal, Depends(api_principal)]
Svc = Annotated[Services, Depends(services)]

_problem = {"model": m.Problem, "content": {PROBLEM_JSON: {}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not logged in", **_problem},
    403: {"description": "The caller's role does not allow it", **_problem},
    422: {"description": "A value is not allowed", **_problem},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such thing", **_problem}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "Conflicts with what exists", **_problem}}

router = APIRouter(prefix="/api", responses=ERRORS)


def _health(request: Request) -> health.HealthState:
    state: health.HealthState = request.app.state.health
    return state


def _given(model: Any) -> dict[str, Any]:
    given: dict[str, Any] = model.model_dump(exclude_unset=True)
    return given


def _profile_given(model: Any) -> dict[str, Any]:
    """A profile's settings as given; null means "unchanged" except for renewal_days_before, where it
    means "renew at the fraction instead"."""
    return {k: v for k, v in _given(model).items() if v is not None or k == "renewal_days_before"}


# ---- accounts and tokens ---------------------------------------------------------------------

@router.get("/me", response_model=m.Me, tags=["accounts"], summary="Who am I")
def me(caller: Caller) -> dict[str, Any]:
    a = caller.actor
    return {"name": a.name, "role": a.role, "method": caller.method,
            "permissions": sorted(p for p, roles in PERMISSIONS.items() if a.role in roles)}


@router.get("/accounts", response_model=list[m.Account], tags=["accounts"])
def list_accounts(caller: Caller, svc: Svc) -> list[dict[str, Any]]:
    return accounts.list_users(svc, caller.actor)


@router.post("/accounts", response_model=m.CreatedAccount, status_code=201, tags=["accounts"], responses=CONFLICT)
def create_account(caller: Caller, svc: Svc, body: m.AccountCreate) -> dict[str, Any]:
    account, password = accounts.create_user(svc, caller.actor, body.name, body.role, body.password)
    return {"account": account, "password": password}


@router.get("/accounts/{name}", response_model=m.Account, tags=["accounts"], responses=NOT_FOUND)
def get_account(caller: Caller, svc: Svc, name: str) -> dict[str, Any]:
    return accounts.get_user(svc, caller.actor, name)


@router.patch("/accounts/{name}", response_model=m.Account, tags=["accounts"], responses={**NOT_FOUND, **CONFLICT})
def change_account(caller: Caller, svc: Svc, name: str, body: m.AccountChange) -> dict[str, Any]:
    return accounts.change_user(svc, caller.actor, name, **_given(body))


@router.delete("/accounts/{name}", status_code=204, tags=["accounts"], responses={**NOT_FOUND, **CONFLICT})
def delete_account(caller: Caller, svc: Svc, name: str) -> Response:
    accounts.delete_user(svc, caller.actor, name)
    return Response(status_code=204)


@router.get("/tokens", response_model=list[m.Token], tags=["accounts"])
def list_tokens(caller: Caller, svc: Svc,
                user: Annotated[str | None, Query(max_length=64, description="'*' for every account")] = None
                ) -> list[dict[str, Any]]:
    return accounts.list_tokens(svc, caller.actor, user)


@router.post("/tokens", response_model=m.CreatedToken, status_code=201, tags=["accounts"], responses=NOT_FOUND)
def create_token(caller: Caller, svc: Svc, body: m.TokenCreate) -> dict[str, Any]:
    info, token = accounts.create_token(svc, caller.actor, body.name, role=body.role, days=body.days, user=body.user)
    return {"token": token, "info": info}


@router.delete("/tokens/{token_id}", response_model=m.Token, tags=["accounts"], responses=NOT_FOUND)
def revoke_token(caller: Caller, svc: Svc, token_id: int) -> dict[str, Any]:
    return accounts.revoke_token(svc, caller.actor, token_id)


# ---- devices ---------------------------------------------------------------------------------

def _query(status: str | None, operation: str | None, profile: str | None, name: str | None, model: str | None,
           lsc_expires_before: dt.datetime | None, has_lsc: bool | None) -> devices.DeviceQuery:
    return devices.DeviceQuery(status=status, operation=operation, profile=profile, name=name, model=model,
                               lsc_expires_before=lsc_expires_before, has_lsc=has_lsc)


class DeviceFilters:
    """The device list's filters as query parameters (every one given must match)."""

    def __init__(self,
                 status: Annotated[str | None, Query(max_length=64, description="Certificate status")] = None,
                 operation: Annotated[str | None, Query(max_length=64)] = None,
                 profile: Annotated[str | None, Query(max_length=64)] = None,
                 name: Annotated[str | None, Query(max_length=64, description="Glob, e.g. SEP74A0*")] = None,
                 model: Annotated[str | None, Query(max_length=64)] = None,
                 lsc_expires_before: Annotated[dt.datetime | None, Query()] = None,
                 has_lsc: Annotated[bool | None, Query()] = None) -> None:
        self.query = _query(status, operation, profile, name, model, lsc_expires_before, has_lsc)


Filters = Annotated[DeviceFilters, Depends()]


@router.get("/devices", response_model=m.DevicePage, tags=["devices"])
def list_devices(caller: Caller, svc: Svc, filters: Filters,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict[str, Any]:
    total, items = devices.list_devices(svc, caller.actor, filters.query, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.post("/devices", response_model=m.CreatedDevice, status_code=201, tags=["devices"], responses=CONFLICT)
def add_device(caller: Caller, svc: Svc, body: m.DeviceCreate) -> dict[str, Any]:
    settings_ = _given(body)
    name = settings_.pop("name")
    generate = settings_.pop("generate_auth_string", False)
    device, generated = devices.add_device(svc, caller.actor, name, generate_auth_string=generate, **settings_)
    return {"device": device, "auth_string": generated}


@router.get("/devices/export.csv", response_class=PlainTextResponse, tags=["devices"],
            responses={200: {"content": {"text/csv": {}}, "description": "The bulk CSV (no auth strings)"}})
def export_devices(caller: Caller, svc: Svc, filters: Filters) -> Response:
    out = io.StringIO()
    devices.export_csv(svc, caller.actor, out, filters.query)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="devices.csv"'})


@router.post("/devices/import", response_model=m.ImportResult, tags=["devices"],
             openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}})
async def import_devices(caller: Caller, svc: Svc, request: Request,
                         mode: Annotated[str, Query(pattern="^(add|upsert)$")] = "upsert") -> dict[str, Any]:
    raw = await request.body()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PolicyError("body", "the CSV file is not UTF-8 text") from None
    from starlette.concurrency import run_in_threadpool
    result = await run_in_threadpool(devices.import_csv, svc, caller.actor, text, mode=mode)
    return {"added": result.added, "updated": result.updated}


@router.post("/devices/bulk", response_model=m.BulkResult, tags=["devices"], responses=NOT_FOUND)
def bulk(caller: Caller, svc: Svc, body: m.BulkAction) -> dict[str, Any]:
    if body.action == "delete":
        n = devices.delete_devices(svc, caller.actor, body.names)
        return {"action": "delete", "count": n, "devices": []}
    if not body.operation:
        raise PolicyError("operation", "is required for the 'operation' action")
    done = devices.start_operation(svc, caller.actor, body.names, body.operation, body.deadline)
    return {"action": "operation", "count": len(done), "devices": done}


@router.get("/devices/{name}", response_model=m.DeviceDetail, tags=["devices"], responses=NOT_FOUND)
def get_device(caller: Caller, svc: Svc, name: str) -> dict[str, Any]:
    return devices.get_device(svc, caller.actor, name)


@router.patch("/devices/{name}", response_model=m.DeviceOut, tags=["devices"], responses=NOT_FOUND)
def change_device(caller: Caller, svc: Svc, name: str, body: m.DeviceSettings) -> dict[str, Any]:
    return devices.change_device(svc, caller.actor, name, **_given(body))


@router.delete("/devices/{name}", status_code=204, tags=["devices"], responses=NOT_FOUND)
def delete_device(caller: Caller, svc: Svc, name: str) -> Response:
    devices.delete_devices(svc, caller.actor, [name])
    return Response(status_code=204)


@router.post("/devices/{name}/operation", response_model=m.DeviceOut, tags=["devices"], responses=NOT_FOUND)
def start_operation(caller: Caller, svc: Svc, name: str, body: m.OperationStart) -> dict[str, Any]:
    return devices.start_operation(svc, caller.actor, [name], body.operation, body.deadline)[0]


@router.get("/devices/{name}/lscs", response_model=list[m.LSCItem], tags=["devices"], responses=NOT_FOUND)
def lsc_history(caller: Caller, svc: Svc, name: str) -> list[dict[str, Any]]:
    return devices.lsc_history(svc, caller.actor, name)


@router.get("/devices/{name}/lscs/{serial}", response_class=PlainTextResponse, tags=["devices"],
            responses={**NOT_FOUND, 200: {"content": {"application/x-pem-file": {}}, "description": "PEM"}})
def lsc_pem(caller: Caller, svc: Svc, name: str, serial: str) -> Response:
    der = devices.lsc_der(svc, caller.actor, name, serial)
    return Response(pki.der_to_pem(der), media_type="application/x-pem-file")


@router.get("/devices/{name}/events", response_model=list[m.DeviceEvent], tags=["devices"], responses=NOT_FOUND)
def device_events(caller: Caller, svc: Svc, name: str,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
    return devices.device_events(svc, caller.actor, name, limit)


@router.get("/devices/{name}/timeline", response_model=m.Timeline, tags=["devices", "logs"])
def device_timeline(caller: Caller, svc: Svc, name: str,
                    day: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")] = None,
                    utc_offset: Annotated[str | None, Query(pattern=r"^(Z|[+-]\d\d:?\d\d)$")] = None
                    ) -> dict[str, Any]:
    return logs.trace(svc, caller.actor, name, day=day, utc_offset=utc_offset)


# ---- profiles ------------------------------------------------------------------------------

@router.get("/profiles", response_model=list[m.ProfileOut], tags=["profiles"])
def list_profiles(caller: Caller, svc: Svc) -> list[dict[str, Any]]:
    return devices.list_profiles(svc, caller.actor)


@router.post("/profiles", response_model=m.ProfileOut, status_code=201, tags=["profiles"], responses=CONFLICT)
def add_profile(caller: Caller, svc: Svc, body: m.ProfileCreate) -> dict[str, Any]:
    values = _profile_given(body)
    return devices.add_profile(svc, caller.actor, values.pop("name"), **values)


@router.get("/profiles/{name}", response_model=m.ProfileOut, tags=["profiles"], responses=NOT_FOUND)
def get_profile(caller: Caller, svc: Svc, name: str) -> dict[str, Any]:
    return devices.get_profile(svc, caller.actor, name)


@router.patch("/profiles/{name}", response_model=m.ProfileOut, tags=["profiles"], responses=NOT_FOUND)
def change_profile(caller: Caller, svc: Svc, name: str, body: m.ProfileSettings) -> dict[str, Any]:
    return devices.change_profile(svc, caller.actor, name, **_profile_given(body))


@router.delete("/profiles/{name}", status_code=204, tags=["profiles"], responses={**NOT_FOUND, **CONFLICT})
def delete_profile(caller: Caller, svc: Svc, name: str) -> Response:
    devices.delete_profile(svc, caller.actor, name)
    return Response(status_code=204)


# ---- reports -------------------------------------------------------------------------------

@router.get("/report", response_model=m.CAPFReport, tags=["reports"])
def capf_report(caller: Caller, svc: Svc,
                expiring_days: Annotated[int, Query(ge=1, le=3650)] = 30,
                grace_days: Annotated[int, Query(ge=0, le=3650)] = 10,
                stale_days: Annotated[int, Query(ge=0, le=3650)] = 1) -> dict[str, Any]:
    return reports.capf_report(svc, caller.actor, expiring_within=dt.timedelta(days=expiring_days),
                               grace=dt.timedelta(days=grace_days), stale_after=dt.timedelta(days=stale_days))


@router.get("/report.csv", response_class=PlainTextResponse, tags=["reports"],
            responses={200: {"content": {"text/csv": {}}, "description": "The CAPF report, one device a line"}})
def capf_report_csv(caller: Caller, svc: Svc) -> Response:
    out = io.StringIO()
    reports.report_csv(svc, caller.actor, out)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="capf-report.csv"'})


def dashboard_data(svc: Services, principal: Principal, state: health.HealthState) -> dict[str, Any]:
    data = reports.dashboard(svc, principal.actor)
    data["pending_ca_requests"] = ca.pending_count(svc, principal.actor)
    data["certificates"] = health.tier_certificates(svc, principal.actor)
    data["diagnose"] = health.last_diagnose(principal.actor, state)
    return data


@router.get("/dashboard", response_model=m.Dashboard, tags=["reports"])
def dashboard(caller: Caller, svc: Svc, request: Request) -> dict[str, Any]:
    return dashboard_data(svc, caller, _health(request))


# ---- CA requests ---------------------------------------------------------------------------

@router.get("/ca/requests", response_model=m.CARequestPage, tags=["ca"])
def list_ca_requests(caller: Caller, svc: Svc,
                     disposition: Annotated[str | None, Query(pattern="^(issued|pending|denied|failed)$")] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict[str, Any]:
    total, items = ca.list_requests(svc, caller.actor, disposition, limit=limit, offset=offset, newest_first=True)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/ca/requests/{req_id}", response_model=m.CARequestDetail, tags=["ca"], responses=NOT_FOUND)
def get_ca_request(caller: Caller, svc: Svc, req_id: int) -> dict[str, Any]:
    return ca.get_request(svc, caller.actor, req_id)


@router.get("/ca/requests/{req_id}/certificate", response_class=PlainTextResponse, tags=["ca"],
            responses={**NOT_FOUND, 200: {"content": {"application/x-pem-file": {}}, "description": "PEM"}})
def ca_request_certificate(caller: Caller, svc: Svc, req_id: int) -> Response:
    der = ca.certificate_der(svc, caller.actor, req_id)
    return Response(pki.der_to_pem(der), media_type="application/x-pem-file")


@router.post("/ca/requests/{req_id}/approve", response_model=m.CAResolved, tags=["ca"],
             responses={**NOT_FOUND, **CONFLICT})
def approve_ca_request(caller: Caller, svc: Svc, req_id: int) -> dict[str, Any]:
    return ca.resolve(svc, caller.actor, req_id, "approve")


@router.post("/ca/requests/{req_id}/deny", response_model=m.CAResolved, tags=["ca"],
             responses={**NOT_FOUND, **CONFLICT})
def deny_ca_request(caller: Caller, svc: Svc, req_id: int) -> dict[str, Any]:
    return ca.resolve(svc, caller.actor, req_id, "deny")


@router.post("/ca/requests/{req_id}/revoke", response_model=m.CAResolved, tags=["ca"],
             responses={**NOT_FOUND, **CONFLICT})
def revoke_ca_request(caller: Caller, svc: Svc, req_id: int, body: m.CARevokeIn) -> dict[str, Any]:
    """Revoke the certificate of an issued request (our CA only) and publish a CRL at once."""
    return ca.revoke(svc, caller.actor, req_id, body.reason)


@router.get("/lsc-revocations", response_model=list[m.LSCRevocationOut], tags=["capf"])
def list_lsc_revocations(caller: Caller, svc: Svc,
                         state: Annotated[str | None, Query(pattern="^(pending|manual|revoked)$")] = None
                         ) -> list[dict[str, Any]]:
    """LSCs CAPF replaced or whose device was deleted: revoked, pending, or manual (to revoke at an AD CS)."""
    from onlineca.service import revocations
    return revocations.list_revocations(svc, caller.actor, state, limit=1000)


@router.get("/lsc-revocations.csv", response_class=PlainTextResponse, tags=["capf"],
            responses={200: {"content": {"text/csv": {}}, "description": "CSV"}})
def export_lsc_revocations(caller: Caller, svc: Svc) -> Response:
    from onlineca.service import revocations
    return Response(revocations.export_csv(svc, caller.actor), media_type="text/csv")


# ---- diagnose and logs ---------------------------------------------------------------------

@router.get("/diagnose", response_model=m.DiagnoseReport | None, tags=["diagnose"])
def last_diagnose(caller: Caller, request: Request) -> dict[str, Any] | None:
    return health.last_diagnose(caller.actor, _health(request))


@router.post("/diagnose", response_model=m.DiagnoseReport, tags=["diagnose"])
async def run_diagnose(caller: Caller, svc: Svc, request: Request,
                       body: Annotated[m.DiagnoseRun | None, Body()] = None) -> dict[str, Any]:
    hops: set[str] | None = set(body.hops) if body is not None and body.hops else None
    state = _health(request)
    async with state.lock:  # one diagnose at a time: each one logs in to the CA
        return await health.diagnose(svc, caller.actor, state, hops)


@router.get("/logs/analyze", response_model=m.Analysis, tags=["logs"])
def analyze_logs(caller: Caller, svc: Svc) -> dict[str, Any]:
    return logs.analyze(svc, caller.actor)


@router.post("/logs/collect", tags=["logs"], response_class=FileResponse,
             responses={200: {"content": {"application/gzip": {}}, "description": "The support bundle (.tar.gz)"}})
def collect_logs(caller: Caller, svc: Svc) -> FileResponse:
    path: Path = logs.collect(svc, caller.actor)
    return FileResponse(path, media_type="application/gzip", filename="onlineca-bundle.tar.gz",
                        background=BackgroundTask(shutil.rmtree, path.parent, ignore_errors=True))


# ---- configuration -------------------------------------------------------------------------

@router.get("/config", response_model=m.ConfigOut, tags=["config"])
def read_config(caller: Caller, svc: Svc) -> dict[str, Any]:
    return settings.read(svc, caller.actor)


@router.patch("/config", response_model=m.ConfigOut, tags=["config"])
def change_config(caller: Caller, svc: Svc, body: m.ConfigChange) -> dict[str, Any]:
    return settings.change(svc, caller.actor, body.changes)


@router.get("/config/online-ca", response_model=m.OnlineCA, tags=["config"])
def online_ca(caller: Caller, svc: Svc) -> dict[str, Any]:
    return health.online_ca_settings(svc, caller.actor)


@router.put("/config/online-ca", response_model=m.OnlineCA, tags=["config"])
def change_online_ca(caller: Caller, svc: Svc, body: m.OnlineCAChange) -> dict[str, Any]:
    changes = _given(body)
    health.candidate_config(svc.config, changes)  # every value checked before the file is touched
    settings.change(svc, caller.actor, {"ra": changes})
    return health.online_ca_settings(svc, caller.actor)


@router.post("/config/online-ca/test", response_model=m.DiagnoseReport, tags=["config"])
async def test_online_ca(caller: Caller, svc: Svc, body: Annotated[m.OnlineCAChange | None, Body()] = None
                         ) -> dict[str, Any]:
    return await health.test_online_ca(svc, caller.actor, _given(body) if body is not None else {})


# ---- audit ---------------------------------------------------------------------------------

class AuditFilters:
    def __init__(self,
                 actor: Annotated[str | None, Query(max_length=128)] = None,
                 action: Annotated[str | None, Query(max_length=64, description="e.g. device.*")] = None,
                 target: Annotated[str | None, Query(max_length=256, description="e.g. device:SEP74A02FC0A675")] = None,
                 source: Annotated[str | None, Query(pattern="^(api|page|cli)$")] = None,
                 since: Annotated[dt.datetime | None, Query()] = None,
                 until: Annotated[dt.datetime | None, Query()] = None,
                 text: Annotated[str | None, Query(max_length=128)] = None) -> None:
        self.query = audit.AuditQuery(actor=actor, action=action, target=target, source=source, since=since,
                                      until=until, text=text)


@router.get("/audit", response_model=m.AuditPage, tags=["audit"])
def audit_log(caller: Caller, svc: Svc, filters: Annotated[AuditFilters, Depends()],
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict[str, Any]:
    total, items = audit.entries(svc, caller.actor, filters.query, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/audit.csv", response_class=PlainTextResponse, tags=["audit"],
            responses={200: {"content": {"text/csv": {}}, "description": "The audit log, oldest first"}})
def audit_csv(caller: Caller, svc: Svc, filters: Annotated[AuditFilters, Depends()]) -> Response:
    out = io.StringIO()
    audit.export_csv(svc, caller.actor, out, filters.query)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="audit.csv"'})


__all__ = ["dashboard_data", "router"]
