"""The database layer: SQLAlchemy 2 models and repositories; SQLite embedded, PostgreSQL in production."""

from onlineca.store.capf_models import LSC, Device, DeviceEvent, Profile
from onlineca.store.db import Database
from onlineca.store.models import Base, CARequest

__all__ = ["LSC", "Base", "CARequest", "Database", "Device", "DeviceEvent", "Profile"]
