"""Alembic migrations, run programmatically (no alembic.ini needed at run time)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onlineca.store.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def upgrade(db: "Database", revision: str = "head") -> None:
    # Until the Alembic environment lands, create the tables directly.
    if not (MIGRATIONS / "env.py").exists():
        db.create_all()
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection_engine"] = db.engine
    command.upgrade(cfg, revision)
