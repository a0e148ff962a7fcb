"""Issue 11 item 4: secrets at rest.

After a demo run (CA, RA, CAPF and the console, as ``onlineca demo`` starts them), every folder
of the data dir is 0700 and every file 0600, the SQLite databases and their -wal and -shm files
included (checked while the servers still run, when those files exist).  Auth strings are kept
as salted hashes only, an existing database's clear strings are hashed by the migration, and the
device CSV export carries them only when asked (their hashes), in a 0600 file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from onlineca.policy.capf import auth_string_matches, is_auth_string_hash
from onlineca.store import Database, devices as inv
from onlineca.store.migrate import upgrade

ONLINECA = [sys.executable, "-m", "onlineca"]


# Published on purpose, for other web servers too (branch ops2): the CA's CRLs and the issuing
# certificate of its AIA (CertEnroll), CAPF's CRL.  Nothing secret.
PUBLISHED = ("CertEnroll",)


def _loose(root: Path) -> list[str]:
    """Everything under ``root`` that someone other than its owner may read, write or enter."""
    found = []
    for folder, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            path = Path(folder) / name
            if any(part in PUBLISHED for part in path.relative_to(root).parts) or name.endswith(".crl"):
                continue
            mode = stat.S_IMODE(path.lstat().st_mode)
            if not path.is_symlink() and mode & 0o077:
                found.append(f"{path.relative_to(root)} {mode:o}")
    return found


async def test_a_demo_leaves_nothing_readable_but_by_its_owner(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    os.umask(0o022)  # the usual umask: the processes must not depend on a strict one
    proc = await asyncio.create_subprocess_exec(
        *ONLINECA, "--data-dir", str(tmp_path / "data"), "demo", "--devices", "8", "--dir", str(root),
        "--free-ports", "--keep-running", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(240):
            report = json.loads(await proc.stdout.readline())
            console = json.loads(await proc.stdout.readline())  # the servers run until SIGTERM
        assert report["failed"] == 0 and "console" in console
        databases = sorted(p.name for p in root.glob("*.db*"))
        assert {"capf.db", "capf.db-wal", "capf.db-shm", "ca.db"} <= set(databases), databases
        assert _loose(root) == []
        with sqlite3.connect(root / "capf.db") as conn:
            hashes = [row[0] for row in conn.execute("SELECT auth_string_hash FROM device WHERE auth_string_hash "
                                                     "IS NOT NULL")]
            columns = [row[1] for row in conn.execute("PRAGMA table_info(device)")]
        assert hashes and all(is_auth_string_hash(h) for h in hashes) and "auth_string" not in columns
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), 60)
    assert _loose(root) == []


def test_the_csv_export_holds_auth_strings_only_when_asked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    base = [*ONLINECA, "--data-dir", str(data), "capf", "devices"]
    run = {"check": True, "capture_output": True, "text": True, "env": {**os.environ}}
    subprocess.run([*base, "add", "SEP000000000001", "--operation", "Install/Upgrade", "--auth-string", "246810"], **run)
    added = subprocess.run([*base, "add", "SEP000000000002", "--operation", "Install/Upgrade",
                            "--generate-auth-string"], **run)
    generated = added.stdout.split("auth string ")[1].split()[0]
    assert generated.isdigit() and "shown once" in added.stdout
    plain, secret = tmp_path / "plain.csv", tmp_path / "secret.csv"
    subprocess.run([*base, "export", str(plain)], **run)
    subprocess.run([*base, "export", str(secret), "--with-auth-strings"], **run)
    assert "AUTHENTICATION STRING" not in plain.read_text() and "246810" not in plain.read_text()
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600 and stat.S_IMODE(secret.stat().st_mode) == 0o600
    rows = secret.read_text().splitlines()
    assert "AUTHENTICATION STRING" in rows[0] and "246810" not in secret.read_text() and generated not in rows[2]
    shown = subprocess.run([*base, "show", "SEP000000000001", "--secrets"], **run).stdout
    assert "246810" not in shown and "auth_string_set" in shown and "True" in shown
    db = Database(f"sqlite:///{data / 'onlineca.db'}")
    try:
        with db.session() as s:
            assert auth_string_matches(inv.get_device(s, "SEP000000000001").auth_string_hash, "246810")
            assert auth_string_matches(inv.get_device(s, "SEP000000000002").auth_string_hash, generated)
    finally:
        db.dispose()
    assert _loose(data) == []


def test_the_migration_hashes_the_clear_auth_strings_of_an_existing_database(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(db, "0006")
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO device (name, model, description, operation, status, auth_mode, "
                              "auth_string, renewal_attempts, renewal_last_error, failed_auth_count, created_at, "
                              "updated_at) VALUES ('SEPOLD', '', '', 'OPERATION_UPGRADE', 'CERT_STATUS_NONE', "
                              "'AUTH_BY_STR', '13579', 0, '', 0, '2026-01-01', '2026-01-01')"))
        db.migrate()
        with db.session() as s:
            stored = inv.get_device(s, "SEPOLD").auth_string_hash
            assert is_auth_string_hash(stored) and auth_string_matches(stored, "13579")
            assert inv.device_policy(inv.get_device(s, "SEPOLD")).auth_string == stored
        with sqlite3.connect(tmp_path / "old.db") as conn:
            assert "auth_string" not in [row[1] for row in conn.execute("PRAGMA table_info(device)")]
    finally:
        db.dispose()
