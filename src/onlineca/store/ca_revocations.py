"""Our CA's revocations and CRLs in the database: the one place that holds their SQL.

``CARevocations.revoke`` records a revocation of a certificate the CA issued (found by serial or
ReqID in ``ca_request``), once: revoking again answers with the first record.  ``status`` is what
OCSP says of a serial.  ``next_crl`` allocates the next CRL number and stores the CRL signed
with it in one transaction, so two processes (``ca serve`` and ``ca revoke``) never publish one
number twice: the loser of a race builds again with the next number.  Every method is one
transaction and blocks: the CA's web server calls them off its event loop.  Nothing here signs;
the caller passes a function that does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from onlineca.errors import CAError
from onlineca.proto.results import ISSUED
from onlineca.store.db import Database
from onlineca.store.models import CARequest
from onlineca.store.revocation_models import CACRL, CARevocation

CRLKind = Literal["base", "delta"]


def _utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


@dataclass(frozen=True)
class RevocationRecord:
    """A revocation as stored: the serial (lower-case hex), ReqID, reason, when and by whom;
    ``already``: it was revoked before this call."""

    serial: str
    req_id: int | None
    reason: str
    revoked_at: dt.datetime
    revoked_by: str
    not_after: dt.datetime | None
    already: bool = False


def _record(row: CARevocation, already: bool = False) -> RevocationRecord:
    return RevocationRecord(row.serial, row.req_id, row.reason, _utc(row.revoked_at), row.revoked_by,
                            _utc(row.not_after) if row.not_after else None, already)


class CARevocations:
    """The ``ca_revocation`` and ``ca_crl`` tables of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def revoke(self, *, serial: str | None = None, req_id: int | None = None, reason: str, by: str,
               requester: str | None = None, now: dt.datetime | None = None) -> RevocationRecord:
        """Revoke the certificate issued with ``serial`` (hex) or for ``req_id``.  With
        ``requester``, only a certificate that account requested (CAError ``CA_REVOKE_FORBIDDEN``
        otherwise).  CAError ``CA_REVOKE_UNKNOWN`` when this CA issued no such certificate."""
        now = now or dt.datetime.now(dt.UTC)
        with self.db.session() as s:
            if req_id is not None:
                req = s.get(CARequest, req_id)
            else:
                req = s.scalar(select(CARequest).where(CARequest.serial == (serial or "").lower()))
            named = f"ReqID {req_id}" if req_id is not None else f"serial {serial}"
            if req is None or req.disposition != ISSUED or not req.serial:
                raise CAError(f"this CA issued no certificate with {named}", code="CA_REVOKE_UNKNOWN")
            if requester is not None and req.requester.lower() != requester.lower():
                raise CAError(f"{requester} may not revoke {named}: another account requested it",
                              code="CA_REVOKE_FORBIDDEN")
            existing = s.get(CARevocation, req.serial)
            if existing is not None:
                return _record(existing, already=True)
            row = CARevocation(serial=req.serial, req_id=req.req_id, reason=reason, revoked_at=now,
                               revoked_by=by[:256], not_after=req.not_after)
            s.add(row)
        return _record(row)

    def get(self, serial: str) -> RevocationRecord | None:
        with self.db.session() as s:
            row = s.get(CARevocation, serial.lower())
            return _record(row) if row is not None else None

    def revoked(self, limit: int = 10000) -> list[RevocationRecord]:
        with self.db.session() as s:
            rows = s.scalars(select(CARevocation).order_by(CARevocation.revoked_at, CARevocation.serial).limit(limit))
            return [_record(r) for r in rows]

    def count(self) -> int:
        with self.db.session() as s:
            return s.scalar(select(func.count()).select_from(CARevocation)) or 0

    def listed(self, now: dt.datetime) -> list[RevocationRecord]:
        """What a CRL made at ``now`` lists: every revocation of a certificate not yet expired
        (RFC 5280 §3.3 lets an expired one leave the CRL)."""
        with self.db.session() as s:
            rows = s.scalars(select(CARevocation).where(
                (CARevocation.not_after.is_(None)) | (CARevocation.not_after > now)).order_by(CARevocation.serial))
            return [_record(r) for r in rows]

    def status(self, serial: str) -> tuple[Literal["good", "revoked", "unknown"], RevocationRecord | None]:
        """OCSP's answer for ``serial`` (hex): revoked, good (issued here, not revoked) or unknown."""
        serial = serial.lower()
        with self.db.session() as s:
            row = s.get(CARevocation, serial)
            if row is not None:
                return "revoked", _record(row)
            issued = s.scalar(select(CARequest.req_id).where(CARequest.serial == serial,
                                                              CARequest.disposition == ISSUED))
            return ("good" if issued is not None else "unknown"), None

    # ---- CRLs -----------------------------------------------------------------------------------

    def latest(self, kind: CRLKind) -> CACRL | None:
        with self.db.session() as s:
            return s.scalar(select(CACRL).where(CACRL.kind == kind).order_by(CACRL.number.desc()).limit(1))

    def next_crl(self, kind: CRLKind, build: Callable[[int], tuple[bytes, dt.datetime, dt.datetime, int]],
                 base_number: int | None = None) -> CACRL:
        """Store the CRL ``build(number)`` makes with the next CRL number: ``build`` returns (DER,
        thisUpdate, nextUpdate, entries).  Retried with a newer number when another process took
        this one meanwhile."""
        for _attempt in range(5):
            try:
                with self.db.session() as s:
                    number = (s.scalar(select(func.max(CACRL.number))) or 0) + 1
                    der, this_update, next_update, entries = build(number)
                    row = CACRL(number=number, kind=kind, base_number=base_number, this_update=this_update,
                                next_update=next_update, entries=entries, der=der)
                    s.add(row)
                return row
            except IntegrityError:
                continue
        raise CAError("could not allocate a CRL number (another process keeps taking them)", code="CA_CRL")


__all__ = ["CARevocations", "CRLKind", "RevocationRecord"]
