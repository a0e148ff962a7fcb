"""CAPF's session transactions (``store.capf_sessions``, SQLAlchemy Core) leave exactly the rows the
inventory's ORM functions leave: two installs in a row (the second supersedes the first and queues
it for revocation), the intents they resolve, the lease given back, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from capf_fixtures import DEVICE_KEY, T0, db  # noqa: F401  (db is a fixture)
from sqlalchemy import select

from onlineca import pki
from onlineca.store import Database, DeviceEvent, capf_sessions as tx, devices as inv, lsc_intents as intents
from onlineca.store.capf_models import LSC, LSCIntent
from onlineca.store.lsc_revocations import list_revocations

LEASE = dt.timedelta(minutes=5)
COMPARED = ("operation", "operation_deadline", "operation_auth_mode", "status", "status_at", "lsc_serial", "lsc_issuer",
            "lsc_not_before", "lsc_not_after", "renewal_due_at", "renewal_for_serial", "renewal_attempts", "renewal_last_error",
            "renewal_scheduled_at", "renewal_next_at", "failed_auth_count", "locked_until",
            "lease_owner", "lease_expires_at", "client_flow", "client_capabilities")


def _never(_store: str) -> bool:
    return False


def _install_by_sessions(db: Database, name: str, cert, now: dt.datetime) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    owner = f"node#1#{name}"
    with db.session() as s:
        start = tx.start_session(s, name, owner=owner, lease=LEASE, now=now, mic_valid=_never,
                                 capabilities=7)
        assert start.found and start.policy is not None and start.stored_lsc is None and start.intent is None
    with db.session() as s:
        first = tx.intent_sent(s, name, key="k" * 64, request_der=b"old", request_id="r0", vouched=False,
                               node="node", now=now)
    with db.session() as s:  # a newer request of the same device: the older intent is closed with it
        intent = tx.intent_sent(s, name, key="a" * 64, request_der=b"csr", request_id="r1", vouched=False,
                                node="node", now=now)
    with db.session() as s:
        serial = tx.lsc_issued(s, name, pki.cert_der(cert), cert, actor="capf", intent_id=intent, now=now)
    with db.session() as s:
        tx.lsc_installed(s, name, serial, node_id="node", owner=owner, now=now)
    return serial, first


def _install_by_orm(db: Database, name: str, cert, now: dt.datetime) -> str:  # type: ignore[no-untyped-def]
    owner = f"node#1#{name}"
    with db.session() as s:
        assert inv.claim_device(s, name, owner, LEASE, now=now)
        device = inv.get_device(s, name)
        device.client_flow, device.client_capabilities = "extended", 7
    with db.session() as s:
        serial = inv.record_lsc_issued(s, name, pki.cert_der(cert), actor="capf", now=now, cert=cert).serial
    with db.session() as s:
        inv.mark_lsc_installed(s, name, serial, actor="capf:node", now=now)
        inv.release_device(s, name, owner)
    return serial


def _state(db: Database, name: str) -> dict[str, object]:
    with db.session() as s:
        device = inv.get_device(s, name)
        lscs = s.scalars(select(LSC).where(LSC.device_id == device.id).order_by(LSC.id)).all()
        events = s.scalars(select(DeviceEvent).where(DeviceEvent.device_name == name)
                           .order_by(DeviceEvent.id)).all()
        return {
            "device": {k: getattr(device, k) for k in COMPARED},
            "lscs": [(r.state, r.issued_at, r.installed_at, r.superseded_at, bytes(r.der)) for r in lscs],
            "events": [(e.event, e.detail.replace(name, "<name>"), e.actor, e.at)
                       for e in events if e.event not in ("DEVICE_ADDED", "OPERATION_SET")],
            "revocations": [(r.serial, r.reason, r.why) for r in list_revocations(s) if r.device_name == name],
        }


def test_core_session_transactions_write_what_the_orm_functions_write(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    certs = [lab_pki.issue(f"CN={n}", key=DEVICE_KEY, not_before=T0, validity_days=300)[1] for n in range(4)]
    with db.session() as s:
        for name in ("SEPCORE", "SEPORM"):
            inv.add_device(s, name, actor="test", operation="Install/Upgrade", now=T0)
    for round_, at in enumerate((T0 + dt.timedelta(hours=1), T0 + dt.timedelta(days=250))):
        if round_:
            with db.session() as s:  # a renewal: Install/Upgrade again
                for name in ("SEPCORE", "SEPORM"):
                    inv.set_device(s, name, actor="test", operation="Install/Upgrade", now=at)
        core_serial, older = _install_by_sessions(db, "SEPCORE", certs[2 * round_], at)
        _install_by_orm(db, "SEPORM", certs[2 * round_ + 1], at)
        with db.session() as s:
            assert s.get(LSCIntent, older).state == intents.ABANDONED
            assert s.get(LSCIntent, older + 1).state == intents.RECORDED
            assert s.get(LSCIntent, older + 1).serial == core_serial
    core, orm = _state(db, "SEPCORE"), _state(db, "SEPORM")
    # Serials, DER and renewal jitter differ by certificate and name; everything else is the same.
    for state in (core, orm):
        state["device"].pop("lsc_serial")  # type: ignore[attr-defined]
        state["device"].pop("renewal_due_at")  # type: ignore[attr-defined]
        state["lscs"] = [row[:4] for row in state["lscs"]]  # type: ignore[attr-defined]
        state["events"] = [(e, d.split("serial=")[0], a, at) for e, d, a, at in state["events"]]  # type: ignore[attr-defined]
        state["revocations"] = [(reason, why.split("serial ")[0]) for _s, reason, why in state["revocations"]]  # type: ignore[attr-defined]
    assert core == orm
    assert [row[0] for row in core["lscs"]] == ["superseded", "installed"]  # type: ignore[index]
    assert core["device"]["lease_owner"] is None and core["device"]["status"] == "CERT_STATUS_UPGRADE_SUCCESS"  # type: ignore[index]
    assert len(core["revocations"]) == 1  # type: ignore[arg-type]
