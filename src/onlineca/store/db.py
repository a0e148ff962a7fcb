"""Engine and sessions.  ``Database(url)`` works for ``sqlite:///path`` and ``postgresql+psycopg://``.

SQLite runs in WAL mode with a busy timeout so that the CA's web workers and the CLI can share
one file; PostgreSQL gets a small pool with pre-ping.  ``migrate()`` brings the schema to the
newest Alembic revision (idempotent), which every server calls at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from onlineca.errors import StoreError


def _sqlite_pragmas(busy_ms: int):  # type: ignore[no-untyped-def]
    def apply(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={busy_ms:d}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
    return apply


def _private_file(path: Path) -> None:
    """The database file made 0600 (its folder 0700) before SQLite opens it: it holds
    auth-string hashes and the CA's requests, and SQLite gives its -wal and -shm files the
    database file's mode.  A file that exists already is left as it is."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the database {path}: {exc.strerror or exc}",
                         hint="Check that this user may write the data dir (onlineca --data-dir).") from None
    os.close(fd)


class Database:
    def __init__(self, url: str, echo: bool = False, busy_timeout: float | None = None) -> None:
        """``busy_timeout``: seconds a statement waits for another transaction's lock before it
        fails (SQLite: 10 s unless given; PostgreSQL: no bound unless given), which a server
        answers as "busy, come back later"."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            try:
                path = make_url(url).database
            except Exception:  # reported below by create_engine, with the hint
                path = None
            if path and path != ":memory:" and not path.startswith("file:"):
                _private_file(Path(path))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": busy_timeout or 10.0}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
            if busy_timeout is not None and url.startswith("postgresql+psycopg"):
                # The same bound on lock waits as SQLite's busy timeout (a row or table lock held
                # by another transaction): the statement fails instead of waiting without end.
                kwargs["connect_args"] = {"options": f"-c lock_timeout={int(busy_timeout * 1000)}"}
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except Exception as exc:  # bad URL, missing driver
            raise StoreError(f"cannot open database {self.safe_url}: {exc}",
                             hint="Check [database] url and that its driver is installed.") from None
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas(int((busy_timeout or 10.0) * 1000)))
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for logs and messages."""
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return "<database url>"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on any exception."""
        s = self._sessions()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def create_all(self) -> None:
        """Create the tables directly (tests); servers use ``migrate()``."""
        from onlineca.store.models import Base
        Base.metadata.create_all(self.engine)

    def migrate(self) -> None:
        from onlineca.store.migrate import upgrade
        upgrade(self)

    def dispose(self) -> None:
        self.engine.dispose()
