"""Alembic migrations, run programmatically (no alembic.ini needed at run time).

Every server calls ``Database.migrate()`` at start-up, so several processes may migrate the same
database at once: on PostgreSQL a transaction-scoped advisory lock serialises them (the schema
change and the version stamp commit together, DDL being transactional there); on SQLite an
exclusive file lock beside the database file does.  Whoever comes second finds the schema at head
and does nothing.  This module must never create tables any other way than through the revisions.
"""

from __future__ import annotations

import fcntl
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text

from onlineca.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

    from onlineca.store.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"

# Any constant shared by every onlineca process; "oCAm" in ASCII.
PG_LOCK_KEY = 0x6F43416D

_local_lock = threading.Lock()  # flock is per open file, so threads of one process queue here first


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


@contextmanager
def _sqlite_file_lock(db: Database) -> Iterator[None]:
    database = db.engine.url.database
    with _local_lock:
        if not database or database == ":memory:":
            yield
            return
        lock_path = Path(database).with_name(Path(database).name + ".migrate-lock")
        with open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


_REVISION = re.compile(r'^(down_revision|revision)\b[^=]*=\s*(?:"([^"]*)"|None)', re.MULTILINE)


def _head_from_files() -> str | None:
    """The one revision no other revision names as its parent, read from the revision files'
    ``revision``/``down_revision`` lines without importing Alembic; None when that is not one
    plain chain (then Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        found = dict(_REVISION.findall(path.read_text(encoding="utf-8")))
        if "revision" not in found or not found["revision"]:
            return None
        revisions.add(found["revision"])
        if found.get("down_revision"):
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _at_head(db: Database) -> bool:
    """Whether the database is already at the newest revision: one SELECT, no Alembic import
    (every CLI command migrates first; Alembic's import alone cost ~0.3 s of each one's start)."""
    head = _head_from_files()
    if head is None:
        return False
    try:
        with db.engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except Exception:  # no table yet, or unreachable: Alembic's path says which, properly
        return False
    return versions == [head]


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent, safe to run from several processes at once)."""
    if revision == "head" and _at_head(db):
        return
    from alembic import command

    cfg = alembic_config()
    try:
        if db.is_sqlite:
            with _sqlite_file_lock(db), db.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        else:
            with db.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot migrate the database {db.safe_url}: {exc}",
                         hint="Check that the database is reachable and that this user may create tables.") from exc


def current_revision(db: Database) -> str | None:
    """The revision the database is at (None when it was never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
