"""The fleet in numbers, for CAPF's metrics and alerts: one snapshot, a few
aggregate queries, never a row per device in Python.

``fleet_snapshot`` counts devices by status and operation, installed LSCs by days to expiry
(cumulative buckets: a histogram, not a series per device), LSCs expiring within N days without a
renewal scheduled, the renewal scheduler's backlog (windows open, not yet scheduled; renewals in
progress; renewals failing) and the revocation queue by state; and, for the alerts, bounded lists
of the devices and certificates behind the conditions (``limit`` each).  Read-only, one
transaction; the caller runs it off the event loop.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from onlineca.store.capf_models import Device
from onlineca.store.lsc_revocations import MANUAL, counts as revocation_counts
from onlineca.store.revocation_models import LSCRevocation

# Days-to-expiry bucket bounds of the LSC histogram (le="0" counts the expired).
EXPIRY_BUCKETS = (0, 1, 7, 14, 30, 60, 90, 180, 365, 730)
# "expiring within N days without a renewal scheduled" is published for these N.
EXPIRY_WINDOWS = (7, 14, 30)


@dataclass
class FleetSnapshot:
    at: dt.datetime
    devices: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_operation: dict[str, int] = field(default_factory=dict)
    lsc_installed: int = 0
    expiry_buckets: list[tuple[float, int]] = field(default_factory=list)  # (le days, cumulative count)
    expiry_days_sum: float = 0.0
    expiring_unscheduled: dict[int, int] = field(default_factory=dict)     # N days -> count
    renewal_backlog: int = 0        # window open, not yet scheduled
    renewals_in_progress: int = 0   # scheduled (Install/Upgrade by LSC), not yet done
    renewals_failing: int = 0       # devices whose last renewal attempt failed
    revocations: dict[str, int] = field(default_factory=dict)
    # For the alerts: the devices and certificates behind the conditions (bounded).
    unscheduled_devices: list[tuple[str, dt.datetime]] = field(default_factory=list)
    failing_devices: list[tuple[str, int, str]] = field(default_factory=list)
    manual_revocations: list[tuple[str, str, str]] = field(default_factory=list)  # (serial, device, issuer)


def _utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def _unscheduled(now: dt.datetime, days: int) -> object:
    """An installed LSC expiring within ``days`` and no operation pending for its device (no
    renewal scheduled, nor any other operation that would give it a new one)."""
    return and_(Device.lsc_serial.is_not(None), Device.lsc_not_after <= now + dt.timedelta(days=days),
                Device.operation == "OPERATION_NONE")


def fleet_snapshot(s: Session, now: dt.datetime | None = None, *, lsc_expiry_days: int = 14,
                   renewal_failures: int = 2, limit: int = 1000) -> FleetSnapshot:
    now = _utc(now or dt.datetime.now(dt.UTC))
    snap = FleetSnapshot(at=now)
    snap.by_status = {str(st): int(n) for st, n in s.execute(select(Device.status, func.count()).group_by(Device.status))}
    snap.by_operation = {str(op): int(n) for op, n in s.execute(
        select(Device.operation, func.count()).group_by(Device.operation))}
    snap.devices = sum(snap.by_status.values())
    has_lsc = Device.lsc_serial.is_not(None)
    if s.get_bind().dialect.name == "postgresql":
        seconds_left = func.extract("epoch", Device.lsc_not_after) - now.timestamp()
    else:  # SQLite keeps ISO text: julianday() reads it
        seconds_left = (func.julianday(Device.lsc_not_after) - 2440587.5) * 86400.0 - now.timestamp()
    columns = [func.count(), func.sum(seconds_left)]
    columns += [func.sum(case((Device.lsc_not_after <= now + dt.timedelta(days=d), 1), else_=0))
                for d in EXPIRY_BUCKETS]
    columns += [func.sum(case((_unscheduled(now, n), 1), else_=0)) for n in EXPIRY_WINDOWS]  # type: ignore[arg-type]
    row = s.execute(select(*columns).where(has_lsc)).one()
    snap.lsc_installed = int(row[0] or 0)
    snap.expiry_days_sum = float(row[1] or 0) / 86400.0
    buckets = row[2:2 + len(EXPIRY_BUCKETS)]
    snap.expiry_buckets = [(float(d), int(v or 0)) for d, v in zip(EXPIRY_BUCKETS, buckets, strict=True)]
    snap.expiry_buckets.append((float("inf"), snap.lsc_installed))
    snap.expiring_unscheduled = {n: int(v or 0) for n, v in zip(EXPIRY_WINDOWS, row[2 + len(EXPIRY_BUCKETS):],
                                                                strict=True)}
    due = and_(or_(Device.client_flow.is_(None), Device.client_flow != "public"), Device.renewal_due_at <= now,
               has_lsc, Device.lsc_not_after > now, Device.operation == "OPERATION_NONE",
               or_(Device.renewal_next_at.is_(None), Device.renewal_next_at <= now))
    snap.renewal_backlog = s.scalar(select(func.count()).select_from(Device).where(due)) or 0
    snap.renewals_in_progress = s.scalar(select(func.count()).select_from(Device).where(
        Device.operation == "OPERATION_UPGRADE", Device.renewal_for_serial.is_not(None))) or 0
    snap.renewals_failing = s.scalar(select(func.count()).select_from(Device).where(Device.renewal_attempts > 0)) or 0
    snap.revocations = revocation_counts(s)
    snap.unscheduled_devices = [(n, _utc(t)) for n, t in s.execute(
        select(Device.name, Device.lsc_not_after).where(_unscheduled(now, lsc_expiry_days))  # type: ignore[arg-type]
        .order_by(Device.lsc_not_after, Device.name).limit(limit)) if t is not None]
    snap.failing_devices = [(n, a, e) for n, a, e in s.execute(
        select(Device.name, Device.renewal_attempts, Device.renewal_last_error)
        .where(Device.renewal_attempts >= renewal_failures).order_by(Device.name).limit(limit))]
    snap.manual_revocations = [(serial, device, issuer) for serial, device, issuer in s.execute(
        select(LSCRevocation.serial, LSCRevocation.device_name, LSCRevocation.issuer)
        .where(LSCRevocation.state == MANUAL).order_by(LSCRevocation.id).limit(limit))]
    return snap


__all__ = ["EXPIRY_BUCKETS", "EXPIRY_WINDOWS", "FleetSnapshot", "fleet_snapshot"]
