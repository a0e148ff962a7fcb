"""The CA's requests in the database: the one place that holds the CA's SQL.

``CARequests`` stores a submission with its disposition (and certificate, when issued) in one
INSERT, so a certificate is committed before any client can see its ReqID; reads one request or
a list; and resolves a pending one (a certificate manager's "Issue" or "Deny") under a row lock,
so two managers cannot resolve the same request twice.  HRESULTs are stored as Windows stores
them (signed 32-bit).  Every method is one transaction and blocks: the CA's web server calls
them off its event loop.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, insert, select

from onlineca.errors import CAError
from onlineca.proto.certsrv.hresults import to_signed
from onlineca.proto.results import PENDING, Disposition
from onlineca.store.db import Database
from onlineca.store.models import CARequest


@dataclass(frozen=True)
class Resolution:
    """What becomes of a request: its disposition, HRESULT, disposition message and who decided
    (``policy`` or a manager); an issued one carries its certificate's DER, serial and expiry."""

    disposition: Disposition
    hresult: int = 0
    message: str = ""
    by: str = ""
    cert_der: bytes | None = None
    serial: str | None = None
    not_after: dt.datetime | None = None


def _apply(row: CARequest, r: Resolution) -> None:
    row.disposition, row.hresult, row.disposition_message = r.disposition, to_signed(r.hresult), r.message
    if r.cert_der is not None:
        row.cert_der, row.serial, row.not_after = r.cert_der, r.serial, r.not_after
    if r.disposition != PENDING:
        row.resolved_at, row.resolved_by = dt.datetime.now(dt.UTC), r.by


class CARequests:
    """The ``ca_request`` table of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def submit(self, *, requester: str, template: str, csr_der: bytes, attributes: str, subject: str,
               resolution: Resolution) -> CARequest:
        """A new request, already decided (``resolution``), stored in one transaction; its ReqID
        is the database's next."""
        row = CARequest(requester=requester, template=template[:256], csr_der=csr_der,
                        attributes=attributes[:4096], subject=subject[:1024], resolved_by="",
                        submitted_at=dt.datetime.now(dt.UTC))
        _apply(row, resolution)
        # One Core INSERT ... RETURNING (no unit of work on the CA's hot path); the
        # row stays a plain transient object that carries its new ReqID.
        values = {c.key: getattr(row, c.key) for c in CARequest.__table__.columns
                  if c.key != "req_id" and getattr(row, c.key) is not None}
        with self.db.engine.begin() as conn:
            row.req_id = conn.execute(insert(CARequest).values(**values).returning(CARequest.req_id)).scalar_one()
        return row

    def get(self, req_id: int) -> CARequest | None:
        with self.db.session() as s:
            return s.get(CARequest, req_id)

    def list(self, disposition: str | None = None, requester: str | None = None,
             limit: int = 1000) -> list[CARequest]:
        """Requests by ReqID, optionally of one disposition and one requester."""
        q = select(CARequest).order_by(CARequest.req_id).limit(limit)
        if disposition:
            q = q.where(CARequest.disposition == disposition)
        if requester:
            q = q.where(CARequest.requester == requester)
        with self.db.session() as s:
            return list(s.scalars(q))

    def issued_since(self, since: dt.datetime, *, subject: str | None = None,
                     limit: int = 100000) -> builtins.list[tuple[int, bytes, dt.datetime]]:
        """For CAPF's reconciliation: (ReqID, certificate DER, submitted at) of the
        certificates issued for requests submitted since ``since``, optionally only those whose
        request subject is ``subject`` (slash form, ``/CN=SEP...``), oldest first."""
        q = (select(CARequest.req_id, CARequest.cert_der, CARequest.submitted_at)
             .where(CARequest.disposition == "issued", CARequest.cert_der.is_not(None),
                    CARequest.submitted_at >= since)
             .order_by(CARequest.req_id).limit(limit))
        if subject is not None:
            q = q.where(CARequest.subject == subject)
        with self.db.session() as s:
            return [(int(r[0]), bytes(r[1] or b""), r[2]) for r in s.execute(q)]
    def count(self, disposition: str | None = None) -> int:
        """How many requests (of one disposition); the CA's metrics read it."""
        q = select(func.count()).select_from(CARequest)
        if disposition:
            q = q.where(CARequest.disposition == disposition)
        with self.db.session() as s:
            return s.scalar(q) or 0

    def resolve_pending(self, req_id: int, resolve: Callable[[CARequest], Resolution]) -> CARequest:
        """Resolve a pending request with ``resolve(row)`` (approve: re-check and sign; deny),
        the row locked meanwhile; CAError when there is no such request or it is not pending."""
        with self.db.session() as s:
            row = s.get(CARequest, req_id, with_for_update=True)
            if row is None:
                raise CAError(f"no request with ReqID {req_id}", hint="List them with 'onlineca ca requests list'.")
            if row.disposition != PENDING:
                raise CAError(f"ReqID {req_id} is {row.disposition}, not pending",
                              hint="Only pending requests can be approved or denied.")
            _apply(row, resolve(row))
        return row


__all__ = ["CARequests", "Resolution"]
