"""The database layer: SQLAlchemy 2 models and repositories; SQLite embedded, PostgreSQL in production."""

from onlineca.store.admin_models import AdminSession, AdminToken, AdminUser, AuditEntry, LoginAttempt
from onlineca.store.capf_models import LSC, Device, DeviceEvent, Profile
from onlineca.store.db import Database
from onlineca.store.models import Base, CARequest

__all__ = ["LSC", "AdminSession", "AdminToken", "AdminUser", "AuditEntry", "Base", "CARequest", "Database", "Device",
           "DeviceEvent", "LoginAttempt", "Profile"]
