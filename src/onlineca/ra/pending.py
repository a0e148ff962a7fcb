"""The RA's ``PendingStore``: requests it must find again, kept in the database.

The EST server remembers a request the CA holds pending (and a certificate the CA issued after
its client had gone) under the request's identity (``est.backend.pending_key``).  The RA keeps
them in the database (``store.ra_pending``), so several RA processes on one PostgreSQL share them
and an RA restart forgets none: a client's retry polls the CA's ReqID (or collects the kept
certificate) instead of filing a new request.  Database calls run off the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from onlineca import pki
from onlineca.est.backend import Remembered
from onlineca.proto.results import EnrollRequest
from onlineca.store.db import Database
from onlineca.store.ra_pending import RAPendingRequests


def _requester(request: EnrollRequest) -> str:
    if request.user is not None:
        return request.user
    if request.client_cert is not None:
        return pki.name_to_slash(request.client_cert.subject)
    return ""


class DatabasePendingStore:
    """``est.backend.PendingStore`` on the ``ra_pending_request`` table."""

    def __init__(self, db: Database, ca_url: str = "") -> None:
        self.db = db
        self.rows = RAPendingRequests(db)
        self.ca_url = ca_url

    async def lookup(self, key: bytes) -> Remembered | None:
        row = await asyncio.to_thread(self.rows.get, key.hex())
        return Remembered(row.req_id, row.cert_der) if row is not None else None

    async def remember(self, key: bytes, req_id: int, request: EnrollRequest) -> None:
        await asyncio.to_thread(lambda: self.rows.put(
            key.hex(), req_id=req_id, requester=_requester(request),
            subject=pki.name_to_slash(request.csr.subject), ca_url=self.ca_url))

    async def keep_issued(self, key: bytes, cert_der: bytes, req_id: int | None, request: EnrollRequest) -> None:
        await asyncio.to_thread(lambda: self.rows.put(
            key.hex(), req_id=req_id, cert_der=cert_der, requester=_requester(request),
            subject=pki.name_to_slash(request.csr.subject), ca_url=self.ca_url))

    async def forget(self, key: bytes) -> None:
        await asyncio.to_thread(self.rows.forget, key.hex())

    async def prune(self, days: float) -> int:
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
        return await asyncio.to_thread(self.rows.prune, cutoff)

    def req_ids(self) -> list[int]:
        """The ReqIDs held pending at the CA (blocking; tests and tools)."""
        return self.rows.req_ids()


__all__ = ["DatabasePendingStore"]
