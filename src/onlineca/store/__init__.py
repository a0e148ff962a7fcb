"""The database layer: SQLAlchemy 2 models and repositories; SQLite embedded, PostgreSQL in production."""

from onlineca.store.db import Database
from onlineca.store.models import Base, CARequest

__all__ = ["Base", "CARequest", "Database"]
