"""CAPF's queue of LSCs that must be revoked: the one place that holds its SQL.

``mark_for_revocation`` is the entry point for everything that finds a certificate which must not
stay live: the inventory calls it when an LSC is replaced (``superseded``), removed by a Delete
operation or with its device (``cessationOfOperation``), or discarded before delivery; a
reconcile step (branch ``sec``) calls it for any certificate it finds that should not be live.
It is idempotent on (issuer, serial) and never commits (the caller's transaction holds it, so
the record and the change that caused it commit together).  An expired certificate is not
queued: no relying party accepts it anyway.

A row is ``pending`` until CAPF's revocation pass (``capf.revocation``) has the CA revoke it
(``revoked``, and the ``lsc`` row's state becomes ``revoked``), or ``manual`` when only an
administrator can (AD CS: web enrollment has no revoke page) until ``mark_revoked_by_hand``.
Passes on several CAPF nodes take rows with leases, as the renewal scheduler does.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from onlineca.errors import NotFound
from onlineca.store.capf_models import LSC, DeviceEvent
from onlineca.store.db import Database
from onlineca.store.revocation_models import LSCRevocation

PENDING, MANUAL, REVOKED = "pending", "manual", "revoked"
STATES = (PENDING, MANUAL, REVOKED)


def _utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def _now(now: dt.datetime | None) -> dt.datetime:
    return _utc(now) if now is not None else dt.datetime.now(dt.UTC)


def _event(s: Session, device_name: str, event: str, detail: str, actor: str, now: dt.datetime) -> None:
    s.add(DeviceEvent(device_name=device_name, event=event, detail=detail[:4000], actor=actor[:128], at=now))


def mark_for_revocation(s: Session, *, device_name: str, serial: str, issuer: str, reason: str = "superseded",
                        why: str = "", subject: str = "", not_after: dt.datetime | None = None,
                        actor: str = "capf", now: dt.datetime | None = None) -> LSCRevocation | None:
    """Record that the certificate ``serial`` (hex) of ``issuer`` (RFC 4514) must be revoked, with
    an RFC 5280 ``reason`` name and ``why`` in words; an ``LSC_REVOCATION_REQUESTED`` event on the
    device.  Returns the queue row (the earlier one if it was already queued), or None when the
    certificate has expired.  The caller commits."""
    now = _now(now)
    if not_after is not None and _utc(not_after) <= now:
        return None
    serial = serial.lower()
    existing = s.scalar(select(LSCRevocation).where(LSCRevocation.issuer == issuer, LSCRevocation.serial == serial))
    if existing is not None:
        return existing
    row = LSCRevocation(device_name=device_name, serial=serial, issuer=issuer[:1024], subject=subject[:1024],
                        not_after=not_after, reason=reason, why=why[:512], state=PENDING, requested_at=now,
                        requested_by=actor[:128], attempts=0, last_error="", done_by="")
    s.add(row)
    _event(s, device_name, "LSC_REVOCATION_REQUESTED", f"serial={serial} reason={reason}: {why}", actor, now)
    return row


def mark_lsc_for_revocation(s: Session, lsc: LSC, device_name: str, reason: str, why: str, *, actor: str = "capf",
                            now: dt.datetime | None = None) -> LSCRevocation | None:
    """``mark_for_revocation`` for an ``lsc`` row."""
    return mark_for_revocation(s, device_name=device_name, serial=lsc.serial, issuer=lsc.issuer, reason=reason,
                               why=why, subject=lsc.subject, not_after=lsc.not_after, actor=actor, now=now)


def revocation_keys(s: Session) -> set[tuple[str, str]]:
    """(issuer, serial) of every certificate in the queue, whatever its state (reconciliation)."""
    return {(r[0], r[1]) for r in s.execute(select(LSCRevocation.issuer, LSCRevocation.serial))}


def list_revocations(s: Session, state: str | None = None, limit: int = 10000) -> list[LSCRevocation]:
    q = select(LSCRevocation).order_by(LSCRevocation.requested_at, LSCRevocation.id).limit(limit)
    if state:
        q = q.where(LSCRevocation.state == state)
    return list(s.scalars(q))


def revocation_dict(row: LSCRevocation) -> dict[str, Any]:
    """As ``capf revocations list --json`` prints one, with the AD CS command that revokes it."""
    return {
        "device": row.device_name, "serial": row.serial, "issuer": row.issuer, "subject": row.subject,
        "not_after": _utc(row.not_after).isoformat() if row.not_after else None, "reason": row.reason,
        "why": row.why, "state": row.state, "requested_at": _utc(row.requested_at).isoformat(),
        "requested_by": row.requested_by, "attempts": row.attempts, "last_error": row.last_error,
        "done_at": _utc(row.done_at).isoformat() if row.done_at else None, "done_by": row.done_by,
        "certutil": certutil_command(row.serial, row.reason),
    }


# certutil -revoke takes the reason as a number (RFC 5280 CRLReason).
_CERTUTIL_REASON = {"unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3,
                    "superseded": 4, "cessationOfOperation": 5, "privilegeWithdrawn": 9, "aACompromise": 10}


def certutil_command(serial: str, reason: str) -> str:
    """The command an AD CS administrator runs on the CA to revoke it."""
    return f"certutil -revoke {serial} {_CERTUTIL_REASON.get(reason, 0)}"


# ---- the revocation pass ----------------------------------------------------------------------


def claim(db: Database, owner: str, *, now: dt.datetime | None = None, limit: int = 100,
          ttl: dt.timedelta = dt.timedelta(minutes=5)) -> list[int]:
    """Lease up to ``limit`` pending rows whose next attempt is due to ``owner``."""
    now = _now(now)
    free = or_(LSCRevocation.lease_owner.is_(None), LSCRevocation.lease_expires_at < now)
    due = or_(LSCRevocation.next_attempt_at.is_(None), LSCRevocation.next_attempt_at <= now)
    candidates = (select(LSCRevocation.id).where(LSCRevocation.state == PENDING, due, free)
                  .order_by(LSCRevocation.id).limit(limit).with_for_update(skip_locked=True))
    with db.session() as s:
        rows = s.execute(update(LSCRevocation).where(LSCRevocation.id.in_(candidates), free)
                         .values(lease_owner=owner[:128], lease_expires_at=now + ttl)
                         .returning(LSCRevocation.id).execution_options(synchronize_session=False))
        return sorted(r[0] for r in rows)


def get(s: Session, row_id: int) -> LSCRevocation:
    row = s.get(LSCRevocation, row_id)
    if row is None:
        raise NotFound(f"no revocation record {row_id}")
    return row


def _set_lsc_revoked(s: Session, row: LSCRevocation, now: dt.datetime) -> None:
    s.execute(update(LSC).where(LSC.issuer == row.issuer, LSC.serial == row.serial)
              .values(state=REVOKED, superseded_at=now).execution_options(synchronize_session=False))


def record_revoked(s: Session, row: LSCRevocation, *, by: str, detail: str = "", now: dt.datetime | None = None) -> None:
    """The CA revoked it: the queue row and the ``lsc`` row say ``revoked``; ``LSC_REVOKED`` event."""
    now = _now(now)
    row.state, row.done_at, row.done_by = REVOKED, now, by[:128]
    row.lease_owner = row.lease_expires_at = None
    row.last_error = ""
    _set_lsc_revoked(s, row, now)
    _event(s, row.device_name, "LSC_REVOKED", f"serial={row.serial} reason={row.reason}{': ' + detail if detail else ''}",
           by, now)


def record_manual(s: Session, row: LSCRevocation, why: str, *, actor: str = "capf",
                  now: dt.datetime | None = None) -> None:
    """Only an administrator can revoke it at its CA: ``manual``, with why."""
    now = _now(now)
    row.state, row.last_error = MANUAL, why[:512]
    row.lease_owner = row.lease_expires_at = None
    _event(s, row.device_name, "LSC_REVOCATION_MANUAL", f"serial={row.serial}: {why}", actor, now)


def record_failure(s: Session, row: LSCRevocation, error: str, next_attempt_at: dt.datetime) -> None:
    """This attempt failed (the CA down, refused the account...): try again at ``next_attempt_at``."""
    row.attempts += 1
    row.last_error, row.next_attempt_at = error[:512], next_attempt_at
    row.lease_owner = row.lease_expires_at = None


def mark_revoked_by_hand(s: Session, serial: str, *, by: str, issuer: str | None = None,
                         now: dt.datetime | None = None) -> LSCRevocation:
    """An administrator revoked it at the CA (``certutil -revoke``): record that."""
    q = select(LSCRevocation).where(LSCRevocation.serial == serial.strip().lower().replace(":", ""))
    if issuer:
        q = q.where(LSCRevocation.issuer == issuer)
    rows = list(s.scalars(q))
    if not rows:
        raise NotFound(f"no LSC with serial {serial} waits for revocation",
                       hint="List them with 'onlineca capf revocations list'.")
    if len(rows) > 1:
        raise NotFound(f"several issuers have an LSC with serial {serial}", hint="Name the issuer (--issuer).")
    row = rows[0]
    if row.state != REVOKED:
        record_revoked(s, row, by=by, detail="revoked at the CA by an administrator", now=now)
    return row


def counts(s: Session) -> dict[str, int]:
    """Rows by state (the metrics and the report)."""
    from sqlalchemy import func
    out = dict.fromkeys(STATES, 0)
    for state, n in s.execute(select(LSCRevocation.state, func.count()).group_by(LSCRevocation.state)):
        out[state] = n
    return out


__all__ = ["MANUAL", "PENDING", "REVOKED", "STATES", "certutil_command", "claim", "counts", "get", "list_revocations",
           "mark_for_revocation", "mark_lsc_for_revocation", "mark_revoked_by_hand", "record_failure",
           "record_manual", "record_revoked", "revocation_dict"]
