"""Reports: the CAPF report (as ``capf report`` prints it, and as the vendor's per-device CSV), and
the numbers the dashboard draws (devices by status, LSCs expiring per week, installs, renewals
and failures per day).  Reads only.
"""

from __future__ import annotations

import csv
import datetime as dt
from typing import Any, TextIO

from sqlalchemy import select

from onlineca.policy.capf import AuthMode, CertStatus, KeyOrder, Operation, as_utc, format_deadline
from onlineca.service.core import Actor, Services
from onlineca.store import LSC, Device, DeviceEvent, device_report as report

REPORT_CSV_COLUMNS = ["DEVICE NAME", "DESCRIPTION", "MODEL", "PROFILE", "CERTIFICATE OPERATION",
                      "AUTHENTICATION MODE", "KEY ORDER", "OPERATION COMPLETES BY", "CERTIFICATE STATUS",
                      "STATUS TIME", "LSC SERIAL", "LSC ISSUER", "LSC EXPIRES", "RENEWAL DUE", "OVERDUE"]


def capf_report(svc: Services, actor: Actor, *, now: dt.datetime | None = None,
                expiring_within: dt.timedelta = dt.timedelta(days=30), grace: dt.timedelta = dt.timedelta(days=10),
                stale_after: dt.timedelta = dt.timedelta(days=1)) -> dict[str, Any]:
    """By status, expiring, overdue and stale, as ``onlineca capf report --json``."""
    actor.require("read", "read the CAPF report")
    with svc.session() as s:
        return report.full_report(s, now=now, expiring_within=expiring_within, grace=grace, stale_after=stale_after)


def report_csv(svc: Services, actor: Actor, out: TextIO, *, now: dt.datetime | None = None,
               grace: dt.timedelta = dt.timedelta(days=10)) -> int:
    """The CAPF report as a CSV file: one device a line, with its status, LSC and why it is overdue
    (never an auth string)."""
    actor.require("read", "read the CAPF report")
    now = as_utc(now or dt.datetime.now(dt.UTC))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REPORT_CSV_COLUMNS)
    n = 0
    with svc.session() as s:
        overdue = {r["name"]: "; ".join(r["reasons"]) for r in report.overdue(s, now, grace)}
        for d in s.scalars(select(Device).order_by(Device.name)):
            writer.writerow([
                d.name, d.description, d.model, d.profile.name if d.profile else "",
                _words(Operation, d.operation), _words(AuthMode, d.auth_mode) if d.auth_mode else "(profile)",
                _words(KeyOrder, d.key_order) if d.key_order else "(profile)",
                format_deadline(d.operation_deadline) if d.operation_deadline else "",
                _words(CertStatus, d.status),
                as_utc(d.status_at).strftime("%Y-%m-%d %H:%M:%S") if d.status_at else "",
                d.lsc_serial or "", d.lsc_issuer or "",
                as_utc(d.lsc_not_after).strftime("%Y-%m-%d %H:%M:%S") if d.lsc_not_after else "",
                as_utc(d.renewal_due_at).strftime("%Y-%m-%d") if d.renewal_due_at else "",
                overdue.get(d.name, ""),
            ])
            n += 1
    return n


def _words(enum: Any, ident: str) -> str:
    """The administrators' words for a stored identifier."""
    return str(enum(ident).display)


def _week_start(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def dashboard(svc: Services, actor: Actor, *, now: dt.datetime | None = None, weeks: int = 26,
              days: int = 14) -> dict[str, Any]:
    """The dashboard's numbers: devices by status; installed LSCs expiring in each of the next
    ``weeks`` weeks (Monday to Sunday, UTC; the first bucket also holds those already expired);
    LSCs installed per day over the last ``days`` days, split into first installs and renewals
    (the device had an LSC before), and Install/Upgrade failures per day."""
    actor.require("read", "read the dashboard")
    now = as_utc(now or dt.datetime.now(dt.UTC))
    today = now.date()
    first_week = _week_start(today)
    horizon = dt.datetime.combine(first_week + dt.timedelta(weeks=weeks), dt.time(), dt.UTC)
    start_day = today - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(start_day, dt.time(), dt.UTC)
    expiring = [0] * weeks
    per_day = {start_day + dt.timedelta(days=i): {"installed": 0, "renewed": 0, "failed": 0} for i in range(days)}
    with svc.session() as s:
        by_status = report.by_status(s)
        total = sum(r["devices"] for r in by_status)
        for not_after in s.scalars(select(Device.lsc_not_after).where(Device.lsc_not_after.is_not(None),
                                                                         Device.lsc_not_after < horizon)):
            if not_after is None:
                continue
            index = max(0, (as_utc(not_after).date() - first_week).days // 7)
            if index < weeks:
                expiring[index] += 1
        installed = s.execute(select(LSC.device_id, LSC.issued_at, LSC.installed_at)
                              .where(LSC.installed_at.is_not(None), LSC.installed_at >= since))
        rows = list(installed)
        firsts: dict[int, dt.datetime] = {}
        if rows:
            ids = {r[0] for r in rows}
            for device_id, issued_at in s.execute(select(LSC.device_id, LSC.issued_at).where(LSC.device_id.in_(ids))):
                when = as_utc(issued_at)
                if device_id not in firsts or when < firsts[device_id]:
                    firsts[device_id] = when
        for device_id, issued_at, installed_at in rows:
            if installed_at is None:
                continue
            day = as_utc(installed_at).date()
            if day in per_day:
                per_day[day]["renewed" if as_utc(issued_at) > firsts.get(device_id, as_utc(issued_at))
                             else "installed"] += 1
        for at in s.scalars(select(DeviceEvent.at).where(
                DeviceEvent.event == "STATUS", DeviceEvent.at >= since,
                DeviceEvent.detail.like("CERT_STATUS_UPGRADE_FAILED%"))):
            day = as_utc(at).date()
            if day in per_day:
                per_day[day]["failed"] += 1
        pending = sum(r["devices"] for r in by_status if r["status"] == "CERT_STATUS_OPERATION_PENDING")
    return {
        "generated_at": now.isoformat(),
        "devices": total,
        "pending": pending,
        "by_status": by_status,
        "expiring_per_week": [{"week_of": (first_week + dt.timedelta(weeks=i)).isoformat(), "lscs": n}
                              for i, n in enumerate(expiring)],
        "renewals_per_day": [{"day": d.isoformat(), **v} for d, v in per_day.items()],
    }


__all__ = ["REPORT_CSV_COLUMNS", "capf_report", "dashboard", "report_csv"]
