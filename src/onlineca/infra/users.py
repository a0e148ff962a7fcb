"""Users files and HTTP Basic credentials, shared by the EST server and the CA.

A users file holds one ``user:scrypt$n$r$p$salt$hash`` line per user (``#`` comments).  Checks
are constant-time, and an unknown user costs the same scrypt as a known one (a dummy hash), so
timing tells nothing about which names exist.  A password is never stored, printed or logged in
clear: ``BasicCredentials`` (a value of ``proto.results``) hides it from ``repr`` and ``str``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from onlineca.errors import ConfigError, ParseError
from onlineca.proto.results import BasicCredentials


def hash_password(password: str, *, n: int = 2 ** 14, r: int = 8, p: int = 1) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64 fields) for a users file line ``user:<this>``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(hashed: str, password: str) -> bool:
    """Whether ``password`` matches a ``scrypt$n$r$p$salt$hash`` value (constant-time compare;
    a malformed value matches nothing)."""
    try:
        _, n, r, p, salt, want = hashed.split("$")
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(base64.b64decode(want)), maxmem=256 * 1024 * 1024)
        return hmac.compare_digest(got, base64.b64decode(want))
    except (ValueError, binascii.Error):
        return False


def read_users(path: str | os.PathLike[str], *, what: str, hint: str, missing_ok: bool = False) -> dict[str, str]:
    """``{user: "scrypt$..."}`` from a users file (``user:scrypt$n$r$p$salt$hash`` lines, ``#``
    comments), the format the EST server and the CA share.  An unreadable file or a bad line is a
    ``ConfigError`` naming the ``what`` users file (and ``path:line``, with ``hint``); a missing
    file is an empty one only with ``missing_ok``."""
    p = Path(path)
    if missing_ok and not p.exists():
        return {}
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} users file {p}: {getattr(exc, 'strerror', None) or exc}") from None
    entries: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not hashed.startswith("scrypt$") or hashed.count("$") != 5:
            raise ConfigError(f"{p}:{lineno}: expected 'user:scrypt$...'", hint=hint)
        entries[user] = hashed
    return entries


class UsersFile:
    """HTTP Basic users: ``user:scrypt$...`` lines (``#`` comments).  Checks are constant-time;
    a verified (user, password) pair is remembered as a keyed digest so that scrypt runs once
    per client, not once per request."""

    def __init__(self, entries: dict[str, str]) -> None:
        self._entries = entries
        self._verified: dict[str, bytes] = {}
        self._cache_key = secrets.token_bytes(32)
        # A hash no password matches, with the parameters of the file's own hashes (the most
        # common): an unknown user costs the same scrypt as a known one.  Random bytes, not a
        # hash computed here, so making it costs nothing.
        params = [h.split("$")[1:4] for h in entries.values() if h.count("$") == 5]
        n, r, p = max(params, key=params.count) if params else ("16384", "8", "1")
        self._dummy = (f"scrypt${n}${r}${p}${base64.b64encode(secrets.token_bytes(16)).decode()}$"
                       f"{base64.b64encode(secrets.token_bytes(32)).decode()}")

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> UsersFile:
        return cls(read_users(path, what="EST", hint="Make lines with 'onlineca est hash-password'."))

    @classmethod
    def from_plain(cls, users: dict[str, str], n: int = 2 ** 12) -> UsersFile:
        return cls({u: hash_password(pw, n=n) for u, pw in users.items()})

    def _digest(self, user: str, password: str) -> bytes:
        return hmac.new(self._cache_key, f"{user}\x00{password}".encode(), hashlib.sha256).digest()

    def _verify(self, hashed: str, password: str) -> bool:
        return verify_password(hashed, password)

    async def __call__(self, user: str, password: str) -> bool:
        digest = self._digest(user, password)
        cached = self._verified.get(user)
        if cached is not None and hmac.compare_digest(cached, digest):
            return True
        hashed = self._entries.get(user)
        ok = await asyncio.to_thread(self._verify, hashed or self._dummy, password)
        if ok and hashed is not None:
            self._verified[user] = digest
            return True
        return False


def basic_credentials(header: str) -> BasicCredentials | None:
    """The user and password of an ``Authorization: Basic`` header value (the EST server and the
    CA read them alike); None when it is not Basic, ``ParseError`` when it is malformed."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ParseError("malformed Basic Authorization header", code="EST_ERR_AUTH_FAIL") from None
    if not sep:
        raise ParseError("malformed Basic Authorization header", code="EST_ERR_AUTH_FAIL")
    return BasicCredentials(user, password)


__all__ = ["BasicCredentials", "UsersFile", "basic_credentials", "hash_password", "read_users", "verify_password"]
