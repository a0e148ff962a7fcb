"""Backups of a data dir: one tar (mode 0600) holding a consistent snapshot of the database, the
keys, certificates and other files of the data dir, and the configuration, with a manifest of
SHA-256 digests.

``create`` snapshots every SQLite database with SQLite's online backup API (consistent while the
servers run and write), or runs ``pg_dump --format=custom`` for PostgreSQL, then copies the data
dir's files (not its logs, locks or SQLite side files) and the configuration file in force with
the files it names outside the data dir.  Passphrase and PIN files are never included: a backup
beside the passphrase of its encrypted keys would protect nothing.  ``verify`` checks every member
against the manifest (and that nothing else is in the tar) and each SQLite snapshot's integrity.
``restore`` verifies, then writes the data dir into an empty folder (files 0600, folders 0700),
the SQLite databases in place and a PostgreSQL dump into the database given; the configuration
goes to ``<target>/config/`` for the administrator to put in place (its paths name the old data
dir).  Tar members are extracted only by their manifest names, never as links or outside the target.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy.engine import make_url

from onlineca import __version__
from onlineca.config import Config, is_path_key
from onlineca.errors import BackupError

FORMAT = "onlineca-backup/1"
MANIFEST = "manifest.json"
SKIP_SUFFIXES = (".db-wal", ".db-shm", ".db-journal", ".lock", ".sqlite-wal", ".sqlite-shm")
SECRET_KEYS = ("key_passphrase_file", "pkcs11_pin_file")  # never in a backup (see the docstring)


@dataclass
class Manifest:
    created: str
    data_dir: str
    config: str | None
    database: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    format: str = FORMAT
    version: str = __version__

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=2, sort_keys=True).encode() + b"\n"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sqlite_snapshot(source: Path, dest: Path) -> None:
    """SQLite's online backup: a consistent copy even while a server writes (it retries pages
    that change while it copies)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _pg_env(url: str) -> tuple[list[str], dict[str, str]]:
    """pg_dump / pg_restore connection arguments, the password in the environment (not on the
    command line, where ``ps`` shows it)."""
    u = make_url(url)
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    args = ["--host", u.host or "localhost", "--port", str(u.port or 5432), "--username", u.username or "postgres"]
    return args + ["--dbname", u.database or "postgres"], env


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    tool = shutil.which(command[0])
    if tool is None:
        raise BackupError(f"{command[0]} not found: it is needed to {what}",
                          hint="Install PostgreSQL's client programs (Debian: apt-get install postgresql-client).")
    done = subprocess.run([tool, *command[1:]], env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise BackupError(f"{command[0]} failed ({what}): {done.stderr.strip()[-2000:]}")


def _data_files(data: Path, with_logs: bool, log_dir: Path) -> list[Path]:
    out = []
    for path in sorted(data.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(data)
        if path.suffix == ".db" or path.name.endswith(SKIP_SUFFIXES):
            continue
        if not with_logs and (path.is_relative_to(log_dir) or rel.parts[0] == "logs"):
            continue
        out.append(path)
    return out


def _external_files(config: Config, data: Path) -> list[Path]:
    """Files the configuration names outside the data dir (certificates, trust stores, users
    files), passphrase and PIN files left out."""
    found: list[Path] = []
    for section in ("ca", "ra", "est", "capf", "admin"):
        model = getattr(config, section)
        for key in type(model).model_fields:
            value = getattr(model, key)
            if not isinstance(value, str) or not value or not is_path_key(key) or key in SECRET_KEYS:
                continue
            path = Path(value).absolute()
            if key == "pkcs11_module" or path.is_relative_to(data):
                continue
            if path.is_dir():
                found += [p for p in sorted(path.iterdir()) if p.is_file()]
            elif path.is_file():
                found.append(path)
    return sorted(set(found))


def create(config: Config, config_path: Path | None, out: Path, *, with_logs: bool = False) -> Manifest:
    """Write the backup to ``out`` (mode 0600, atomically); returns its manifest."""
    data = config.data_path
    if not data.is_dir():
        raise BackupError(f"no data dir at {data}", hint="Give the data dir of the installation (--data-dir).")
    out = out.absolute()
    if out.is_relative_to(data):
        raise BackupError(f"{out} is inside the data dir {data}", hint="Write the backup outside the data dir.")
    url = config.database_url
    manifest = Manifest(created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), data_dir=str(data),
                        config=str(config_path) if config_path else None, database={})
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".onlineca-backup-", dir=out.parent) as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o700)
        members: dict[str, Path] = {}
        # 1. databases: every SQLite file in the data dir (the lab keeps the CA's apart), and the
        #    configured one wherever it is
        sqlite_files = sorted(p for p in data.glob("*.db") if p.is_file())
        if url.startswith("sqlite"):
            configured = Path(make_url(url).database or "").absolute()
            if configured.is_file() and configured not in sqlite_files:
                sqlite_files.append(configured)
            manifest.database = {"kind": "sqlite", "path": str(configured)}
        else:
            dump = tmp / "database.pgdump"
            args, env = _pg_env(url)
            _run(["pg_dump", "--format=custom", "--no-owner", "--file", str(dump), *args], env, "dump PostgreSQL")
            members["database/postgresql.pgdump"] = dump
            manifest.database = {"kind": "postgresql", "member": "database/postgresql.pgdump"}
        snapshots = []
        for i, db_file in enumerate(sqlite_files):
            snap = tmp / f"{i}.db"
            _sqlite_snapshot(db_file, snap)
            name = (f"data/{db_file.relative_to(data)}" if db_file.is_relative_to(data)
                    else f"external{db_file}")
            members[name] = snap
            snapshots.append(name)
        manifest.database["sqlite_members"] = snapshots
        # 2. the data dir's files, 3. the configuration and what it names outside the data dir
        for path in _data_files(data, with_logs, config.log_path):
            members[f"data/{path.relative_to(data).as_posix()}"] = path
        if config_path is not None and config_path.is_file():
            members["config/onlineca.toml"] = config_path
        for path in _external_files(config, data):
            members[f"external{path.as_posix()}"] = path
        for name, path in members.items():
            manifest.files[name] = {"sha256": _sha256(path), "size": path.stat().st_size}
        part = tmp / "backup.tar.gz"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            body = manifest.to_json()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(body), 0o600, int(dt.datetime.now(dt.UTC).timestamp())
            tar.addfile(info, io.BytesIO(body))
            for name, path in members.items():
                info = tar.gettarinfo(str(path), arcname=name)
                info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
                with path.open("rb") as f:
                    tar.addfile(info, f)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(part, out)
    return manifest


def _safe_name(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and p.parts[:1] in (("data",), ("config",), ("external",),
                                                                           ("database",))


@dataclass
class VerifyReport:
    path: Path
    manifest: Manifest
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _read_manifest(tar: tarfile.TarFile, path: Path) -> Manifest:
    try:
        member = tar.getmember(MANIFEST)
        raw = tar.extractfile(member)
        data = json.loads(raw.read() if raw is not None else b"")
        if data.get("format") != FORMAT:
            raise BackupError(f"{path}: not an onlineca backup ({data.get('format')!r})")
        return Manifest(**data)
    except (KeyError, ValueError, TypeError) as exc:
        raise BackupError(f"{path}: no readable {MANIFEST} ({exc})") from None


def verify(path: Path) -> VerifyReport:
    """Every member's digest against the manifest; members missing or unlisted; SQLite integrity."""
    path = path.absolute()
    problems: list[str] = []
    try:
        tar = tarfile.open(path, "r:gz")  # noqa: SIM115  (closed by the with below, after the error path)
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{path}: cannot open: {exc}") from None
    with tar, tempfile.TemporaryDirectory(prefix="onlineca-verify-") as tmp:
        manifest = _read_manifest(tar, path)
        seen = set()
        for member in tar.getmembers():
            if member.name == MANIFEST:
                continue
            if member.name not in manifest.files:
                problems.append(f"{member.name}: in the tar but not in the manifest")
                continue
            if not member.isfile() or not _safe_name(member.name):
                problems.append(f"{member.name}: not a plain file with a safe name")
                continue
            seen.add(member.name)
            f = tar.extractfile(member)
            h = hashlib.sha256()
            body = f.read() if f is not None else b""
            h.update(body)
            if h.hexdigest() != manifest.files[member.name]["sha256"]:
                problems.append(f"{member.name}: SHA-256 differs from the manifest")
                continue
            if member.name in manifest.database.get("sqlite_members", []):
                snap = Path(tmp) / "check.db"
                snap.write_bytes(body)
                con = sqlite3.connect(snap)
                try:
                    result = con.execute("PRAGMA integrity_check").fetchone()[0]
                finally:
                    con.close()
                if result != "ok":
                    problems.append(f"{member.name}: SQLite integrity check: {result}")
                snap.unlink()
        for name in sorted(set(manifest.files) - seen):
            if not any(p.startswith(name + ":") for p in problems):
                problems.append(f"{name}: in the manifest but missing from the tar")
    return VerifyReport(path, manifest, problems)


def restore(path: Path, target: Path, *, database_url: str | None = None) -> Manifest:
    """Verify, then restore into ``target`` (a new or empty folder): see the module docstring."""
    report = verify(path)
    if not report.ok:
        raise BackupError(f"{report.path} does not verify: {report.problems[0]}", code="BACKUP_DIGEST")
    target = target.absolute()
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty", hint="Restore into a new (or empty) data dir.")
    manifest = report.manifest
    pg_member = manifest.database.get("member") if manifest.database.get("kind") == "postgresql" else None
    if pg_member and not database_url:
        raise BackupError("this backup holds a PostgreSQL database",
                          hint="Give --database-url of an empty database to restore it into.")
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tarfile.open(report.path, "r:gz") as tar, tempfile.TemporaryDirectory(prefix="onlineca-restore-") as tmp:
        for name in manifest.files:
            member = tar.getmember(name)
            f = tar.extractfile(member)
            body = f.read() if f is not None else b""
            rel = PurePosixPath(name)
            if rel.parts[0] == "data":
                dest = target.joinpath(*rel.parts[1:])
            elif rel.parts[0] == "config":      # config/onlineca.toml
                dest = target.joinpath(*rel.parts)
            elif rel.parts[0] == "external":    # files the configuration named outside the data dir
                dest = target.joinpath("config", *rel.parts)
            else:                               # database/postgresql.pgdump
                dest = Path(tmp) / rel.name
            if not dest.absolute().is_relative_to(target) and not dest.is_relative_to(Path(tmp)):
                raise BackupError(f"{name}: would be written outside {target}")
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(body)
        if pg_member and database_url:
            args, env = _pg_env(database_url)
            _run(["pg_restore", "--no-owner", "--exit-on-error", *args, str(Path(tmp) / PurePosixPath(pg_member).name)],
                 env, "restore PostgreSQL")
    return manifest


__all__ = ["FORMAT", "Manifest", "VerifyReport", "create", "restore", "verify"]
