"""CAPF's revocation queue for people: list, CSV export, and "done" for the LSCs an
administrator revoked at the CA by hand (AD CS: ``certutil -revoke``); shared by ``onlineca capf
revocations`` and the console.  Every change is audited."""

from __future__ import annotations

import csv
import io
from typing import Any

from onlineca.errors import PolicyError
from onlineca.service import audit
from onlineca.service.core import Actor, Services
from onlineca.store import lsc_revocations as queue

CSV_COLUMNS = ("device", "serial", "issuer", "subject", "not_after", "reason", "why", "state", "requested_at",
               "attempts", "last_error", "done_at", "done_by", "certutil")


def list_revocations(svc: Services, actor: Actor, state: str | None = None, *, limit: int = 10000) -> list[dict[str, Any]]:
    actor.require("read", "list LSC revocations")
    if state and state not in queue.STATES:
        raise PolicyError("state", f"{state!r} is not one of {', '.join(queue.STATES)}")
    with svc.session() as s:
        return [queue.revocation_dict(r) for r in queue.list_revocations(s, state, limit)]


def counts(svc: Services, actor: Actor) -> dict[str, int]:
    actor.require("read", "count LSC revocations")
    with svc.session() as s:
        return queue.counts(s)


def export_csv(svc: Services, actor: Actor, state: str | None = None) -> str:
    """The queue as CSV (one line per LSC, with the ``certutil -revoke`` command for AD CS)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in list_revocations(svc, actor, state):
        writer.writerow(row)
    return out.getvalue()


def mark_done(svc: Services, actor: Actor, serial: str, issuer: str | None = None) -> dict[str, Any]:
    """An administrator revoked this LSC at its CA: record it (the LSC's state becomes revoked)."""
    actor.require("devices.write", "record LSC revocations")
    with svc.session() as s:
        row = queue.mark_revoked_by_hand(s, serial, by=actor.trail, issuer=issuer)
        s.flush()
        after = queue.revocation_dict(row)
        audit.record(s, actor, "lsc.revoked", f"lsc:{row.serial}", {"state": "manual"}, {"state": after["state"]})
    return after


__all__ = ["CSV_COLUMNS", "counts", "export_csv", "list_revocations", "mark_done"]
