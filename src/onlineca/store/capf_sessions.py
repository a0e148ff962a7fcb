"""The transactions of one CAPF device session, each one unit of work over a ``Session``.

The session server runs them through ``store.group_commit.Transactions`` (off the event loop);
each function here is one transaction's body, so a whole install costs four commits: the start
(find or automatically enroll the device, take its lease, read everything the session decides
on), the intent (``store.lsc_intents``: committed before the request leaves), the issued LSC
(stored before it is delivered, its intent resolved), and the phone's confirmation together with
the lease given back.  Those four are SQLAlchemy Core statements on the tables (a handful of
round trips each, no ORM objects loaded, no autoflush); what is rare stays on the ORM.  A session that ends otherwise records its outcome and gives the lease
back on its way out.  What to decide is
``policy.capf``'s; this module reads and writes rows, never commits, and never logs a secret.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

from cryptography import x509
from sqlalchemy import Table, and_, bindparam, case, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from onlineca.errors import CAPFError, DeviceNotFound, OnlineCAError
from onlineca.policy.capf import (
    CertStatus,
    EffectivePolicy,
    Operation,
    RenewalPolicy,
    as_utc,
    success_status,
    validate_device_name,
)
from onlineca.policy.capf_session import (
    InstalledLSC,
    Outcome,
    auto_enrollment_grant,
    may_auto_enroll,
    renewal_on_connect,
)
from onlineca.store import devices as inv, lsc_intents as intents
from onlineca.store.capf_models import LSC, Device, DeviceEvent, Profile
from onlineca.store.lsc_revocations import mark_for_revocation

log = logging.getLogger("onlineca.store.capf_sessions")

# A scheduled renewal that failed for good: (session, device, reason, detail); the scheduler's.
RenewalFailed = Callable[[Session, str, str, str], object]


@dataclass(frozen=True)
class OpenIntent:
    """An enrollment an earlier session sent and never recorded (``store.lsc_intents``)."""

    id: int
    key: str  # SHA-256 of the key's SubjectPublicKeyInfo, hex
    request_der: bytes
    request_id: str
    vouched: bool
    created_at: dt.datetime


@dataclass(frozen=True)
class SessionStart:
    """What the session's first transaction learnt: ``found`` the device; ``policy`` is None when
    another node holds its lease."""

    found: bool
    policy: EffectivePolicy | None = None
    locked_until: dt.datetime | None = None
    failed_auth_count: int = 0
    mic_store: str = ""  # the profile's own manufacturer trust store, if any
    stored_lsc: tuple[str, bytes] | None = None  # (serial, DER) issued earlier, never confirmed
    installed: InstalledLSC | None = None  # the LSC the device has confirmed, if any
    renewing: bool = False  # a public-flow phone asked again after its LSC's renewal window opened
    # Why the LSC the phone presented is not the one CAPF recorded as installed (None:
    # it is, or the phone presented none); an LSC that merely chains to the root proves nothing.
    lsc_problem: str | None = None
    intent: OpenIntent | None = None  # an enrollment of an earlier session, sent and never recorded


# The hot path's statements are Core on the tables: no identity map, no unit of work, no
# autoflush; built once, so SQLAlchemy finds their compiled form without a new cache key.  The ORM
# is kept for what is rare (automatic enrollment, a public-flow renewal, a lease another holds).
_DEVICE = cast(Table, Device.__table__)
_PROFILE = cast(Table, Profile.__table__)
_LSC = cast(Table, LSC.__table__)
_EVENT = cast(Table, DeviceEvent.__table__)
_D, _P, _L = _DEVICE.c, _PROFILE.c, _LSC.c
_TS = _D.lease_expires_at.type


def _ts(key: str) -> Any:
    return bindparam(key, type_=_TS)


# The claim (``devices.claim_device``'s condition) also notes how the phone speaks, and hands back the row.
_CLAIM = (update(_DEVICE)
          .where(_D.name == bindparam("b_name"),
                 or_(_D.lease_owner.is_(None), _D.lease_owner == bindparam("b_owner"), _D.lease_expires_at < _ts("b_now")))
          .values(lease_owner=bindparam("b_owner", type_=_D.lease_owner.type), lease_expires_at=_ts("b_until"),
                  client_flow=bindparam("b_flow", type_=_D.client_flow.type),
                  client_capabilities=bindparam("b_caps", type_=_D.client_capabilities.type))
          .returning(*_DEVICE.c))
_PROFILE_ROW = select(_PROFILE).where(_P.id == bindparam("b_id"))
_UNDELIVERED = (select(_L.serial, _L.der)
                .where(_L.device_id == bindparam("b_id"), _L.state == "issued", _L.not_after > _ts("b_now"))
                .order_by(_L.issued_at.desc(), _L.id.desc()).limit(1))
_DEVICE_ID = select(_D.id).where(_D.name == bindparam("b_name"))
_ADD_LSC = insert(_LSC)
_ADD_EVENTS = insert(_EVENT)
# The device, its profile's renewal policy and the issued LSC it confirmed, in one read.
_INSTALLING = (select(_D.id, _D.name, _D.profile_id, _P.renewal_enabled, _P.renewal_fraction,
                      _P.renewal_days_before, _P.renewal_jitter, _L.id.label("lsc_id"), _L.serial, _L.issuer,
                      _L.not_before, _L.not_after)
               .select_from(_DEVICE.outerjoin(_PROFILE, _P.id == _D.profile_id)
                            .outerjoin(_LSC, and_(_L.device_id == _D.id, _L.serial == bindparam("b_serial"))))
               .where(_D.name == bindparam("b_name")).limit(1))
_SUPERSEDE = (update(_LSC)
              .where(_L.device_id == bindparam("b_device"), _L.state == "installed", _L.id != bindparam("b_keep"))
              .values(state="superseded", superseded_at=_ts("b_now"))
              .returning(_L.serial, _L.issuer, _L.subject, _L.not_after))
_INSTALL_LSC = update(_LSC).where(_L.id == bindparam("b_id")).values(state="installed", installed_at=_ts("b_now"))
# ``mark_lsc_installed`` and ``release_device`` in one UPDATE (SET reads the row as it was).
_INSTALLED = (update(_DEVICE).where(_D.id == bindparam("b_id"))
              .values(lsc_serial=bindparam("b_serial", type_=_D.lsc_serial.type),
                      lsc_issuer=bindparam("b_issuer", type_=_D.lsc_issuer.type),
                      lsc_not_before=_ts("b_not_before"), lsc_not_after=_ts("b_not_after"),
                      renewal_due_at=_ts("b_due"), renewal_for_serial=None, renewal_scheduled_at=None,
                      renewal_attempts=0, renewal_next_at=None, renewal_last_error="",
                      status=CertStatus.UPGRADE_SUCCESS.ident, status_at=_ts("b_now"),
                      operation=Operation.NONE.ident, operation_deadline=None, operation_auth_mode=None,
                      lease_owner=case((_D.lease_owner == bindparam("b_owner"), None), else_=_D.lease_owner),
                      lease_expires_at=case((_D.lease_owner == bindparam("b_owner"), None),
                                            else_=_D.lease_expires_at)))


def _events(s: Session, name: str, actor: str, now: dt.datetime, *events: tuple[str, str]) -> None:
    """Rows of the device's audit trail, as ``devices.record_event`` writes them, in one statement."""
    s.execute(_ADD_EVENTS, [{"device_name": name, "event": event, "detail": detail[:4000], "actor": actor[:128],
                             "at": now} for event, detail in events])


def start_session(s: Session, name: str, *, owner: str, lease: dt.timedelta, now: dt.datetime,
                  mic_valid: Callable[[str], bool], flow: str = "extended",
                  capabilities: int | None = None, presented_lsc: tuple[str, bytes] | None = None) -> SessionStart:
    """Find (or automatically enroll) the device, take its lease, note how it speaks (``flow``
    "public" or "extended", the ``capabilities`` it announced), and read what the session decides
    on.  ``mic_valid(trust_store)`` says whether the phone presented a valid MIC for a profile's
    manufacturer trust store ("" for CAPF's own).  A public-flow phone with nothing pending whose
    LSC is due gets Install/Upgrade here (it renews by asking again: ``renewal_on_connect``).
    ``owner`` names this one session (the lease is the session's, so no other session,
    of this node or another, enters the device meanwhile); ``presented_lsc`` (serial hex, DER) is
    the LSC the phone authenticated with, checked against the one recorded as installed.

    A known device that is free and that no profile may enroll automatically (every session of
    an administrator's operation) costs one UPDATE ... RETURNING (the lease, the flow and the row),
    a profile read when it has one, and the reads of its pending certificate and intent."""
    name = validate_device_name(name)
    now = as_utc(now)
    row = s.execute(_CLAIM, {"b_name": name, "b_owner": owner, "b_now": now, "b_until": now + lease,
                             "b_flow": flow, "b_caps": capabilities}).first()
    if row is None or may_auto_enroll(known=True, operation=Operation.parse(row.operation, "operation"),
                                      has_lsc=row.lsc_serial is not None):
        # Unknown, busy, or a profile may enroll it: as the ORM did it (the claim is the session's own).
        orm_device = _find_or_auto_enroll(s, name, mic_valid)
        if orm_device is None:
            return SessionStart(found=False)
        if not inv.claim_device(s, name, owner, lease, now=now):
            return SessionStart(found=True)
        if (orm_device.client_flow, orm_device.client_capabilities) != (flow, capabilities):
            orm_device.client_flow, orm_device.client_capabilities = flow, capabilities
        return _started(s, orm_device, now=now, flow=flow, presented_lsc=presented_lsc)
    # ``devices.device_policy`` and ``installed_lsc_is`` read only columns: the row serves as the device.
    view = SimpleNamespace(**row._asdict(), profile=None)
    if view.profile_id is not None:
        profile = s.execute(_PROFILE_ROW, {"b_id": view.profile_id}).first()
        view.profile = SimpleNamespace(**profile._asdict()) if profile is not None else None
    return _started(s, cast(Device, view), now=now, flow=flow, presented_lsc=presented_lsc)


def _started(s: Session, device: Device, *, now: dt.datetime, flow: str,
             presented_lsc: tuple[str, bytes] | None) -> SessionStart:
    """The rest of ``start_session`` once the lease is held: what the session decides on."""
    name = device.name
    public = flow == "public"
    installed = None
    if device.lsc_serial is not None and device.lsc_not_after is not None:
        installed = InstalledLSC(device.lsc_serial, as_utc(device.lsc_not_after),
                                 as_utc(device.renewal_due_at) if device.renewal_due_at else None)
    renewing = public and renewal_on_connect(Operation.from_ident(device.operation), installed, now)
    if renewing:
        assert installed is not None
        try:
            device = inv.set_device(s, name, actor="capf", now=now, operation=Operation.UPGRADE.ident)
        except OnlineCAError as exc:  # e.g. By Authentication String without a string: declined instead
            log.warning("%s: a public-flow renewal cannot be set up: %s", name, exc)
            renewing = False
    if renewing:
        assert installed is not None
        inv.record_event(s, name, "RENEWAL_REQUESTED", f"a public-flow phone asked again after its LSC's renewal "
                         f"window opened (serial={installed.serial}, not_after={installed.not_after.isoformat()})",
                         actor="capf", now=now)
    scheduled = device.renewal_for_serial is not None and device.renewal_for_serial == device.lsc_serial
    policy = inv.device_policy(device, own_auth_mode=public and scheduled)
    stored = None
    intent = None
    if policy.operation is Operation.UPGRADE:
        row = s.execute(_UNDELIVERED, {"b_id": device.id, "b_now": now}).first()
        stored = (row.serial, bytes(row.der)) if row is not None else None
        found = intents.open_intent(s, device.name) if stored is None else None
        if found is not None:  # we hold the device's lease: whoever sent it is gone
            intent = OpenIntent(found.id, found.key_sha256, bytes(found.request_der), found.request_id,
                                bool(found.vouched), as_utc(found.created_at))
    lsc_problem = inv.installed_lsc_is(s, device, *presented_lsc) if presented_lsc is not None else None
    return SessionStart(found=True, policy=policy, locked_until=device.locked_until,
                        failed_auth_count=device.failed_auth_count or 0,
                        mic_store=device.profile.mic_trust_store if device.profile is not None else "",
                        stored_lsc=stored, installed=installed, renewing=renewing, lsc_problem=lsc_problem,
                        intent=intent)


def _find_or_auto_enroll(s: Session, name: str, mic_valid: Callable[[str], bool]) -> Device | None:
    """The device; or a new one (or a new Install/Upgrade) that a profile grants automatically."""
    device = inv.find_device(s, name)
    if not may_auto_enroll(known=device is not None,
                           operation=Operation.parse(device.operation, "operation") if device else Operation.NONE,
                           has_lsc=device is not None and device.lsc_serial is not None):
        return device
    for row in inv.list_profiles(s):
        auto = inv.profile_policy(row).auto_enrollment
        if not auto.enabled:  # before the MIC check: that costs a signature verification
            continue
        grant = auto_enrollment_grant(name, row.name, auto, mic_valid=mic_valid(row.mic_trust_store))
        if grant is None:
            continue
        try:
            if device is None:
                device = inv.add_device(s, name, actor="capf:auto-enrollment", profile=row.name,
                                        description=f"enrolled automatically ({grant.why})", **grant.settings())
            else:
                device = inv.set_device(s, name, actor="capf:auto-enrollment", **grant.settings())
        except OnlineCAError as exc:
            log.warning("%s: profile %s grants automatic enrollment but the device cannot be set: %s",
                        name, row.name, exc)
            continue
        inv.record_event(s, name, "AUTO_ENROLLMENT", f"profile {row.name}: {grant.why}", actor="capf")
        return device
    return device


@dataclass(frozen=True)
class AuthAttempt:
    """One auth-string attempt, counted before the comparison: the wrong ones in a row
    with this one, the stored hash to compare with, and whether this attempt locks the device
    should it be wrong (the lock is already written; a right answer lifts it)."""

    failures: int
    stored: str | None
    locks: bool


def reserve_auth_attempt(s: Session, name: str, *, max_failures: int, lockout_minutes: float,
                         now: dt.datetime) -> AuthAttempt | None:
    """Count one auth-string attempt in one conditional UPDATE, before the string is compared:
    None when the device is locked out or has used its ``max_failures`` attempts (nothing is
    compared then).  The attempt that reaches the maximum writes the lock at once, so a crash
    between the comparison and its record can only leave the device locked; an expired lock
    starts the count again.  SQLite and PostgreSQL evaluate the SET clauses on the row as it was,
    and PostgreSQL re-checks the WHERE on a row another transaction changed meanwhile: two
    attempts can never both take the last place."""
    now = as_utc(now)
    expired = and_(Device.locked_until.is_not(None), Device.locked_until < literal(now, Device.locked_until.type))
    free = and_(Device.locked_until.is_(None), Device.failed_auth_count < max_failures)
    count = case((expired, 1), else_=Device.failed_auth_count + 1)
    row = s.execute(
        update(Device)
        .where(Device.name == validate_device_name(name), or_(expired, free))
        .values(failed_auth_count=count,
                locked_until=case((count >= max_failures,
                                   literal(now + dt.timedelta(minutes=lockout_minutes), Device.locked_until.type)),
                                  else_=None))
        .returning(Device.failed_auth_count, Device.auth_string_hash, Device.locked_until)
        .execution_options(synchronize_session=False)).first()
    if row is None:
        return None
    return AuthAttempt(int(row[0]), row[1], row[2] is not None)


def auth_string_accepted(s: Session, name: str) -> None:
    """The right auth string: the count of wrong ones starts again (and a lock its last
    attempt wrote is lifted)."""
    s.execute(update(Device).where(Device.name == validate_device_name(name))
              .values(failed_auth_count=0, locked_until=None).execution_options(synchronize_session=False))


def auth_string_locked(s: Session, name: str, *, lockout_minutes: float, now: dt.datetime) -> None:
    """The wrong attempt that used the last place: the lock it wrote, in the device's history."""
    until = as_utc(now) + dt.timedelta(minutes=lockout_minutes)
    inv.record_event(s, validate_device_name(name), "LOCKED_OUT", f"until {until.isoformat()}", actor="capf", now=now)


def lsc_problem(s: Session, name: str, serial: str, der: bytes) -> str | None:
    """Why the LSC (serial hex, DER) a phone presented is not the one recorded as installed on
    ``name``, or None (an LSC shown only in a second AUTH_RESPONSE)."""
    return inv.installed_lsc_is(s, inv.get_device(s, name), serial, der)


def record_outcome(s: Session, name: str, outcome: Outcome, *, actor: str,
                   renewal_failed: RenewalFailed) -> None:
    """Record how an operation ended.  A scheduled renewal that cannot succeed as it stands goes
    to ``renewal_failed`` (the scheduler backs off and tries again; the device keeps its LSC)."""
    assert outcome.status is not None
    device = inv.get_device(s, name)
    renewal = device.renewal_for_serial is not None and device.renewal_for_serial == device.lsc_serial
    reason = outcome.renewal_failure
    detail = outcome.detail[:500]
    if renewal and reason:
        renewal_failed(s, name, reason, detail)
        return
    inv.set_status(s, name, outcome.status, actor=actor, detail=detail, end_operation=outcome.end_operation,
                   device=device)


def lsc_discarded(s: Session, name: str, serial: str, why: str, *, actor: str) -> None:
    """An LSC issued earlier will never be delivered (the phone refused it, or a new key arrived)."""
    inv.discard_undelivered(s, inv.get_device(s, name), why, actor=actor, serial=serial)


def lsc_issued(s: Session, name: str, der: bytes, cert: x509.Certificate, *, actor: str,
               intent_id: int | None = None, intent_state: str = intents.RECORDED,
               now: dt.datetime | None = None) -> str:
    """Store the LSC the CA issued before it is delivered (``devices.record_lsc_issued``: state
    ``issued``, an ``LSC_ISSUED`` event), and resolve the intent that asked for it in the same
    commit; its serial."""
    name = validate_device_name(name)
    now = as_utc(now or inv.utcnow())
    device_id = s.execute(_DEVICE_ID, {"b_name": name}).scalar()
    if device_id is None:
        raise DeviceNotFound(f"no device named {name}")
    serial, issuer = inv.serial_hex(cert.serial_number), cert.issuer.rfc4514_string()
    s.execute(_ADD_LSC, {"device_id": device_id, "serial": serial, "issuer": issuer,
                         "subject": cert.subject.rfc4514_string(), "not_before": cert.not_valid_before_utc,
                         "not_after": cert.not_valid_after_utc, "der": bytes(der), "state": "issued",
                         "issued_at": now})
    _events(s, name, actor, now, ("LSC_ISSUED", f"serial={serial} issuer={issuer}"))
    if intent_id is not None:
        intents.resolve(s, intent_id, intent_state, serial=serial, now=now)
        intents.close_older(s, name, intent_id, now=now)
    return serial


def intent_sent(s: Session, name: str, *, key: str, request_der: bytes, request_id: str, vouched: bool,
                node: str, now: dt.datetime, intent_id: int | None = None) -> int:
    """The enrollment's intent, committed before its request leaves; its id."""
    return intents.intent_sent(s, validate_device_name(name), key=key, request_der=request_der,
                               request_id=request_id, vouched=vouched, node=node, now=now, intent_id=intent_id)


def intent_resolved(s: Session, name: str, intent_id: int, state: str, *, detail: str = "",
                    actor: str = "capf") -> None:
    """What became of an intent that got no certificate (failed, unanswered,
    abandoned), with a device event when ``detail`` says more."""
    intents.resolve(s, intent_id, state)
    if detail:
        inv.record_event(s, validate_device_name(name), f"INTENT_{state.upper()}", detail, actor=actor)


def intent_orphaned(s: Session, name: str, intent_id: int, der: bytes, cert: x509.Certificate, why: str, *,
                    actor: str) -> None:
    """The CA issued an earlier session's request, and the phone can no longer take
    that certificate: it must be revoked."""
    serial = inv.serial_hex(cert.serial_number)
    mark_for_revocation(s, device_name=validate_device_name(name), serial=serial, issuer=cert.issuer.rfc4514_string(),
                        reason="superseded", why=why, subject=cert.subject.rfc4514_string(),
                        not_after=cert.not_valid_after_utc, actor=actor)
    intents.resolve(s, intent_id, intents.ORPHANED, serial=serial)


def lsc_installed(s: Session, name: str, serial: str, *, node_id: str, owner: str,
                  now: dt.datetime | None = None) -> None:
    """The phone stored its LSC: record it (``devices.mark_lsc_installed``: the older one
    superseded and queued for revocation, Upgrade Success, operation none) and give the session's
    lease back in one commit."""
    name = validate_device_name(name)
    now = as_utc(now or inv.utcnow())
    actor = f"capf:{node_id}"
    row = s.execute(_INSTALLING, {"b_name": name, "b_serial": serial.lower()}).first()
    if row is None:
        raise DeviceNotFound(f"no device named {name}")
    if row.lsc_id is None:
        raise CAPFError(f"{name}: no issued LSC with serial {serial}")
    for old in s.execute(_SUPERSEDE, {"b_device": row.id, "b_keep": row.lsc_id, "b_now": now}).all():
        mark_for_revocation(s, device_name=name, serial=old.serial, issuer=old.issuer, reason="superseded",
                            why=f"replaced by serial {row.serial}", subject=old.subject, not_after=old.not_after,
                            actor=actor, now=now)
    s.execute(_INSTALL_LSC, {"b_id": row.lsc_id, "b_now": now})
    renewal = (inv.DEFAULT_PROFILE.renewal if row.profile_id is None else
               RenewalPolicy(enabled=row.renewal_enabled, fraction=row.renewal_fraction,
                             days_before=row.renewal_days_before, jitter=row.renewal_jitter))
    due = renewal.window_opens(name, row.serial, row.not_before, row.not_after) if renewal.enabled else None
    s.execute(_INSTALLED, {"b_id": row.id, "b_serial": row.serial, "b_issuer": row.issuer,
                           "b_not_before": row.not_before, "b_not_after": row.not_after, "b_due": due, "b_now": now,
                           "b_owner": owner})
    _events(s, name, actor, now,
            ("LSC_INSTALLED", f"serial={row.serial} not_after={as_utc(row.not_after).isoformat()}"),
            ("STATUS", CertStatus.UPGRADE_SUCCESS.log))


def troubleshoot_done(s: Session, name: str, detail: str, *, actor: str) -> None:
    inv.set_status(s, name, success_status(Operation.TROUBLESHOOT), actor=actor, detail=detail, end_operation=True)


__all__ = [
    "AuthAttempt",
    "OpenIntent",
    "RenewalFailed",
    "SessionStart",
    "auth_string_accepted",
    "auth_string_locked",
    "intent_orphaned",
    "intent_resolved",
    "intent_sent",
    "lsc_discarded",
    "lsc_installed",
    "lsc_issued",
    "lsc_problem",
    "record_outcome",
    "reserve_auth_attempt",
    "start_session",
    "troubleshoot_done",
]
