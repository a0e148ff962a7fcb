"""Bulk CSV of the CAPF inventory: export and import, in the spirit of bulk-administration files.

One device a line, upper-case column titles, the administrators' words for every value; a file
with one bad line imports nothing and names every bad line (with its line number).  Repository
functions over a SQLAlchemy ``Session``: the caller owns the transaction; this module never commits.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy.orm import Session

from onlineca.errors import CAPFError, CSVImportError, InventoryConflict, PolicyError
from onlineca.policy.capf import (
    AuthMode,
    CertStatus,
    KeyOrder,
    Operation,
    as_utc,
    format_deadline,
    is_auth_string_hash,
    validate_device_name,
)
from onlineca.store.capf_models import Device
from onlineca.store.devices import (
    DeviceFilter,
    NewDeviceRows,
    existing_device_names,
    insert_new_devices,
    list_devices,
    set_device,
    utcnow,
)

if TYPE_CHECKING:  # a pool of processes: imported by an import, not by every command that lists
    from onlineca.store.auth_hashing import AuthStringHasher

# ---- bulk CSV ------------------------------------------------------------------------------

# Column title -> device setting; the read-only columns describe the device and are never imported.
CSV_COLUMNS: dict[str, str | None] = {
    "DEVICE NAME": "name",
    "DESCRIPTION": "description",
    "MODEL": "model",
    "PROFILE": "profile",
    "CERTIFICATE OPERATION": "operation",
    "AUTHENTICATION MODE": "auth_mode",
    "AUTHENTICATION STRING": "auth_string",
    "KEY ORDER": "key_order",
    "RSA KEY SIZE (BITS)": "rsa_key_size",
    "EC KEY SIZE (BITS)": "ec_key_size",
    "OPERATION COMPLETES BY": "deadline",
    "CERTIFICATE STATUS": None,
    "LSC SERIAL": None,
    "LSC ISSUER": None,
    "LSC EXPIRES": None,
}


def device_csv_row(device: Device) -> dict[str, str]:
    def shown(enum: Any, value: str | None) -> str:
        return enum(value).display if value else ""

    return {
        "DEVICE NAME": device.name,
        "DESCRIPTION": device.description,
        "MODEL": device.model,
        "PROFILE": device.profile.name if device.profile else "",
        "CERTIFICATE OPERATION": Operation.from_ident(device.operation).display,
        "AUTHENTICATION MODE": shown(AuthMode, device.auth_mode),
        "AUTHENTICATION STRING": device.auth_string_hash or "",  # its hash, never the digits
        "KEY ORDER": shown(KeyOrder, device.key_order),
        "RSA KEY SIZE (BITS)": str(device.rsa_key_size or ""),
        "EC KEY SIZE (BITS)": str(device.ec_key_size or ""),
        "OPERATION COMPLETES BY": format_deadline(device.operation_deadline) if device.operation_deadline else "",
        "CERTIFICATE STATUS": CertStatus.from_ident(device.status).display,
        "LSC SERIAL": device.lsc_serial or "",
        "LSC ISSUER": device.lsc_issuer or "",
        "LSC EXPIRES": as_utc(device.lsc_not_after).strftime("%Y-%m-%d %H:%M:%S") if device.lsc_not_after else "",
    }


def export_csv(s: Session, out: TextIO, filt: DeviceFilter | None = None) -> int:
    writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    n = 0
    for device in list_devices(s, filt):
        writer.writerow(device_csv_row(device))
        n += 1
    return n


@dataclass
class ImportResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


def import_csv(s: Session, data: str | TextIO, *, mode: str = "upsert", actor: str = "import",
               now: dt.datetime | None = None, hasher: AuthStringHasher | None = None) -> ImportResult:
    """Add (``mode="add"``) or add-or-update (``"upsert"``) the devices of a bulk CSV file.

    Empty cells mean "as the profile says" (or "no change" for an existing device's operation).
    If any line is bad, the session is rolled back and ``CSVImportError`` names every bad line.
    New devices are checked by the same code as ``add_device`` and written without the ORM, a
    batch at a time (COPY on PostgreSQL); auth strings in clear are hashed on every core first
    (``hasher``; by default one started for this import and ended with it).
    """
    if mode not in ("add", "upsert"):
        raise PolicyError("mode", f"{mode!r} is not 'add' or 'upsert'")
    now = as_utc(now or utcnow())
    stream = io.StringIO(data) if isinstance(data, str) else data
    errors: list[tuple[int, str]] = []
    result = ImportResult()
    seen: dict[str, int] = {}
    new_rows = NewDeviceRows(s, actor=actor, now=now)
    reader = csv.reader(stream)
    batch: list[tuple[int, dict[str | None, str]]] = []
    own_hasher = hasher is None
    if hasher is None:
        from onlineca.store.auth_hashing import AuthStringHasher

        hasher = AuthStringHasher()
    hashes = hasher

    def import_batch() -> None:
        # One query for which names exist; the new devices' rows and events are collected and
        # written together, the existing ones changed through the ORM (an upsert).
        _hash_auth_strings(batch, hashes)
        wanted = {name for _line, row in batch if (name := _batch_name(row)) is not None}
        existing = existing_device_names(s, wanted)
        rows: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for line, row in batch:
            try:
                _import_row(s, row, mode, seen, line, result, actor=actor, now=now, existing=existing,
                            new=(rows, events), new_rows=new_rows)
            except CAPFError as exc:
                errors.append((line, exc.message))
        batch.clear()
        if not errors:
            insert_new_devices(s, rows, events)
            s.flush()

    try:
        header = next(reader, None)
        if header is None:
            raise CSVImportError([(1, "the file is empty (no column titles)")])
        titles = [h.strip().upper() for h in header]
        unknown = [t for t in titles if t not in CSV_COLUMNS]
        if unknown or "DEVICE NAME" not in titles:
            problem = f"unknown column {unknown[0]!r}" if unknown else "no 'DEVICE NAME' column"
            raise CSVImportError([(1, f"{problem}; columns are: {', '.join(CSV_COLUMNS)}")])
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(titles):
                errors.append((line, f"{len(cells)} cells where the header has {len(titles)}"))
                continue
            batch.append((line, {CSV_COLUMNS[t]: c for t, c in zip(titles, cells, strict=True) if CSV_COLUMNS[t]}))
            if len(batch) >= IMPORT_BATCH:
                import_batch()
        import_batch()
    except csv.Error as exc:
        errors.append((reader.line_num, f"not CSV: {exc}"))
    except CSVImportError:
        s.rollback()
        raise
    finally:
        if own_hasher:
            hashes.close()
    if errors:
        s.rollback()
        raise CSVImportError(errors)
    return result


def _hash_auth_strings(batch: list[tuple[int, dict[str | None, str]]], hasher: AuthStringHasher) -> None:
    """Replace each auth string in clear by its salted hash, hashed on every core at once (an
    exported hash imports as it is, so the checks that follow see what they would have made).
    A string that is not valid stays as it is: the row's own check names its line."""
    plain = [row for _line, row in batch
             if (text := (row.get("auth_string") or "").strip()) and not is_auth_string_hash(text)]
    if not plain:
        return
    for row, hashed in zip(plain, hasher.hash_all([(row["auth_string"] or "").strip() for row in plain]),
                           strict=True):
        if hashed is not None:
            row["auth_string"] = hashed


# Lines read, checked and written between two flushes of the import's one transaction.
IMPORT_BATCH = 5000


def _batch_name(row: dict[str | None, str]) -> str | None:
    try:
        return validate_device_name(row.get("name", ""))
    except CAPFError:
        return None  # reported with its line by _import_row


def _import_row(s: Session, row: dict[str | None, str], mode: str, seen: dict[str, int], line: int,
                result: ImportResult, *, actor: str, now: dt.datetime, existing: set[str],
                new: tuple[list[dict[str, Any]], list[dict[str, Any]]], new_rows: NewDeviceRows) -> None:
    name = validate_device_name(row.pop("name", ""))
    if name in seen:
        raise InventoryConflict(f"{name} is also on line {seen[name]}")
    seen[name] = line
    settings: dict[str, Any] = {k: v.strip() for k, v in row.items() if k}
    if name not in existing:
        device_row, events = new_rows.row(name, settings)
        new[0].append(device_row)
        new[1].extend(events)
        result.added.append(name)
        return
    if mode == "add":
        raise InventoryConflict(f"{name} already exists (import with mode 'upsert' to update it)")
    if not settings.get("operation"):
        settings.pop("operation", None)
        if not settings.get("deadline"):
            settings.pop("deadline", None)
    set_device(s, name, actor=actor, now=now, **settings)
    result.updated.append(name)
