"""One phone's session with CAPF over TLS (port 3804), driven by the devproto phone-side state machine.

Two kinds of phone.  The ``public`` flow is a public client exactly, byte for byte as
docs/device-protocol.md shows it: it announces no extension, answers AUTH_REQUEST with VERSION 2,
its NUL-terminated name (and auth string, when it has one) and a status, sends
REQUEST_IN_PROGRESS once before its public key, expects the LSC as the very next frame, reads with
an 8-second socket timeout, and aborts on anything outside the public flow (as the strictest
public clients do).  The ``extended`` flow (the default) announces every onlineca extension: it
presents its LSC or MIC and signs CAPF's challenge, sends REQUEST_IN_PROGRESS every keepalive
interval while it makes a key, and signs the request info for its new key.  Either stores the
LSC, deletes it or shows its certificates when asked, and stops at END_SESSION (or RETRY_LATER).  ``check_in`` adds what a phone does between
sessions: it honours RETRY_LATER's delay and retries a failed connection a few times.  ``Faults``
makes a phone misbehave on purpose (tests, demos): no key or the wrong one, no signature, a
refused or dropped store, a certificate signature by the wrong key, an abort or a stall at a
chosen step; ``on_message`` lets a caller watch every message CAPF sends.  This module is the thin
I/O around ``devproto.PhoneSession`` and ``device.Phone``: it never decides policy, never logs a
secret, and every read, connect and close has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from onlineca import pki
from onlineca.errors import OnlineCAError, PhoneError, ProtocolError
from onlineca.infra import files, tls
from onlineca.phone.device import Phone
from onlineca.pki import tbs
from onlineca.proto.devproto import (
    ALL_CAPABILITIES,
    NO_CAPABILITIES,
    AuthRequest,
    AuthType,
    CertificateType,
    Command,
    DeleteCertRequest,
    EndSession,
    FetchCertRequest,
    KeyGenRequest,
    Message,
    Reason,
    RequestInProgress,
    RetryLater,
    SignCertRequest,
    StoreCertRequest,
)
from onlineca.proto.devproto.session import PhoneSession

log = logging.getLogger("onlineca.phone")

AuthModeName = Literal["auto", "string", "null", "lsc", "mic"]
Flow = Literal["extended", "public"]
FLOWS: tuple[Flow, ...] = ("extended", "public")
# A public client's socket timeout (8-10 s): CAPF must answer every step within it.
PUBLIC_READ_TIMEOUT = 8.0
# What the strictest public client accepts as its own name and auth string.
PUBLIC_NAME = re.compile(r"SEP[0-9A-F]{12}")
PUBLIC_AUTH_STRING = re.compile(r"[0-9]{4,16}")


@dataclass(frozen=True)
class Faults:
    """How a phone misbehaves on purpose; the default is a phone that does everything right.

    ``keygen``: ``fail`` (every key), ``fail_ec`` (a phone that cannot make EC keys), ``wrong_key``
    (another type or size than asked).  ``sign``: ``refuse`` the request info.  ``store``:
    ``refuse`` the LSC (flash full), or ``drop`` the connection instead of answering.
    ``auth_signature``: present the certificate ``missing`` its signature over the challenge, or
    signed by a ``wrong_key``.  ``abort_at``: answer this command from CAPF with ABORT_REQUEST;
    ``stall_at``: never answer it (the phone just waits)."""

    keygen: Literal["ok", "fail", "fail_ec", "wrong_key"] = "ok"
    sign: Literal["ok", "refuse"] = "ok"
    store: Literal["ok", "refuse", "drop"] = "ok"
    auth_signature: Literal["ok", "missing", "wrong_key"] = "ok"
    abort_at: Command | None = None
    stall_at: Command | None = None


NO_FAULTS = Faults()


@dataclass(frozen=True)
class PhoneAuth:
    """How the phone authenticates.  ``auto``: the auth string if one is set, else its LSC, else
    its MIC, else nothing (what a phone does with what it has).  The others force one credential;
    ``lsc`` and ``mic`` fall back to the other certificate when the phone lacks the first."""

    mode: AuthModeName = "auto"
    auth_string: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Target:
    """Where CAPF is and how to trust it."""

    host: str
    port: int
    ssl_context: ssl.SSLContext = field(repr=False)
    server_hostname: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 120.0   # CAPF keeps a slow enrollment alive with REQUEST_IN_PROGRESS
    keepalive: float = 15.0       # seconds between the phone's REQUEST_IN_PROGRESS while it works


def phone_ssl_context(cafile: str | os.PathLike[str]) -> ssl.SSLContext:
    """TLS 1.2+ context trusting exactly the anchors in ``cafile`` (the CA that issued CAPF's certificate)."""
    try:
        anchors = files.load_cert_file(cafile)
    except (OSError, OnlineCAError) as exc:
        raise PhoneError(f"cannot read CAPF's trust anchors {cafile}: {exc}",
                         hint="Give the CA certificate that issued CAPF's certificate with --cafile.") from None
    return tls.client_context(anchors)


@dataclass
class SessionResult:
    """How one session ended.  ``outcome``: installed, deleted, fetched, nothing_pending, ended
    (END_SESSION with nothing done on the phone: see ``reason``), retry_later, aborted,
    comm_failure, protocol_error."""

    device: str
    outcome: str
    reason: str | None = None
    reason_info: str | None = None
    retry_delay: int | None = None
    session_id: int | None = None
    seconds: float = 0.0
    attempts: int = 1
    key: str | None = None
    lsc_serial: str | None = None
    fetched: int = 0
    error: str | None = None
    received: list[str] = field(default_factory=list)  # the commands CAPF sent, in order
    keepalives: int = 0  # CAPF's REQUEST_IN_PROGRESS while the RA worked
    flow: Flow = "extended"

    @property
    def ok(self) -> bool:
        return self.outcome in ("installed", "deleted", "fetched", "nothing_pending") or (
            self.outcome == "ended" and self.reason == Reason.OK.name)

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "ok": self.ok}


def _reason_name(reason: Reason | int | None) -> str | None:
    if reason is None:
        return None
    return reason.name if isinstance(reason, Reason) else str(reason)


class _Conversation:
    """One session's moves: the phone's answer to each message CAPF sends."""

    def __init__(self, phone: Phone, auth: PhoneAuth, target: Target, writer: asyncio.StreamWriter,
                 session: PhoneSession, faults: Faults, result: SessionResult,
                 on_message: Callable[[Message], object] | None, *, public: bool = False) -> None:
        self.public = public
        self.phone, self.auth, self.target, self.writer, self.s = phone, auth, target, writer, session
        self.faults = faults
        self.result = result
        self.on_message = on_message
        self.outcome: str | None = None
        self.key: str | None = None
        self.fetched = 0
        self.reason_info: str | None = None
        self.dropped = False

    def has_dropped(self) -> bool:
        """Whether a fault dropped the session (a method: the flag changes while a message is handled)."""
        return self.dropped

    async def flush(self) -> None:
        data = self.s.data_to_send()
        if data:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.target.read_timeout)

    async def handle(self, msg: Message) -> None:
        self.result.received.append(msg.COMMAND.name)
        if isinstance(msg, RequestInProgress):
            self.result.keepalives += 1
        if self.on_message is not None:
            self.on_message(msg)
        if msg.COMMAND is self.faults.stall_at:
            return  # the phone hangs: it neither answers nor says it is busy
        if msg.COMMAND is self.faults.abort_at and not self.s.closed:
            self.s.abort(Reason.ABORTED, "fault injected: the phone gives up")
        elif isinstance(msg, AuthRequest):
            self._authenticate(msg)
        elif isinstance(msg, KeyGenRequest):
            await self._make_key(msg)
        elif isinstance(msg, SignCertRequest):
            self._sign(msg)
        elif isinstance(msg, StoreCertRequest):
            if self.faults.store == "drop":
                self.dropped = True  # a broken session: the LSC is never confirmed
                return
            self._store(msg)
        elif isinstance(msg, DeleteCertRequest):
            had = self.phone.delete_lsc()
            self.s.delete_response(Reason.OK if had else Reason.NO_CERTIFICATE)
            self.outcome = "deleted"
        elif isinstance(msg, FetchCertRequest):
            certs = self.phone.certificates(msg.certificate_type)
            self.s.fetch_response(certs)
            self.fetched, self.outcome = len(certs), "fetched"
        elif isinstance(msg, (EndSession, RetryLater)):
            self.reason_info = msg.reason_info
        # REQUEST_IN_PROGRESS from CAPF is its keepalive; STATUS_ENQUIRY and ABORT_REQUEST are
        # answered by the session itself.
        await self.flush()

    def _credential_kind(self, msg: AuthRequest) -> str:
        asked = msg.auth_type
        if asked is AuthType.PASSWORD:
            return "string"
        if asked is AuthType.NONE:
            return "null"
        if asked is AuthType.EXISTING_CERT_LSC_FIRST:
            return "lsc"
        if asked is AuthType.EXISTING_CERT_MIC_FIRST:
            return "mic"
        if self.auth.mode != "auto":
            return self.auth.mode
        if self.auth.auth_string:
            return "string"
        return "lsc" if self.phone.has_lsc else "mic" if self.phone.has_mic else "null"

    def _authenticate(self, msg: AuthRequest) -> None:
        if self.public:
            # A public client answers with what it is configured for; it cannot sign a challenge.
            self.s.auth_response(password=self.auth.auth_string if self.auth.mode in ("auto", "string") else None)
            return
        kind = self._credential_kind(msg)
        if kind == "string":
            self.s.auth_response(password=self.auth.auth_string or "")
            return
        if kind in ("lsc", "mic"):
            first = CertificateType.LSC if kind == "lsc" else CertificateType.MIC
            order = [first, CertificateType.MIC if first is CertificateType.LSC else CertificateType.LSC]
            for cert_type in order:
                has = self.phone.has_lsc if cert_type is CertificateType.LSC else self.phone.has_mic
                if has and msg.nonce is None:
                    # The hello carries no nonce: show the certificate; CAPF challenges for the signature.
                    self.s.auth_response(certificate=self.phone.certificates(cert_type)[0])
                    return
                if has and msg.nonce is not None:
                    digest = "sha256"
                    payload = self.s.auth_payload()
                    cert, signature = self.phone.auth_credential(cert_type, payload, digest)
                    if self.faults.auth_signature == "missing":
                        self.s.auth_response(certificate=cert)
                        return
                    if self.faults.auth_signature == "wrong_key":  # not the certificate's key
                        signature = tbs.sign_data(pki.generate_key("ec", 256), payload, digest)
                    self.s.auth_response(certificate=cert, signature=signature, digest=digest)
                    return
        # Null string, or no certificate to show: CAPF decides what an empty answer is worth.
        self.s.auth_response()

    async def _make_key(self, msg: KeyGenRequest) -> None:
        key_type, bits = msg.key_spec
        fault = self.faults.keygen
        if fault == "fail" or (fault == "fail_ec" and key_type == "ec"):
            self.s.key_gen_failed(Reason.KEY_GEN_FAILED, f"fault injected: no {key_type.upper()} {bits} key")
            return
        if fault == "wrong_key":  # a policy violation: another type or size than asked
            key_type, bits = ("ec", 384) if key_type == "rsa" or bits != 384 else ("ec", 256)
        self.s.in_progress()  # a public client sends it once, before its key
        await self.flush()
        job = asyncio.ensure_future(asyncio.to_thread(self.phone.new_key, key_type, bits))
        try:
            while True:
                done, _ = await asyncio.wait({job}, timeout=None if self.public else self.target.keepalive)
                if done:
                    break
                self.s.in_progress()  # keeps firewalls and CAPF's read timeout happy
                await self.flush()
            public_key = job.result()
        except PhoneError as exc:
            self.s.key_gen_failed(Reason.UNSUPPORTED if exc.code == "KEY_UNSUPPORTED" else Reason.KEY_GEN_FAILED,
                                  exc.message[:200])
            return
        finally:
            if not job.done():
                job.cancel()
        self.key = f"{key_type.upper()} {bits}"
        self.s.key_gen_response(public_key)

    def _sign(self, msg: SignCertRequest) -> None:
        if self.faults.sign == "refuse":
            self.s.sign_failed(Reason.SIGN_FAILED, "fault injected: no signature")
            return
        try:
            signature = self.phone.sign_request_info(msg.tbs_data, msg.effective_digest.hash_name)
        except PhoneError as exc:
            self.s.sign_failed(Reason.SIGN_FAILED, exc.message[:200])
            return
        self.s.sign_response(signature)

    def _store(self, msg: StoreCertRequest) -> None:
        if msg.certificate_type is not CertificateType.LSC:
            self.s.store_response(Reason.STORE_FAILED, "this phone stores only an LSC")
            return
        if self.faults.store == "refuse":
            self.s.store_response(Reason.STORE_FAILED, "fault injected: flash full")
            return
        try:
            self.phone.store_lsc(msg.certificate.certificate())  # parsed once, by the decoder
        except (PhoneError, OnlineCAError) as exc:
            self.s.store_response(Reason.STORE_FAILED, exc.message[:200])
            return
        self.s.store_response(Reason.OK)
        self.outcome = "installed"


async def run_session(phone: Phone, target: Target, auth: PhoneAuth = PhoneAuth(), *, max_version: int | None = None,
                      faults: Faults = NO_FAULTS, on_message: Callable[[Message], object] | None = None,
                      flow: Flow = "extended") -> SessionResult:
    """One TLS connection, one session, until CAPF ends it (or the connection fails).
    ``flow`` "public" makes a public client (see the module's docstring); ``max_version`` is the
    highest protocol version the phone speaks (default 3, a public client 2: no EC keys);
    ``on_message`` sees every message CAPF sends, as it arrives."""
    started = time.monotonic()
    public = flow == "public"
    result = SessionResult(phone.name, "comm_failure", flow=flow)
    if public:
        if not PUBLIC_NAME.fullmatch(phone.name):
            raise PhoneError(f"{phone.name}: a public-flow phone is named SEP and 12 upper-case hex digits",
                             hint="Name it like SEP74A02FC0A675, or use the extended flow.")
        if auth.auth_string is not None and not PUBLIC_AUTH_STRING.fullmatch(auth.auth_string):
            raise PhoneError("a public-flow phone's auth string is 4 to 16 digits")
        target = dataclasses.replace(target, read_timeout=min(target.read_timeout, PUBLIC_READ_TIMEOUT))
    session = PhoneSession(device_name=phone.name, max_version=max_version or (2 if public else 3),
                           capabilities=NO_CAPABILITIES if public else ALL_CAPABILITIES)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port, ssl=target.ssl_context,
                                    server_hostname=target.server_hostname or target.host,
                                    ssl_handshake_timeout=target.connect_timeout),
            target.connect_timeout)
    except (TimeoutError, OSError, ssl.SSLError) as exc:
        result.error = f"cannot connect to CAPF {target.host}:{target.port}: {exc or type(exc).__name__}"
        result.seconds = time.monotonic() - started
        return result
    talk = _Conversation(phone, auth, target, writer, session, faults, result, on_message, public=public)
    try:
        while not session.closed and not talk.dropped:
            data = await asyncio.wait_for(reader.read(65536), target.read_timeout)
            if not data:
                result.error = f"CAPF closed the connection in state {session.state.value}"
                break
            for msg in session.receive_data(data):
                await talk.handle(msg)
                if talk.has_dropped():
                    result.error = "session dropped before STORE_CERT_RESPONSE (fault injected)"
                    break
    except ProtocolError as exc:
        result.outcome, result.error = "protocol_error", f"{exc.code}: {exc.message}"
    except TimeoutError:
        result.error = f"no word from CAPF for {target.read_timeout:g} s in state {session.state.value}"
    except (OSError, ssl.SSLError) as exc:
        result.error = f"connection to CAPF failed: {exc}"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 5)
    if session.closed:
        if session.retry_delay is not None:
            result.outcome, result.retry_delay = "retry_later", session.retry_delay
        elif session.aborted_by is not None:
            result.outcome = "aborted"
        else:
            result.outcome = talk.outcome or "ended"
            if result.outcome == "ended" and session.end_reason == Reason.NOTHING_PENDING:
                result.outcome = "nothing_pending"
        result.reason = _reason_name(session.end_reason)
    elif talk.outcome == "installed":
        result.outcome = "installed"  # stored and confirmed; CAPF went away before END_SESSION
    result.reason_info = talk.reason_info
    result.session_id = session.session_id
    result.key = talk.key
    result.fetched = talk.fetched
    if phone.lsc is not None and result.outcome == "installed":
        result.lsc_serial = f"{phone.lsc.serial_number:x}"
    result.seconds = time.monotonic() - started
    return result


async def check_in(phone: Phone, target: Target, auth: PhoneAuth = PhoneAuth(), *, max_version: int | None = None,
                   retries: int = 3, comm_retry_delay: float = 30.0, max_retry_delay: float | None = None,
                   faults: Faults = NO_FAULTS, on_message: Callable[[Message], object] | None = None,
                   flow: Flow = "extended") -> SessionResult:
    """Sessions until one ends for good: after RETRY_LATER the phone waits the delay CAPF named
    (at most ``max_retry_delay``), after a connection failure ``comm_retry_delay`` (the phones'
    3 x 30 s), at most ``retries`` more times."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        result = await run_session(phone, target, auth, max_version=max_version, faults=faults, on_message=on_message,
                                   flow=flow)
        if result.outcome == "retry_later":
            delay = float(result.retry_delay or 0)
        elif result.outcome == "comm_failure":
            delay = comm_retry_delay
        else:
            break
        if attempt > retries:
            break
        if max_retry_delay is not None:
            delay = min(delay, max_retry_delay)
        log.info("%s: %s; next session in %.1f s", phone.name, result.outcome, delay)
        await asyncio.sleep(delay)  # the protocol's back-off, not synchronisation
    result.attempts = attempt
    result.seconds = time.monotonic() - started
    return result


__all__ = ["FLOWS", "NO_FAULTS", "PUBLIC_READ_TIMEOUT", "Faults", "Flow", "PhoneAuth", "SessionResult", "Target",
           "check_in", "phone_ssl_context", "run_session"]
