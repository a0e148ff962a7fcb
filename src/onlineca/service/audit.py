"""The audit log: every change made through the API, the pages or the command line.

``record`` is called by each changing service function inside its own transaction, so a change
and its audit entry commit together or not at all.  ``before`` and ``after`` are JSON objects of
what changed; keys that name a secret (passwords, tokens, auth strings) are replaced by ``"***"``
before anything is written, whoever the caller is.  ``entries`` and ``export_csv`` read it back.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, TextIO

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from onlineca.policy.capf import as_utc
from onlineca.service.core import Actor, Services
from onlineca.store import AuditEntry

SECRET_WORDS = ("password", "auth_string", "token", "secret", "csrf", "digest", "hash")
CSV_COLUMNS = ["id", "at", "actor", "role", "source", "address", "action", "target", "before", "after"]


def _is_secret(key: str) -> bool:
    low = key.lower()
    return any(word in low for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """``value`` with every secret-named key's value replaced by ``"***"`` (``None`` stays ``None``)."""
    if isinstance(value, dict):
        return {k: ("***" if _is_secret(str(k)) and v not in (None, "", False) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, dt.datetime):
        return as_utc(value).isoformat()
    return value


def _json(value: dict[str, Any] | None) -> str:
    return "" if value is None else json.dumps(redact(value), sort_keys=True, default=str)[:20000]


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> tuple[dict[str, Any] | None,
                                                                                dict[str, Any] | None]:
    """Only the keys whose values differ (whole objects for an addition or a removal)."""
    if before is None or after is None:
        return before, after
    keys = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after.get(k) for k in keys}


def record(s: Session, actor: Actor, action: str, target: str, before: dict[str, Any] | None = None,
           after: dict[str, Any] | None = None, *, only_changes: bool = True) -> None:
    """Add one audit entry to the caller's transaction (secrets redacted)."""
    if only_changes:
        before, after = diff(before, after)
    s.add(AuditEntry(at=dt.datetime.now(dt.UTC), actor=actor.name[:128], role=actor.role[:16], source=actor.source,
                     address=(actor.address or "")[:64], action=action[:64], target=target[:256],
                     before=_json(before), after=_json(after)))


@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    source: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    text: str | None = None

    def where(self) -> list[Any]:
        clauses: list[Any] = []
        if self.actor:
            clauses.append(AuditEntry.actor == self.actor)
        if self.action:
            clauses.append(AuditEntry.action.like(self.action.replace("*", "%")))
        if self.target:
            clauses.append(AuditEntry.target == self.target)
        if self.source:
            clauses.append(AuditEntry.source == self.source)
        if self.since is not None:
            clauses.append(AuditEntry.at >= as_utc(self.since))
        if self.until is not None:
            clauses.append(AuditEntry.at < as_utc(self.until))
        if self.text:
            like = f"%{self.text}%"
            clauses.append(or_(AuditEntry.target.like(like), AuditEntry.before.like(like),
                               AuditEntry.after.like(like), AuditEntry.action.like(like)))
        return clauses


def entry_dict(e: AuditEntry) -> dict[str, Any]:
    return {"id": e.id, "at": as_utc(e.at).isoformat(), "actor": e.actor, "role": e.role, "source": e.source,
            "address": e.address, "action": e.action, "target": e.target,
            "before": json.loads(e.before) if e.before else None,
            "after": json.loads(e.after) if e.after else None}


def entries(svc: Services, actor: Actor, query: AuditQuery | None = None, *, limit: int = 100,
            offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """Newest first: (how many match, one page of them)."""
    actor.require("read", "read the audit log")
    clauses = (query or AuditQuery()).where()
    with svc.session() as s:
        total = s.scalar(select(func.count()).select_from(AuditEntry).where(*clauses)) or 0
        rows = s.scalars(select(AuditEntry).where(*clauses).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
                         .offset(offset).limit(limit))
        return total, [entry_dict(e) for e in rows]


def export_csv(svc: Services, actor: Actor, out: TextIO, query: AuditQuery | None = None) -> int:
    """Every matching entry, oldest first, as CSV (before/after as JSON cells)."""
    actor.require("read", "export the audit log")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    n = 0
    with svc.session() as s:
        for e in s.scalars(select(AuditEntry).where(*(query or AuditQuery()).where())
                           .order_by(AuditEntry.at, AuditEntry.id)):
            d = entry_dict(e)
            writer.writerow([d["id"], d["at"], d["actor"], d["role"], d["source"], d["address"], d["action"],
                             d["target"], e.before, e.after])
            n += 1
    return n


__all__ = ["CSV_COLUMNS", "AuditQuery", "diff", "entries", "entry_dict", "export_csv", "record", "redact"]
