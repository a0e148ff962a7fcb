"""Alembic environment for onlineca's schema: runs migrations on the engine or connection it is given.

``onlineca.store.migrate`` passes an open connection (inside its transaction and lock) through
``config.attributes["connection"]``; a developer's ``alembic`` command (``alembic.ini`` at the
repository root) gets its URL from ``sqlalchemy.url``, ``$ONLINECA_DATABASE_URL`` or the onlineca
configuration.  This file must never configure logging when onlineca runs it: the servers own
their log handlers.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from onlineca.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def _developer_url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("ONLINECA_DATABASE_URL", "")
    if url:
        return url
    from onlineca.config import load_config
    return load_config(os.environ.get("ONLINECA_CONFIG") or None).database_url


def run_migrations_offline() -> None:
    context.configure(url=_developer_url(), target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    given: Engine | None = config.attributes.get("connection_engine")
    owned = given is None
    if given is not None:
        engine = given
    else:
        if config.config_file_name:  # only the developer's alembic.ini asks for logging
            from logging.config import fileConfig
            fileConfig(config.config_file_name, disable_existing_loggers=False)
        engine = create_engine(_developer_url())
    try:
        with engine.begin() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
