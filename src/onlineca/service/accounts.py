"""Console accounts: users and roles, passwords, browser sessions, API tokens, login throttling.

Passwords are scrypt hashes (``infra.users``), checked in constant time, and an unknown account
costs the same scrypt as a known one, so timing tells nothing about which names exist.  Session
cookies and API tokens are 256-bit random secrets of which only the SHA-256 is stored; a token
is shown once, when it is made (``oca_<prefix>_<secret>``: the prefix finds the row, the digest
proves the secret).  A token acts with the lesser of its own role and its owner's current role,
and not at all once expired, revoked, or its owner disabled.  Throttling counts failed logins in
the last ``[admin] login_window_minutes``, per account and per source address.

A user may act only for itself (its password, its tokens) unless it is an ``admin``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from onlineca.errors import (
    AccountConflict,
    AuthenticationRequired,
    LoginThrottled,
    NotFound,
    PermissionDenied,
    PolicyError,
)
from onlineca.infra.users import hash_password, verify_password
from onlineca.policy.capf import as_utc
from onlineca.service import audit
from onlineca.service.core import ROLES, Actor, Services, lesser_role, role_rank
from onlineca.store import AdminSession, AdminToken, AdminUser, LoginAttempt

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}")
MIN_PASSWORD = 10
TOKEN_PREFIX = "oca_"
_DUMMY_HASH = hash_password(secrets.token_hex(16))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def validate_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME.fullmatch(name):
        raise PolicyError("name", f"{name!r} is not an account name (1-64 letters, digits, '.', '_', '-', '@')")
    return name


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise PolicyError("role", f"{role!r} is not one of {', '.join(ROLES)}")
    return role


def validate_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD or len(password) > 256:
        raise PolicyError("password", f"must be {MIN_PASSWORD} to 256 characters",
                          hint="Choose a longer pass phrase, or leave it empty to have one generated.")
    return password


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def user_dict(u: AdminUser) -> dict[str, Any]:
    return {"name": u.name, "role": u.role, "disabled": u.disabled, "created_at": as_utc(u.created_at).isoformat(),
            "last_login_at": as_utc(u.last_login_at).isoformat() if u.last_login_at else None}


def _user(s: Session, name: str) -> AdminUser:
    row = s.scalar(select(AdminUser).where(AdminUser.name == name))
    if row is None:
        raise NotFound(f"no account named {name!r}")
    return row


def _enabled_admins(s: Session) -> int:
    return s.scalar(select(func.count()).select_from(AdminUser)
                    .where(AdminUser.role == "admin", AdminUser.disabled.is_(False))) or 0


# ---- users ---------------------------------------------------------------------------------

def count_users(svc: Services) -> int:
    with svc.session() as s:
        return s.scalar(select(func.count()).select_from(AdminUser)) or 0


def create_user(svc: Services, actor: Actor, name: str, role: str, password: str | None = None
                ) -> tuple[dict[str, Any], str | None]:
    """Add an account; returns it and the generated password (shown once) when none was given."""
    actor.require("accounts.manage", "add accounts")
    name, role = validate_name(name), validate_role(role)
    generated = None
    if not password:
        password = generated = generate_password()
    validate_password(password)
    with svc.session() as s:
        if s.scalar(select(AdminUser.id).where(AdminUser.name == name)) is not None:
            raise AccountConflict(f"account {name!r} already exists")
        row = AdminUser(name=name, role=role, password_hash=hash_password(password), disabled=False,
                        created_at=_now(), password_changed_at=_now())
        s.add(row)
        s.flush()
        out = user_dict(row)
        audit.record(s, actor, "account.create", f"account:{name}", None, {"name": name, "role": role})
    return out, generated


def list_users(svc: Services, actor: Actor) -> list[dict[str, Any]]:
    actor.require("accounts.manage", "list accounts")
    with svc.session() as s:
        return [user_dict(u) for u in s.scalars(select(AdminUser).order_by(AdminUser.name))]


def get_user(svc: Services, actor: Actor, name: str) -> dict[str, Any]:
    if name != actor.name:
        actor.require("accounts.manage", "read other accounts")
    with svc.session() as s:
        return user_dict(_user(s, name))


def change_user(svc: Services, actor: Actor, name: str, *, role: str | None = None, disabled: bool | None = None,
                password: str | None = None, current_password: str | None = None) -> dict[str, Any]:
    """Change an account.  Anyone may change their own password (giving the current one); only an
    admin changes roles, disables accounts, or sets another's password."""
    own = name == actor.name and actor.source != "cli"
    if role is not None or disabled is not None or not own:
        actor.require("accounts.manage", "change accounts")
    with svc.session() as s:
        row = _user(s, name)
        before = user_dict(row)
        if role is not None:
            row.role = validate_role(role)
        if disabled is not None:
            row.disabled = bool(disabled)
        if (row.role != "admin" or row.disabled) and before["role"] == "admin" and not before["disabled"] \
                and _enabled_admins(s) <= 1:
            raise AccountConflict(f"{name} is the last enabled administrator")
        if password is not None:
            if own and not actor.can("accounts.manage") and not verify_password(row.password_hash,
                                                                                 current_password or ""):
                raise PermissionDenied("the current password is wrong")
            row.password_hash = hash_password(validate_password(password))
            row.password_changed_at = _now()
            s.execute(delete(AdminSession).where(AdminSession.user_id == row.id))  # log out everywhere
        s.flush()
        after = user_dict(row)
        if password is not None:
            before["password"], after["password"] = "old", "changed"
        audit.record(s, actor, "account.change", f"account:{name}", before, after)
        return {k: v for k, v in after.items() if k != "password"}


def delete_user(svc: Services, actor: Actor, name: str) -> None:
    actor.require("accounts.manage", "delete accounts")
    with svc.session() as s:
        row = _user(s, name)
        if row.role == "admin" and not row.disabled and _enabled_admins(s) <= 1:
            raise AccountConflict(f"{name} is the last enabled administrator")
        before = user_dict(row)
        s.delete(row)
        audit.record(s, actor, "account.delete", f"account:{name}", before, None)


def ensure_admin(svc: Services, actor: Actor, name: str = "admin") -> str | None:
    """When there is no account at all, make ``name`` an admin with a generated password and return
    the password (to be shown once); None when accounts exist already."""
    if count_users(svc):
        return None
    _, password = create_user(svc, actor, name, "admin")
    return password


def reset_password(svc: Services, actor: Actor, name: str) -> str:
    """A new generated password for ``name`` (shown once); its sessions end."""
    password = generate_password()
    change_user(svc, actor, name, password=password)
    return password


# ---- login and throttling --------------------------------------------------------------------

def _throttle(s: Session, svc: Services, name: str, address: str, now: dt.datetime) -> None:
    cfg = svc.config.admin
    since = now - dt.timedelta(minutes=cfg.login_window_minutes)
    by_user = s.scalar(select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.user_name == name, LoginAttempt.ok.is_(False), LoginAttempt.at >= since)) or 0
    by_address = s.scalar(select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.address == address, LoginAttempt.ok.is_(False), LoginAttempt.at >= since)) or 0
    if by_user >= cfg.max_login_failures or by_address >= cfg.max_address_failures:
        oldest = s.scalar(select(func.min(LoginAttempt.at)).where(
            LoginAttempt.ok.is_(False), LoginAttempt.at >= since,
            (LoginAttempt.user_name == name) if by_user >= cfg.max_login_failures else (LoginAttempt.address == address)))
        wait = int(((as_utc(oldest) if oldest else now) - since).total_seconds()) + 1
        raise LoginThrottled(f"too many failed logins for {name!r} or from {address or 'this address'}",
                             retry_after=max(1, wait))


def authenticate(svc: Services, name: str, password: str, address: str = "") -> AdminUser:
    """The account for ``name`` and ``password``; ``AuthenticationRequired`` (the same for an unknown
    name, a wrong password and a disabled account) or ``LoginThrottled``."""
    name = (name or "")[:64]
    now = _now()
    with svc.session() as s:
        _throttle(s, svc, name, address[:64], now)
        row = s.scalar(select(AdminUser).where(AdminUser.name == name))
        ok = verify_password(row.password_hash if row is not None else _DUMMY_HASH, password or "")
        ok = ok and row is not None and not row.disabled
        s.add(LoginAttempt(at=now, user_name=name, address=address[:64], ok=ok))
        if ok and row is not None:
            row.last_login_at = now
            s.flush()
            return row
    raise AuthenticationRequired("wrong account name or password")


def user_for_certificate(svc: Services, name: str) -> AdminUser:
    """The enabled account a verified client certificate names (its CN)."""
    with svc.session() as s:
        row = s.scalar(select(AdminUser).where(AdminUser.name == name))
        if row is None or row.disabled:
            raise AuthenticationRequired(f"the client certificate names no enabled account ({name!r})")
        return row


# ---- sessions --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SessionInfo:
    user: str
    role: str
    user_id: int
    csrf: str
    method: str


def start_session(svc: Services, user: AdminUser, *, method: str = "password", address: str = "") -> tuple[str, str]:
    """A new browser session for ``user``: (the cookie value, its CSRF token)."""
    secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = _now()
    with svc.session() as s:
        s.execute(delete(AdminSession).where(AdminSession.expires_at < now))
        s.add(AdminSession(digest=_digest(secret), user_id=user.id, csrf=csrf, method=method, address=address[:64],
                           created_at=now, last_seen_at=now,
                           expires_at=now + dt.timedelta(hours=svc.config.admin.session_max_hours)))
    return secret, csrf


def resolve_session(svc: Services, secret: str) -> SessionInfo | None:
    """The live session of a cookie (its idle time refreshed), or None."""
    if not secret or len(secret) > 128:
        return None
    now = _now()
    idle = dt.timedelta(minutes=svc.config.admin.session_idle_minutes)
    with svc.session() as s:
        row = s.scalar(select(AdminSession).where(AdminSession.digest == _digest(secret)))
        if row is None:
            return None
        if as_utc(row.expires_at) <= now or as_utc(row.last_seen_at) + idle <= now or row.user.disabled:
            s.delete(row)
            return None
        if now - as_utc(row.last_seen_at) > dt.timedelta(seconds=30):  # not a write per request
            row.last_seen_at = now
        return SessionInfo(row.user.name, row.user.role, row.user.id, row.csrf, row.method)


def end_session(svc: Services, secret: str) -> None:
    with svc.session() as s:
        s.execute(delete(AdminSession).where(AdminSession.digest == _digest(secret or "")))


# ---- API tokens ------------------------------------------------------------------------------

def token_dict(t: AdminToken) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "user": t.user.name, "prefix": t.prefix, "role": t.role,
            "created_at": as_utc(t.created_at).isoformat(), "expires_at": as_utc(t.expires_at).isoformat(),
            "last_used_at": as_utc(t.last_used_at).isoformat() if t.last_used_at else None,
            "revoked": t.revoked_at is not None}


def create_token(svc: Services, actor: Actor, name: str, *, role: str | None = None, days: int = 90,
                 user: str | None = None) -> tuple[dict[str, Any], str]:
    """A new API token (returned once, with its description); for another user only as an admin.
    Its role may not exceed its owner's."""
    owner = user or actor.name
    if owner != actor.name:
        actor.require("accounts.manage", "make tokens for other accounts")
    name = (name or "").strip()
    if not 1 <= len(name) <= 64:
        raise PolicyError("name", "a token needs a name of 1 to 64 characters")
    if not 1 <= days <= svc.config.admin.token_max_days:
        raise PolicyError("days", f"must be 1 to {svc.config.admin.token_max_days}")
    with svc.session() as s:
        row_user = _user(s, owner)
        token_role = validate_role(role or row_user.role)
        if role_rank(token_role) > role_rank(row_user.role) or role_rank(token_role) > role_rank(actor.role):
            raise PermissionDenied(f"a token's role ({token_role}) may not exceed its owner's ({row_user.role})")
        prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        token = f"{TOKEN_PREFIX}{prefix}_{secret}"
        now = _now()
        row = AdminToken(user_id=row_user.id, name=name, prefix=prefix, digest=_digest(token), role=token_role,
                         created_at=now, expires_at=now + dt.timedelta(days=days))
        s.add(row)
        s.flush()
        row.user = row_user
        out = token_dict(row)
        audit.record(s, actor, "token.create", f"token:{prefix}", None,
                     {k: out[k] for k in ("name", "user", "role", "expires_at")})
    return out, token


def list_tokens(svc: Services, actor: Actor, user: str | None = None) -> list[dict[str, Any]]:
    """Tokens of ``user`` (default: the actor's own; every account's for an admin asking for None
    with ``user="*"``)."""
    owner = user or actor.name
    if owner != actor.name:
        actor.require("accounts.manage", "list other accounts' tokens")
    with svc.session() as s:
        stmt = select(AdminToken).join(AdminUser, AdminUser.id == AdminToken.user_id).order_by(AdminToken.id)
        if owner != "*":
            stmt = stmt.where(AdminUser.name == owner)
        return [token_dict(t) for t in s.scalars(stmt)]


def revoke_token(svc: Services, actor: Actor, token_id: int) -> dict[str, Any]:
    with svc.session() as s:
        row = s.get(AdminToken, token_id)
        if row is None or (row.user.name != actor.name and not actor.can("accounts.manage")):
            raise NotFound(f"no token {token_id}")
        before = token_dict(row)
        if row.revoked_at is None:
            row.revoked_at = _now()
        s.flush()
        after = token_dict(row)
        audit.record(s, actor, "token.revoke", f"token:{row.prefix}", before, after)
        return after


def resolve_token(svc: Services, token: str) -> tuple[AdminUser, str] | None:
    """The owner of a valid API token and the role it acts with, or None."""
    m = re.fullmatch(rf"{TOKEN_PREFIX}([0-9a-f]{{12}})_[A-Za-z0-9_\-]{{20,64}}", token or "")
    if m is None:
        return None
    now = _now()
    with svc.session() as s:
        row = s.scalar(select(AdminToken).where(AdminToken.prefix == m.group(1)))
        if row is None or not hmac.compare_digest(row.digest, _digest(token)):
            return None
        if row.revoked_at is not None or as_utc(row.expires_at) <= now or row.user.disabled:
            return None
        if row.last_used_at is None or now - as_utc(row.last_used_at) > dt.timedelta(minutes=1):
            row.last_used_at = now
        return row.user, lesser_role(row.role, row.user.role)


__all__ = ["MIN_PASSWORD", "SessionInfo", "authenticate", "change_user", "count_users", "create_token",
           "create_user", "delete_user", "end_session", "ensure_admin", "generate_password", "get_user",
           "list_tokens", "list_users", "reset_password", "resolve_session", "resolve_token", "revoke_token",
           "start_session", "token_dict", "user_dict", "user_for_certificate", "validate_name", "validate_role"]
