"""The CA's users file: who may log in to /certsrv, with scrypt-hashed passwords.

One ``user:scrypt$n$r$p$salt$hash`` line per user (``#`` comments), the same format as the EST
users file, so the hashing and the constant-time check are the EST server's (``UsersFile``).
When NTLM is enabled, ``<users>.ntlm`` beside it holds ``DOMAIN\\user:0:LM:NT::`` lines (the NT
hash: NTLM needs it, and it is password-equivalent, so the file is 0600 like a key), the store
pyspnego's NTLM acceptor reads through ``NTLM_USER_FILE``.  This module adds, removes and lists
users and writes both files 0600; it never stores, prints or logs a password in clear.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from onlineca.config import Config, DataDir
from onlineca.errors import ConfigError
from onlineca.infra import files
from onlineca.infra.users import UsersFile, hash_password, read_users
from onlineca.proto.ntlm import nt_hash  # MD4 of our own: hashlib's needs OpenSSL's legacy provider

_USER_NAME = re.compile(r"^[A-Za-z0-9._@$-]{1,64}$")



def users_path(config: Config, data_dir: str | Path) -> Path:
    """The CA's users file: ``[ca] users_file``, else ``<data dir>/ca/users``."""
    return Path(config.ca.users_file) if config.ca.users_file else DataDir(Path(data_dir)).ca.users

def read_entries(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{user: hashed}`` from the file; a missing file is an empty one."""
    return read_users(path, what="CA", hint="Manage this file with 'onlineca ca users add|remove'.", missing_ok=True)


def write_entries(path: str | os.PathLike[str], entries: dict[str, str]) -> None:
    lines = ["# onlineca CA users (onlineca ca users add|remove|list); scrypt-hashed passwords"]
    lines += [f"{user}:{hashed}" for user, hashed in sorted(entries.items())]
    files.write_secret_file(path, ("\n".join(lines) + "\n").encode())


def check_user_name(user: str) -> str:
    if not _USER_NAME.match(user):
        raise ConfigError(f"bad user name {user!r}",
                          hint="Use 1-64 letters, digits and . _ @ $ - (no domain prefix, no colon).")
    return user


def ntlm_path(path: str | os.PathLike[str]) -> Path:
    return Path(f"{path}.ntlm")


def _ntlm_entries(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.split(":", 1)[0]
        if name and not line.startswith("#"):
            out[name.rsplit("\\", 1)[-1]] = line
    return out


def _write_ntlm(path: Path, entries: dict[str, str]) -> None:
    files.write_secret_file(path, "".join(f"{line}\n" for _, line in sorted(entries.items())).encode())


def add_user(path: str | os.PathLike[str], user: str, password: str | None = None,
             ntlm_domain: str | None = None) -> str:
    """Add or replace ``user``; returns the password (generated when none is given).

    With ``ntlm_domain`` the user is also written to the NTLM store as ``DOMAIN\\user``.
    """
    check_user_name(user)
    password = password or secrets.token_urlsafe(18)
    entries = read_entries(path)
    entries[user] = hash_password(password)
    write_entries(path, entries)
    store = ntlm_path(path)
    ntlm = _ntlm_entries(store)
    if ntlm_domain is not None:
        ntlm[user] = f"{ntlm_domain}\\{user}:0:{'0' * 32}:{nt_hash(password).hex().upper()}::"
        _write_ntlm(store, ntlm)
    elif ntlm.pop(user, None) is not None:  # a new password the NTLM store would not know
        _write_ntlm(store, ntlm)
    return password


def remove_user(path: str | os.PathLike[str], user: str) -> bool:
    entries = read_entries(path)
    store = ntlm_path(path)
    ntlm = _ntlm_entries(store)
    if ntlm.pop(user, None) is not None:
        _write_ntlm(store, ntlm)
    if entries.pop(user, None) is None:
        return False
    write_entries(path, entries)
    return True


def list_users(path: str | os.PathLike[str]) -> list[str]:
    return sorted(read_entries(path))


def load_users(path: str | os.PathLike[str]) -> UsersFile:
    """The constant-time checker the web app calls as ``await users(user, password)``."""
    return UsersFile(read_entries(path))


def bare_user(name: str) -> str:
    """``DOMAIN\\user`` or ``user@domain`` as sent in Basic credentials, to the users file's name."""
    if "\\" in name:
        return name.rsplit("\\", 1)[1]
    return name


__all__ = [
    "add_user",
    "bare_user",
    "check_user_name",
    "list_users",
    "load_users",
    "ntlm_path",
    "read_entries",
    "remove_user",
    "write_entries",
]
