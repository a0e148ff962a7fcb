"""The renewal scheduler on SQLite and PostgreSQL: the window, jitter, backoff, leases, two nodes on one fleet."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from capf_fixtures import T0, db, install_lsc  # noqa: F401  (db is a fixture)
from sqlalchemy import select

from onlineca.capf.scheduler import SchedulerSettings, backoff_delay, record_renewal_failure, run_once
from onlineca.policy.capf import AuthMode, Operation, RenewalPolicy, as_utc
from onlineca.store import Database, Device, DeviceEvent, devices as inv

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
LIFE = 300 * DAY


def _fleet_with_lscs(db: Database, lab_pki, n: int) -> dict[str, dt.datetime]:  # type: ignore[no-untyped-def]
    """``n`` devices with LSCs issued together at T0; returns when each one's window opens."""
    due = {}
    with db.session() as s:
        for i in range(n):
            name = f"SEP{i:012X}"
            inv.add_device(s, name, now=T0)
            serial = install_lsc(s, lab_pki, name, T0, days=LIFE.days)
            due[name] = RenewalPolicy().window_opens(name, serial, T0, T0 + LIFE)
    return due


def _state(db: Database, name: str) -> Device:
    with db.session() as s:
        return inv.get_device(s, name)


def test_schedules_exactly_the_devices_in_the_window(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    due = _fleet_with_lscs(db, lab_pki, 12)
    settings = SchedulerSettings(node_id="node-a", batch_size=5)
    assert run_once(db, settings, min(due.values()) - dt.timedelta(seconds=1)).scheduled == []
    cut = sorted(due.values())[5]
    result = run_once(db, settings, cut)
    assert sorted(result.scheduled) == sorted(n for n, d in due.items() if d <= cut)
    assert len(result.scheduled) == 6
    assert run_once(db, settings, cut).scheduled == []  # once per LSC
    name = result.scheduled[0]
    d = _state(db, name)
    assert (d.operation, d.operation_auth_mode, d.status) == ("OPERATION_UPGRADE", "AUTH_BY_LSC",
                                                              "CERT_STATUS_OPERATION_PENDING")
    assert d.lease_owner is None and d.renewal_for_serial == d.lsc_serial
    with db.session() as s:
        policy = inv.device_policy(inv.get_device(s, name))
        assert policy.auth_mode.ident == "AUTH_BY_LSC" and policy.is_late(cut + 11 * DAY)
        assert [c.state for c in inv.lsc_history(s, name)] == ["installed"]  # the old LSC stays
        assert next(e.event for e in inv.device_events(s, name)) == "RENEWAL_SCHEDULED"
    # The rest, later; a device renewed meanwhile (new LSC installed) is not due any more.
    with db.session() as s:
        renewed = sorted(n for n in due if n not in result.scheduled)[0]
        install_lsc(s, lab_pki, renewed, cut, days=LIFE.days)
    later = run_once(db, settings, T0 + LIFE - DAY)
    assert sorted(later.scheduled) == sorted(set(due) - set(result.scheduled) - {renewed})


def test_deadline_never_passes_the_lsc_expiry(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        inv.add_device(s, "SEP1", now=T0)
        install_lsc(s, lab_pki, "SEP1", T0, days=12)
    now = T0 + 9 * DAY
    assert run_once(db, SchedulerSettings(node_id="a"), now).scheduled == ["SEP1"]
    assert as_utc(_state(db, "SEP1").operation_deadline) == T0 + 12 * DAY


def test_pending_admin_operations_and_disabled_profiles_are_left_alone(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        inv.add_profile(s, "manual", renewal_enabled=False)
        for name in ("SEP1", "SEP2", "SEP3"):
            inv.add_device(s, name, now=T0)
            install_lsc(s, lab_pki, name, T0, days=30)
        inv.set_device(s, "SEP2", operation="Troubleshoot", now=T0 + DAY)
        inv.set_device(s, "SEP3", profile="manual", now=T0 + DAY)
        assert inv.get_device(s, "SEP3").renewal_due_at is None
    assert run_once(db, SchedulerSettings(node_id="a"), T0 + 29 * DAY).scheduled == ["SEP1"]


def test_jitter_spreads_a_fleet_enrolled_together(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    due = _fleet_with_lscs(db, lab_pki, 40)
    nominal = T0 + LIFE * (2 / 3)
    assert len(set(due.values())) == 40
    settings = SchedulerSettings(node_id="a")
    per_day, seen = [], set()
    for day in range(-31, 1):
        first_time = set(run_once(db, settings, nominal + day * DAY).scheduled) - seen  # not the retries
        per_day.append(len(first_time))
        seen |= first_time
    assert sum(per_day) == 40
    assert max(per_day) <= 8 and sum(1 for n in per_day if n) >= 15  # spread over weeks, not one burst


def test_backoff_after_missed_deadlines(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        inv.add_device(s, "SEP1", now=T0)
        install_lsc(s, lab_pki, "SEP1", T0, days=300)
        due = as_utc(inv.get_device(s, "SEP1").renewal_due_at)
    settings = SchedulerSettings(node_id="a", backoff_base=HOUR, backoff_max=3 * HOUR)
    now = due
    for attempt, delay in ((1, HOUR), (2, 2 * HOUR), (3, 3 * HOUR)):
        assert run_once(db, settings, now).scheduled == ["SEP1"]
        deadline = as_utc(_state(db, "SEP1").operation_deadline)
        assert run_once(db, settings, deadline).timed_out == []  # on the deadline: still in time
        now = deadline + dt.timedelta(minutes=1)
        assert run_once(db, settings, now).timed_out == ["SEP1"]
        d = _state(db, "SEP1")
        assert (d.renewal_attempts, d.status, d.operation) == (
            attempt, "CERT_STATUS_UPGRADE_FAILED_REQUEST_LATE", "OPERATION_NONE")
        assert as_utc(d.renewal_next_at) == now + delay
        assert run_once(db, settings, now + delay - dt.timedelta(seconds=1)).scheduled == []
        now = now + delay
    assert backoff_delay(0, HOUR, DAY) == dt.timedelta(0) and backoff_delay(40, HOUR, DAY) == DAY
    # A session that fails for good (the server's call) backs off too; success resets the count.
    with db.session() as s:
        record_renewal_failure(s, "SEP1", "CA_COMM_FAILURE", "RA unreachable", settings=settings, now=now)
        assert inv.get_device(s, "SEP1").renewal_attempts == 4
        install_lsc(s, lab_pki, "SEP1", now, days=300)
        assert inv.get_device(s, "SEP1").renewal_attempts == 0


def test_a_dead_nodes_leases_expire(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    due = _fleet_with_lscs(db, lab_pki, 3)
    now = max(due.values())
    with db.session() as s:  # a dead node's sessions held them (the scheduler itself holds no lease)
        for name in due:
            assert inv.claim_device(s, name, "dead#boot#1", 5 * dt.timedelta(minutes=1), now=now)
    live = SchedulerSettings(node_id="live")
    assert run_once(db, live, now + dt.timedelta(minutes=4)).scheduled == []
    assert sorted(run_once(db, live, now + dt.timedelta(minutes=6)).scheduled) == sorted(due)


def test_the_scheduler_leaves_a_devices_session_lease_alone(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    """Sessions lease devices by the bare node id; the scheduler claims in its own transaction
    and never takes, extends or gives back a session's lease, even its own node's."""
    due = _fleet_with_lscs(db, lab_pki, 2)
    now = max(due.values())
    free, in_session = sorted(due)
    settings = SchedulerSettings(node_id="node-a")
    with db.session() as s:
        assert inv.claim_device(s, in_session, "node-a", dt.timedelta(minutes=30), now=now)
    assert run_once(db, settings, now + dt.timedelta(minutes=6)).scheduled == [free]
    assert _state(db, free).lease_owner is None
    assert _state(db, in_session).lease_owner == "node-a"
    assert _state(db, in_session).operation == "OPERATION_NONE"


def _due_fleet_rows(db: Database, n: int) -> None:
    """``n`` devices whose windows are all open at ``T0 + 0.9 LIFE``, inserted in one go.  The LSC
    columns are set directly: these tests are about leases, not certificates."""
    policy = RenewalPolicy()
    with db.session() as s:
        rows = []
        for i in range(n):
            name, serial = f"SEP{i:012X}", f"{i + 1:x}"
            rows.append(Device(name=name, model="", description="", operation="OPERATION_NONE",
                               status="CERT_STATUS_UPGRADE_SUCCESS", renewal_attempts=0, renewal_last_error="",
                               failed_auth_count=0, lsc_serial=serial, lsc_issuer="CN=Test",
                               lsc_not_before=T0, lsc_not_after=T0 + LIFE,
                               renewal_due_at=policy.window_opens(name, serial, T0, T0 + LIFE)))
        s.add_all(rows)


def _two_nodes(db_url: str, now: dt.datetime, batch_size: int, bucket: str) -> tuple[list[str], list[str]]:
    """Two scheduler nodes, each with its own engine, started together, each calling ``run_once``
    (one batch per call) until it finds nothing; what each one got in ``bucket``."""
    barrier = threading.Barrier(2)

    def node(node_id: str) -> list[str]:
        database = Database(db_url)
        done: list[str] = []
        try:
            settings = SchedulerSettings(node_id=node_id, batch_size=batch_size, max_batches=1)
            barrier.wait(timeout=30)
            while True:
                got = getattr(run_once(database, settings, now), bucket)
                if not got:
                    return done
                done.extend(got)
        finally:
            database.dispose()

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(node, ["node-a", "node-b"])
    return a, b


def _events(db: Database, event: str) -> Counter[str]:
    with db.session() as s:
        return Counter(s.scalars(select(DeviceEvent.device_name).where(DeviceEvent.event == event)))


def test_two_nodes_schedule_each_device_exactly_once(db_url: str, db: Database) -> None:
    """500 devices due at once, two scheduler nodes with their own engines on one database."""
    n = 500
    _due_fleet_rows(db, n)
    now = T0 + LIFE * 0.9
    a, b = _two_nodes(db_url, now, 20, "scheduled")
    counts = Counter(a + b)
    assert len(counts) == n and max(counts.values()) == 1
    with db.session() as s:
        events = Counter(s.scalars(select(DeviceEvent.device_name).where(DeviceEvent.event == "RENEWAL_SCHEDULED")))
        assert len(events) == n and set(events.values()) == {1}
        assert s.scalars(select(Device.lease_owner).where(Device.lease_owner.is_not(None))).all() == []
        owners = Counter(s.scalars(select(DeviceEvent.actor)))
    assert set(owners) <= {"scheduler:node-a", "scheduler:node-b"}


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_nodes_on_postgresql_small_batches_schedule_and_time_out_each_device_once(
        db_url: str, db: Database) -> None:
    """2,000 devices, batches of 50: the claims of two nodes interleave many times (SKIP LOCKED,
    leases, the re-check in the batch UPDATE); then both time the same renewals out."""
    n = 2000
    _due_fleet_rows(db, n)
    now = T0 + LIFE * 0.9
    a, b = _two_nodes(db_url, now, 50, "scheduled")
    assert a and b  # both nodes took part
    counts = Counter(a + b)
    assert len(counts) == n and set(counts.values()) == {1}
    assert set(_events(db, "RENEWAL_SCHEDULED").values()) == {1} and len(_events(db, "RENEWAL_SCHEDULED")) == n
    with db.session() as s:
        deadlines = set(s.scalars(select(Device.operation_deadline)))
        assert {as_utc(d) for d in deadlines} == {T0 + 280 * DAY}  # 10 days after now, on the hour
    a, b = _two_nodes(db_url, T0 + 281 * DAY, 50, "timed_out")
    counts = Counter(a + b)
    assert len(counts) == n and set(counts.values()) == {1}
    assert set(_events(db, "RENEWAL_FAILED").values()) == {1} and len(_events(db, "RENEWAL_FAILED")) == n
    with db.session() as s:
        assert set(s.scalars(select(Device.renewal_attempts))) == {1}
        assert s.scalars(select(Device.lease_owner).where(Device.lease_owner.is_not(None))).all() == []


def test_the_deadline_follows_each_devices_profile(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    """The batch UPDATE computes "Operation Completes By" per device: its profile's days, the
    built-in 10 without a profile, never past the LSC's expiry."""
    with db.session() as s:
        inv.add_profile(s, "short", deadline_days=3)
        inv.add_profile(s, "long", deadline_days=20)
        for name, profile, days in (("SEP1", None, 300), ("SEP2", "short", 300), ("SEP3", "long", 300),
                                    ("SEP4", "long", 210)):
            inv.add_device(s, name, now=T0, **({"profile": profile} if profile else {}))
            install_lsc(s, lab_pki, name, T0, days=days)
    now = T0 + 200 * DAY + dt.timedelta(minutes=37)
    assert sorted(run_once(db, SchedulerSettings(node_id="a", batch_size=2), now).scheduled) == [
        "SEP1", "SEP2", "SEP3", "SEP4"]
    hour = T0 + 200 * DAY
    assert {n: as_utc(_state(db, n).operation_deadline) for n in ("SEP1", "SEP2", "SEP3", "SEP4")} == {
        "SEP1": hour + 10 * DAY, "SEP2": hour + 3 * DAY, "SEP3": hour + 20 * DAY, "SEP4": T0 + 210 * DAY}


def test_the_events_read_the_same_on_every_database(db: Database, lab_pki, caplog) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL writes a batch's events itself (INSERT ... SELECT from the UPDATE's RETURNING),
    SQLite from Python: the same detail, actor and time; a batch of failures is one WARNING."""
    due = _fleet_with_lscs(db, lab_pki, 2)
    now = max(due.values())
    settings = SchedulerSettings(node_id="a", backoff_base=HOUR, backoff_max=3 * HOUR)
    assert sorted(run_once(db, settings, now).scheduled) == sorted(due)
    name = sorted(due)[0]
    d = _state(db, name)
    deadline = as_utc(d.operation_deadline)
    late = deadline + dt.timedelta(minutes=1)
    with caplog.at_level("WARNING", logger="onlineca.capf.scheduler"):
        assert sorted(run_once(db, settings, late).timed_out) == sorted(due)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("2 renewals failed (")
    with db.session() as s:
        events = {e.event: e for e in inv.device_events(s, name)}
    scheduled, failed = events["RENEWAL_SCHEDULED"], events["RENEWAL_FAILED"]
    assert scheduled.detail == (f"{Operation.UPGRADE.log} {AuthMode.BY_LSC.log} replaces serial={d.lsc_serial} "
                                f"by {deadline:%Y:%m:%d:%H}, attempt 1")
    assert (scheduled.actor, as_utc(scheduled.at)) == ("scheduler:a", now)
    assert failed.detail.endswith(f": the device did not renew before Operation Completes By; attempt 1, "
                                  f"next at {late + HOUR:%Y-%m-%d %H:%M}")
    assert (failed.actor, as_utc(failed.at)) == ("scheduler:a", late)
