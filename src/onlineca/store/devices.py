"""The CAPF device inventory: devices, profiles, LSC history, the audit trail, row leases.

Repository functions over a SQLAlchemy ``Session`` (the caller owns the transaction; use
``Database.session()``).  Every change is validated by ``onlineca.policy.capf`` before anything is
written, and leaves a ``device_event`` row saying who did what.  Bulk CSV files are
``store.devices_csv``.
The session server's transactions (``store.capf_sessions``) use ``record_lsc_issued`` (store a
certificate before it is delivered), ``undelivered_lsc``, ``mark_lsc_installed``, ``set_status``
and ``claim_device``/``release_device``.
This module never logs or exports anything but the auth string's own column, and never commits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ARRAY, String, any_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session, joinedload

from onlineca.errors import (
    CAPFError,
    DeviceNotFound,
    InventoryConflict,
    ParseError,
    PolicyError,
    ProfileNotFound,
)
from onlineca.policy.capf import (
    UTC,
    AuthMode,
    AutoEnrollment,
    CertStatus,
    DeviceOverrides,
    EffectivePolicy,
    Issuer,
    KeyOrder,
    Operation,
    ProfilePolicy,
    RenewalPolicy,
    as_utc,
    default_deadline,
    effective_policy,
    format_deadline,
    hash_auth_string,
    is_auth_string_hash,
    parse_deadline,
    validate_device_name,
    validate_ec_key_size,
    validate_rsa_key_size,
)
from onlineca.store.capf_models import LSC, Device, DeviceEvent, Profile

if TYPE_CHECKING:  # imported where a certificate is stored: listing devices never loads cryptography
    from cryptography import x509

# LSCs that must be revoked (replaced, deleted, discarded; a reconcile step's finds)
# go to CAPF's revocation queue; ``mark_for_revocation`` is the entry point (store.lsc_revocations).
from onlineca.store.lsc_revocations import mark_for_revocation, mark_lsc_for_revocation  # noqa: F401  (re-export)

DEFAULT_PROFILE = ProfilePolicy()


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def _opt(when: dt.datetime | None) -> dt.datetime | None:
    return as_utc(when) if when is not None else None


# ---- audit trail ---------------------------------------------------------------------------

def record_event(s: Session, device_name: str, event: str, detail: str = "", *, actor: str = "",
                 now: dt.datetime | None = None) -> None:
    s.add(DeviceEvent(device_name=device_name, event=event, detail=detail[:4000], actor=actor[:128],
                      at=as_utc(now or utcnow())))


def device_events(s: Session, name: str, limit: int = 50) -> list[DeviceEvent]:
    name = validate_device_name(name)
    rows = s.scalars(select(DeviceEvent).where(DeviceEvent.device_name == name)
                     .order_by(DeviceEvent.at.desc(), DeviceEvent.id.desc()).limit(limit))
    return list(rows)


# ---- profiles ------------------------------------------------------------------------------

def profile_policy(profile: Profile | None) -> ProfilePolicy:
    """The frozen policy value of a profile row (the built-in defaults for a device without one)."""
    if profile is None:
        return DEFAULT_PROFILE
    return ProfilePolicy(
        name=profile.name,
        auth_mode=AuthMode.from_ident(profile.auth_mode),
        key_order=KeyOrder.from_ident(profile.key_order),
        rsa_key_size=profile.rsa_key_size,
        ec_key_size=profile.ec_key_size,
        deadline_days=profile.deadline_days,
        renewal=RenewalPolicy(enabled=profile.renewal_enabled, fraction=profile.renewal_fraction,
                              days_before=profile.renewal_days_before, jitter=profile.renewal_jitter),
        auto_enrollment=AutoEnrollment(by_mic=profile.auto_enroll_mic, mic_trust_store=profile.mic_trust_store,
                                       name_pattern=profile.auto_enroll_name_pattern),
        issuer=Issuer.from_ident(profile.issuer or Issuer.ONLINE_CA.ident),
    )


def _store_profile(row: Profile, p: ProfilePolicy) -> None:
    row.auth_mode, row.key_order = p.auth_mode.ident, p.key_order.ident
    row.rsa_key_size, row.ec_key_size, row.deadline_days = p.rsa_key_size, p.ec_key_size, p.deadline_days
    row.renewal_enabled, row.renewal_fraction = p.renewal.enabled, p.renewal.fraction
    row.renewal_days_before, row.renewal_jitter = p.renewal.days_before, p.renewal.jitter
    row.auto_enroll_mic, row.mic_trust_store = p.auto_enrollment.by_mic, p.auto_enrollment.mic_trust_store
    row.auto_enroll_name_pattern = p.auto_enrollment.name_pattern
    row.issuer = p.issuer.ident


_PROFILE_FIELDS = {"auth_mode", "key_order", "rsa_key_size", "ec_key_size", "deadline_days", "issuer"}
_RENEWAL_FIELDS = {"renewal_enabled": "enabled", "renewal_fraction": "fraction",
                   "renewal_days_before": "days_before", "renewal_jitter": "jitter"}
_AUTO_FIELDS = {"auto_enroll_mic": "by_mic", "mic_trust_store": "mic_trust_store",
                "auto_enroll_name_pattern": "name_pattern"}


def _profile_with(base: ProfilePolicy, changes: dict[str, Any]) -> ProfilePolicy:
    unknown = set(changes) - _PROFILE_FIELDS - set(_RENEWAL_FIELDS) - set(_AUTO_FIELDS) - {"description"}
    if unknown:
        raise PolicyError(sorted(unknown)[0], "is not a profile setting")
    direct: dict[str, Any] = {}
    for key in _PROFILE_FIELDS & set(changes):
        value = changes[key]
        if key == "auth_mode":
            value = AuthMode.parse(value, key)
        elif key == "key_order":
            value = KeyOrder.parse(value, key)
        elif key == "rsa_key_size":
            value = validate_rsa_key_size(value)
        elif key == "ec_key_size":
            value = validate_ec_key_size(value)
        elif key == "issuer":
            value = Issuer.parse(value, key)
        direct[key] = int(value) if key == "deadline_days" else value
    renewal = replace(base.renewal, **{_RENEWAL_FIELDS[k]: v for k, v in changes.items() if k in _RENEWAL_FIELDS})
    auto = replace(base.auto_enrollment, **{_AUTO_FIELDS[k]: v for k, v in changes.items() if k in _AUTO_FIELDS})
    return replace(base, renewal=renewal, auto_enrollment=auto, **direct)


def add_profile(s: Session, name: str, *, actor: str = "admin", **settings: Any) -> Profile:
    name = (name or "").strip()
    if not name or len(name) > 64:
        raise PolicyError("profile", "a profile needs a name of 1 to 64 characters")
    if s.scalar(select(Profile.id).where(Profile.name == name)) is not None:
        raise InventoryConflict(f"profile {name!r} already exists")
    policy = _profile_with(replace(DEFAULT_PROFILE, name=name), settings)
    row = Profile(name=name, description=str(settings.get("description", "")))
    _store_profile(row, policy)
    s.add(row)
    s.flush()
    return row


def get_profile(s: Session, name: str) -> Profile:
    row = s.scalar(select(Profile).where(Profile.name == name))
    if row is None:
        raise ProfileNotFound(f"no profile named {name!r}")
    return row


def list_profiles(s: Session) -> list[Profile]:
    return list(s.scalars(select(Profile).order_by(Profile.name)))


def set_profile(s: Session, name: str, *, now: dt.datetime | None = None, **changes: Any) -> Profile:
    row = get_profile(s, name)
    policy = _profile_with(profile_policy(row), changes)
    _store_profile(row, policy)
    if "description" in changes:
        row.description = str(changes["description"])
    if set(changes) & set(_RENEWAL_FIELDS):
        for device in s.scalars(select(Device).where(Device.profile_id == row.id)):
            _update_renewal_due(device, policy.renewal)
    s.flush()
    return row


def delete_profile(s: Session, name: str) -> None:
    row = get_profile(s, name)
    users = s.scalar(select(func.count()).select_from(Device).where(Device.profile_id == row.id)) or 0
    if users:
        raise InventoryConflict(f"profile {name!r} is used by {users} device(s)",
                                hint="Move those devices to another profile first.")
    s.delete(row)
    s.flush()


# ---- devices -------------------------------------------------------------------------------

DEVICE_SETTINGS = ("model", "description", "profile", "operation", "auth_mode", "auth_string", "key_order",
                   "rsa_key_size", "ec_key_size", "deadline")


def find_device(s: Session, name: str, *, for_update: bool = False) -> Device | None:
    stmt = select(Device).where(Device.name == validate_device_name(name))
    if for_update:
        stmt = stmt.with_for_update()
    return s.scalar(stmt)


def get_device(s: Session, name: str) -> Device:
    device = find_device(s, name)
    if device is None:
        raise DeviceNotFound(f"no device named {validate_device_name(name)}")
    return device


def device_policy(device: Device, *, own_auth_mode: bool = False) -> EffectivePolicy:
    """What a session with ``device`` must do (profile defaults + overrides + pending operation);
    ``own_auth_mode``: the device's own auth mode even when the operation names another (a
    scheduled renewal's LSC, which a public-flow phone cannot prove)."""
    operation_mode = device.operation_auth_mode if not own_auth_mode else None
    return effective_policy(
        device.name,
        profile_policy(device.profile),
        _overrides(device),
        operation=Operation.from_ident(device.operation),
        operation_auth_mode=AuthMode.from_ident(operation_mode) if operation_mode else None,
        deadline=_opt(device.operation_deadline),
        auth_string=device.auth_string_hash,
    )


def _overrides(device: Device) -> DeviceOverrides:
    return DeviceOverrides(
        auth_mode=AuthMode.from_ident(device.auth_mode) if device.auth_mode else None,
        key_order=KeyOrder.from_ident(device.key_order) if device.key_order else None,
        rsa_key_size=device.rsa_key_size, ec_key_size=device.ec_key_size)


def _clean_settings(s: Session, changes: dict[str, Any], profile_ids: dict[str, int] | None = None) -> dict[str, Any]:
    """Typed, validated column values for the given settings (``None``/"" = back to the profile);
    ``profile_ids``: a cache of profile ids by name (a bulk import asks for each profile once)."""
    unknown = set(changes) - set(DEVICE_SETTINGS)
    if unknown:
        raise PolicyError(sorted(unknown)[0], "is not a device setting")
    out: dict[str, Any] = {}
    for key, value in changes.items():
        empty = value is None or (isinstance(value, str) and not value.strip())
        if key in ("model", "description"):
            text = "" if value is None else str(value).strip()
            if len(text) > (64 if key == "model" else 256):
                raise PolicyError(key, "is too long")
            out[key] = text
        elif key == "profile":
            out["profile_id"] = None if empty else _profile_id(s, str(value).strip(), profile_ids)
        elif key == "operation":
            out[key] = Operation.NONE.ident if empty else Operation.parse(value, key).ident
        elif key == "auth_mode":
            out[key] = None if empty else AuthMode.parse(value, key).ident
        elif key == "key_order":
            out[key] = None if empty else KeyOrder.parse(value, key).ident
        elif key == "auth_string":  # kept only as its salted hash (an exported hash imports as it is)
            text = "" if empty else str(value).strip()
            out["auth_string_hash"] = None if empty else (
                text if is_auth_string_hash(text) else hash_auth_string(text, secrets.token_bytes(16)))
        elif key == "rsa_key_size":
            out[key] = None if empty else validate_rsa_key_size(value)
        elif key == "ec_key_size":
            out[key] = None if empty else validate_ec_key_size(value)
        elif key == "deadline":
            out["operation_deadline"] = None if empty else (
                as_utc(value) if isinstance(value, dt.datetime) else parse_deadline(str(value)))
    return out


def _profile_id(s: Session, name: str, cache: dict[str, int] | None) -> int:
    if cache is None:
        return get_profile(s, name).id
    if name not in cache:
        cache[name] = get_profile(s, name).id
    return cache[name]


EventSink = Callable[[str, str, str], None]  # (device name, event, detail)


def _apply(s: Session, device: Device, values: dict[str, Any], *, actor: str, now: dt.datetime,
           is_new: bool, emit: EventSink | None = None) -> None:
    """Validate the device as it would be after ``values``, then write them and the audit trail
    (to the session, or to ``emit`` when given: the bulk import writes the events itself)."""
    def to_session(name: str, event: str, detail: str) -> None:
        record_event(s, name, event, detail, actor=actor, now=now)

    sink = emit or to_session
    old_operation = device.operation
    watched = set(values) | {"operation_deadline", "operation_auth_mode", "status", "status_at", "profile_id"}
    before = {k: getattr(device, k, None) for k in watched}
    try:
        _change(s, device, values, now=now, is_new=is_new, old_operation=old_operation)
    except BaseException:
        for key, value in before.items():  # a refused change leaves the device as it was
            setattr(device, key, value)
        raise
    operation = Operation.from_ident(device.operation)
    changed = [k for k in values if before.get(k) != getattr(device, k)]
    if before.get("operation_auth_mode") and not device.operation_auth_mode and "auth_mode" in values:
        changed.append("operation_auth_mode")  # the pending renewal now authenticates as set
    if is_new or changed:
        shown = {("auth_string" if k == "auth_string_hash" else k):
                 ("***" if k == "auth_string_hash" and getattr(device, k) else getattr(device, k)) for k in changed}
        sink(device.name, "DEVICE_ADDED" if is_new else "DEVICE_CHANGED",
             ", ".join(f"{k}={v}" for k, v in shown.items()))
    if old_operation != device.operation or (is_new and operation is not Operation.NONE):
        sink(device.name, "OPERATION_SET",
             f"{operation.ident} by {device.operation_deadline and format_deadline(device.operation_deadline)}")
    if old_operation != device.operation and not is_new:
        # An administrator reset the operation: an LSC issued for the old one is never delivered.
        discard_undelivered(s, device, f"the operation was changed ({old_operation} -> {device.operation})",
                            actor=actor, now=now)


def _change(s: Session, device: Device, values: dict[str, Any], *, now: dt.datetime, is_new: bool,
            old_operation: str) -> None:
    for key, value in values.items():
        setattr(device, key, value)
    if "auth_mode" in values:
        # The administrator's auth mode applies to what is pending too (a scheduled renewal asks
        # for the LSC until then).
        device.operation_auth_mode = None
    if device.profile_id is not None and (device.profile is None or device.profile.id != device.profile_id):
        device.profile = s.get(Profile, device.profile_id)
    elif device.profile_id is None:
        device.profile = None
    operation = Operation.from_ident(device.operation)
    if operation is Operation.NONE:
        device.operation_deadline = None
        device.operation_auth_mode = None
    else:
        if device.operation_deadline is None or ("operation" in values and old_operation != device.operation
                                                 and "operation_deadline" not in values):
            device.operation_deadline = default_deadline(now, profile_policy(device.profile).deadline_days)
        if "operation_deadline" in values and as_utc(device.operation_deadline) <= as_utc(now):
            raise PolicyError("deadline", f"{format_deadline(device.operation_deadline)} is already past")
        if old_operation != device.operation or is_new:
            device.status = CertStatus.OPERATION_PENDING.ident
            device.status_at = now
    device_policy(device)  # cross-field rules (an auth string for AUTH_BY_STR...)


def add_device(s: Session, name: str, *, actor: str = "admin", now: dt.datetime | None = None,
               known_new: bool = False, flush: bool = True, **settings: Any) -> Device:
    """A new device.  ``known_new`` / ``flush=False`` (bulk import): the caller has
    checked that the name is free and flushes many devices at once (one batched INSERT)."""
    name = validate_device_name(name)
    now = as_utc(now or utcnow())
    values = _clean_settings(s, settings)
    if not known_new and find_device(s, name) is not None:
        raise InventoryConflict(f"device {name} already exists", hint="Use 'devices set' to change it.")
    device = Device(name=name, model="", description="", operation=Operation.NONE.ident,
                    status=CertStatus.NONE.ident, renewal_attempts=0, renewal_last_error="", failed_auth_count=0,
                    created_at=now, updated_at=now)
    _apply(s, device, values, actor=actor, now=now, is_new=True)
    s.add(device)
    if flush:
        s.flush()
    return device


class _NewDevice:
    """A device being added in bulk, as plain attributes: ``_apply`` validates and completes it
    exactly as it does an ORM ``Device``, without the ORM's per-object cost; ``new_device_row``
    turns it into one row's column values."""

    def __init__(self, **values: Any) -> None:
        for column in _DEVICE_COLUMNS:
            setattr(self, column, None)
        self.profile: Profile | None = None
        self.__dict__.update(values)


_DEVICE_COLUMNS = tuple(c.key for c in Device.__table__.columns if c.key != "id")


def new_device_row(s: Session, name: str, *, actor: str, now: dt.datetime, profile_ids: dict[str, int],
                   **settings: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What ``add_device`` would write for a device the caller knows is new, as column values
    (the ``device`` row without its id, and its ``device_event`` rows), for a bulk INSERT or COPY.
    The same checks as ``add_device`` (they raise the same errors); nothing is added to ``s``."""
    row, events = _new_device(s, name, actor=actor, now=now, profile_ids=profile_ids, settings=settings)
    for event in events:
        event["detail"] = event["detail"][:4000]
    return row, events


def _new_device(s: Session, name: str, *, actor: str, now: dt.datetime, profile_ids: dict[str, int],
                settings: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    name = validate_device_name(name)
    values = _clean_settings(s, settings, profile_ids)
    draft = _NewDevice(name=name, model="", description="", operation=Operation.NONE.ident,
                       status=CertStatus.NONE.ident, renewal_attempts=0, renewal_last_error="",
                       failed_auth_count=0, created_at=now, updated_at=now)
    events: list[dict[str, Any]] = []

    def emit(device_name: str, event: str, detail: str) -> None:
        events.append({"device_name": device_name, "event": event, "detail": detail, "actor": actor[:128], "at": now})

    _apply(s, cast(Device, draft), values, actor=actor, now=now, is_new=True, emit=emit)
    return {c: getattr(draft, c) for c in _DEVICE_COLUMNS}, events


# Stands for a line's own description in a checked combination's event details (never in a cell
# of a combination that is reused: such a line is checked on its own).
_SLOT = "\x00"


class NewDeviceRows:
    """``new_device_row`` for the many lines of one bulk file, checked once per combination.

    A bulk file repeats the same settings (model, profile, operation, modes, key sizes...) on every
    line; what varies is the name, the description and an auth string's hash, none of which the
    checks read except a description's length and whether it is empty.  So each distinct
    combination of the other cells (in their order: the first bad cell is the one named) is checked
    once, by ``new_device_row``'s own code, and the checked row and events are reused with the
    line's name, description and hash put in.  A combination that fails, an auth string in clear, a
    description too long: that line is checked on its own, so its error is worded as ever."""

    def __init__(self, s: Session, *, actor: str, now: dt.datetime, profile_ids: dict[str, int] | None = None) -> None:
        self._s, self._actor, self._now = s, actor, now
        self._profile_ids: dict[str, int] = {} if profile_ids is None else profile_ids
        self._checked: dict[tuple[Any, ...], tuple[dict[str, Any], list[dict[str, Any]]] | None] = {}

    def row(self, name: str, settings: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The ``device`` row and ``device_event`` rows of a new device (the same errors as
        ``add_device``)."""
        name = validate_device_name(name)  # first, as add_device does (and a bad name spoils no combination)
        key = self._key(settings)
        if key is not None:
            checked = self._checked[key] if key in self._checked else self._check(name, settings, key)
            if checked is not None:
                return self._reuse(checked, name, settings)
        return new_device_row(self._s, name, actor=self._actor, now=self._now, profile_ids=self._profile_ids,
                              **settings)

    @staticmethod
    def _key(settings: dict[str, Any]) -> tuple[Any, ...] | None:
        key: list[Any] = []
        for k, v in settings.items():
            if not isinstance(v, str) or _SLOT in v:
                return None
            if k == "description":
                if len(v.strip()) > 256:
                    return None
                v = bool(v.strip())
            elif k == "auth_string" and v.strip():
                if not is_auth_string_hash(v.strip()):
                    return None  # in clear: hashed with its own salt, and checked, on its own
                v = True
            key.append((k, v))
        return tuple(key)

    def _check(self, name: str, settings: dict[str, Any],
               key: tuple[Any, ...]) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        probe = dict(settings)
        if (probe.get("description") or "").strip():
            probe["description"] = _SLOT
        try:
            checked: tuple[dict[str, Any], list[dict[str, Any]]] | None = _new_device(
                self._s, name, actor=self._actor, now=self._now, profile_ids=self._profile_ids, settings=probe)
        except CAPFError:
            checked = None
        self._checked[key] = checked
        return checked

    @staticmethod
    def _reuse(checked: tuple[dict[str, Any], list[dict[str, Any]]], name: str,
               settings: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        template, template_events = checked
        row = template.copy()
        row["name"] = name
        description = str(settings.get("description") or "").strip()
        if description:
            row["description"] = description
        if row["auth_string_hash"] is not None:
            row["auth_string_hash"] = str(settings["auth_string"]).strip()
        events = []
        for event in template_events:
            event = event.copy()
            event["device_name"] = name
            detail = event["detail"]
            event["detail"] = (detail.replace(_SLOT, description) if description else detail)[:4000]
            events.append(event)
        return row, events


def insert_new_devices(s: Session, rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """Write ``new_device_row``'s rows and events in the session's transaction: COPY on
    PostgreSQL (psycopg 3), one ``executemany`` INSERT elsewhere."""
    if not rows:
        return
    s.flush()  # whatever the session holds goes first (an upsert's changed devices and their events)
    _bulk_insert(s, Device, _DEVICE_COLUMNS, rows)
    insert_events(s, events)


_EVENT_COLUMNS = ("device_name", "event", "detail", "actor", "at")


def insert_events(s: Session, events: list[dict[str, Any]]) -> None:
    """Audit-trail rows (``device_name, event, detail, actor, at``, already cut to their columns'
    sizes) in the session's transaction: COPY on PostgreSQL, one ``executemany`` elsewhere."""
    _bulk_insert(s, DeviceEvent, _EVENT_COLUMNS, events)


def _bulk_insert(s: Session, model: Any, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    conn = s.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        raw: Any = conn.connection.driver_connection
        table = model.__tablename__
        # COPY's text format written here, a batch in one piece: a bulk batch repeats most values
        # (the same timestamps, model, modes...), each formatted once (psycopg's write_row
        # formats every value of every row).
        memo: dict[tuple[type, Any], str] = {}
        memo_str: dict[str, str] = {}
        lines = []
        for row in rows:
            cells = []
            for c in columns:
                value = row[c]
                if value is None:
                    cells.append("\\N")
                elif type(value) is str:
                    text = memo_str.get(value)
                    if text is None:
                        text = memo_str[value] = value.translate(_COPY_ESCAPES)
                    cells.append(text)
                else:
                    key = (type(value), value)
                    text = memo.get(key)
                    if text is None:
                        text = memo[key] = _copy_text(value)
                    cells.append(text)
            lines.append("\t".join(cells))
        lines.append("")
        with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            copy.write("\n".join(lines))
        return
    conn.execute(insert(model), rows)


# COPY's text format: a backslash, a tab, a line feed or a carriage return in a value is escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (int, float)):
        return repr(value)
    return str(value).translate(_COPY_ESCAPES)


def existing_device_names(s: Session, names: Iterable[str]) -> set[str]:
    """Which of ``names`` are devices already (one query; on PostgreSQL one array parameter, not
    one bound parameter a name)."""
    wanted = list(names)
    if not wanted:
        return set()
    if s.get_bind().dialect.name == "postgresql":
        return set(s.scalars(select(Device.name).where(
            Device.name == any_(bindparam("names", wanted, type_=ARRAY(String))))))
    return set(s.scalars(select(Device.name).where(Device.name.in_(wanted))))


def set_device(s: Session, name: str, *, actor: str = "admin", now: dt.datetime | None = None,
               **settings: Any) -> Device:
    now = as_utc(now or utcnow())
    device = get_device(s, name)
    values = _clean_settings(s, settings)
    _apply(s, device, values, actor=actor, now=now, is_new=False)
    if "profile_id" in values:
        _update_renewal_due(device, profile_policy(device.profile).renewal)
    s.flush()
    return device


def delete_device(s: Session, name: str, *, actor: str = "admin", now: dt.datetime | None = None) -> None:
    device = get_device(s, name)
    for lsc in s.scalars(select(LSC).where(LSC.device_id == device.id, LSC.state.in_(("installed", "issued")))):
        mark_lsc_for_revocation(s, lsc, device.name, "cessationOfOperation", "the device was deleted", actor=actor,
                                now=now)
    s.execute(delete(LSC).where(LSC.device_id == device.id))
    s.delete(device)
    record_event(s, device.name, "DEVICE_DELETED", actor=actor, now=now)
    s.flush()


@dataclass(frozen=True)
class DeviceFilter:
    """Filters of ``devices list``/``export``; every given one must hold."""

    status: str | None = None          # identifier or display words
    operation: str | None = None
    profile: str | None = None
    name: str | None = None            # glob: SEP74A0*
    model: str | None = None
    lsc_expires_before: dt.datetime | None = None
    has_lsc: bool | None = None

    def where(self) -> list[Any]:
        clauses: list[Any] = []
        if self.status:
            clauses.append(Device.status == CertStatus.parse(self.status, "status").ident)
        if self.operation:
            clauses.append(Device.operation == Operation.parse(self.operation, "operation").ident)
        if self.profile:
            clauses.append(Device.profile_id == select(Profile.id).where(Profile.name == self.profile)
                           .scalar_subquery())
        if self.name:
            clauses.append(Device.name.like(_glob_to_like(self.name.upper()), escape="\\"))
        if self.model:
            clauses.append(Device.model == self.model)
        if self.lsc_expires_before is not None:
            clauses.append(Device.lsc_not_after < as_utc(self.lsc_expires_before))
        if self.has_lsc is not None:
            clauses.append(Device.lsc_serial.is_not(None) if self.has_lsc else Device.lsc_serial.is_(None))
        return clauses


def _glob_to_like(pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append({"*": "%", "?": "_"}.get(ch, ch))
    return "".join(out)


def list_devices(s: Session, filt: DeviceFilter | None = None, *, limit: int | None = None,
                 offset: int = 0) -> list[Device]:
    stmt = select(Device).where(*(filt or DeviceFilter()).where()).order_by(Device.name).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(s.scalars(stmt))


def iter_devices(s: Session, filt: DeviceFilter | None = None, *, limit: int | None = None, offset: int = 0,
                 batch: int = 1000) -> Iterator[Device]:
    """The devices by name, fetched ``batch`` at a time (a server-side cursor on PostgreSQL) with
    their profiles in the same query: the first comes at once and memory stays bounded however
    many there are (``list_devices`` holds them all)."""
    stmt = (select(Device).where(*(filt or DeviceFilter()).where()).order_by(Device.name).offset(offset)
            .options(joinedload(Device.profile)).execution_options(yield_per=batch))
    if limit is not None:
        stmt = stmt.limit(limit)
    yield from s.scalars(stmt)


def count_devices(s: Session, filt: DeviceFilter | None = None) -> int:
    return s.scalar(select(func.count()).select_from(Device).where(*(filt or DeviceFilter()).where())) or 0


# ---- status and the operation's end (used by the session server) --------------------------

def set_status(s: Session, name: str, status: Any, *, actor: str = "capf", now: dt.datetime | None = None,
               detail: str = "", end_operation: bool = False, device: Device | None = None) -> Device:
    """Record an operation's outcome; ``end_operation`` puts the operation back to none.  A caller
    that holds the row already passes it as ``device`` (one SELECT, and one UPDATE, fewer)."""
    now = as_utc(now or utcnow())
    device = device if device is not None else get_device(s, name)
    st = CertStatus.parse(status, "status")
    device.status, device.status_at = st.ident, now
    if end_operation:
        device.operation = Operation.NONE.ident
        device.operation_deadline = None
        device.operation_auth_mode = None
    record_event(s, device.name, "STATUS", f"{st.log}{': ' + detail if detail else ''}", actor=actor, now=now)
    s.flush()
    return device


# ---- LSCs ----------------------------------------------------------------------------------

def serial_hex(serial: int) -> str:
    return format(serial, "x")


def record_lsc_issued(s: Session, name: str, der: bytes, *, actor: str = "capf",
                      now: dt.datetime | None = None, cert: x509.Certificate | None = None) -> LSC:
    """Store a certificate the CA issued for ``name`` before it is delivered (state ``issued``).
    ``der`` is kept as handed over; a caller that holds the parsed ``cert`` already passes it
    (it is not parsed a second time)."""
    from onlineca import pki

    now = as_utc(now or utcnow())
    device = get_device(s, name)
    if cert is None:
        try:
            cert = pki.load_certificate(der)
        except ParseError as exc:
            raise CAPFError(f"{device.name}: the issued certificate does not parse: {exc.message}") from None
        if der[:1] != b"\x30":  # PEM or base64 was handed over: the database keeps DER
            der = pki.cert_der(cert)
    row = LSC(device_id=device.id, serial=serial_hex(cert.serial_number), issuer=cert.issuer.rfc4514_string(),
              subject=cert.subject.rfc4514_string(), not_before=cert.not_valid_before_utc,
              not_after=cert.not_valid_after_utc, der=bytes(der), state="issued", issued_at=now)
    s.add(row)
    record_event(s, device.name, "LSC_ISSUED", f"serial={row.serial} issuer={row.issuer}", actor=actor, now=now)
    s.flush()
    return row


def discard_undelivered(s: Session, device: Device, why: str, *, actor: str = "capf",
                        now: dt.datetime | None = None, serial: str | None = None) -> list[str]:
    """Mark the device's issued-but-never-installed LSCs (or only ``serial``) ``discarded``: they
    are never delivered.  One ``LSC_DISCARDED`` event each; the serials."""
    now = as_utc(now or utcnow())
    where = [LSC.device_id == device.id, LSC.state == "issued"]
    if serial is not None:
        where.append(LSC.serial == serial.lower())
    discarded = []
    for row in s.scalars(select(LSC).where(*where).order_by(LSC.id)):
        row.state, row.superseded_at = "discarded", now
        record_event(s, device.name, "LSC_DISCARDED", f"serial={row.serial}: {why}", actor=actor, now=now)
        # It may have reached the phone (a lost STORE_CERT_RESPONSE): it must not stay live.
        mark_lsc_for_revocation(s, row, device.name, "superseded", f"discarded before delivery: {why}",
                                actor=actor, now=now)
        discarded.append(row.serial)
    if discarded:
        s.flush()
    return discarded


def undelivered_lsc(s: Session, name: str, now: dt.datetime | None = None, *,
                    device: Device | None = None) -> LSC | None:
    """The newest still-valid certificate issued for ``name`` and not yet installed, if any."""
    now = as_utc(now or utcnow())
    device = device if device is not None else get_device(s, name)
    return s.scalar(select(LSC).where(LSC.device_id == device.id, LSC.state == "issued", LSC.not_after > now)
                    .order_by(LSC.issued_at.desc(), LSC.id.desc()).limit(1))


def mark_lsc_installed(s: Session, name: str, serial: str, *, actor: str = "capf",
                       now: dt.datetime | None = None) -> LSC:
    """The device confirmed it stored the LSC: supersede the old one, Upgrade Success, operation none."""
    now = as_utc(now or utcnow())
    device = get_device(s, name)
    row = s.scalar(select(LSC).where(LSC.device_id == device.id, LSC.serial == serial.lower()))
    if row is None:
        raise CAPFError(f"{device.name}: no issued LSC with serial {serial}")
    for old in s.scalars(select(LSC).where(LSC.device_id == device.id, LSC.state == "installed", LSC.id != row.id)):
        old.state, old.superseded_at = "superseded", now
        mark_lsc_for_revocation(s, old, device.name, "superseded", f"replaced by serial {row.serial}",
                                actor=actor, now=now)
    row.state, row.installed_at = "installed", now
    device.lsc_serial, device.lsc_issuer = row.serial, row.issuer
    device.lsc_not_before, device.lsc_not_after = row.not_before, row.not_after
    device.renewal_for_serial = None
    device.renewal_scheduled_at = None
    device.renewal_attempts = 0
    device.renewal_next_at = None
    device.renewal_last_error = ""
    _update_renewal_due(device, profile_policy(device.profile).renewal)
    record_event(s, device.name, "LSC_INSTALLED", f"serial={row.serial} not_after={as_utc(row.not_after).isoformat()}",
                 actor=actor, now=now)
    set_status(s, device.name, CertStatus.UPGRADE_SUCCESS, actor=actor, now=now, end_operation=True, device=device)
    return row


def mark_lsc_removed(s: Session, name: str, *, actor: str = "capf", now: dt.datetime | None = None) -> None:
    """A Delete operation succeeded: the device holds no LSC any more."""
    now = as_utc(now or utcnow())
    device = get_device(s, name)
    for old in s.scalars(select(LSC).where(LSC.device_id == device.id, LSC.state == "installed")):
        old.state, old.superseded_at = "superseded", now
        mark_lsc_for_revocation(s, old, device.name, "cessationOfOperation", "the phone deleted it (Delete operation)",
                                actor=actor, now=now)
    device.lsc_serial = device.lsc_issuer = None
    device.lsc_not_before = device.lsc_not_after = device.renewal_due_at = None
    device.renewal_for_serial = None
    set_status(s, device.name, CertStatus.DELETE_SUCCESS, actor=actor, now=now, end_operation=True)


def lsc_history(s: Session, name: str) -> list[LSC]:
    device = get_device(s, name)
    return list(s.scalars(select(LSC).where(LSC.device_id == device.id).order_by(LSC.issued_at, LSC.id)))


def _update_renewal_due(device: Device, renewal: RenewalPolicy) -> None:
    if not renewal.enabled or device.lsc_serial is None or device.lsc_not_before is None \
            or device.lsc_not_after is None:
        device.renewal_due_at = None
        return
    device.renewal_due_at = renewal.window_opens(device.name, device.lsc_serial, device.lsc_not_before,
                                                 device.lsc_not_after)


# ---- row leases ----------------------------------------------------------------------------

def claim_device(s: Session, name: str, node_id: str, ttl: dt.timedelta, *, now: dt.datetime | None = None) -> bool:
    """Take (or extend) the lease on ``name`` for ``node_id``; False if another node holds it.

    One conditional UPDATE: PostgreSQL re-checks the condition on the row it waited for, SQLite
    has a single writer, so two nodes can never both win.  The caller commits to publish it; a
    node that dies loses the lease when it expires.
    """
    now = as_utc(now or utcnow())
    result = s.execute(
        update(Device)
        .where(Device.name == validate_device_name(name),
               or_(Device.lease_owner.is_(None), Device.lease_owner == node_id, Device.lease_expires_at < now))
        .values(lease_owner=node_id, lease_expires_at=now + ttl)
        .execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def renew_leases(s: Session, owner_prefix: str, ttl: dt.timedelta, *, now: dt.datetime | None = None) -> int:
    """The heartbeat: extend every lease whose owner starts with ``owner_prefix`` (one
    process's live sessions, ``<node>#<boot>#``) to ``now + ttl``; how many."""
    now = as_utc(now or utcnow())
    result = s.execute(
        update(Device).where(Device.lease_owner.like(_like_prefix(owner_prefix), escape="\\"))
        .values(lease_expires_at=now + ttl).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def free_dead_leases(s: Session, node_id: str, live_prefix: str) -> int:
    """A node that starts again frees at once the leases its earlier life held (its
    sessions ``<node>#<boot>#...`` of another boot, and its scheduler's); how many."""
    result = s.execute(
        update(Device)
        .where(or_(Device.lease_owner.like(_like_prefix(f"{node_id}#"), escape="\\"),
                   Device.lease_owner == f"scheduler:{node_id}"[:128]),
               Device.lease_owner.not_like(_like_prefix(live_prefix), escape="\\"))
        .values(lease_owner=None, lease_expires_at=None).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def installed_lsc_is(s: Session, device: Device, serial: str, der: bytes) -> str | None:
    """Why the presented certificate (``serial`` hex, ``der``) is not the LSC CAPF
    recorded as installed on ``device``, or None when it is (same serial, same bytes)."""
    serial = serial.lower()
    if device.lsc_serial is None:
        return "CAPF records no installed LSC for it (never issued, deleted or revoked)"
    rows = list(s.scalars(select(LSC).where(LSC.device_id == device.id, LSC.serial == serial)))
    if not rows:
        return f"CAPF never issued it; the installed LSC is serial {device.lsc_serial}"
    fingerprint = hashlib.sha256(der).digest()
    row = next((r for r in rows if hashlib.sha256(bytes(r.der)).digest() == fingerprint), None)
    if row is None:
        return "its bytes differ from the LSC CAPF issued with that serial"
    if row.state != "installed" or device.lsc_serial != serial:
        return f"it is {row.state}; the installed LSC is serial {device.lsc_serial}"
    return None


def release_device(s: Session, name: str, node_id: str) -> bool:
    """Give the lease back (only the holder can)."""
    result = s.execute(
        update(Device)
        .where(Device.name == validate_device_name(name), Device.lease_owner == node_id)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def device_dict(device: Device, *, with_secret: bool = False) -> dict[str, Any]:
    """A JSON-ready description of a device (the auth string only when asked)."""
    policy = device_policy(device)
    out: dict[str, Any] = {
        "name": device.name, "model": device.model, "description": device.description,
        "profile": device.profile.name if device.profile else None,
        "operation": device.operation, "operation_display": Operation.from_ident(device.operation).display,
        "operation_completes_by": format_deadline(device.operation_deadline) if device.operation_deadline else None,
        "status": device.status, "status_display": CertStatus.from_ident(device.status).display,
        "auth_mode": policy.auth_mode.ident, "key_order": policy.key_order.ident,
        "rsa_key_size": policy.rsa_key_size, "ec_key_size": policy.ec_key_size,
        "overrides": {k: getattr(device, k) for k in ("auth_mode", "key_order", "rsa_key_size", "ec_key_size")
                      if getattr(device, k) is not None},
        "lsc": None if device.lsc_serial is None else {
            "serial": device.lsc_serial, "issuer": device.lsc_issuer,
            "not_after": as_utc(device.lsc_not_after).isoformat() if device.lsc_not_after else None},
        "renewal_due_at": as_utc(device.renewal_due_at).isoformat() if device.renewal_due_at else None,
        "renewal_attempts": device.renewal_attempts,
        # How it spoke at its last session: "public" (no extension announced) or "extended".
        "client_flow": device.client_flow,
    }
    if with_secret:  # only whether one is set; it is kept as a hash, shown once when made
        out["auth_string_set"] = device.auth_string_hash is not None
    return out


def names(devices: Iterable[Device]) -> list[str]:
    return [d.name for d in devices]
