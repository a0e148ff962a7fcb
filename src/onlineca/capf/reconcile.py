"""CAPF's reconciliation with the CA: no certificate the CA issued stays unaccounted for.

A crash anywhere between CAPF sending a request and recording its answer (CAPF, the RA or the CA
killed, a network cut) can leave the CA with a certificate CAPF never recorded.  Every request
leaves an intent first (``store.lsc_intents``), so nothing is lost without a trace, and this
module closes what is left open:

- ``find_issued``: the certificate our CA issued for an intent's request (same subject, same
  key), read from the CA's request table (``[capf] ca_database_url``).  The session server asks
  it before sending a request again; a real AD CS has no such table, and there the request is
  sent again instead (the RA hands back a certificate it kept for its client) and the intent
  stays the record of what may be left at the CA.
- ``reconcile``: intents nobody waits for any more (unanswered, or sent longer than
  ``reconcile_grace`` ago) are *adopted* (the CA's certificate recorded for a device that still
  waits for one and can take it) or *orphaned* (recorded for revocation), or *abandoned* (the CA
  issued nothing); then every certificate the CA issued within ``window`` for a device CAPF
  knows, which CAPF never recorded and which no request in flight explains, is recorded for
  revocation, as are LSCs CAPF discarded before delivery.  They join CAPF's revocation queue
  (``store.lsc_revocations``), which ``capf.revocation`` works through: our CA revokes them at
  its revoke endpoint, an AD CS's wait for an administrator (``manual``).

It runs as ``onlineca capf reconcile`` and as a step of CAPF's maintenance loop, takes a device's
lease before it records anything on it (never while a session holds it), and logs no key or
request.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography import x509
from sqlalchemy import select

from onlineca import pki
from onlineca.errors import OnlineCAError
from onlineca.policy.capf import Operation, as_utc
from onlineca.store import devices as inv, lsc_intents as intents
from onlineca.store.capf_models import LSC, Device, LSCIntent
from onlineca.store.db import Database
from onlineca.store.lsc_revocations import MANUAL, PENDING, mark_for_revocation, revocation_keys
from onlineca.store.revocation_models import LSCRevocation

log = logging.getLogger("onlineca.capf.reconcile")

# How far before an intent's time a certificate for it may have been submitted (clock skew).
_SLACK = dt.timedelta(minutes=5)
_LEASE = dt.timedelta(seconds=60)


class IssuedLookup(Protocol):
    """Where CAPF reads what the CA issued: ``store.ca_requests.CARequests`` of our CA."""

    def issued_since(self, since: dt.datetime, *,
                     subject: str | None = None) -> list[tuple[int, bytes, dt.datetime]]: ...




def _key(cert: x509.Certificate) -> str:
    return intents.key_sha256(pki.public_key_der(cert.public_key()))


def find_issued(lookup: IssuedLookup, request_der: bytes, key: str, since: dt.datetime) -> bytes | None:
    """The DER of the certificate our CA issued for a request (its subject) on the key ``key``,
    submitted after ``since`` (less a few minutes of clock skew); None when there is none."""
    try:
        subject = pki.name_to_slash(pki.parse_csr(request_der, verify=False).subject)
    except (OnlineCAError, ValueError):
        return None
    found = None
    for _req_id, der, _at in lookup.issued_since(as_utc(since) - _SLACK, subject=subject):
        try:
            if _key(pki.load_certificate(der)) == key:
                found = der  # the newest wins: the one a retry got
        except (OnlineCAError, ValueError):
            continue
    return found


@dataclass
class ReconcileReport:
    """What one pass found and did (``capf reconcile --json`` prints it)."""

    ca_checked: bool = False
    intents_checked: int = 0
    adopted: list[str] = field(default_factory=list)        # device:serial recorded for the device
    orphaned: list[str] = field(default_factory=list)       # device:serial recorded for revocation
    recorded: int = 0                                       # intents whose certificate was recorded already
    abandoned: int = 0                                      # intents the CA issued nothing for
    unresolved: list[dict[str, str]] = field(default_factory=list)  # no CA table to ask (AD CS): the record
    orphans: list[str] = field(default_factory=list)        # CA certificates CAPF never recorded
    discarded: list[str] = field(default_factory=list)      # LSCs discarded before delivery, to revoke
    to_revoke: int = 0                                      # the queue's rows not revoked yet

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _may_take(device: Device | None, now: dt.datetime, s: Any) -> bool:
    """Whether a device still waits for the certificate of an earlier request and can take it:
    Install/Upgrade pending, nothing issued and undelivered, and a phone that resumes (one that
    speaks the public flow makes a new key each session)."""
    if device is None or device.operation != Operation.UPGRADE.ident or device.client_flow == "public":
        return False
    return inv.undelivered_lsc(s, device.name, now, device=device) is None


def _settle_intent(db: Database, lookup: IssuedLookup | None, intent_id: int, *, owner: str, now: dt.datetime,
                   report: ReconcileReport) -> None:
    with db.session() as s:
        row = s.get(LSCIntent, intent_id)
        if row is None or row.state not in intents.OPEN:
            return
        name, key, request_der, created = row.device_name, row.key_sha256, bytes(row.request_der), row.created_at
        if lookup is None:
            report.unresolved.append({"device": name, "request_id": row.request_id, "key_sha256": key,
                                      "sent_at": as_utc(row.updated_at).isoformat(), "state": row.state})
            return
    der = find_issued(lookup, request_der, key, created)
    with db.session() as s:
        row = s.get(LSCIntent, intent_id)
        if row is None or row.state not in intents.OPEN:
            return
        if der is None:
            intents.resolve(s, intent_id, intents.ABANDONED, now=now)
            report.abandoned += 1
            return
        cert = pki.load_certificate(der)
        serial, issuer = inv.serial_hex(cert.serial_number), cert.issuer.rfc4514_string()
        if s.scalar(select(LSC.id).where(LSC.issuer == issuer, LSC.serial == serial)) is not None:
            intents.resolve(s, intent_id, intents.RECORDED, serial=serial, now=now)
            report.recorded += 1
            return
        device = inv.find_device(s, name)
        if device is not None and not inv.claim_device(s, name, owner, _LEASE, now=now):
            return  # a session works on the device now: it collects the certificate itself
        if _may_take(device, now, s):
            inv.record_lsc_issued(s, name, der, actor=owner, now=now, cert=cert)
            inv.record_event(s, name, "LSC_ADOPTED", f"serial={serial}: issued for request {row.request_id}, "
                             "which CAPF never recorded (reconcile)", actor=owner, now=now)
            intents.resolve(s, intent_id, intents.ADOPTED, serial=serial, now=now)
            report.adopted.append(f"{name}:{serial}")
        else:
            mark_for_revocation(s, device_name=name, serial=serial, issuer=issuer, reason="superseded",
                                why=f"issued for request {row.request_id}, which CAPF never recorded, and the device "
                                    "no longer waits for it (reconcile)",
                                subject=cert.subject.rfc4514_string(), not_after=cert.not_valid_after_utc,
                                actor=owner, now=now)
            intents.resolve(s, intent_id, intents.ORPHANED, serial=serial, now=now)
            report.orphaned.append(f"{name}:{serial}")
        if device is not None:
            inv.release_device(s, name, owner)


def _orphans(db: Database, lookup: IssuedLookup, *, owner: str, now: dt.datetime, grace: dt.timedelta,
             window: dt.timedelta, report: ReconcileReport) -> None:
    """CA certificates for devices CAPF knows that CAPF never recorded: recorded for revocation."""
    issued = lookup.issued_since(now - window)
    with db.session() as s:
        known = {(r[0], r[1]) for r in s.execute(select(LSC.issuer, LSC.serial))} | revocation_keys(s)
        devices = set(s.scalars(select(Device.name)))
        in_flight = intents.open_keys(s, since=now - grace)
        found = []
        for _req_id, der, submitted in issued:
            if as_utc(submitted) > now - grace:
                continue  # its session may still be recording it
            try:
                cert = pki.load_certificate(der)
            except (OnlineCAError, ValueError):
                continue
            name = pki.common_name(cert.subject).upper()
            serial, issuer = inv.serial_hex(cert.serial_number), cert.issuer.rfc4514_string()
            if name not in devices or (issuer, serial) in known or cert.not_valid_after_utc <= now:
                continue
            if _key(cert) in in_flight:
                continue
            found.append((name, serial, issuer, cert))
        for name, serial, issuer, cert in found:
            mark_for_revocation(s, device_name=name, serial=serial, issuer=issuer, reason="superseded",
                                why="issued by the CA for this device, never recorded by CAPF (reconcile)",
                                subject=cert.subject.rfc4514_string(), not_after=cert.not_valid_after_utc,
                                actor=owner, now=now)
            known.add((issuer, serial))
            report.orphans.append(f"{name}:{serial}")


def _discarded(db: Database, *, owner: str, now: dt.datetime, report: ReconcileReport) -> None:
    """LSCs discarded before delivery that are still valid: their holder never got them."""
    with db.session() as s:
        marked = revocation_keys(s)
        rows = s.execute(select(LSC, Device.name).join(Device, Device.id == LSC.device_id)
                         .where(LSC.state == "discarded", LSC.not_after > now)).all()
        for lsc, name in rows:
            if (lsc.issuer, lsc.serial) in marked:
                continue
            mark_for_revocation(s, device_name=name, serial=lsc.serial, issuer=lsc.issuer, reason="superseded",
                                why="discarded before delivery (reconcile)", subject=lsc.subject,
                                not_after=lsc.not_after, actor=owner, now=now)
            report.discarded.append(f"{name}:{lsc.serial}")



def reconcile(db: Database, lookup: IssuedLookup | None, *, node: str = "reconcile", grace: float = 120.0,
              window_days: float = 30.0, now: dt.datetime | None = None) -> ReconcileReport:
    """One pass (blocking: CAPF runs it off its event loop).  ``lookup``: our CA's request table,
    or None (a real AD CS: the open intents are reported, nothing is guessed)."""
    now = as_utc(now or dt.datetime.now(dt.UTC))
    owner = f"reconcile:{node}"[:128]
    report = ReconcileReport(ca_checked=lookup is not None)
    with db.session() as s:
        stale = [r.id for r in intents.stale(s, sent_before=now - dt.timedelta(seconds=grace))]
    report.intents_checked = len(stale)
    for intent_id in stale:
        _settle_intent(db, lookup, intent_id, owner=owner, now=now, report=report)
    if lookup is not None:
        _orphans(db, lookup, owner=owner, now=now, grace=dt.timedelta(seconds=grace),
                 window=dt.timedelta(days=window_days), report=report)
    _discarded(db, owner=owner, now=now, report=report)
    with db.session() as s:
        report.to_revoke = len(list(s.scalars(select(LSCRevocation.id)
                                              .where(LSCRevocation.state.in_((PENDING, MANUAL))))))
    if report.adopted or report.orphaned or report.orphans or report.discarded:
        log.warning("reconcile: %d adopted, %d orphaned, %d orphan(s) at the CA, %d discarded LSC(s) to revoke",
                    len(report.adopted), len(report.orphaned), len(report.orphans), len(report.discarded))
    return report


__all__ = ["IssuedLookup", "ReconcileReport", "find_issued", "reconcile"]
