"""The CA's requests: list, show, approve (issue), deny and revoke, as a certificate manager does.

Reads ``ca_request`` in the CA's database (``Services.ca_db``); approving and revoking sign with
the CA's key (a revocation publishes a CRL at once), so they need the CA in this data dir
(``ca.engine.CAEngine``, as ``onlineca ca requests approve`` and ``onlineca ca revoke``): where
the CA is a real AD CS, revoke there (``ca_is_ours`` says which).  Each listed request says
whether its certificate was revoked.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from onlineca import pki
from onlineca.ca import engine as eng
from onlineca.config import DataDir
from onlineca.errors import AdminError, NotFound, PolicyError
from onlineca.policy.capf import as_utc
from onlineca.proto.certsrv import hresults
from onlineca.service import audit
from onlineca.service.core import Actor, Services
from onlineca.store.models import CARequest
from onlineca.store.revocation_models import CARevocation

DISPOSITIONS = (eng.ISSUED, eng.PENDING, eng.DENIED, eng.FAILED)
REQUEST_KEYS = ("req_id", "requester", "template", "subject", "disposition", "hresult", "message", "serial",
                "submitted_at", "resolved_by")


def request_dict(r: CARequest, revoked: str | None = None) -> dict[str, Any]:
    """As ``onlineca ca requests list --json`` prints one request (``revoked``: the reason, when
    its certificate was revoked)."""
    return {"req_id": r.req_id, "requester": r.requester, "template": r.template, "subject": r.subject,
            "disposition": r.disposition, "hresult": hresults.hresult_hex(r.hresult),
            "message": " ".join(r.disposition_message.split()), "serial": r.serial,
            "submitted_at": r.submitted_at.isoformat() if r.submitted_at else None,
            "resolved_by": r.resolved_by, "revoked": revoked}


def _detail(r: CARequest, revocation: CARevocation | None = None) -> dict[str, Any]:
    out = request_dict(r, revocation.reason if revocation is not None else None)
    out["revoked_at"] = as_utc(revocation.revoked_at).isoformat() if revocation is not None else None
    out["not_after"] = as_utc(r.not_after).isoformat() if r.not_after else None
    out["resolved_at"] = as_utc(r.resolved_at).isoformat() if r.resolved_at else None
    out["certificate_pem"] = pki.der_to_pem(r.cert_der).decode() if r.cert_der else None
    return out


def list_requests(svc: Services, actor: Actor, disposition: str | None = None, *, limit: int = 100,
                  offset: int = 0, newest_first: bool = False) -> tuple[int, list[dict[str, Any]]]:
    actor.require("read", "list CA requests")
    if disposition and disposition not in DISPOSITIONS:
        raise PolicyError("disposition", f"{disposition!r} is not one of {', '.join(DISPOSITIONS)}")
    clauses = [CARequest.disposition == disposition] if disposition else []
    order = CARequest.req_id.desc() if newest_first else CARequest.req_id
    with svc.ca_db.session() as s:
        total = s.scalar(select(func.count()).select_from(CARequest).where(*clauses)) or 0
        rows = list(s.scalars(select(CARequest).where(*clauses).order_by(order).offset(offset).limit(limit)))
        serials = [r.serial for r in rows if r.serial]
        revoked = {v.serial: v.reason for v in s.scalars(select(CARevocation).where(
            CARevocation.serial.in_(serials)))} if serials else {}
        return total, [request_dict(r, revoked.get(r.serial or "")) for r in rows]


def get_request(svc: Services, actor: Actor, req_id: int) -> dict[str, Any]:
    actor.require("read", "read CA requests")
    with svc.ca_db.session() as s:
        row = s.get(CARequest, req_id)
        if row is None:
            raise NotFound(f"no request with ReqID {req_id}", hint="List them with 'onlineca ca requests list'.")
        return _detail(row, s.get(CARevocation, row.serial) if row.serial else None)


def certificate_der(svc: Services, actor: Actor, req_id: int) -> bytes:
    actor.require("read", "read certificates")
    with svc.ca_db.session() as s:
        row = s.get(CARequest, req_id)
        if row is None:
            raise NotFound(f"no request with ReqID {req_id}")
        if not row.cert_der:
            raise NotFound(f"ReqID {req_id} is {row.disposition}: no certificate")
        return bytes(row.cert_der)


def resolve(svc: Services, actor: Actor, req_id: int, action: str) -> dict[str, Any]:
    """``approve`` (issue, re-checked against the template) or ``deny`` a pending request."""
    actor.require("ca.resolve", f"{action} CA requests")
    if action not in ("approve", "deny"):
        raise PolicyError("action", f"{action!r} is not 'approve' or 'deny'")
    before = get_request(svc, actor, req_id)
    engine = eng.CAEngine(svc.config, svc.data_dir, svc.ca_db)
    outcome = engine.approve(req_id, actor.name) if action == "approve" else engine.deny(req_id, actor.name)
    after = get_request(svc, actor, req_id)
    keep = ("disposition", "hresult", "message", "serial", "resolved_by")
    with svc.session() as s:
        audit.record(s, actor, f"ca.{action}", f"ca_request:{req_id}", {k: before[k] for k in keep},
                     {k: after[k] for k in keep})
    after["outcome"] = outcome.disposition
    return after


def ca_is_ours(svc: Services) -> bool:
    """The CA's keys are in this data dir: our CA, which can revoke (an AD CS revokes in its own console)."""
    return DataDir(svc.data_dir).ca.issuing_key.exists()


def revoke(svc: Services, actor: Actor, req_id: int, reason: str = "unspecified") -> dict[str, Any]:
    """Revoke the certificate issued for ``req_id`` (RFC 5280 ``reason``) and publish a CRL."""
    actor.require("ca.revoke", "revoke certificates")
    if not ca_is_ours(svc):
        raise AdminError(f"no CA in {DataDir(svc.data_dir).ca.dir}: revoke at the CA that issued it",
                         code="ADMIN_UNSUPPORTED")
    before = get_request(svc, actor, req_id)
    engine = eng.CAEngine(svc.config, svc.data_dir, svc.ca_db)
    record = engine.revocation.revoke(req_id=req_id, reason=reason, by=actor.trail)
    after = get_request(svc, actor, req_id)
    with svc.session() as s:
        audit.record(s, actor, "ca.revoke", f"ca_request:{req_id}", {"revoked": before["revoked"]},
                     {"revoked": after["revoked"], "serial": record.serial})
    after["outcome"] = "already revoked" if record.already else "revoked"
    return after


def pending_count(svc: Services, actor: Actor) -> int:
    return list_requests(svc, actor, eng.PENDING, limit=1)[0]


__all__ = ["DISPOSITIONS", "REQUEST_KEYS", "ca_is_ours", "certificate_der", "get_request", "list_requests", "pending_count",
           "request_dict", "resolve", "revoke"]
