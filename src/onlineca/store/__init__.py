"""The database layer: SQLAlchemy 2 models and repositories; SQLite embedded, PostgreSQL in production."""

from onlineca.store.admin_models import AdminSession, AdminToken, AdminUser, AuditEntry, LoginAttempt
from onlineca.store.capf_models import LSC, Device, DeviceEvent, Profile
from onlineca.store.db import Database
from onlineca.store.models import Base, CARequest
from onlineca.store.revocation_models import CACRL, AlertState, CARevocation, LSCRevocation

__all__ = ["CACRL", "LSC", "AdminSession", "AdminToken", "AdminUser", "AlertState", "AuditEntry", "Base", "CARequest",
           "CARevocation", "Database", "Device", "DeviceEvent", "LSCRevocation", "LoginAttempt", "Profile"]
