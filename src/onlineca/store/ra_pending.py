"""The RA's pending requests in the database: the one place that holds their SQL.

A row per request the RA must find again when its client retries: the CA's ReqID while the CA
holds it pending, or the certificate the CA issued after the client had gone.  The key is the
request's identity (``est.backend.pending_key``: public key, names, label, requester), never the
CSR's bytes.  Several RA processes on one PostgreSQL share the rows, and an RA restart keeps
them.  Every method is one short transaction and blocks: the RA calls them off its event loop.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from onlineca.store.db import Database
from onlineca.store.models import RAPendingRequest, utcnow


class RAPendingRequests:
    """The ``ra_pending_request`` table of one database (``key`` is the hex of the request key)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, key: str) -> RAPendingRequest | None:
        with self.db.session() as s:
            return s.get(RAPendingRequest, key)

    def put(self, key: str, *, req_id: int | None, cert_der: bytes | None = None, requester: str = "",
            subject: str = "", ca_url: str = "") -> None:
        """Insert or replace the row of ``key`` (two RAs may race on the same key: the last wins)."""
        for _attempt in range(3):
            try:
                with self.db.session() as s:
                    row = s.get(RAPendingRequest, key, with_for_update=True)
                    if row is None:
                        row = RAPendingRequest(key=key)
                        s.add(row)
                    row.req_id, row.cert_der = req_id, cert_der
                    row.requester, row.subject, row.ca_url = requester[:256], subject[:1024], ca_url[:1024]
                    row.updated_at = utcnow()
                return
            except IntegrityError:  # another RA inserted the same key meanwhile: update it instead
                continue

    def forget(self, key: str) -> None:
        with self.db.session() as s:
            s.execute(delete(RAPendingRequest).where(RAPendingRequest.key == key))

    def prune(self, older_than: dt.datetime) -> int:
        """Forget requests nobody asked about since ``older_than``; how many."""
        with self.db.session() as s:
            result = s.execute(delete(RAPendingRequest).where(RAPendingRequest.updated_at < older_than))
            return int(getattr(result, "rowcount", 0) or 0)

    def count(self) -> int:
        with self.db.session() as s:
            return len(list(s.scalars(select(RAPendingRequest.key))))

    def req_ids(self) -> list[int]:
        """The ReqIDs pending at the CA, oldest first (tests and tools)."""
        with self.db.session() as s:
            rows = s.scalars(select(RAPendingRequest).order_by(RAPendingRequest.updated_at))
            return [r.req_id for r in rows if r.req_id is not None and r.cert_der is None]


__all__ = ["RAPendingRequests"]
