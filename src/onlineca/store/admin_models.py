"""Administration tables: console accounts, API tokens, browser sessions, login attempts, the audit log.

Passwords are stored as scrypt hashes (``infra.users.hash_password``); API tokens and session
cookies are random secrets of which only a SHA-256 digest is stored (they carry 256 bits of
entropy, so a slow hash adds nothing), so a copy of the database lets nobody log in.  The audit
log keeps the actor's name, not a foreign key, so it outlives the account; its ``before`` and
``after`` columns are JSON written by ``onlineca.service.audit`` and never hold a secret.
Schema changes go through Alembic revisions; never edit a released one.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from onlineca.store.models import Base, utcnow

_TS = DateTime(timezone=True)


class AdminUser(Base):
    """A console account: ``role`` is ``admin``, ``operator`` or ``viewer``."""

    __tablename__ = "admin_user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    password_changed_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)


class AdminToken(Base):
    """An API token: ``prefix`` is its public part (shown in lists), ``digest`` the SHA-256 of the
    whole token.  ``role`` is at most its owner's role at every use."""

    __tablename__ = "admin_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_user.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(_TS)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)

    user: Mapped[AdminUser] = relationship(lazy="joined")

    __table_args__ = (Index("ix_admin_token_user_id", "user_id"),)


class AdminSession(Base):
    """A browser session: ``digest`` is the SHA-256 of the cookie, ``csrf`` the form token."""

    __tablename__ = "admin_session"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_user.id", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16), default="password")
    address: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(_TS)

    user: Mapped[AdminUser] = relationship(lazy="joined")

    __table_args__ = (Index("ix_admin_session_user_id", "user_id"),)


class LoginAttempt(Base):
    """One login attempt (throttling counts the recent failures per account and per address)."""

    __tablename__ = "admin_login_attempt"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    user_name: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (
        Index("ix_admin_login_attempt_user", "user_name", "at"),
        Index("ix_admin_login_attempt_address", "address", "at"),
    )


class AuditEntry(Base):
    """One change: who (``actor``, ``role``), when, through what (``source``: api, page, cli) and
    from where (``address``), what (``action`` on ``target``), and the state before and after."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16), default="")
    source: Mapped[str] = mapped_column(String(8))
    address: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256), default="")
    before: Mapped[str] = mapped_column(Text, default="")
    after: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_target", "target"),
    )
