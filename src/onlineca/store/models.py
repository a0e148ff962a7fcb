"""Tables.  Every state change that matters is committed here before it is acknowledged.

Schema changes go through Alembic (``store/migrations``); never edit a released migration.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Index, Integer, LargeBinary, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CARequest(Base):
    """A request made to our /certsrv CA: its ReqID, who asked, the template and the disposition.

    ``disposition`` is one of ``issued``, ``pending``, ``denied``, ``failed`` (AD CS's words:
    Issued, Taken Under Submission, Denied, Error).
    """

    __tablename__ = "ca_request"

    req_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    requester: Mapped[str] = mapped_column(String(256))
    template: Mapped[str] = mapped_column(String(256), default="")
    csr_der: Mapped[bytes] = mapped_column(LargeBinary)
    attributes: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(String(1024), default="")
    disposition: Mapped[str] = mapped_column(String(16), index=True)
    disposition_message: Mapped[str] = mapped_column(Text, default="")
    hresult: Mapped[int] = mapped_column(Integer, default=0)
    serial: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    cert_der: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    not_after: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                      server_default=func.now())
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolved_by: Mapped[str] = mapped_column(String(256), default="")

    # AD CS never reuses a ReqID: SQLite's AUTOINCREMENT keeps it from reusing a deleted row's id.
    __table_args__ = (Index("ix_ca_request_requester", "requester"), {"sqlite_autoincrement": True})


class RAPendingRequest(Base):
    """A request the RA asked the CA for and must find again when the client retries.

    ``key`` is ``est.backend.pending_key`` (SHA-256 of the public key, subject, subjectAltName,
    CA label and requester, hex): the same request whatever CSR bytes a client re-signs.  While
    the CA holds it pending, ``req_id`` is the CA's ReqID; when the CA issued after the client had
    gone, ``cert_der`` holds the certificate until the retry collects it.  Several RA processes on
    one database share these rows, and they survive an RA restart.
    """

    __tablename__ = "ra_pending_request"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    req_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cert_der: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    requester: Mapped[str] = mapped_column(String(256), default="")
    subject: Mapped[str] = mapped_column(String(1024), default="")
    ca_url: Mapped[str] = mapped_column(String(1024), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
