"""Who is asking the CA: HTTP Basic against the CA's users file, and NTLM per connection, as IIS
answers both (401 with ``Negotiate``, ``NTLM`` and ``Basic`` offered in IIS's order, NTLM in
three legs on one kept-alive connection).

``CALogin.authenticate`` returns the user name (and sets ``CA_USER`` on the request) or the 401
to send, with the IIS sub-status and Win32 status the access log shows (``IIS_STATUS``).  The
users file is re-read when it changes on disk, so ``ca users add`` works while serving.  Checks
are constant-time; a password, an Authorization header or an NTLM token is never logged.
"""

from __future__ import annotations

import base64
import binascii
import logging
import weakref
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from onlineca.ca.users import bare_user, load_users
from onlineca.errors import ConfigError, ParseError
from onlineca.infra.users import BasicCredentials, UsersFile, basic_credentials
from onlineca.logs.iis import WIN32_CONTINUE_NEEDED, WIN32_LOGON_FAILURE, WIN32_NO_CREDENTIALS
from onlineca.proto.certsrv import server as pages

log = logging.getLogger("onlineca.ca")

CA_USER = web.RequestKey("ca_user", str)
# (substatus, win32 status) for the IIS log line of this request.
IIS_STATUS = web.RequestKey("iis_status", tuple)


def _basic_credentials(request: web.Request) -> BasicCredentials | None:
    try:
        return basic_credentials(request.headers.get("Authorization", ""))
    except ParseError:  # IIS answers a malformed header as a failed logon, not a 400
        return None


class CALogin:
    """The CA's logins: Basic (``basic``) against ``users_path``, NTLM (``ntlm``) through pyspnego."""

    def __init__(self, users_path: Path, *, ntlm: bool = False, basic: bool = True) -> None:
        self.users_path = users_path
        self.ntlm = ntlm
        self.basic = basic
        self.users_mtime = self._mtime()
        self.users: UsersFile = load_users(users_path)
        # NTLM state per TLS connection: a context mid-handshake, then the user it authenticated.
        # Weak keys: a closed connection takes its state with it (ids would be reused).
        self.ntlm_contexts: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self.ntlm_users: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    def _mtime(self) -> float:
        try:
            return self.users_path.stat().st_mtime
        except OSError:
            return 0.0

    def current_users(self) -> UsersFile:
        """The users file, re-read when it changed on disk (``ca users add`` while serving)."""
        mtime = self._mtime()
        if mtime != self.users_mtime:
            try:
                self.users, self.users_mtime = load_users(self.users_path), mtime
            except ConfigError as exc:
                log.error("users file not reloaded: %s", exc.message)
        return self.users

    def challenge(self, request: web.Request, win32: int) -> web.Response:
        request[IIS_STATUS] = (1, win32)
        headers: CIMultiDict[str] = CIMultiDict()
        realm = request.host.rsplit(":", 1)[0] if request.host else "certsrv"
        if self.ntlm:  # IIS's order: Negotiate, NTLM, then Basic
            headers.add("WWW-Authenticate", "Negotiate")
            headers.add("WWW-Authenticate", "NTLM")
        if self.basic:
            headers.add("WWW-Authenticate", f'Basic realm="{realm}"')
        return web.Response(status=401, text=pages.unauthorized(), content_type="text/html", headers=headers)

    def _ntlm_step(self, request: web.Request, scheme: str, token: str) -> str | web.Response:
        """One leg of NTLM (or Negotiate carrying NTLM) on this connection."""
        import spnego

        transport = request.transport
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return self.challenge(request, WIN32_LOGON_FAILURE)
        ctx = self.ntlm_contexts.pop(transport, None)
        if ctx is None or raw[8:12] == b"\x01\x00\x00\x00":  # a NEGOTIATE message starts over
            ctx = spnego.server(protocol="ntlm" if scheme == "ntlm" else "negotiate")
        try:
            out = ctx.step(raw)
        except Exception as exc:  # hostile bytes in a third-party parser: any failure is a failed logon
            log.debug("NTLM leg refused: %s", type(exc).__name__)
            return self.challenge(request, WIN32_LOGON_FAILURE)
        if ctx.complete:
            user = bare_user(ctx.client_principal or "")
            if not user:
                return self.challenge(request, WIN32_LOGON_FAILURE)
            self.ntlm_users[transport] = user
            request[CA_USER] = user
            return user
        self.ntlm_contexts[transport] = ctx
        request[IIS_STATUS] = (1, WIN32_CONTINUE_NEEDED)
        name = "NTLM" if scheme == "ntlm" else "Negotiate"
        return web.Response(status=401, text=pages.unauthorized(), content_type="text/html",
                            headers={"WWW-Authenticate": f"{name} {base64.b64encode(out or b'').decode()}"})

    async def authenticate(self, request: web.Request) -> str | web.Response:
        """The user this request is from, or the 401 to answer with."""
        if self.ntlm and request.transport is not None:
            known: str | None = self.ntlm_users.get(request.transport)
            if known:
                request[CA_USER] = known
                return known
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() in ("ntlm", "negotiate") and token.strip():
                return self._ntlm_step(request, scheme.lower(), token)
        creds = _basic_credentials(request) if self.basic else None
        if creds is None:
            win32 = WIN32_NO_CREDENTIALS if "Authorization" not in request.headers else WIN32_LOGON_FAILURE
            return self.challenge(request, win32)
        user = bare_user(creds.user)
        if not user or not await self.current_users()(user, creds.password):
            return self.challenge(request, WIN32_LOGON_FAILURE)
        request[CA_USER] = user
        return user


__all__ = ["CA_USER", "IIS_STATUS", "CALogin"]
