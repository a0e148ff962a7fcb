"""The database layer: SQLAlchemy 2 models and repositories; SQLite embedded, PostgreSQL in production."""

from onlineca.store.db import Database
from onlineca.store.models import Base, CARequest
from onlineca.store.capf_models import LSC, Device, DeviceEvent, Profile  # noqa: E402  (registers the CAPF tables)

__all__ = ["Base", "CARequest", "Database", "Device", "DeviceEvent", "LSC", "Profile"]
