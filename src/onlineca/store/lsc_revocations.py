"""CAPF's record of certificates that must be revoked (sec branch): the SQL of ``lsc_revocation``.

``mark_for_revocation`` is the entry point for whatever finds a certificate that must not stay
live (reconciliation's orphans, LSCs discarded before delivery); it has the signature of the
revocation queue branch ops2 brings (which revokes at our CA, or leaves an AD CS one to an
administrator), so callers do not change when that queue replaces this record.  Idempotent on
(issuer, serial); never commits (the record commits with the change that caused it); an expired
certificate is not recorded (no relying party accepts it anyway).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from onlineca.policy.capf import as_utc
from onlineca.store.capf_models import DeviceEvent, LSCRevocation


def mark_for_revocation(s: Session, *, device_name: str, serial: str, issuer: str, reason: str = "superseded",
                        why: str = "", subject: str = "", not_after: dt.datetime | None = None,
                        actor: str = "capf", now: dt.datetime | None = None,
                        der: bytes | None = None) -> LSCRevocation | None:
    """Record that certificate ``serial`` (hex) of ``issuer`` (RFC 4514) must be revoked, with an
    RFC 5280 ``reason`` name and ``why`` in words, and an ``LSC_REVOCATION_REQUESTED`` event on the
    device; the row (the earlier one if already recorded), or None for an expired certificate."""
    now = as_utc(now or dt.datetime.now(dt.UTC))
    if not_after is not None and as_utc(not_after) <= now:
        return None
    serial = serial.lower()
    existing = s.scalar(select(LSCRevocation).where(LSCRevocation.issuer == issuer, LSCRevocation.serial == serial))
    if existing is not None:
        return existing
    row = LSCRevocation(serial=serial, issuer=issuer[:1024], device_name=device_name[:64],
                        reason=f"{reason}: {why}"[:256], der=der, requested_at=now, result="")
    s.add(row)
    s.add(DeviceEvent(device_name=device_name[:64], event="LSC_REVOCATION_REQUESTED",
                      detail=f"serial={serial} reason={reason}: {why}"[:4000], actor=actor[:128], at=now))
    s.flush()
    return row


def revocation_keys(s: Session) -> set[tuple[str, str]]:
    """(issuer, serial) of every certificate recorded for revocation."""
    return {(r[0], r[1]) for r in s.execute(select(LSCRevocation.issuer, LSCRevocation.serial))}


def to_revoke(s: Session) -> list[LSCRevocation]:
    """The recorded certificates not revoked yet, oldest first."""
    return list(s.scalars(select(LSCRevocation).where(LSCRevocation.done_at.is_(None))
                          .order_by(LSCRevocation.requested_at, LSCRevocation.id)))


__all__ = ["mark_for_revocation", "revocation_keys", "to_revoke"]
