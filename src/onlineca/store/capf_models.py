"""CAPF tables: devices, profiles, issued LSCs, the device audit trail, and the row leases.

Enumerated settings are stored as the source document's identifiers (``OPERATION_UPGRADE``,
``AUTH_BY_STR``, ``CERT_STATUS_UPGRADE_SUCCESS``...; see ``onlineca.capf.policy``); key sizes as
bits.  A device's ``lsc_*`` columns always describe the LSC the device has confirmed installed
(the ``lsc`` table holds every certificate issued for it); ``renewal_due_at`` is when that LSC's
renewal window opens.  ``lease_owner``/``lease_expires_at`` let one CAPF node at a time work on a
device.  The audit trail keeps the device name, not a foreign key, so it outlives the device.
Schema changes go through Alembic revisions; never edit a released one.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from onlineca.store.models import Base, utcnow

_TS = DateTime(timezone=True)


class Profile(Base):
    """Defaults for the devices that name it; renewal and automatic-enrollment policy."""

    __tablename__ = "profile"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    auth_mode: Mapped[str] = mapped_column(String(32), default="AUTH_BY_NULL_STR")
    key_order: Mapped[str] = mapped_column(String(40), default="KEYORDER_RSA_ONLY")
    rsa_key_size: Mapped[int] = mapped_column(Integer, default=2048)
    ec_key_size: Mapped[int] = mapped_column(Integer, default=256)
    deadline_days: Mapped[int] = mapped_column(Integer, default=10)
    renewal_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    renewal_fraction: Mapped[float] = mapped_column(Float, default=2 / 3)
    renewal_days_before: Mapped[int | None] = mapped_column(Integer, nullable=True)
    renewal_jitter: Mapped[float] = mapped_column(Float, default=0.1)
    auto_enroll_mic: Mapped[bool] = mapped_column(Boolean, default=False)
    mic_trust_store: Mapped[str] = mapped_column(String(1024), default="")
    auto_enroll_name_pattern: Mapped[str] = mapped_column(String(128), default="")
    # Who signs the LSCs: "online-ca" (through the RA) or "capf" (CAPF's own CA).
    issuer: Mapped[str] = mapped_column(String(16), default="online-ca", server_default="online-ca")
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)


class Device(Base):
    """One phone (or other CAPF client) as administrators see it."""

    __tablename__ = "device"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)  # upper-case, see policy.validate_device_name
    model: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(String(256), default="")
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("profile.id", ondelete="RESTRICT"), nullable=True)
    # Overrides of the profile; NULL = as the profile says.
    auth_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    key_order: Mapped[str | None] = mapped_column(String(40), nullable=True)
    rsa_key_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ec_key_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The auth string as a salted hash (``scrypt$n$r$p$salt$hash``), never in clear.
    auth_string_hash: Mapped[str | None] = mapped_column(String(160), nullable=True)
    # The pending certificate operation and its "Operation Completes By".
    operation: Mapped[str] = mapped_column(String(32), default="OPERATION_NONE")
    operation_deadline: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    # Auth mode for this operation only (a renewal authenticates by the LSC), cleared when it ends.
    operation_auth_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(64), default="CERT_STATUS_NONE")
    status_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    # The installed LSC.
    lsc_serial: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lsc_issuer: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    lsc_not_before: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    lsc_not_after: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    # Renewal: when the window opens, which LSC a scheduled renewal replaces, failures and backoff.
    renewal_due_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    renewal_for_serial: Mapped[str | None] = mapped_column(String(64), nullable=True)
    renewal_scheduled_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    renewal_attempts: Mapped[int] = mapped_column(Integer, default=0)
    renewal_next_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    renewal_last_error: Mapped[str] = mapped_column(String(256), default="")
    # Wrong auth strings in a row, and until when the device is locked out.
    failed_auth_count: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    # How the device spoke at its last session: "public" (no extension announced) or "extended",
    # and the CAPABILITIES it announced; the scheduler leaves public-flow devices to renew by asking.
    client_flow: Mapped[str | None] = mapped_column(String(16), nullable=True)
    client_capabilities: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Row lease: the CAPF node working on this device, and until when.
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow, onupdate=utcnow)

    profile: Mapped[Profile | None] = relationship(lazy="joined")

    __table_args__ = (
        Index("ix_device_status", "status"),
        Index("ix_device_lsc_not_after", "lsc_not_after"),
        # The scheduler's two claims (capf.scheduler) take devices with one operation in order of
        # one timestamp: served from the index in that order, a claim reads the batch it takes,
        # not every device already pending before it.  Partial: a row the claim moves to the other
        # operation leaves the index (no entry for its new version), and the 100,000 rows one run
        # rewrites (no HOT update: indexed columns change) each feed one index fewer.  No index on
        # renewal_due_at alone: the due claim and fleet_stats' backlog ask for OPERATION_NONE (this
        # index), device_report.overdue ORs it with an unindexable condition (a scan either way).
        Index("ix_device_due_claim", "renewal_due_at", "id",
              postgresql_where=text("operation = 'OPERATION_NONE'"), sqlite_where=text("operation = 'OPERATION_NONE'")),
        Index("ix_device_late_claim", "operation_deadline", "id",
              postgresql_where=text("operation = 'OPERATION_UPGRADE'"),
              sqlite_where=text("operation = 'OPERATION_UPGRADE'")),
    )


class LSC(Base):
    """A certificate issued for a device: ``issued`` (stored, maybe not delivered yet), ``installed``
    (the device confirmed it), ``superseded`` (a newer one was installed), ``discarded`` (issued,
    never installed, and no longer deliverable: the phone refused it, an administrator reset the
    operation, or a new key arrived; ``superseded_at`` says when) or ``revoked``."""

    __tablename__ = "lsc"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"))
    serial: Mapped[str] = mapped_column(String(64))  # lower-case hex, no separators
    issuer: Mapped[str] = mapped_column(String(1024))
    subject: Mapped[str] = mapped_column(String(1024), default="")
    not_before: Mapped[dt.datetime] = mapped_column(_TS)
    not_after: Mapped[dt.datetime] = mapped_column(_TS)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), default="issued")
    issued_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    installed_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    superseded_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)

    __table_args__ = (
        UniqueConstraint("issuer", "serial", name="uq_lsc_issuer_serial"),
        Index("ix_lsc_device_id", "device_id"),
        Index("ix_lsc_state", "state"),
    )


class DeviceEvent(Base):
    """The audit trail: who changed what on a device, and every operation's outcome."""

    __tablename__ = "device_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_name: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow, server_default=func.now())
    actor: Mapped[str] = mapped_column(String(128), default="")
    event: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_device_event_device_name", "device_name", "at"),)


class LSCIntent(Base):
    """An enrollment CAPF is about to send to the RA (the outbox), written and committed
    before the request leaves, so that a crash between the CA issuing and CAPF recording leaves a
    trace: the device, the key (SHA-256 of its SubjectPublicKeyInfo, hex), the request (DER) and its
    X-Request-ID.  ``state``: ``sent`` (in flight, or its node died), ``recorded`` (the LSC is in
    ``lsc``), ``failed`` (the RA or CA answered no), ``abandoned`` (no answer, and nobody waits for
    it any more), ``adopted`` (reconciliation found the CA's certificate and recorded it) or
    ``orphaned`` (reconciliation found it and asked for its revocation)."""

    __tablename__ = "lsc_intent"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_name: Mapped[str] = mapped_column(String(64))
    key_sha256: Mapped[str] = mapped_column(String(64))
    request_der: Mapped[bytes] = mapped_column(LargeBinary)
    request_id: Mapped[str] = mapped_column(String(64), default="")
    vouched: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default="sent")
    node: Mapped[str] = mapped_column(String(128), default="")
    serial: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)

    __table_args__ = (
        Index("ix_lsc_intent_device_state", "device_name", "state"),
        Index("ix_lsc_intent_state_created", "state", "created_at"),
        Index("ix_lsc_intent_key", "key_sha256"),
    )
