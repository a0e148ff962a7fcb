"""``onlineca backup``: a lab that enrolled and renewed its fleet is backed up while nothing
special is done to it, the backup verifies (and a changed byte does not), restores into a new data
dir, and the chain started from the restored data dir renews the same phones again (their LSCs,
the CA's keys and requests, CAPF's inventory and key all came back).  A PostgreSQL database goes
through pg_dump and pg_restore."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import stat
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from onlineca.cli import main_group
from onlineca.config import load_config
from onlineca.lab import (
    GROUPS,
    LabOptions,
    Servers,
    _phone_target,
    advance_to_renewal,
    lab_config,
    run_lab,
    start_servers,
)
from onlineca.phone.client import PhoneAuth
from onlineca.phone.device import Phone
from onlineca.phone.fleet import Member, device_names, run_fleet
from onlineca.store import backup as store_backup

pytestmark = pytest.mark.slow


def _cli(*args: str):
    return CliRunner().invoke(main_group, list(args))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("backup") / "old"
    run = asyncio.run(run_lab(LabOptions(root=root, devices=4, concurrency=4, default_ports=False)))
    assert run.report["failed"] == 0, run.report
    return root


def test_backup_round_trip_then_the_restored_chain_renews_the_fleet(lab: Path, tmp_path: Path) -> None:
    out = tmp_path / "b" / "onlineca.tar.gz"
    config = lab / "onlineca.toml"
    made = _cli("--config", str(config), "backup", "create", "--out", str(out))
    assert made.exit_code == 0, made.output
    print(made.stdout)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
    assert {"manifest.json", "data/capf.db", "data/ca.db", "data/ca/root.key", "data/ca/issuing.key",
            "data/capf/capf.key", "config/onlineca.toml"} <= names
    assert not any(n.startswith("data/logs/") or n.endswith((".lock", "-wal", "-shm")) for n in names)
    checked = _cli("backup", "verify", str(out))
    print(checked.stdout)
    assert checked.exit_code == 0 and checked.stdout.strip().endswith(f"from {lab})")

    new = tmp_path / "new"
    restored = _cli("backup", "restore", str(out), "--to", str(new))
    print(restored.stdout)
    assert restored.exit_code == 0, restored.output
    assert (new / "ca" / "issuing.key").read_bytes() == (lab / "ca" / "issuing.key").read_bytes()
    assert stat.S_IMODE((new / "ca" / "issuing.key").stat().st_mode) == 0o600
    assert _cli("backup", "restore", str(out), "--to", str(new)).exit_code == 1  # never over a data dir

    # the chain from the restored data dir: the same phones renew with their restored LSCs
    password = load_config(new / "config" / "onlineca.toml").ra.ca_password.get_secret_value()
    cfg = lab_config(new, password, new / "mic-ca" / "mic-ca.pem")

    async def renew() -> list[tuple[str, str, str | None, str | None]]:
        servers = Servers()
        try:
            await start_servers(cfg, new, servers, default_ports=False)
            phones = [Phone.open(p) for p in sorted((new / "phones").iterdir())]
            before = {p.name: format(p.lsc.serial_number, "x") for p in phones if p.lsc is not None}
            assert len(before) == 4
            # The scheduler gives Install/Upgrade by LSC to the extended-flow phones; the public-flow
            # ones renew by asking again (the lab's first four groups: two of each).
            extended = {name for name, group in zip(device_names(4), GROUPS, strict=False) if group.flow == "extended"}
            assert len(extended) == 2
            phones = [p for p in phones if p.name in extended]
            _clock, scheduled = await asyncio.to_thread(advance_to_renewal, cfg)
            assert scheduled == len(extended)
            results = []
            members = [Member(p, PhoneAuth("lsc")) for p in phones]
            await run_fleet(members, _phone_target(new, servers.endpoints), concurrency=4, retries=2, max_retry_delay=2.0,
                            on_result=lambda m, r: results.append((m.phone.name, r.outcome, before[m.phone.name],
                                                                   r.lsc_serial)))
            return results
        finally:
            await servers.close()

    results = asyncio.run(renew())
    assert len(results) == 2
    for name, outcome, old_serial, new_serial in results:
        assert outcome == "installed" and new_serial and new_serial.lower() != old_serial, (name, outcome)


def test_verify_finds_a_changed_member_and_restore_refuses_it(lab: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    store_backup.create(load_config(lab / "onlineca.toml"), lab / "onlineca.toml", out)
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(out) as src, tarfile.open(bad, "w:gz") as dst:
        for member in src.getmembers():
            body = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "data/ca/root.pem":
                body = body.replace(b"MII", b"MIJ", 1)
            member.size = len(body)
            dst.addfile(member, io.BytesIO(body))
    result = _cli("backup", "verify", str(bad))
    assert result.exit_code == 1
    assert f"{bad}: data/ca/root.pem: SHA-256 differs from the manifest" in result.stdout
    restored = _cli("backup", "restore", str(bad), "--to", str(tmp_path / "never"))
    assert restored.exit_code == 1 and "does not verify" in restored.stderr
    assert not (tmp_path / "never").exists()


@pytest.fixture
def pg_pair() -> Iterator[tuple[str, str]]:
    """Two new PostgreSQL databases: the one backed up and an empty one to restore into."""
    base = os.environ.get("ONLINECA_TEST_PG_URL")
    if not base:
        if os.environ.get("CI") == "true":
            pytest.fail("ONLINECA_TEST_PG_URL is not set under CI: .ci/run must start PostgreSQL")
        pytest.skip("no PostgreSQL (set ONLINECA_TEST_PG_URL, see .ci/postgres.sh)")
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        if os.environ.get("CI"):
            pytest.fail("pg_dump is missing (.ci/run installs postgresql-client)")
        pytest.skip("pg_dump is not installed")
    from sqlalchemy import create_engine, text

    names = ["b_" + uuid.uuid4().hex[:12], "r_" + uuid.uuid4().hex[:12]]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + names[0], base.rsplit("/", 1)[0] + "/" + names[1]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_postgresql_database_goes_through_pg_dump_and_pg_restore(tmp_path: Path, pg_pair: tuple[str, str]) -> None:
    from onlineca.errors import BackupError
    from onlineca.store import Database, devices as inventory

    source, target = pg_pair
    db = Database(source)
    db.migrate()
    with db.session() as s:
        inventory.add_device(s, "SEP74A02FC0A675", actor="test", operation="OPERATION_UPGRADE")
    db.dispose()
    (tmp_path / "data").mkdir()
    conf = tmp_path / "onlineca.toml"
    conf.write_text(f'data_dir = "data"\n[database]\nurl = "{source}"\n')
    out = tmp_path / "pg.tar.gz"
    manifest = store_backup.create(load_config(conf), conf, out)
    assert manifest.database["kind"] == "postgresql"
    assert store_backup.verify(out).ok
    with pytest.raises(BackupError, match="PostgreSQL"):
        store_backup.restore(out, tmp_path / "new0")
    store_backup.restore(out, tmp_path / "new", database_url=target)
    restored = Database(target)
    try:
        with restored.session() as s:
            assert inventory.get_device(s, "SEP74A02FC0A675").name == "SEP74A02FC0A675"
    finally:
        restored.dispose()


def test_the_ca_commands_use_the_cas_own_database_where_the_lab_keeps_it(lab: Path, tmp_path: Path) -> None:
    """The lab keeps the CA's requests apart (``[admin] ca_database_url``): ``ca requests``,
    ``ca revoke`` and ``ca crl`` all read that one, so an LSC the lab issued can be revoked."""
    config = str(lab / "onlineca.toml")
    listed = _cli("--config", config, "ca", "requests", "list", "--json")
    assert listed.exit_code == 0, listed.output
    lsc = next(r for r in json.loads(listed.stdout) if r["disposition"] == "issued" and "SEP" in r["subject"])
    shown = _cli("--config", config, "ca", "requests", "show", str(lsc["req_id"]), "--pem")
    assert shown.exit_code == 0, shown.output
    serial = format(x509.load_pem_x509_certificate(shown.stdout.encode()).serial_number, "x")
    revoked = _cli("--config", config, "ca", "revoke", serial, "--reason", "superseded")
    assert revoked.exit_code == 0, revoked.output
    out = tmp_path / "issuing.crl"
    assert _cli("--config", config, "ca", "crl", "--out", str(out)).exit_code == 0
    crl = x509.load_der_x509_crl(out.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
