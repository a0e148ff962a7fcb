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

from onlineca.ca.users import load_users
from onlineca.errors import ConfigError, ParseError
from onlineca.infra.users import BasicCredentials, UsersFile, basic_credentials
from onlineca.logs.iis import WIN32_CONTINUE_NEEDED, WIN32_LOGON_FAILURE, WIN32_NO_CREDENTIALS
from onlineca.proto import ntlm
from onlineca.proto.certsrv import server as pages

log = logging.getLogger("onlineca.ca")

CA_USER = web.RequestKey("ca_user", str)
# (substatus, win32 status) for the IIS log line of this request.
IIS_STATUS = web.RequestKey("iis_status", tuple)
# The Negotiate token a completed Kerberos login sends back (mutual authentication).
NEGOTIATE_REPLY = web.RequestKey("negotiate_reply", str)


def _basic_credentials(request: web.Request) -> BasicCredentials | None:
    try:
        return basic_credentials(request.headers.get("Authorization", ""))
    except ParseError:  # IIS answers a malformed header as a failed logon, not a 400
        return None


# SEC_E_BAD_BINDINGS (0x80090342): the Win32 status IIS logs when Extended Protection refuses a
# login whose channel binding is missing or wrong.
WIN32_BAD_BINDINGS = 2148074306
class CALogin:
    """The CA's logins: Basic (``basic``) against ``users_path``, NTLM (``ntlm``) through pyspnego,
    Negotiate with Kerberos (``kerberos``, the keytab of HTTP/<host>).

    Only the CA's own domain (``domain``, for ``DOMAIN\\user``) and Kerberos realm (``realm``,
    for ``user@REALM``) log in, as AD accepts only its own: every spelling of a user maps to one
    account name or is refused.  With ``require_epa`` an NTLM login must carry the channel
    binding of ``server_cert_der`` (Extended Protection), else 401 as IIS logs it."""

    def __init__(self, users_path: Path, *, ntlm: bool = False, basic: bool = True, kerberos: bool = False,
                 domain: str = "", realm: str = "", require_epa: bool = False,
                 server_cert_der: bytes | None = None) -> None:
        self.users_path = users_path
        self.ntlm = ntlm
        self.basic = basic
        self.kerberos = kerberos
        self.domain = domain
        self.realm = realm
        self.require_epa = require_epa
        self.server_cert_der = server_cert_der
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

    def account(self, name: str) -> str | None:
        """The account a login name means: ``user``, ``DOMAIN\\user`` of our domain, or
        ``user@REALM`` of our realm (case-insensitive); None for another domain or realm."""
        if "\\" in name:
            domain, _, user = name.rpartition("\\")
            if self.domain and domain.lower() != self.domain.lower():
                return None
            return user or None
        if "@" in name:
            user, _, realm = name.rpartition("@")
            wanted = {d.lower() for d in (self.realm, self.domain) if d}
            if wanted and realm.lower() not in wanted:
                return None
            return user or None
        return name or None

    def bindings(self) -> Any:
        if self.server_cert_der is None:
            return None
        from spnego.channel_bindings import GssChannelBindings

        from onlineca.proto.certsrv.client import tls_server_end_point
        return GssChannelBindings(application_data=tls_server_end_point(self.server_cert_der))

    def challenge(self, request: web.Request, win32: int) -> web.Response:
        request[IIS_STATUS] = (1, win32)
        headers: CIMultiDict[str] = CIMultiDict()
        realm = request.host.rsplit(":", 1)[0] if request.host else "certsrv"
        if self.ntlm or self.kerberos:  # IIS's order: Negotiate, NTLM, then Basic
            headers.add("WWW-Authenticate", "Negotiate")
        if self.ntlm:
            headers.add("WWW-Authenticate", "NTLM")
        if self.basic:
            headers.add("WWW-Authenticate", f'Basic realm="{realm}"')
        return web.Response(status=401, text=pages.unauthorized(), content_type="text/html", headers=headers)

    def _epa_refusal(self, raw: bytes) -> str | None:
        """Why an NTLM AUTHENTICATE message (bare, or inside SPNEGO) fails Extended Protection."""
        token: bytes | None = raw
        if not raw.startswith(ntlm.NTLM_SIGNATURE):
            try:
                token = ntlm.spnego_inner_token(raw)
            except ParseError:
                return None  # not SPNEGO: Kerberos, checked by the acceptor with the bindings
        if token is None or not ntlm.is_authenticate(token):
            return None  # not an AUTHENTICATE message
        try:
            sent = ntlm.av_pairs(token).get(ntlm.AV_CHANNEL_BINDINGS)
        except ParseError:
            return "an NTLM response without channel binding (NTLMv1, or a malformed one)"
        if not sent or sent == b"\x00" * 16:
            return "the NTLM login carries no channel binding"
        if sent != ntlm.channel_binding_hash(self.bindings().pack()):
            return "the NTLM login's channel binding is for another TLS certificate (a relay, or a TLS-intercepting proxy)"
        return None

    def _ntlm_step(self, request: web.Request, scheme: str, token: str) -> str | web.Response:
        """One leg of NTLM, or of Negotiate (Kerberos, or NTLM inside SPNEGO), on this connection."""
        import spnego
        import spnego.exceptions

        transport = request.transport
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return self.challenge(request, WIN32_LOGON_FAILURE)
        if self.require_epa and self.server_cert_der is not None:
            why = self._epa_refusal(raw)
            if why is not None:
                self.ntlm_contexts.pop(transport, None)
                log.warning("Extended Protection refused a login from %s: %s", request.remote or "-", why)
                return self.challenge(request, WIN32_BAD_BINDINGS)
        ctx = self.ntlm_contexts.pop(transport, None)
        if ctx is None or raw[8:12] == b"\x01\x00\x00\x00":  # a NEGOTIATE message starts over
            ctx = spnego.server(hostname=request.host.rsplit(":", 1)[0] if request.host else "unspecified",
                                service="HTTP", protocol="ntlm" if scheme == "ntlm" else "negotiate",
                                # With EPA off the binding is not checked at all (IIS's "Off").
                                channel_bindings=self.bindings() if self.require_epa else None)
        try:
            out = ctx.step(raw)
        except Exception as exc:  # hostile bytes in a third-party parser: any failure is a failed logon
            log.debug("NTLM/Negotiate leg refused: %s", type(exc).__name__)
            bad = isinstance(exc, spnego.exceptions.BadBindingsError)
            return self.challenge(request, WIN32_BAD_BINDINGS if bad else WIN32_LOGON_FAILURE)
        if ctx.complete:
            protocol = getattr(ctx, "negotiated_protocol", "") or scheme
            if (protocol == "ntlm" and not self.ntlm) or (protocol == "kerberos" and not self.kerberos):
                return self.challenge(request, WIN32_LOGON_FAILURE)
            user = self.account(ctx.client_principal or "")
            if not user:
                log.warning("login refused: %r is not of this CA's domain or realm",
                            (ctx.client_principal or "")[:100])
                return self.challenge(request, WIN32_LOGON_FAILURE)
            self.ntlm_users[transport] = user
            request[CA_USER] = user
            if out:  # Kerberos mutual authentication: the server's token goes back with the answer
                request[NEGOTIATE_REPLY] = f"Negotiate {base64.b64encode(out).decode()}"
            return user
        self.ntlm_contexts[transport] = ctx
        request[IIS_STATUS] = (1, WIN32_CONTINUE_NEEDED)
        name = "NTLM" if scheme == "ntlm" else "Negotiate"
        return web.Response(status=401, text=pages.unauthorized(), content_type="text/html",
                            headers={"WWW-Authenticate": f"{name} {base64.b64encode(out or b'').decode()}"})

    async def authenticate(self, request: web.Request) -> str | web.Response:
        """The user this request is from, or the 401 to answer with."""
        if (self.ntlm or self.kerberos) and request.transport is not None:
            known: str | None = self.ntlm_users.get(request.transport)
            if known:
                request[CA_USER] = known
                return known
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            allowed = ({"ntlm"} if self.ntlm else set()) | {"negotiate"}
            if scheme.lower() in allowed and token.strip():
                return self._ntlm_step(request, scheme.lower(), token)
        creds = _basic_credentials(request) if self.basic else None
        if creds is None:
            win32 = WIN32_NO_CREDENTIALS if "Authorization" not in request.headers else WIN32_LOGON_FAILURE
            return self.challenge(request, win32)
        user = self.account(creds.user)
        # An unknown user costs the same scrypt as a known one (UsersFile checks a dummy hash).
        if not await self.current_users()(user or creds.user, creds.password) or not user:
            return self.challenge(request, WIN32_LOGON_FAILURE)
        request[CA_USER] = user
        return user


__all__ = ["CA_USER", "IIS_STATUS", "NEGOTIATE_REPLY", "WIN32_BAD_BINDINGS", "CALogin"]
