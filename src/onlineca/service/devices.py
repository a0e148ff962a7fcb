"""The CAPF inventory as administrators use it: devices, their operations, profiles, bulk CSV.

Wraps ``store.devices`` (which validates every value with ``policy.capf`` and keeps the device's
own trail in ``device_event``) and adds the permission check and the audit entry.  A device's
description (``device_dict``) never holds its auth string: the store keeps only its salted hash,
so nothing can read one back.  An auth string is shown once: the one generated when
a device is added "By Authentication String" without one is returned by ``add_device``.
"""

from __future__ import annotations

import csv
import datetime as dt
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from onlineca.errors import CSVImportError, DeviceNotFound, PolicyError
from onlineca.policy.capf import AuthMode, Operation, as_utc
from onlineca.service import audit
from onlineca.service.core import Actor, Services
from onlineca.store import devices as inv, devices_csv
from onlineca.store.capf_models import Device

MAX_BULK = 1000


def _audit_view(device: Device) -> dict[str, Any]:
    """What the audit log keeps of a device: its description, and whether an auth string is set."""
    out = inv.device_dict(device)
    out["auth_string_set"] = device.auth_string_hash is not None
    return out


def device_detail(s: Any, device: Device, *, with_secret: bool = False, events: int = 20) -> dict[str, Any]:
    """A device with its effective policy log lines, LSC history and recent events (``devices show``)."""
    data = inv.device_dict(device, with_secret=with_secret)
    data["policy_log"] = inv.device_policy(device).log_lines()
    data["lsc_history"] = [{"serial": c.serial, "issuer": c.issuer, "state": c.state,
                            "not_after": as_utc(c.not_after).isoformat(),
                            "installed_at": as_utc(c.installed_at).isoformat() if c.installed_at else None}
                           for c in inv.lsc_history(s, device.name)]
    data["events"] = [{"at": as_utc(e.at).isoformat(), "actor": e.actor, "event": e.event, "detail": e.detail}
                      for e in inv.device_events(s, device.name, limit=events)]
    return data


@dataclass(frozen=True)
class DeviceQuery:
    """Filters of the device list (every one given must match)."""

    status: str | None = None
    operation: str | None = None
    profile: str | None = None
    name: str | None = None
    model: str | None = None
    lsc_expires_before: dt.datetime | None = None
    has_lsc: bool | None = None

    def filter(self) -> inv.DeviceFilter:
        return inv.DeviceFilter(status=self.status or None, operation=self.operation or None,
                                profile=self.profile or None, name=self.name or None, model=self.model or None,
                                lsc_expires_before=self.lsc_expires_before, has_lsc=self.has_lsc)


def list_devices(svc: Services, actor: Actor, query: DeviceQuery | None = None, *, limit: int | None = 100,
                 offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    actor.require("read", "list devices")
    filt = (query or DeviceQuery()).filter()
    with svc.session() as s:
        total = inv.count_devices(s, filt)
        return total, [inv.device_dict(d) for d in inv.list_devices(s, filt, limit=limit, offset=offset)]


def iter_devices(svc: Services, actor: Actor, query: DeviceQuery | None = None, *, limit: int | None = None,
                 offset: int = 0) -> tuple[int, Iterator[dict[str, Any]]]:
    """How many devices match, and their descriptions streamed in name order from one session
    (closed once the iterator is exhausted or closed): ``capf devices list`` on any inventory."""
    actor.require("read", "list devices")
    filt = (query or DeviceQuery()).filter()
    with svc.session() as s:
        total = inv.count_devices(s, filt)

    def rows() -> Iterator[dict[str, Any]]:
        with svc.session() as s:
            for device in inv.iter_devices(s, filt, limit=limit, offset=offset):
                yield inv.device_dict(device)

    return total, rows()


def get_device(svc: Services, actor: Actor, name: str, *, with_secret: bool = False) -> dict[str, Any]:
    actor.require("read", "read devices")
    if with_secret:
        actor.require("devices.write", "read auth strings")
    with svc.session() as s:
        return device_detail(s, inv.get_device(s, name), with_secret=with_secret)


def _generated_auth_string(settings: dict[str, Any]) -> str | None:
    mode = settings.get("auth_mode")
    if mode and AuthMode.parse(mode, "auth_mode") is AuthMode.BY_STR and not settings.get("auth_string"):
        settings["auth_string"] = f"{secrets.randbelow(10**6):06d}"
        return str(settings["auth_string"])
    return None


def add_device(svc: Services, actor: Actor, name: str, *, generate_auth_string: bool = False,
               **settings: Any) -> tuple[dict[str, Any], str | None]:
    """Add a device; returns it and, with ``generate_auth_string``, the auth string made for a
    device "By Authentication String" that was given none (shown once)."""
    actor.require("devices.write", "add devices")
    generated = _generated_auth_string(settings) if generate_auth_string else None
    with svc.session() as s:
        device = inv.add_device(s, name, actor=actor.trail, **settings)
        audit.record(s, actor, "device.add", f"device:{device.name}", None, _audit_view(device))
        return inv.device_dict(device), generated


def change_device(svc: Services, actor: Actor, name: str, **settings: Any) -> dict[str, Any]:
    actor.require("devices.write", "change devices")
    if not settings:
        raise PolicyError("settings", "nothing to change")
    with svc.session() as s:
        device = inv.get_device(s, name)
        before = _audit_view(device)
        device = inv.set_device(s, name, actor=actor.trail, **settings)
        after = _audit_view(device)
        if "auth_string" in settings and before["auth_string_set"] and after["auth_string_set"]:
            after["auth_string_set"] = "changed"
        audit.record(s, actor, "device.change", f"device:{device.name}", before, after)
        return inv.device_dict(device)


def delete_devices(svc: Services, actor: Actor, names: list[str]) -> int:
    """Delete the named devices (all or none: an unknown name deletes nothing)."""
    actor.require("devices.write", "delete devices")
    if len(names) > MAX_BULK:
        raise PolicyError("names", f"at most {MAX_BULK} devices at once")
    with svc.session() as s:
        for name in names:
            device = inv.get_device(s, name)
            before = _audit_view(device)
            inv.delete_device(s, device.name, actor=actor.trail)
            audit.record(s, actor, "device.delete", f"device:{device.name}", before, None)
    return len(names)


def start_operation(svc: Services, actor: Actor, names: list[str], operation: str,
                    deadline: str | dt.datetime | None = None) -> list[dict[str, Any]]:
    """Set the certificate operation (and its "Operation Completes By") of each named device, all or none."""
    actor.require("devices.write", "start operations")
    if not names:
        raise PolicyError("names", "no device given")
    if len(names) > MAX_BULK:
        raise PolicyError("names", f"at most {MAX_BULK} devices at once")
    op = Operation.parse(operation, "operation")
    settings: dict[str, Any] = {"operation": op.ident}
    if deadline:
        settings["deadline"] = deadline
    out = []
    with svc.session() as s:
        for name in names:
            device = inv.get_device(s, name)
            before = _audit_view(device)
            device = inv.set_device(s, device.name, actor=actor.trail, **settings)
            audit.record(s, actor, "device.operation", f"device:{device.name}", before, _audit_view(device))
            out.append(inv.device_dict(device))
    return out


def lsc_history(svc: Services, actor: Actor, name: str) -> list[dict[str, Any]]:
    actor.require("read", "read LSCs")
    with svc.session() as s:
        return [{"serial": c.serial, "issuer": c.issuer, "subject": c.subject, "state": c.state,
                 "not_before": as_utc(c.not_before).isoformat(), "not_after": as_utc(c.not_after).isoformat(),
                 "issued_at": as_utc(c.issued_at).isoformat(),
                 "installed_at": as_utc(c.installed_at).isoformat() if c.installed_at else None,
                 "superseded_at": as_utc(c.superseded_at).isoformat() if c.superseded_at else None}
                for c in inv.lsc_history(s, name)]


def lsc_der(svc: Services, actor: Actor, name: str, serial: str) -> bytes:
    actor.require("read", "read LSCs")
    with svc.session() as s:
        for c in inv.lsc_history(s, name):
            if c.serial == serial.lower():
                return bytes(c.der)
    raise DeviceNotFound(f"{name} has no LSC with serial {serial}", hint="List its LSCs first.")


def device_events(svc: Services, actor: Actor, name: str, limit: int = 50) -> list[dict[str, Any]]:
    actor.require("read", "read device events")
    with svc.session() as s:
        return [{"at": as_utc(e.at).isoformat(), "actor": e.actor, "event": e.event, "detail": e.detail}
                for e in inv.device_events(s, name, limit=limit)]


# ---- bulk CSV ------------------------------------------------------------------------------

def import_csv(svc: Services, actor: Actor, data: str | TextIO, *, mode: str = "upsert",
               trail: str | None = None) -> devices_csv.ImportResult:
    """Import a bulk CSV file, all lines or none (``CSVImportError`` names every bad line)."""
    actor.require("devices.write", "import devices")
    with svc.session() as s:
        result = devices_csv.import_csv(s, data, mode=mode, actor=trail or (actor.trail + "-import" if actor.source == "cli"
                                                                    else actor.trail))
        audit.record(s, actor, "device.import", f"devices:{len(result.added) + len(result.updated)}", None,
                     {"mode": mode, "added": result.added[:200], "updated": result.updated[:200],
                      "count": len(result.added) + len(result.updated)}, only_changes=False)
    return result


def export_csv(svc: Services, actor: Actor, out: TextIO, query: DeviceQuery | None = None, *,
               with_secrets: bool = False) -> int:
    """The bulk CSV of the matching devices.  Without ``with_secrets`` (the console never asks)
    the AUTHENTICATION STRING column is left out, so importing the file back keeps each string;
    with it, the column holds each string's salted hash (which imports as it is)."""
    actor.require("read", "export devices")
    if with_secrets:
        actor.require("devices.write", "export auth strings")
        with svc.session() as s:
            return devices_csv.export_csv(s, out, (query or DeviceQuery()).filter())
    columns = [c for c in devices_csv.CSV_COLUMNS if c != "AUTHENTICATION STRING"]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    n = 0
    with svc.session() as s:
        for device in inv.list_devices(s, (query or DeviceQuery()).filter()):
            writer.writerow(devices_csv.device_csv_row(device))
            n += 1
    return n


# ---- profiles ------------------------------------------------------------------------------

def profile_dict(p: Any) -> dict[str, Any]:
    pol = inv.profile_policy(p)
    return {"name": p.name, "description": p.description, "auth_mode": pol.auth_mode.ident,
            "key_order": pol.key_order.ident, "rsa_key_size": pol.rsa_key_size,
            "ec_key_size": pol.ec_key_size, "deadline_days": pol.deadline_days,
            "renewal": {"enabled": pol.renewal.enabled, "fraction": pol.renewal.fraction,
                        "days_before": pol.renewal.days_before, "jitter": pol.renewal.jitter},
            "auto_enrollment": {"by_mic": pol.auto_enrollment.by_mic,
                                "mic_trust_store": pol.auto_enrollment.mic_trust_store,
                                "name_pattern": pol.auto_enrollment.name_pattern},
            "issuer": pol.issuer.ident}


def list_profiles(svc: Services, actor: Actor) -> list[dict[str, Any]]:
    actor.require("read", "list profiles")
    with svc.session() as s:
        return [profile_dict(p) for p in inv.list_profiles(s)]


def get_profile(svc: Services, actor: Actor, name: str) -> dict[str, Any]:
    actor.require("read", "read profiles")
    with svc.session() as s:
        return profile_dict(inv.get_profile(s, name))


def add_profile(svc: Services, actor: Actor, name: str, **settings: Any) -> dict[str, Any]:
    actor.require("profiles.write", "add profiles")
    with svc.session() as s:
        row = inv.add_profile(s, name, actor=actor.trail, **settings)
        out = profile_dict(row)
        audit.record(s, actor, "profile.add", f"profile:{row.name}", None, out)
        return out


def change_profile(svc: Services, actor: Actor, name: str, **settings: Any) -> dict[str, Any]:
    actor.require("profiles.write", "change profiles")
    with svc.session() as s:
        before = profile_dict(inv.get_profile(s, name))
        row = inv.set_profile(s, name, **settings)
        out = profile_dict(row)
        audit.record(s, actor, "profile.change", f"profile:{row.name}", before, out)
        return out


def delete_profile(svc: Services, actor: Actor, name: str) -> None:
    actor.require("profiles.write", "delete profiles")
    with svc.session() as s:
        before = profile_dict(inv.get_profile(s, name))
        inv.delete_profile(s, name)
        audit.record(s, actor, "profile.delete", f"profile:{name}", before, None)


__all__ = ["MAX_BULK", "CSVImportError", "DeviceQuery", "add_device", "add_profile", "change_device", "change_profile",
           "delete_devices", "delete_profile", "device_detail", "device_events", "export_csv", "get_device",
           "get_profile", "import_csv", "list_devices", "list_profiles", "lsc_der", "lsc_history", "profile_dict",
           "start_operation"]
