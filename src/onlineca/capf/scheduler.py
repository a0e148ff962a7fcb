"""Automatic LSC renewal, safe on several CAPF nodes over one database.

Each run takes work with row leases: one statement claims a batch of devices for this node
(``UPDATE device SET lease_owner=node, lease_expires_at=now+ttl WHERE id IN (SELECT ... FOR UPDATE
SKIP LOCKED)``; SQLite ignores the lock clause and serialises writers instead), then the node
works on the devices it holds and gives the leases back.  Two nodes never hold the same device;
a node that dies loses its leases when they expire.  A device whose LSC's renewal window has
opened gets Install/Upgrade authenticated by its LSC with a deadline (never past the LSC's own
expiry); the old LSC stays until the device confirms the new one.  A renewal whose deadline
passes counts as a failed attempt and is scheduled again after an exponential backoff.  This
module decides and records; it never talks to a device or a CA, and never sleeps: callers pass
``now`` (tests) or call it periodically.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from onlineca.capf.inventory import (
    claim_device, get_device, profile_policy, record_event, release_device, utcnow,
)
from onlineca.capf.policy import AuthMode, CertStatus, Operation, as_utc, default_deadline, failure_status
from onlineca.store.capf_models import Device
from onlineca.store.db import Database

__all__ = ["RunResult", "SchedulerSettings", "backoff_delay", "claim_device", "record_renewal_failure",
           "release_device", "run_once"]

log = logging.getLogger("onlineca.capf.scheduler")


@dataclass(frozen=True)
class SchedulerSettings:
    node_id: str
    batch_size: int = 200
    lease_ttl: dt.timedelta = dt.timedelta(minutes=5)
    backoff_base: dt.timedelta = dt.timedelta(hours=1)
    backoff_max: dt.timedelta = dt.timedelta(days=1)
    max_batches: int = 1000  # one run stops after this many batches (a bound, not a target)


@dataclass
class RunResult:
    scheduled: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)


def backoff_delay(attempts: int, base: dt.timedelta, cap: dt.timedelta) -> dt.timedelta:
    """``base`` after the first failure, doubling after each one, never more than ``cap``."""
    if attempts <= 0:
        return dt.timedelta(0)
    return min(cap, base * (2 ** min(attempts - 1, 30)))


def _lease_free(now: dt.datetime) -> Any:
    return or_(Device.lease_owner.is_(None), Device.lease_expires_at < now)


def _due(now: dt.datetime) -> Any:
    """The LSC's window is open, it still authenticates, nothing else is pending, no backoff."""
    return and_(
        Device.renewal_due_at <= now,
        Device.lsc_serial.is_not(None),
        Device.lsc_not_after > now,
        Device.operation == Operation.NONE.ident,
        or_(Device.renewal_for_serial.is_(None), Device.renewal_for_serial != Device.lsc_serial),
        or_(Device.renewal_next_at.is_(None), Device.renewal_next_at <= now),
    )


def _late(now: dt.datetime) -> Any:
    """A renewal this scheduler set whose "Operation Completes By" has passed."""
    return and_(
        Device.operation == Operation.UPGRADE.ident,
        Device.renewal_for_serial.is_not(None),
        Device.renewal_for_serial == Device.lsc_serial,
        Device.operation_deadline < now,
    )


def _claim(db: Database, settings: SchedulerSettings, condition: Any, now: dt.datetime) -> list[int]:
    candidates = (select(Device.id).where(condition, _lease_free(now))
                  .order_by(Device.renewal_due_at, Device.id).limit(settings.batch_size)
                  .with_for_update(skip_locked=True))
    with db.session() as s:
        rows = s.execute(
            update(Device).where(Device.id.in_(candidates), _lease_free(now))
            .values(lease_owner=settings.node_id, lease_expires_at=now + settings.lease_ttl)
            .returning(Device.id)
            .execution_options(synchronize_session=False))
        return [r[0] for r in rows]


def _work(db: Database, settings: SchedulerSettings, ids: list[int], now: dt.datetime,
          action: Callable[[Session, Device], bool]) -> list[str]:
    """Run ``action`` on the devices this node holds, then give the leases back (one transaction)."""
    done: list[str] = []
    with db.session() as s:
        devices = s.scalars(select(Device).where(Device.id.in_(ids), Device.lease_owner == settings.node_id)
                            .order_by(Device.id))
        for device in devices:
            if action(s, device):
                done.append(device.name)
            device.lease_owner = None
            device.lease_expires_at = None
    return done


def run_once(db: Database, settings: SchedulerSettings, now: dt.datetime | None = None) -> RunResult:
    """Time out late renewals, then schedule every device whose renewal window is open."""
    now = as_utc(now or utcnow())
    actor = f"scheduler:{settings.node_id}"
    result = RunResult()

    def time_out(s: Session, device: Device) -> bool:
        if s.scalar(select(Device.id).where(Device.id == device.id, _late(now))) is None:
            return False
        _fail(s, device, "REQUEST_LATE", "the device did not renew before Operation Completes By",
              settings, now, actor)
        return True

    def schedule(s: Session, device: Device) -> bool:
        if s.scalar(select(Device.id).where(Device.id == device.id, _due(now))) is None:
            return False  # changed since the claim (an administrator, a session)
        deadline = min(default_deadline(now, profile_policy(device.profile).deadline_days),
                       as_utc(device.lsc_not_after))  # type: ignore[arg-type]
        device.operation = Operation.UPGRADE.ident
        device.operation_auth_mode = AuthMode.BY_LSC.ident
        device.operation_deadline = deadline
        device.status, device.status_at = CertStatus.OPERATION_PENDING.ident, now
        device.renewal_for_serial = device.lsc_serial
        device.renewal_scheduled_at = now
        record_event(s, device.name, "RENEWAL_SCHEDULED",
                     f"{Operation.UPGRADE.log} {AuthMode.BY_LSC.log} replaces serial={device.lsc_serial} "
                     f"by {deadline:%Y:%m:%d:%H}, attempt {device.renewal_attempts + 1}", actor=actor, now=now)
        log.info("%s: renewal scheduled (%s, %s), LSC serial %s expires %s", device.name, Operation.UPGRADE.log,
                 AuthMode.BY_LSC.log, device.lsc_serial, as_utc(device.lsc_not_after).isoformat())  # type: ignore[arg-type]
        return True

    for condition, action, bucket in ((_late(now), time_out, result.timed_out),
                                      (_due(now), schedule, result.scheduled)):
        for _ in range(settings.max_batches):
            ids = _claim(db, settings, condition, now)
            if not ids:
                break
            bucket.extend(_work(db, settings, ids, now, action))
    return result


def _fail(s: Session, device: Device, reason: str, detail: str, settings: SchedulerSettings,
          now: dt.datetime, actor: str) -> None:
    device.renewal_attempts += 1
    delay = backoff_delay(device.renewal_attempts, settings.backoff_base, settings.backoff_max)
    device.renewal_next_at = now + delay
    device.renewal_last_error = detail[:256]
    device.renewal_for_serial = None
    device.renewal_scheduled_at = None
    status = failure_status(Operation.UPGRADE, reason)
    device.status, device.status_at = status.ident, now
    device.operation = Operation.NONE.ident
    device.operation_deadline = None
    device.operation_auth_mode = None
    record_event(s, device.name, "RENEWAL_FAILED",
                 f"{status.log}: {detail}; attempt {device.renewal_attempts}, next at {device.renewal_next_at:%Y-%m-%d %H:%M}",
                 actor=actor, now=now)
    log.warning("%s: renewal failed (%s): %s; attempt %d, next attempt in %s", device.name, status.display, detail,
                device.renewal_attempts, delay)


def record_renewal_failure(s: Session, name: str, reason: str, detail: str, *, settings: SchedulerSettings,
                           now: dt.datetime | None = None) -> Device:
    """A renewal session failed for good (``reason`` as in ``policy.failure_status``): back off."""
    now = as_utc(now or utcnow())
    device = get_device(s, name)
    _fail(s, device, reason, detail, settings, now, f"capf:{settings.node_id}")
    s.flush()
    return device
