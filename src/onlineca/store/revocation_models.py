"""Tables of our CA's revocations and CRLs, CAPF's queue of LSCs to revoke, and the
state that keeps CAPF's alert notifications to one per condition and subject.

``ca_revocation`` holds what our CA revoked (serial as ``ca_request.serial``: lower-case hex);
``ca_crl`` every CRL it signed (base and delta share one CRL number sequence, RFC 5280 §5.2.3),
so a restart, a second process or ``ca revoke`` on the command line never reuse a number.
``lsc_revocation`` is CAPF's record of LSCs that must be revoked (an LSC replaced, a device
deleted, a certificate found that should not be live): ``pending`` until CAPF's revocation pass
has its CA revoke it (``revoked``), or ``manual`` when only an administrator can (AD CS: web
enrollment has no revoke page) until one says it is done.  It keeps the device's name, not a
foreign key, so it outlives the device.  ``alert_state`` is one row per firing (condition,
subject).  Schema changes go through Alembic revisions; never edit a released one.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onlineca.store.models import Base, utcnow

_TS = DateTime(timezone=True)


class CARevocation(Base):
    """A certificate our CA revoked."""

    __tablename__ = "ca_revocation"

    serial: Mapped[str] = mapped_column(String(64), primary_key=True)  # lower-case hex, as ca_request.serial
    req_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(String(32), default="unspecified")  # pki.revocation.REASONS
    revoked_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    revoked_by: Mapped[str] = mapped_column(String(256), default="")
    not_after: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)


class CACRL(Base):
    """A CRL our CA signed: ``base`` or ``delta`` (of base ``base_number``)."""

    __tablename__ = "ca_crl"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(8), default="base")
    base_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    this_update: Mapped[dt.datetime] = mapped_column(_TS)
    next_update: Mapped[dt.datetime] = mapped_column(_TS)
    entries: Mapped[int] = mapped_column(Integer, default=0)
    der: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_ca_crl_kind_number", "kind", "number"),)


class LSCRevocation(Base):
    """An LSC that must be revoked, and how far that got."""

    __tablename__ = "lsc_revocation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_name: Mapped[str] = mapped_column(String(64))
    serial: Mapped[str] = mapped_column(String(64))  # lower-case hex
    issuer: Mapped[str] = mapped_column(String(1024))  # RFC 4514, as lsc.issuer
    subject: Mapped[str] = mapped_column(String(1024), default="")
    not_after: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    reason: Mapped[str] = mapped_column(String(32), default="superseded")
    why: Mapped[str] = mapped_column(String(512), default="")
    # pending (CAPF asks its CA), manual (an administrator must revoke it at the CA), revoked
    state: Mapped[str] = mapped_column(String(16), default="pending")
    requested_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    last_error: Mapped[str] = mapped_column(String(512), default="")
    done_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    done_by: Mapped[str] = mapped_column(String(128), default="")
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)

    __table_args__ = (
        UniqueConstraint("issuer", "serial", name="uq_lsc_revocation_issuer_serial"),
        Index("ix_lsc_revocation_state", "state", "next_attempt_at"),
        Index("ix_lsc_revocation_device_name", "device_name"),
    )


class AlertState(Base):
    """A condition firing for a subject, and when its notification last went out."""

    __tablename__ = "alert_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    condition: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    detail: Mapped[str] = mapped_column(Text, default="")
    first_seen: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    last_sent: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    sent_count: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (UniqueConstraint("condition", "subject", name="uq_alert_state_condition_subject"),)


__all__ = ["CACRL", "AlertState", "CARevocation", "LSCRevocation"]
