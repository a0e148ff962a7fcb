"""CAPF reports: devices by status, LSCs expiring, overdue operations and renewals, stale LSCs.

"Overdue" is what an administrator must act on before a phone loses secure registration: a
pending operation whose "Operation Completes By" has passed, a device whose renewal window has
been open longer than ``grace`` while its LSC is still valid, and an LSC that expired without a
successor.  "Stale" LSCs were issued (and stored) but never confirmed installed by the device.
Reads only; returns plain dicts ready for a table or ``--json``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from onlineca.policy.capf import CertStatus, Operation, as_utc, format_deadline
from onlineca.store.capf_models import LSC, Device
from onlineca.store.devices import utcnow


def _iso(when: dt.datetime | None) -> str | None:
    return as_utc(when).isoformat() if when else None


def by_status(s: Session) -> list[dict[str, Any]]:
    rows = s.execute(select(Device.status, func.count()).group_by(Device.status))
    counts: dict[str, int] = {status: n for status, n in rows}  # noqa: C416  (Row pairs, not tuples)
    return [{"status": st.ident, "display": st.display, "code": st.code, "devices": counts[st.ident]}
            for st in CertStatus if st.ident in counts]


def expiring(s: Session, within: dt.timedelta, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Installed LSCs that expire within ``within`` (already expired ones included)."""
    now = as_utc(now or utcnow())
    devices = s.scalars(select(Device).where(Device.lsc_not_after < now + within).order_by(Device.lsc_not_after))
    return [{"name": d.name, "lsc_serial": d.lsc_serial, "lsc_not_after": _iso(d.lsc_not_after),
             "expired": as_utc(d.lsc_not_after) <= now,  # type: ignore[arg-type]
             "renewal": d.renewal_for_serial == d.lsc_serial and d.operation == Operation.UPGRADE.ident,
             "status": CertStatus.from_ident(d.status).display} for d in devices]


def overdue(s: Session, now: dt.datetime | None = None, grace: dt.timedelta = dt.timedelta(days=10)
            ) -> list[dict[str, Any]]:
    now = as_utc(now or utcnow())
    stmt = select(Device).where(or_(
        (Device.operation != Operation.NONE.ident) & (Device.operation_deadline < now),
        Device.renewal_due_at < now - grace,
        Device.lsc_not_after <= now,
    )).order_by(Device.name)
    out = []
    for d in s.scalars(stmt):
        reasons = []
        if d.operation != Operation.NONE.ident and d.operation_deadline and as_utc(d.operation_deadline) < now:
            reasons.append(f"{Operation.from_ident(d.operation).display} not done by {format_deadline(d.operation_deadline)}")
        if d.lsc_not_after and as_utc(d.lsc_not_after) <= now:
            reasons.append("LSC expired without a successor")
        elif d.renewal_due_at and as_utc(d.renewal_due_at) < now - grace:
            reasons.append(f"renewal overdue: window opened {as_utc(d.renewal_due_at):%Y-%m-%d}, "
                           f"LSC expires {as_utc(d.lsc_not_after):%Y-%m-%d}")  # type: ignore[arg-type]
        out.append({"name": d.name, "reasons": reasons, "operation": d.operation, "status": CertStatus.from_ident(d.status).display,
                    "operation_completes_by": format_deadline(d.operation_deadline) if d.operation_deadline else None,
                    "lsc_not_after": _iso(d.lsc_not_after), "renewal_attempts": d.renewal_attempts,
                    "renewal_last_error": d.renewal_last_error})
    return out


def stale(s: Session, older_than: dt.timedelta = dt.timedelta(days=1), now: dt.datetime | None = None
          ) -> list[dict[str, Any]]:
    """LSCs issued at least ``older_than`` ago that the device never confirmed installing."""
    now = as_utc(now or utcnow())
    rows = s.execute(select(LSC, Device.name).join(Device, Device.id == LSC.device_id)
                     .where(LSC.state == "issued", LSC.issued_at <= now - older_than)
                     .order_by(LSC.issued_at))
    return [{"name": name, "serial": lsc.serial, "issuer": lsc.issuer, "issued_at": _iso(lsc.issued_at),
             "not_after": _iso(lsc.not_after)} for lsc, name in rows]


def full_report(s: Session, *, now: dt.datetime | None = None, expiring_within: dt.timedelta = dt.timedelta(days=30),
                grace: dt.timedelta = dt.timedelta(days=10),
                stale_after: dt.timedelta = dt.timedelta(days=1)) -> dict[str, Any]:
    now = as_utc(now or utcnow())
    return {
        "generated_at": now.isoformat(),
        "by_status": by_status(s),
        "expiring": expiring(s, expiring_within, now),
        "overdue": overdue(s, now, grace),
        "stale": stale(s, stale_after, now),
    }
