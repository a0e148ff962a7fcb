"""CAPF inventory on SQLite and PostgreSQL: devices, profiles, LSCs, bulk CSV, reports, leases, the CLI."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from capf_fixtures import T0, db, install_lsc  # noqa: F401  (db is a fixture)
from click.testing import CliRunner
from sqlalchemy import func, select

from onlineca.cli import main_group
from onlineca.errors import CSVImportError, PolicyError
from onlineca.store import Database, Device, DeviceEvent, device_report as report, devices as inv, devices_csv

DAY = dt.timedelta(days=1)


def test_device_crud_and_audit_trail(db: Database) -> None:
    with db.session() as s:
        inv.add_profile(s, "phones", auth_mode="By Authentication String", key_order="EC Preferred RSA Backup")
        inv.add_device(s, "sep74a02fc0a675", model="CP-8845", profile="phones", operation="Install/Upgrade",
                       auth_string="12345", now=T0)
    with db.session() as s:
        d = inv.get_device(s, "SEP74A02FC0A675")
        assert (d.name, d.model, d.operation, d.status) == ("SEP74A02FC0A675", "CP-8845", "OPERATION_UPGRADE",
                                                             "CERT_STATUS_OPERATION_PENDING")
        assert inv.device_dict(d)["operation_completes_by"] == "2026:01:11:00"  # 10 days by default
        policy = inv.device_policy(d)
        assert (policy.auth_mode.ident, policy.key_order.ident) == ("AUTH_BY_STR", "KEYORDER_EC_PREFERRED_RSA_BACKUP")
        inv.set_device(s, "SEP74A02FC0A675", key_order="RSA Only", rsa_key_size="3072", now=T0)
    with db.session() as s:
        d = inv.get_device(s, "sep74a02fc0a675")
        assert (d.key_order, d.rsa_key_size) == ("KEYORDER_RSA_ONLY", 3072)
        inv.set_device(s, d.name, key_order="", now=T0)  # back to the profile's
        assert inv.device_policy(d).key_order.ident == "KEYORDER_EC_PREFERRED_RSA_BACKUP"
        events = [e.event for e in inv.device_events(s, d.name)]
        assert events.count("DEVICE_CHANGED") == 2 and "DEVICE_ADDED" in events and "OPERATION_SET" in events
        assert all("12345" not in e.detail for e in inv.device_events(s, d.name))
        inv.delete_device(s, d.name)
    with db.session() as s:
        assert inv.find_device(s, "SEP74A02FC0A675") is None
        assert inv.device_events(s, "SEP74A02FC0A675")[0].event == "DEVICE_DELETED"  # the trail outlives it
        with pytest.raises(inv.DeviceNotFound):
            inv.get_device(s, "SEP74A02FC0A675")


def test_refused_changes_leave_nothing_behind(db: Database) -> None:
    with db.session() as s:
        inv.add_device(s, "SEP1", auth_mode="AUTH_BY_STR", now=T0)
        with pytest.raises(PolicyError) as err:
            inv.set_device(s, "SEP1", operation="Install/Upgrade", now=T0)  # no auth string
        assert err.value.field == "auth_string"
        with pytest.raises(PolicyError) as err:
            inv.add_device(s, "SEP2", auth_mode="AUTH_BY_STR", operation="Install/Upgrade", now=T0)
        assert err.value.field == "auth_string"
        with pytest.raises(PolicyError) as err:
            inv.set_device(s, "SEP1", operation="Install/Upgrade", auth_string="1234", deadline="2025:12:31:23", now=T0)
        assert err.value.field == "deadline"
        with pytest.raises(inv.InventoryConflict):
            inv.add_device(s, "sep1", now=T0)
        with pytest.raises(inv.ProfileNotFound):
            inv.set_device(s, "SEP1", profile="nope", now=T0)
    with db.session() as s:
        assert [d.name for d in inv.list_devices(s)] == ["SEP1"]
        d = inv.get_device(s, "SEP1")
        assert (d.operation, d.status, d.operation_deadline) == ("OPERATION_NONE", "CERT_STATUS_NONE", None)


def test_filters(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        inv.add_profile(s, "lobby")
        for i in range(6):
            inv.add_device(s, f"SEP00000000000{i}", model="CP-8845" if i % 2 else "CP-7841",
                           profile="lobby" if i < 2 else None, now=T0)
        install_lsc(s, lab_pki, "SEP000000000000", days=30)
        install_lsc(s, lab_pki, "SEP000000000001", days=300)
        inv.set_device(s, "SEP000000000002", operation="Delete", now=T0)
    with db.session() as s:
        def listed(**kw) -> list[str]:  # type: ignore[no-untyped-def]
            return inv.names(inv.list_devices(s, inv.DeviceFilter(**kw)))
        assert listed(lsc_expires_before=T0 + 60 * DAY) == ["SEP000000000000"]
        assert listed(lsc_expires_before=T0 + 400 * DAY) == ["SEP000000000000", "SEP000000000001"]
        assert listed(status="Upgrade Success") == ["SEP000000000000", "SEP000000000001"]
        assert listed(operation="OPERATION_DELETE") == ["SEP000000000002"]
        assert listed(profile="lobby", model="CP-8845") == ["SEP000000000001"]
        assert listed(name="sep*4") == ["SEP000000000004"]
        assert listed(name="SEP_0*") == []  # '_' is a literal, not LIKE's wildcard
        assert listed(has_lsc=False) == [f"SEP00000000000{i}" for i in range(2, 6)]
        assert inv.count_devices(s, inv.DeviceFilter(model="CP-7841")) == 3
        with pytest.raises(PolicyError):
            listed(status="Happy")


def test_lsc_history_delivery_and_supersede(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        inv.add_device(s, "SEP1", operation="Install/Upgrade", now=T0)
        first = install_lsc(s, lab_pki, "SEP1", T0, days=300)
        d = inv.get_device(s, "SEP1")
        assert (d.status, d.operation, d.lsc_serial) == ("CERT_STATUS_UPGRADE_SUCCESS", "OPERATION_NONE", first)
        assert d.renewal_due_at is not None
        # A renewal: the new certificate is stored before delivery; the old one stays installed.
        _, cert = lab_pki.issue("CN=SEP1", not_before=T0 + 200 * DAY, validity_days=300)
        from onlineca import pki
        row = inv.record_lsc_issued(s, "SEP1", pki.cert_der(cert), now=T0 + 200 * DAY)
        assert inv.undelivered_lsc(s, "SEP1", now=T0 + 200 * DAY).serial == row.serial
        assert inv.get_device(s, "SEP1").lsc_serial == first
    with db.session() as s:
        inv.mark_lsc_installed(s, "SEP1", row.serial, now=T0 + 201 * DAY)
        assert [(c.serial, c.state) for c in inv.lsc_history(s, "SEP1")] == [(first, "superseded"),
                                                                             (row.serial, "installed")]
        assert inv.undelivered_lsc(s, "SEP1", now=T0 + 201 * DAY) is None
        with pytest.raises(Exception) as err:
            inv.record_lsc_issued(s, "SEP1", b"not a certificate")
        assert "does not parse" in str(err.value)


def test_csv_round_trip(db: Database, db_url: str, tmp_path: Path) -> None:
    with db.session() as s:
        inv.add_profile(s, "phones")
        inv.add_device(s, "SEP1", model="CP-8845", description='Lobby, "east" door', profile="phones",
                       operation="Install/Upgrade", auth_mode="By Authentication String", auth_string="0042",
                       key_order="EC Only", ec_key_size=384, deadline="2026:02:01:09", now=T0)
        inv.add_device(s, "SEP2", rsa_key_size=4096, now=T0)
        out = io.StringIO()
        assert devices_csv.export_csv(s, out) == 2
    exported = out.getvalue()
    assert exported.splitlines()[0].startswith("DEVICE NAME,DESCRIPTION,MODEL,PROFILE,CERTIFICATE OPERATION")
    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    other.migrate()
    try:
        with other.session() as s:
            inv.add_profile(s, "phones")
            result = devices_csv.import_csv(s, exported, now=T0)
            assert sorted(result.added) == ["SEP1", "SEP2"] and result.updated == []
        with other.session() as s:
            again = io.StringIO()
            devices_csv.export_csv(s, again)
        assert again.getvalue() == exported
        # Importing into the same database updates in place (upsert) and changes nothing.
        with db.session() as s:
            assert devices_csv.import_csv(s, exported, now=T0).updated == ["SEP1", "SEP2"]
            assert sum(1 for e in inv.device_events(s, "SEP2") if e.event == "DEVICE_CHANGED") == 0
    finally:
        other.dispose()


def test_bad_csv_lines_are_named_and_nothing_is_imported(db: Database) -> None:
    header = "DEVICE NAME,MODEL,CERTIFICATE OPERATION,AUTHENTICATION MODE,AUTHENTICATION STRING,RSA KEY SIZE (BITS),OPERATION COMPLETES BY\n"
    body = (
        "SEP000000000001,CP-8845,Install/Upgrade,By Null String,,2048,\n"        # 2 good
        "SEP000000000002,CP-8845,Install/Upgrade,By Authentication String,12,,\n"  # 3 short auth string
        "SEP000000000003,CP-8845,Reboot,,,,\n"                                    # 4 no such operation
        "SEP000000000004,CP-8845,,,,768,\n"                                      # 5 RSA size
        "SEP 5,CP-8845,,,,,\n"                                                   # 6 bad name
        "SEP000000000001,CP-8845,,,,,\n"                                         # 7 duplicate
        "SEP000000000007,CP-8845\n"                                              # 8 too few cells
        "SEP000000000008,CP-8845,Delete,,,,2026:13:01:00\n"                      # 9 bad deadline
        "SEP000000000009,CP-8845,,,,,\n"                                         # 10 good
    )
    with db.session() as s, pytest.raises(CSVImportError) as err:
        devices_csv.import_csv(s, header + body, now=T0)
    lines = dict(err.value.errors)
    assert sorted(lines) == [3, 4, 5, 6, 7, 8, 9]
    assert "auth_string" in lines[3] and "operation" in lines[4] and "rsa_key_size" in lines[5]
    assert "name" in lines[6] and "line 2" in lines[7] and "cells" in lines[8] and "deadline" in lines[9]
    with db.session() as s:
        assert inv.count_devices(s) == 0
        assert s.scalar(select(func.count()).select_from(DeviceEvent)) == 0
    with db.session() as s:
        for bad, where in (("", 1), ("NAME,MODEL\nSEP1,x\n", 1), ("DEVICE NAME\nSEP\x001\n", 2)):
            with pytest.raises(CSVImportError) as err:
                devices_csv.import_csv(s, bad)
            assert err.value.errors[0][0] == where
        inv.add_device(s, "SEP000000000001", now=T0)
    with db.session() as s:
        with pytest.raises(CSVImportError) as err:
            devices_csv.import_csv(s, header + "SEP000000000001,,,,,,\n", mode="add")
        assert "already exists" in err.value.errors[0][1]


def _make_fleet(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        for name in ("SEPA", "SEPB", "SEPC", "SEPD"):
            inv.add_device(s, name, now=T0)
        install_lsc(s, lab_pki, "SEPA", T0, days=300)          # renewal window opens ~day 170-200
        install_lsc(s, lab_pki, "SEPB", T0, days=20)           # expiring soon
        inv.set_device(s, "SEPC", operation="Troubleshoot", deadline="2026:01:05:00", now=T0)
        inv.set_device(s, "SEPD", operation="Install/Upgrade", now=T0)
        _, cert = lab_pki.issue("CN=SEPD", not_before=T0, validity_days=300)
        from onlineca import pki
        inv.record_lsc_issued(s, "SEPD", pki.cert_der(cert), now=T0)  # issued, never installed


def test_reports(db: Database, lab_pki) -> None:  # type: ignore[no-untyped-def]
    _make_fleet(db, lab_pki)
    with db.session() as s:
        statuses = {r["display"]: r["devices"] for r in report.by_status(s)}
        assert statuses == {"Upgrade Success": 2, "Operation Pending": 2}
        assert [r["name"] for r in report.expiring(s, 30 * DAY, now=T0)] == ["SEPB"]
        assert report.overdue(s, now=T0 + DAY) == []
        late = {r["name"]: r["reasons"] for r in report.overdue(s, now=T0 + 6 * DAY)}
        assert list(late) == ["SEPC"] and "Troubleshoot not done by 2026:01:05:00" in late["SEPC"][0]
        late = {r["name"]: r["reasons"] for r in report.overdue(s, now=T0 + 215 * DAY, grace=10 * DAY)}
        assert late["SEPA"][0].startswith("renewal overdue") and late["SEPB"] == ["LSC expired without a successor"]
        assert report.stale(s, older_than=DAY, now=T0) == []
        assert [r["name"] for r in report.stale(s, older_than=DAY, now=T0 + 2 * DAY)] == ["SEPD"]


def test_claim_device_lease(db: Database, db_url: str) -> None:
    with db.session() as s:
        inv.add_device(s, "SEP1", now=T0)
    other = Database(db_url)
    try:
        ttl = dt.timedelta(minutes=5)
        with db.session() as s:
            assert inv.claim_device(s, "SEP1", "node-a", ttl, now=T0)
        with other.session() as s:
            assert not inv.claim_device(s, "SEP1", "node-b", ttl, now=T0 + dt.timedelta(minutes=4))
            assert not inv.release_device(s, "SEP1", "node-b")
        with db.session() as s:
            assert inv.claim_device(s, "SEP1", "node-a", ttl, now=T0 + dt.timedelta(minutes=4))  # extend
        with other.session() as s:
            assert not inv.claim_device(s, "SEP1", "node-b", ttl, now=T0 + dt.timedelta(minutes=8))
            # node-a died: its lease expires.
            assert inv.claim_device(s, "SEP1", "node-b", ttl, now=T0 + dt.timedelta(minutes=10))
        with db.session() as s:
            assert s.scalar(select(Device.lease_owner)) == "node-b"
            assert inv.release_device(s, "SEP1", "node-b")
            assert inv.claim_device(s, "SEP1", "node-a", ttl, now=T0 + dt.timedelta(minutes=11))
    finally:
        other.dispose()


# ---- the CLI -------------------------------------------------------------------------------

def _cli(db_url: str, tmp_path: Path, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    env = {"ONLINECA_DATABASE_URL": db_url, "ONLINECA_DATA_DIR": str(tmp_path)}
    return runner.invoke(main_group, ["capf", *args], env=env, input=input, catch_exceptions=False)


def test_cli_auth_string_alone_means_auth_by_string(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    r = _cli(db_url, tmp_path, "devices", "add", "SEP001122334455", "--auth-string", "123456")
    assert r.exit_code == 0, r.output
    r = _cli(db_url, tmp_path, "devices", "add", "SEP001122334466", "--auth-string", "123456",
             "--auth-mode", "By Null String")
    assert r.exit_code == 0, r.output
    rows = json.loads(_cli(db_url, tmp_path, "devices", "list", "--json").output)
    assert {d["name"]: d["auth_mode"] for d in rows} == {
        "SEP001122334455": "AUTH_BY_STR", "SEP001122334466": "AUTH_BY_NULL_STR"}


def test_cli_devices_and_report(db_url: str, tmp_path: Path, lab_pki) -> None:  # type: ignore[no-untyped-def]
    r = _cli(db_url, tmp_path, "profiles", "add", "phones", "--auth-mode", "By Authentication String",
             "--renewal-days-before", "30")
    assert r.exit_code == 0, r.output
    r = _cli(db_url, tmp_path, "devices", "add", "SEP74A02FC0A675", "--profile", "phones", "--operation",
             "Install/Upgrade", "--auth-string", "12345", "--model", "CP-8845")
    assert r.exit_code == 0, r.output
    r = _cli(db_url, tmp_path, "devices", "add", "SEP1", "--rsa-key-size", "1000")
    assert r.exit_code == 1 and "rsa_key_size: '1000' is not one of" in r.output
    r = _cli(db_url, tmp_path, "devices", "set", "SEP74A02FC0A675", "--auth-string", "12")
    assert r.exit_code == 1 and "auth_string: must be 4 to 10 digits" in r.output
    r = _cli(db_url, tmp_path, "devices", "list", "--json")
    rows = json.loads(r.output)
    assert [(d["name"], d["status"], d["auth_mode"]) for d in rows] == [
        ("SEP74A02FC0A675", "CERT_STATUS_OPERATION_PENDING", "AUTH_BY_STR")]
    assert "auth_string" not in rows[0]
    r = _cli(db_url, tmp_path, "devices", "list")
    assert "SEP74A02FC0A675" in r.output and "Operation Pending" in r.output
    r = _cli(db_url, tmp_path, "devices", "show", "sep74a02fc0a675", "--json")
    shown = json.loads(r.output)
    assert "Select(SEP74A02FC0A675) BEFORE DB query Authentication Mode=AUTH_BY_STR:1" in shown["policy_log"]
    assert "12345" not in r.output
    csv_file = tmp_path / "devices.csv"
    assert _cli(db_url, tmp_path, "devices", "export", str(csv_file)).exit_code == 0
    assert "AUTHENTICATION STRING" not in csv_file.read_text()  # only asked for, as below (issue 11 item 5)
    assert _cli(db_url, tmp_path, "devices", "export", str(csv_file), "--with-auth-strings").exit_code == 0
    assert _cli(db_url, tmp_path, "devices", "delete", "SEP74A02FC0A675").exit_code == 0
    r = _cli(db_url, tmp_path, "devices", "import", str(csv_file))
    assert r.exit_code == 0 and "1 added" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("DEVICE NAME,KEY ORDER\nSEP2,RSA Only\nSEP3,DSA Only\n")
    r = _cli(db_url, tmp_path, "devices", "import", str(bad))
    assert r.exit_code == 1 and f"{bad}:3: key_order: 'DSA Only'" in r.output and "nothing imported" in r.output
    r = _cli(db_url, tmp_path, "devices", "list", "--lsc-expires-before", "tomorrow")
    assert r.exit_code == 2
    r = _cli(db_url, tmp_path, "report", "--json")
    data = json.loads(r.output)
    assert r.exit_code == 0 and data["by_status"][0]["display"] == "Operation Pending" and data["overdue"] == []
    r = _cli(db_url, tmp_path, "devices", "show", "SEP9")
    assert r.exit_code == 1 and "no device named SEP9" in r.output
