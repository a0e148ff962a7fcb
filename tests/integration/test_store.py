"""The database layer on SQLite and PostgreSQL: migrations match the models, ReqIDs, transactions."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from onlineca.errors import StoreError
from onlineca.store import Base, CARequest, Database
from onlineca.store.migrate import current_revision, head_revision


def _request(requester: str = "ciscora") -> CARequest:
    return CARequest(requester=requester, template="CiscoRA", csr_der=b"\x30\x00", disposition="pending")


@pytest.fixture
def db(db_url: str):
    database = Database(db_url)
    database.migrate()
    yield database
    database.dispose()


def _add(db: Database, requester: str = "ciscora") -> int:
    with db.session() as s:
        row = _request(requester)
        s.add(row)
        s.flush()
        return row.req_id


def test_migrations_create_exactly_the_models(db: Database) -> None:
    assert current_revision(db) == head_revision()
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"models and migrations differ; add a revision: {diff}"
    assert set(inspect(db.engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}


def test_migrate_is_idempotent_and_keeps_data(db: Database) -> None:
    req_id = _add(db)
    db.migrate()
    db.migrate()
    assert current_revision(db) == head_revision()
    with db.session() as s:
        assert s.get(CARequest, req_id).requester == "ciscora"


def test_concurrent_migrations_do_not_fail(db_url: str) -> None:
    """Servers started together all migrate at start-up, each with its own connections."""
    n = 4
    barrier = threading.Barrier(n)
    databases = [Database(db_url) for _ in range(n)]

    def run(database: Database) -> str | None:
        barrier.wait(timeout=30)
        database.migrate()
        return current_revision(database)

    try:
        with ThreadPoolExecutor(n) as pool:
            revisions = list(pool.map(run, databases))
    finally:
        for database in databases:
            database.dispose()
    assert revisions == [head_revision()] * n


def test_reqid_sequence_increases_and_is_never_reused(db: Database) -> None:
    ids = [_add(db) for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    with db.session() as s:
        s.delete(s.get(CARequest, ids[-1]))
    assert _add(db) > ids[-1]


def test_concurrent_inserts_get_distinct_reqids(db: Database) -> None:
    threads, per_thread = 6, 10
    with ThreadPoolExecutor(threads) as pool:
        ids = list(pool.map(lambda i: [_add(db, f"user{i}") for _ in range(per_thread)], range(threads)))
    flat = [i for chunk in ids for i in chunk]
    assert len(set(flat)) == threads * per_thread
    for chunk in ids:  # each writer sees its own ReqIDs increase
        assert chunk == sorted(chunk)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(CARequest)) == threads * per_thread


def test_a_session_that_raises_rolls_back(db: Database) -> None:
    kept = _add(db, "kept")
    with pytest.raises(RuntimeError), db.session() as s:
        s.add(_request("lost"))
        s.flush()  # the row reached the database inside the transaction
        row = s.get(CARequest, kept)
        row.disposition = "issued"
        raise RuntimeError("boom")
    with db.session() as s:
        assert s.scalars(select(CARequest.requester)).all() == ["kept"]
        assert s.get(CARequest, kept).disposition == "pending"


def test_unreachable_database_is_a_store_error() -> None:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = Database(f"postgresql+psycopg://nobody@127.0.0.1:{port}/none?connect_timeout=5")
    with pytest.raises(StoreError) as info:
        db.migrate()
    assert "cannot migrate" in info.value.message and "nobody@" in info.value.message
    db.dispose()


def test_sqlite_url_with_query_and_missing_folders(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'a' / 'b' / 'ca.db'}?timeout=5")
    db.migrate()
    assert (tmp_path / "a" / "b" / "ca.db").is_file()
    assert _add(db) == 1
    db.dispose()


def test_developer_alembic_commands(tmp_path: Path) -> None:
    """`alembic upgrade head` then `alembic check` from the repository root, as alembic.ini describes."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "ONLINECA_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}"}
    for args in (["upgrade", "head"], ["check"]):
        proc = subprocess.run([sys.executable, "-m", "alembic", "-c", str(root / "alembic.ini"), *args],
                              cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    assert "No new upgrade operations detected" in proc.stdout + proc.stderr
