"""Automatic LSC renewal, safe on several CAPF nodes over one database.

Each batch is one transaction: one UPDATE claims and schedules up to ``batch_size`` devices at
once (``WITH picked AS (SELECT id ... ORDER BY renewal_due_at LIMIT n FOR UPDATE SKIP LOCKED)
UPDATE device SET operation=... FROM picked ... RETURNING ...``).  On PostgreSQL the devices' audit
events are written by the same statement (``INSERT INTO device_event SELECT ... FROM`` the UPDATE's
RETURNING, the detail built by the server); on SQLite they follow in one ``executemany``.  The claim
needs no lease: it never outlives the transaction that acts on it.  On PostgreSQL two nodes skip
each other's locked rows, so each device is scheduled exactly once; SQLite ignores the lock clause
and serialises writers instead.  A device leased by a session (or by a node that died, until its
lease expires) is left alone, and a device an administrator or a session changed meanwhile is
re-checked in the same WHERE.  A device whose LSC's renewal window has opened
(``renewal_due_at``, stored when the LSC is recorded) gets Install/Upgrade authenticated by its
LSC with a deadline (its profile's days, never past the LSC's own expiry); the old LSC stays until
the device confirms the new one.  A renewal whose deadline passes counts as a failed attempt and
is scheduled again after an exponential backoff.  This module decides and records; it never
talks to a device or a CA, never loads devices one by one, and never sleeps: callers pass ``now``
(tests) or call it periodically.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String, and_, case, cast, func, insert, literal, or_, select, text, update
from sqlalchemy.orm import Session

from onlineca.policy.capf import AuthMode, CertStatus, Operation, as_utc, default_deadline, failure_status
from onlineca.store.capf_models import Device, DeviceEvent, Profile
from onlineca.store.db import Database
from onlineca.store.devices import DEFAULT_PROFILE, claim_device, get_device, insert_events, release_device, utcnow

__all__ = ["RunResult", "SchedulerSettings", "backoff_delay", "claim_device", "record_renewal_failure",
           "release_device", "run_once"]

log = logging.getLogger("onlineca.capf.scheduler")


@dataclass(frozen=True)
class SchedulerSettings:
    node_id: str
    batch_size: int = 5000  # devices per UPDATE, one transaction each (bench/scheduler_bench.py)
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
    return min(cap, base * (1 << min(attempts - 1, 30)))


def _lease_free(now: dt.datetime) -> Any:
    return or_(Device.lease_owner.is_(None), Device.lease_expires_at < now)


def _due(now: dt.datetime) -> Any:
    """The LSC's window is open, it still authenticates, nothing else is pending, no backoff, and
    the device spoke the extended flow (a public-flow phone cannot answer a renewal's LSC
    challenge: it renews by asking again, ``capf_sessions.start_session``)."""
    return and_(
        or_(Device.client_flow.is_(None), Device.client_flow != "public"),
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


def _take(settings: SchedulerSettings, condition: Any, now: dt.datetime, order: Any) -> Any:
    """The condition of one batch's UPDATE: up to ``batch_size`` devices matching ``condition``,
    first by ``order``, whose lease is free, locked for this transaction (rows another node has
    locked are skipped).

    ``order`` follows ``operation`` in the index that serves ``condition`` (``renewal_due_at``
    for due devices, ``operation_deadline`` for late renewals), so each batch reads the rows
    it takes, not every device already pending before it.
    """
    # A CTE joined by id (``UPDATE ... FROM picked``), evaluated once: PostgreSQL never inlines
    # a locking one.  As ``id IN (subquery)`` repeated with the conditions, a fresh table's
    # estimates (one row) made the planner scan every due device against the batch: quadratic.
    # The conditions need no second check outside: locking a row re-evaluates them on its newest
    # version (READ COMMITTED), and SQLite runs the statement as its one writer.
    picked = (select(Device.id).where(condition, _lease_free(now))
              .order_by(order, Device.id).limit(settings.batch_size)
              .with_for_update(skip_locked=True)).cte("picked")
    return Device.id == picked.c.id


def _at(when: dt.datetime) -> Any:
    """A timestamp parameter typed as the columns are, so SQLite stores and compares it like theirs."""
    return literal(when, Device.status_at.type)


def _deadline_days(db: Database) -> set[int]:
    """The distinct ``deadline_days`` of the profiles (and the built-in one): read once a run."""
    with db.session() as s:
        return {DEFAULT_PROFILE.deadline_days, *s.scalars(select(Profile.deadline_days).distinct())}


def _deadline(known: set[int], now: dt.datetime) -> tuple[Any, Any]:
    """The renewal's "Operation Completes By" as SQL, and the condition under which it is known.

    ``default_deadline(now, days)`` for the device's profile, never past the LSC's expiry.  Only
    the profiles' distinct ``deadline_days`` read at the start of the run (``known``) get a
    branch; a device whose profile changed since to another value is left out of this run, and
    taken by the next one.
    """
    days = func.coalesce(select(Profile.deadline_days).where(Profile.id == Device.profile_id)
                         .correlate(Device).scalar_subquery(), DEFAULT_PROFILE.deadline_days)
    by_days = case({d: _at(default_deadline(now, d)) for d in sorted(known)}, value=days)
    return case((Device.lsc_not_after < by_days, Device.lsc_not_after), else_=by_days), days.in_(known)


def _backoff_until(settings: SchedulerSettings, now: dt.datetime) -> Any:
    """``now + backoff_delay(renewal_attempts + 1)`` as SQL: one branch per delay below the cap."""
    final = backoff_delay(10**6, settings.backoff_base, settings.backoff_max)
    whens = {}
    for before in range(32):
        delay = backoff_delay(before + 1, settings.backoff_base, settings.backoff_max)
        if delay == final:
            break
        whens[before] = _at(now + delay)
    return case(whens, value=Device.renewal_attempts, else_=_at(now + final)) if whens else _at(now + final)


_RELEASED = {"lease_owner": None, "lease_expires_at": None}


def _schedule_batch(s: Session, settings: SchedulerSettings, now: dt.datetime, actor: str,
                    known_days: set[int]) -> list[str]:
    """Claim and set Install/Upgrade by LSC on one batch of due devices: one UPDATE, with their events."""
    deadline, deadline_known = _deadline(known_days, now)
    stmt = (update(Device)
            .where(_take(settings, and_(_due(now), deadline_known), now, Device.renewal_due_at))
            .values(operation=Operation.UPGRADE.ident, operation_auth_mode=AuthMode.BY_LSC.ident,
                    operation_deadline=deadline, status=CertStatus.OPERATION_PENDING.ident, status_at=now,
                    renewal_for_serial=Device.lsc_serial, renewal_scheduled_at=now, **_RELEASED))
    logged = log.isEnabledFor(logging.INFO)
    if _server_side(s):
        # The detail as the Python branch below writes it, built by the server from the new row.
        detail = (literal(f"{Operation.UPGRADE.log} {AuthMode.BY_LSC.log} replaces serial=") + Device.lsc_serial
                  + " by " + _utc_text(Device.operation_deadline, "YYYY:MM:DD:HH24")
                  + ", attempt " + cast(Device.renewal_attempts + 1, String))
        rows = _update_with_events(s, stmt, "RENEWAL_SCHEDULED", detail, actor, now,
                                   (Device.lsc_serial, Device.lsc_not_after) if logged else ())
    else:
        rows = sorted(s.execute(stmt.returning(Device.id, Device.name, Device.lsc_serial, Device.lsc_not_after,
                                               Device.operation_deadline, Device.renewal_attempts)
                                .execution_options(synchronize_session=False)).all(), key=lambda r: r.id)
        insert_events(s, [_event(r.name, "RENEWAL_SCHEDULED",
                                 f"{Operation.UPGRADE.log} {AuthMode.BY_LSC.log} replaces serial={r.lsc_serial} "
                                 f"by {as_utc(r.operation_deadline):%Y:%m:%d:%H}, attempt {r.renewal_attempts + 1}",
                                 actor, now) for r in rows])
    if logged:
        for r in rows:
            log.info("%s: renewal scheduled (%s, %s), LSC serial %s expires %s", r.name, Operation.UPGRADE.log,
                     AuthMode.BY_LSC.log, r.lsc_serial, as_utc(r.lsc_not_after).isoformat())
    return [r.name for r in rows]


def _server_side(s: Session) -> bool:
    """PostgreSQL: the claim, its UPDATE and the devices' events in one statement, and each
    transaction's claim planned as an ordered scan of the partial index (``_plan_claims``)."""
    return s.get_bind().dialect.name == "postgresql"


def _plan_claims(s: Session) -> None:
    """Read each claim's rows in index order instead of sorting every candidate.

    A claim's conditions multiply into a one-row estimate (a freshly filled table, or ten ANDed
    conditions), for which a bitmap scan of every due device and a sort look cheaper than the
    ordered partial index: at 100,000 due devices each batch of 5,000 sorted all that were left
    (150 ms, spilling to disk; EXPLAIN ANALYZE).  Sorting disabled inflates every plan's cost
    past ``jit_above_cost``, and JIT compilation took 0.5 s a statement (40 devices: 0.8 s a
    batch), so JIT goes too.  Both settings end with the transaction.
    """
    s.execute(text("SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)"))


def _utc_text(column: Any, pattern: str) -> Any:
    return func.to_char(func.timezone("UTC", column), pattern)


def _update_with_events(s: Session, stmt: Any, event: str, detail: Any, actor: str, now: dt.datetime,
                        logged: tuple[Any, ...]) -> list[Any]:
    """``WITH done AS (<stmt> RETURNING id, name, detail), events AS (INSERT INTO device_event
    SELECT ... FROM done) SELECT id, name FROM done``: one round trip, no row through Python but
    the names (and ``logged``, the columns a log line needs when it is written)."""
    done = stmt.returning(Device.id, Device.name, func.left(detail, 4000).label("detail"), *logged).cte("done")
    events = insert(DeviceEvent).from_select(
        ["device_name", "event", "detail", "actor", "at"],
        select(done.c.name, literal(event), done.c.detail, literal(actor[:128]), _at(now))).cte("events")
    wanted = [done.c.id, done.c.name, *(done.c[c.key] for c in logged)]
    return list(s.execute(select(*wanted).add_cte(events).order_by(done.c.id)).all())


def _time_out_batch(s: Session, settings: SchedulerSettings, now: dt.datetime, actor: str,
                    known_days: set[int]) -> list[str]:
    return _fail_where(s, _take(settings, _late(now), now, Device.operation_deadline),
                       "REQUEST_LATE", "the device did not renew before Operation Completes By",
                       settings, now, actor, _RELEASED)


def run_once(db: Database, settings: SchedulerSettings, now: dt.datetime | None = None) -> RunResult:
    """Time out late renewals, then schedule every device whose renewal window is open, a batch
    (one transaction) at a time, until a batch finds nothing (or ``max_batches``)."""
    now = as_utc(now or utcnow())
    actor = f"scheduler:{settings.node_id}"
    result = RunResult()
    known_days = _deadline_days(db)
    batches: tuple[tuple[Callable[[Session, SchedulerSettings, dt.datetime, str, set[int]], list[str]],
                         list[str]], ...] = ((_time_out_batch, result.timed_out), (_schedule_batch, result.scheduled))
    for action, bucket in batches:
        for _ in range(settings.max_batches):
            with db.session() as s:
                if _server_side(s):
                    _plan_claims(s)
                done = action(s, settings, now, actor, known_days)
            if not done:
                break
            bucket.extend(done)
    return result


def _event(name: str, event: str, detail: str, actor: str, now: dt.datetime) -> dict[str, Any]:
    return {"device_name": name, "event": event, "detail": detail[:4000], "actor": actor[:128], "at": now}


def _fail_where(s: Session, where: Any, reason: str, detail: str, settings: SchedulerSettings,
                now: dt.datetime, actor: str, extra: dict[str, Any] | None = None) -> list[str]:
    """Count a failed renewal on every device matching ``where`` and back off (one UPDATE, its events).

    One device: one WARNING line, as always.  Several (a batch of late renewals): one WARNING for
    the batch, and each device's line at INFO: 100,000 warning records cost ~4 s of this
    process's CPU, more than the batch's database work.
    """
    status = failure_status(Operation.UPGRADE, reason)
    stmt = (update(Device).where(where)
            .values(renewal_attempts=Device.renewal_attempts + 1, renewal_next_at=_backoff_until(settings, now),
                    renewal_last_error=detail[:256], renewal_for_serial=None, renewal_scheduled_at=None,
                    status=status.ident, status_at=now, operation=Operation.NONE.ident, operation_deadline=None,
                    operation_auth_mode=None, **(extra or {})))
    if _server_side(s):
        text_sql = (literal(f"{status.log}: {detail}; attempt ") + cast(Device.renewal_attempts, String)
                    + ", next at " + _utc_text(Device.renewal_next_at, "YYYY-MM-DD HH24:MI"))
        rows = _update_with_events(s, stmt, "RENEWAL_FAILED", text_sql, actor, now,
                                   (Device.renewal_attempts, Device.renewal_next_at))
    else:
        rows = sorted(s.execute(stmt.returning(Device.id, Device.name, Device.renewal_attempts,
                                               Device.renewal_next_at)
                                .execution_options(synchronize_session=False)).all(), key=lambda r: r.id)
        insert_events(s, [_event(r.name, "RENEWAL_FAILED", f"{status.log}: {detail}; attempt {r.renewal_attempts}, "
                                 f"next at {as_utc(r.renewal_next_at):%Y-%m-%d %H:%M}", actor, now) for r in rows])
    line = "%s: renewal failed (%s): %s; attempt %d, next attempt in %s"
    if len(rows) == 1:
        r = rows[0]
        log.warning(line, r.name, status.display, detail, r.renewal_attempts, as_utc(r.renewal_next_at) - now)
    elif rows:
        log.warning("%d renewals failed (%s): %s; %s ... %s, each backed off (one line each at INFO)", len(rows),
                    status.display, detail, rows[0].name, rows[-1].name)
        if log.isEnabledFor(logging.INFO):
            for r in rows:
                log.info(line, r.name, status.display, detail, r.renewal_attempts, as_utc(r.renewal_next_at) - now)
    return [r.name for r in rows]


def record_renewal_failure(s: Session, name: str, reason: str, detail: str, *, settings: SchedulerSettings,
                           now: dt.datetime | None = None) -> Device:
    """A renewal session failed for good (``reason`` as in ``policy.failure_status``): back off."""
    now = as_utc(now or utcnow())
    device = get_device(s, name)
    _fail_where(s, Device.id == device.id, reason, detail, settings, now, f"capf:{settings.node_id}")
    s.refresh(device)
    return device
