"""The service layer's shared values: the process's ``Services``, the ``Actor`` and the roles.

Roles, from least to most: ``viewer`` reads everything but secrets; ``operator`` also changes
devices, starts operations, approves or denies CA requests, runs diagnose and collects logs;
``admin`` also changes profiles, the configuration and the accounts.  Everyone may change their
own password and manage their own API tokens.  The command line acts as ``admin`` (whoever can
run it can read the data dir and the database anyway).
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy.orm import Session

from onlineca.config import Config
from onlineca.errors import PermissionDenied
from onlineca.store import Database

Role = Literal["viewer", "operator", "admin"]
Source = Literal["api", "page", "cli"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")

# permission -> the roles that have it
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "devices.write": frozenset({"operator", "admin"}),
    "ca.resolve": frozenset({"operator", "admin"}),
    "ca.revoke": frozenset({"admin"}),  # revocation cannot be undone
    "diagnose.run": frozenset({"operator", "admin"}),
    "logs.collect": frozenset({"operator", "admin"}),
    "profiles.write": frozenset({"admin"}),
    "config.write": frozenset({"admin"}),
    "accounts.manage": frozenset({"admin"}),
}


def role_rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1  # type: ignore[arg-type,unused-ignore]


def lesser_role(a: str, b: str) -> str:
    """The less powerful of two roles (a token never outranks its owner)."""
    return a if role_rank(a) <= role_rank(b) else b


@dataclass(frozen=True)
class Actor:
    """Who is acting: an account (or the command line's user), its role, through what, from where."""

    name: str
    role: str
    source: Source
    address: str = ""
    user_id: int | None = None

    @property
    def trail(self) -> str:
        """The name the device audit trail (``device_event.actor``) shows: ``cli`` for the command
        line, as it always did, ``<source>:<name>`` for the console."""
        return "cli" if self.source == "cli" else f"{self.source}:{self.name}"

    def can(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]

    def require(self, permission: str, what: str = "") -> None:
        if not self.can(permission):
            raise PermissionDenied(f"{self.name} ({self.role}) may not {what or permission}")


def cli_actor() -> Actor:
    """The command line's actor: the operating-system user, as an administrator."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "administrator"
    return Actor(name=user, role="admin", source="cli")


@dataclass
class Services:
    """One process's configuration and databases, shared by every call of the service layer.

    ``ca_db`` holds the CA's requests: ``[admin] ca_database_url`` when set (the lab keeps the CA
    in its own file), else the main database.  ``config_path`` is the file ``settings`` changes.
    """

    config: Config
    config_path: Path | None = None
    db: Database = field(init=False)
    ca_db: Database = field(init=False)
    _migrated: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.db = Database(self.config.database_url)
        ca_url = self.config.ca_database_url
        self.ca_db = Database(ca_url) if ca_url != self.config.database_url else self.db

    def migrate(self) -> Services:
        """Bring both databases to the newest schema (idempotent); returns self."""
        if not self._migrated:
            self.db.migrate()
            if self.ca_db is not self.db:
                self.ca_db.migrate()
            self._migrated = True
        return self

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.db.session() as s:
            yield s

    @property
    def data_dir(self) -> Path:
        return self.config.data_path

    @property
    def log_dir(self) -> Path:
        return self.config.log_path

    def close(self) -> None:
        self.db.dispose()
        if self.ca_db is not self.db:
            self.ca_db.dispose()


__all__ = ["PERMISSIONS", "ROLES", "Actor", "Role", "Services", "Source", "cli_actor", "lesser_role", "role_rank"]
