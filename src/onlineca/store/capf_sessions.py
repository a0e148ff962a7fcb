"""The transactions of one CAPF device session, each one unit of work over a ``Session``.

The session server runs them through ``store.group_commit.Transactions`` (off the event loop);
each function here is one transaction's body, so a whole install costs three commits: the start
(find or automatically enroll the device, take its lease, read everything the session decides
on), the issued LSC (stored before it is delivered), and the phone's confirmation together with
the lease given back.  A session that ends otherwise records its outcome and gives the lease
back on its way out.  What to decide is
``policy.capf``'s; this module reads and writes rows, never commits, and never logs a secret.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy.orm import Session

from onlineca.errors import OnlineCAError
from onlineca.policy.capf import EffectivePolicy, Operation, as_utc, success_status
from onlineca.policy.capf_session import (
    InstalledLSC,
    Outcome,
    after_wrong_auth_string,
    auto_enrollment_grant,
    may_auto_enroll,
    renewal_on_connect,
)
from onlineca.store import devices as inv
from onlineca.store.capf_models import Device

log = logging.getLogger("onlineca.store.capf_sessions")

# A scheduled renewal that failed for good: (session, device, reason, detail); the scheduler's.
RenewalFailed = Callable[[Session, str, str, str], object]


@dataclass(frozen=True)
class SessionStart:
    """What the session's first transaction learnt: ``found`` the device; ``policy`` is None when
    another node holds its lease."""

    found: bool
    policy: EffectivePolicy | None = None
    locked_until: dt.datetime | None = None
    failed_auth_count: int = 0
    mic_store: str = ""  # the profile's own manufacturer trust store, if any
    stored_lsc: tuple[str, bytes] | None = None  # (serial, DER) issued earlier, never confirmed
    installed: InstalledLSC | None = None  # the LSC the device has confirmed, if any
    renewing: bool = False  # a public-flow phone asked again after its LSC's renewal window opened


def start_session(s: Session, name: str, *, node_id: str, lease: dt.timedelta, now: dt.datetime,
                  mic_valid: Callable[[str], bool], flow: str = "extended",
                  capabilities: int | None = None) -> SessionStart:
    """Find (or automatically enroll) the device, take its lease, note how it speaks (``flow``
    "public" or "extended", the ``capabilities`` it announced), and read what the session decides
    on.  ``mic_valid(trust_store)`` says whether the phone presented a valid MIC for a profile's
    manufacturer trust store ("" for CAPF's own).  A public-flow phone with nothing pending whose
    LSC is due gets Install/Upgrade here (it renews by asking again: ``renewal_on_connect``)."""
    device = _find_or_auto_enroll(s, name, mic_valid)
    if device is None:
        return SessionStart(found=False)
    if not inv.claim_device(s, name, node_id, lease, now=now):
        return SessionStart(found=True)
    public = flow == "public"
    if (device.client_flow, device.client_capabilities) != (flow, capabilities):
        device.client_flow, device.client_capabilities = flow, capabilities
    installed = None
    if device.lsc_serial is not None and device.lsc_not_after is not None:
        installed = InstalledLSC(device.lsc_serial, as_utc(device.lsc_not_after),
                                 as_utc(device.renewal_due_at) if device.renewal_due_at else None)
    renewing = public and renewal_on_connect(Operation.from_ident(device.operation), installed, now)
    if renewing:
        assert installed is not None
        try:
            inv.set_device(s, name, actor="capf", now=now, operation=Operation.UPGRADE.ident)
        except OnlineCAError as exc:  # e.g. By Authentication String without a string: declined instead
            log.warning("%s: a public-flow renewal cannot be set up: %s", name, exc)
            renewing = False
    if renewing:
        assert installed is not None
        inv.record_event(s, name, "RENEWAL_REQUESTED", f"a public-flow phone asked again after its LSC's renewal "
                         f"window opened (serial={installed.serial}, not_after={installed.not_after.isoformat()})",
                         actor="capf", now=now)
    scheduled = device.renewal_for_serial is not None and device.renewal_for_serial == device.lsc_serial
    policy = inv.device_policy(device, own_auth_mode=public and scheduled)
    stored = None
    if policy.operation is Operation.UPGRADE:
        row = inv.undelivered_lsc(s, name, now, device=device)
        stored = (row.serial, bytes(row.der)) if row is not None else None
    return SessionStart(found=True, policy=policy, locked_until=device.locked_until,
                        failed_auth_count=device.failed_auth_count or 0,
                        mic_store=device.profile.mic_trust_store if device.profile is not None else "",
                        stored_lsc=stored, installed=installed, renewing=renewing)


def _find_or_auto_enroll(s: Session, name: str, mic_valid: Callable[[str], bool]) -> Device | None:
    """The device; or a new one (or a new Install/Upgrade) that a profile grants automatically."""
    device = inv.find_device(s, name)
    if not may_auto_enroll(known=device is not None,
                           operation=Operation.parse(device.operation, "operation") if device else Operation.NONE,
                           has_lsc=device is not None and device.lsc_serial is not None):
        return device
    for row in inv.list_profiles(s):
        auto = inv.profile_policy(row).auto_enrollment
        if not auto.enabled:  # before the MIC check: that costs a signature verification
            continue
        grant = auto_enrollment_grant(name, row.name, auto, mic_valid=mic_valid(row.mic_trust_store))
        if grant is None:
            continue
        try:
            if device is None:
                device = inv.add_device(s, name, actor="capf:auto-enrollment", profile=row.name,
                                        description=f"enrolled automatically ({grant.why})", **grant.settings())
            else:
                device = inv.set_device(s, name, actor="capf:auto-enrollment", **grant.settings())
        except OnlineCAError as exc:
            log.warning("%s: profile %s grants automatic enrollment but the device cannot be set: %s",
                        name, row.name, exc)
            continue
        inv.record_event(s, name, "AUTO_ENROLLMENT", f"profile {row.name}: {grant.why}", actor="capf")
        return device
    return device


def auth_string_accepted(s: Session, name: str) -> None:
    """The right auth string: the count of wrong ones starts again."""
    device = inv.get_device(s, name)
    if device.failed_auth_count:
        device.failed_auth_count = 0


def auth_string_refused(s: Session, name: str, *, max_failures: int, lockout_minutes: float,
                        now: dt.datetime) -> bool:
    """Count a wrong auth string; True when it locked the device out."""
    device = inv.get_device(s, name)
    after = after_wrong_auth_string(device.failed_auth_count or 0, max_failures=max_failures,
                                    lockout_minutes=lockout_minutes, now=now)
    device.failed_auth_count = after.count
    if after.locked_until is None:
        return False
    device.locked_until = after.locked_until
    inv.record_event(s, name, "LOCKED_OUT", f"until {after.locked_until.isoformat()}", actor="capf", now=now)
    return True


def record_outcome(s: Session, name: str, outcome: Outcome, *, actor: str,
                   renewal_failed: RenewalFailed) -> None:
    """Record how an operation ended.  A scheduled renewal that cannot succeed as it stands goes
    to ``renewal_failed`` (the scheduler backs off and tries again; the device keeps its LSC)."""
    assert outcome.status is not None
    device = inv.get_device(s, name)
    renewal = device.renewal_for_serial is not None and device.renewal_for_serial == device.lsc_serial
    reason = outcome.renewal_failure
    detail = outcome.detail[:500]
    if renewal and reason:
        renewal_failed(s, name, reason, detail)
        return
    inv.set_status(s, name, outcome.status, actor=actor, detail=detail, end_operation=outcome.end_operation,
                   device=device)


def lsc_discarded(s: Session, name: str, serial: str, why: str, *, actor: str) -> None:
    """An LSC issued earlier will never be delivered (the phone refused it, or a new key arrived)."""
    inv.discard_undelivered(s, inv.get_device(s, name), why, actor=actor, serial=serial)


def lsc_issued(s: Session, name: str, der: bytes, cert: x509.Certificate, *, actor: str) -> str:
    """Store the LSC the CA issued before it is delivered; its serial."""
    return inv.record_lsc_issued(s, name, der, actor=actor, cert=cert).serial


def lsc_installed(s: Session, name: str, serial: str, *, node_id: str) -> None:
    """The phone stored its LSC: record it and give the lease back in one commit."""
    inv.mark_lsc_installed(s, name, serial, actor=f"capf:{node_id}")
    inv.release_device(s, name, node_id)


def troubleshoot_done(s: Session, name: str, detail: str, *, actor: str) -> None:
    inv.set_status(s, name, success_status(Operation.TROUBLESHOOT), actor=actor, detail=detail, end_operation=True)


__all__ = ["RenewalFailed", "SessionStart", "auth_string_accepted", "auth_string_refused", "lsc_discarded",
           "lsc_installed", "lsc_issued", "record_outcome", "start_session", "troubleshoot_done"]
