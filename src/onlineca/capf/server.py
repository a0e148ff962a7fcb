"""The CAPF session server: one device-protocol session per TLS connection on port 3804.

A thin asyncio adapter around ``devproto.session.CAPFSession``: it reads bytes (each read bounded
by ``read_timeout``, the whole session by ``session_timeout``, key generation by
``max_keygen_seconds`` over at most ``max_keygen_attempts`` requests), writes what the state machine
queues, and makes the decisions the state machine leaves to it: who the phone is (auth string in
constant time with a lockout, null string, an LSC validated against the RA's CA certificates or a
MIC validated against the manufacturer trust store, each signing this session's challenge), what
it must do (Install/Upgrade, Delete, Troubleshoot, or an automatic enrollment granted by its
profile), which key to ask for (RSA Only, EC Only, EC Preferred RSA Backup), and what status the
database records when anything fails.  An LSC is stored in the database before it is sent, so a
session that breaks after issue is finished by the next one without a second CA request.  While
the RA works, CAPF sends REQUEST_IN_PROGRESS every ``keepalive_seconds``; an RA that is down or
slow gets the phone a RETRY_LATER and leaves the operation pending.  It never logs an auth string
or a key, and never lets a peer's bytes end in a traceback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography import x509
from sqlalchemy.orm import Session

from onlineca import pki
from onlineca.capf.enroll import OnlineCAEnroller
from onlineca.config import CAPFConfig
from onlineca.errors import (
    CARejected,
    CAUnavailable,
    ChainError,
    OnlineCAError,
    ParseError,
    PKIError,
    PolicyError,
    ProtocolError,
)
from onlineca.infra import files
from onlineca.logs.capf_trace import SessionTrace
from onlineca.pki import tbs
from onlineca.policy.capf import (
    AuthMode,
    CertStatus,
    EffectivePolicy,
    KeyOrder,
    Operation,
    as_utc,
    failure_status,
    success_status,
    validate_device_name,
)
from onlineca.proto.devproto.messages import (
    AbortRequest,
    AuthResponse,
    AuthType,
    CertificateType,
    DeleteCertResponse,
    FetchCertResponse,
    KeyGenResponse,
    Message,
    Reason,
    RequestInProgress,
    SignCertResponse,
    StatusResponse,
    StoreCertResponse,
)
from onlineca.proto.devproto.session import CAPFSession
from onlineca.store import devices as inv
from onlineca.store.capf_models import Device
from onlineca.store.db import Database
from onlineca.store.group_commit import Transactions

log = logging.getLogger("onlineca.capf.server")
M = TypeVar("M", bound=Message)

_MAX_READ = 65536


class PhoneGone(Exception):
    """The phone closed the connection, aborted, or stopped answering."""


@dataclass
class Credential:
    """What the phone's AUTH_RESPONSE proved (``kind``: "string", "null", "LSC", "MIC")."""

    kind: str
    valid: bool
    why: str = ""


@dataclass
class ServerStats:
    """Counters for tests, the demo and the bench (not persisted)."""

    sessions: int = 0
    enrolled: int = 0
    delivered_without_ca: int = 0
    failed: int = 0
    retry_later: int = 0
    active: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


def key_candidates(order: KeyOrder, rsa_bits: int, ec_bits: int, version: int) -> list[tuple[str, int]]:
    """The keys to ask for, in order; a version 2 phone knows no EC key."""
    if order is KeyOrder.RSA_ONLY:
        return [("rsa", rsa_bits)]
    if order is KeyOrder.EC_ONLY:
        return [("ec", ec_bits)] if version >= 3 else []
    return [("ec", ec_bits), ("rsa", rsa_bits)] if version >= 3 else [("rsa", rsa_bits)]


class _Connection:
    """Bytes in and out of one session; every read bounded by ``read_timeout``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: CAPFSession,
                 read_timeout: float, trace: SessionTrace) -> None:
        self.reader, self.writer, self.session = reader, writer, session
        self.read_timeout = read_timeout
        self.trace = trace
        self.pending: deque[Message] = deque()
        self.released = False  # the device's lease was given back with the session's last write

    async def flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def next_message(self) -> Message:
        """The phone's next message; its keepalives and status answers are consumed here."""
        while True:
            while self.pending:
                msg = self.pending.popleft()
                if isinstance(msg, (RequestInProgress, StatusResponse)):
                    continue  # the phone is alive and busy: the next read gets a fresh timeout
                return msg
            state = self.session.state
            try:
                async with asyncio.timeout(self.read_timeout):  # no extra task per read, as wait_for makes
                    data = await self.reader.read(_MAX_READ)
            except TimeoutError:
                raise PhoneGone(f"no message from the phone within {self.read_timeout:g} s") from None
            except (ConnectionError, ssl.SSLError) as exc:
                raise PhoneGone(f"connection lost: {exc}") from None
            if not data:
                raise PhoneGone("the phone closed the connection")
            for msg in self.session.receive_data(data):
                if not isinstance(msg, RequestInProgress):
                    self.trace.debug(f"CAPF CORE: Rcvd Event: CAPF_EV_{msg.COMMAND.name} in State: "
                                     f"CAPF_STATE_{state.value}")
                self.pending.append(msg)
            await self.flush()  # automatic answers (ABORT_RESPONSE)

    async def expect(self, kind: type[M]) -> M:
        msg = await self.next_message()
        if isinstance(msg, AbortRequest):
            raise PhoneGone(f"the phone aborted the session (reason {msg.reason})")
        if not isinstance(msg, kind):  # the state machine already refused anything out of order
            raise ProtocolError(f"expected {kind.__name__}, got {msg.COMMAND.name}", code="DEVPROTO_INVALID_TRANSITION")
        return msg


@dataclass
class _Start:
    """What the session's first transaction learnt: ``found`` the device; ``policy`` is None when
    another node holds its lease."""

    found: bool
    policy: EffectivePolicy | None = None
    locked_until: dt.datetime | None = None
    failed_auth_count: int = 0
    mic_store: str = ""  # the profile's own manufacturer trust store, if any
    stored_lsc: tuple[str, bytes] | None = None  # issued earlier, never confirmed


class _Outcome(Exception):
    """Ends a session: the status to record (None: leave it) and how the session ends."""

    def __init__(self, status: Any | None, detail: str, reason: Reason | None = Reason.OPERATION_REFUSED, *,
                 end_operation: bool = False, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.reason = status, detail, reason
        self.end_operation, self.retry_after = end_operation, retry_after


class CAPFServer:
    """The per-connection handler; ``handle`` is what ``asyncio.start_server`` calls."""

    def __init__(self, cfg: CAPFConfig, db: Database, enroller: OnlineCAEnroller, *, node_id: str,
                 mic_trust: pki.TrustStore | None = None,
                 clock: Callable[[], dt.datetime] = inv.utcnow) -> None:
        self.cfg, self.db, self.enroller = cfg, db, enroller
        self.node_id = node_id
        self.mic_trust = mic_trust or pki.TrustStore()
        self.clock = clock
        self.stats = ServerStats()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._profile_mic_trust: dict[str, pki.TrustStore] = {}
        # SQLite's writes queue on one thread and share commits; PostgreSQL's run in parallel.
        self._tx = Transactions(db)

    def close(self) -> None:
        """Release the database thread (after the sessions have ended)."""
        self._tx.close()

    # ------------------------------------------------------------------ database, off the loop

    async def _db(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await self._tx.run(fn, *args, **kw)

    # ------------------------------------------------------------------ one connection

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        session = CAPFSession(max_key_gen_requests=self.cfg.max_keygen_attempts)
        trace = SessionTrace(peer_text, session.session_id)
        conn = _Connection(reader, writer, session, self.cfg.read_timeout, trace)
        self.stats.sessions += 1
        self.stats.active += 1
        try:
            async with asyncio.timeout(self.cfg.session_timeout):
                await self._session(conn, trace)
        except TimeoutError:
            trace.error(f"session timed out after {self.cfg.session_timeout:g} s")
            await self._end_quietly(conn, Reason.PROTOCOL_ERROR, "session timeout")
        except ProtocolError as exc:
            trace.error(f"protocol error from the phone: {exc.message} ({exc.code})")
            await self._end_quietly(conn, Reason.PROTOCOL_ERROR, exc.code)
        except PhoneGone as exc:
            trace.error(f"Phone Communication Failure: {exc}")
        except asyncio.CancelledError:
            trace.error("session cancelled: CAPF is stopping")
            raise
        except Exception as exc:  # a bug of ours must not kill the server; the phone gets an answer
            log.exception("unexpected error in a CAPF session with %s", trace.who)
            trace.error(f"internal error: {type(exc).__name__}: {exc}")
            await self._end_quietly(conn, Reason.PROTOCOL_ERROR, "internal error")
        finally:
            self.stats.active -= 1
            if task is not None:
                self.tasks.discard(task)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            except (Exception, asyncio.CancelledError):
                pass

    async def _end_quietly(self, conn: _Connection, reason: Reason, info: str) -> None:
        try:
            if not conn.session.closed:
                conn.session.end(reason, info)
                await asyncio.wait_for(conn.flush(), 2.0)
        except (Exception, asyncio.CancelledError):
            pass

    async def _session(self, conn: _Connection, trace: SessionTrace) -> None:
        session = conn.session
        session.start()
        await conn.flush()
        auth = await conn.expect(AuthResponse)
        try:
            name = validate_device_name(auth.device_name)
        except PolicyError:
            session.end(Reason.DEVICE_UNKNOWN, "not a device name")
            await conn.flush()
            return
        trace.device = name
        trace.debug(f"AUTH_RESPONSE from {name}, protocol version {session.version}")
        credential = await self._check_certificate(session, auth, name)
        start: _Start = await self._db(self._start_in, name, credential, session, auth)
        if not start.found:
            trace.error("device is not in the CAPF database and no profile enrolls it automatically")
            session.end(Reason.DEVICE_UNKNOWN, "device unknown")
            await conn.flush()
            return
        if start.policy is None:
            trace.error("another CAPF node is in a session with this device: RETRY_LATER")
            session.retry_later(30, Reason.OPERATION_REFUSED, "busy")
            await conn.flush()
            return
        operation = Operation.NONE
        try:
            policy = start.policy
            operation = policy.operation
            for line in policy.log_lines():
                trace.plain(line)
            await self._operation(conn, trace, name, start, auth, credential)
        except _Outcome as out:
            await self._finish(conn, trace, name, operation, out)
        except PhoneGone as exc:
            if operation is not Operation.NONE:
                await self._record(name, failure_status(operation, "PHONE_COMM_FAILURE"), str(exc))
            raise
        finally:
            if not conn.released:
                await self._db(inv.release_device, name, self.node_id)

    def _start_in(self, s: Session, name: str, credential: Credential | None, session: CAPFSession,
                  auth: AuthResponse) -> _Start:
        """The session's first transaction: find (or auto-enroll) the device, take its lease, and
        read everything the session decides on, so a session costs three commits, not eight."""
        device = self._find_or_auto_enroll(s, name, credential, session, auth)
        if device is None:
            return _Start(found=False)
        if not inv.claim_device(s, name, self.node_id, dt.timedelta(seconds=self.cfg.session_timeout + 60)):
            return _Start(found=True)
        policy = inv.device_policy(device)
        stored = None
        if policy.operation is Operation.UPGRADE:
            stored = _lsc_tuple(inv.undelivered_lsc(s, name, self.clock(), device=device))
        return _Start(found=True, policy=policy, locked_until=device.locked_until,
                      failed_auth_count=device.failed_auth_count or 0,
                      mic_store=device.profile.mic_trust_store if device.profile is not None else "",
                      stored_lsc=stored)

    async def _finish(self, conn: _Connection, trace: SessionTrace, name: str, operation: Operation,
                      out: _Outcome) -> None:
        if out.status is not None:
            # Failures the phone's next session cannot fix by itself end a renewal (with backoff).
            final = out.retry_after is None and out.reason not in (Reason.STORE_FAILED, Reason.OPERATION_REFUSED)
            await self._record(name, out.status, out.detail, end_operation=out.end_operation, final=final)
            st = CertStatus.parse(out.status, "status")
            trace.error(f"{operation.ident} failed: {st.display}: {out.detail}")
            self.stats.failed += 1
        session = conn.session
        if out.retry_after is not None:
            self.stats.retry_later += 1
            trace.debug(f"Sending RETRY_LATER msg (retry in {out.retry_after} s)")
            session.retry_later(out.retry_after, Reason.CA_UNAVAILABLE, out.detail[:200])
        elif not session.closed:
            session.end(out.reason or Reason.OPERATION_REFUSED, out.detail[:200])
            trace.debug("MsgType : CAPF_MSG_END_SESSION")
        await conn.flush()

    async def _record(self, name: str, status: Any, detail: str, *, end_operation: bool = False,
                      final: bool = False) -> None:
        st = CertStatus.parse(status, "status")
        self.stats.by_status[st.ident] = self.stats.by_status.get(st.ident, 0) + 1
        await self._db(self._record_in, name, st, detail[:500], end_operation, final)

    def _record_in(self, s: Session, name: str, st: Any, detail: str, end_operation: bool, final: bool) -> None:
        device = inv.get_device(s, name)
        renewal = device.renewal_for_serial is not None and device.renewal_for_serial == device.lsc_serial
        reason = st.ident.partition("_FAILED_")[2]
        if renewal and final and reason:
            # A scheduled renewal that cannot succeed as it stands: the scheduler backs off and
            # schedules it again (the device keeps its current LSC meanwhile).
            from onlineca.capf.scheduler import SchedulerSettings, record_renewal_failure
            record_renewal_failure(s, name, reason, detail, settings=SchedulerSettings(node_id=self.node_id))
            return
        inv.set_status(s, name, st, actor=f"capf:{self.node_id}", detail=detail, end_operation=end_operation)

    # ------------------------------------------------------------------ who is the phone

    def _mic_store(self, path: str) -> pki.TrustStore:
        if not path:
            return self.mic_trust
        if path not in self._profile_mic_trust:
            try:
                self._profile_mic_trust[path] = files.load_trust_store(path)
            except (OSError, PKIError) as exc:
                log.warning("profile MIC trust store %s is unreadable: %s", path, exc)
                self._profile_mic_trust[path] = pki.TrustStore()
        return self._profile_mic_trust[path]

    async def _check_certificate(self, session: CAPFSession, auth: AuthResponse, name: str,
                                 mic_store: str = "") -> Credential | None:
        """The LSC or MIC in ``auth`` validated (chain, device name, signature over this session's
        challenge); None when the phone sent no certificate."""
        if auth.certificate is None:
            return None
        if auth.certificate.cert_type == CertificateType.MIC:
            return self._verify(session, auth, name, "MIC", self._mic_store(mic_store))
        try:
            trust = await self.enroller.lsc_trust()
        except CAUnavailable as exc:
            return Credential("LSC", False, f"cannot check the LSC: {exc.message}")
        return self._verify(session, auth, name, "LSC", trust)

    def _verify(self, session: CAPFSession, auth: AuthResponse, name: str, kind: str,
                trust: pki.TrustStore) -> Credential:
        assert auth.certificate is not None
        if not len(trust):
            return Credential(kind, False, f"no trust store is configured for {kind}s")
        try:
            cert = pki.load_certificate(auth.certificate.der)
            pki.validate_chain(cert, [], trust, at=self.clock())
            cn = pki.common_name(cert.subject).upper()
            if (kind == "LSC" and cn != name) or (kind == "MIC" and name not in cn):
                return Credential(kind, False, f"the {kind} names {cn!r}, not {name}")
            signature = auth.signature
            if signature is None:
                return Credential(kind, False, f"the {kind} came without a signature over the challenge")
            tbs.verify_data_signature(cert.public_key(), session.auth_payload(), signature,  # type: ignore[arg-type]
                                      auth.effective_digest.hash_name)
        except (ChainError, ParseError, PKIError) as exc:
            return Credential(kind, False, exc.message)
        return Credential(kind, True)

    def _find_or_auto_enroll(self, s: Session, name: str, credential: Credential | None, session: CAPFSession,
                             auth: AuthResponse) -> Device | None:
        """The device; or a new one (or a new Install/Upgrade) that a profile grants automatically."""
        device = inv.find_device(s, name)
        if device is not None and (device.operation != Operation.NONE.ident or device.lsc_serial is not None):
            return device
        for row in inv.list_profiles(s):
            auto = inv.profile_policy(row).auto_enrollment
            if not auto.enabled:
                continue
            mic_valid = bool(credential and credential.kind == "MIC" and credential.valid)
            if credential and credential.kind == "MIC" and row.mic_trust_store:
                mic_valid = self._verify(session, auth, name, "MIC", self._mic_store(row.mic_trust_store)).valid
            if not auto.grants(name, mic_valid=mic_valid):
                continue
            settings: dict[str, Any] = {"operation": Operation.UPGRADE.ident}
            if mic_valid:
                settings["auth_mode"] = AuthMode.BY_MIC.ident
            why = "a valid MIC" if mic_valid else f"its name matches {auto.name_pattern!r}"
            try:
                if device is None:
                    device = inv.add_device(s, name, actor="capf:auto-enrollment", profile=row.name,
                                            description=f"enrolled automatically ({why})", **settings)
                else:
                    device = inv.set_device(s, name, actor="capf:auto-enrollment", **settings)
            except OnlineCAError as exc:
                log.warning("%s: profile %s grants automatic enrollment but the device cannot be set: %s",
                            name, row.name, exc)
                continue
            inv.record_event(s, name, "AUTO_ENROLLMENT", f"profile {row.name}: {why}", actor="capf")
            return device
        return device

    async def _authenticate(self, conn: _Connection, trace: SessionTrace, name: str, start: _Start,
                            auth: AuthResponse, credential: Credential | None) -> None:
        assert start.policy is not None
        session, policy = conn.session, start.policy
        mode, op = policy.auth_mode, policy.operation
        if mode is AuthMode.BY_NULL_STR:
            trace.debug(f"Authentication Mode={mode.log}: no credential needed")
            return
        wanted = {AuthMode.BY_STR: AuthType.PASSWORD, AuthMode.BY_LSC: AuthType.EXISTING_CERT_LSC_FIRST,
                  AuthMode.BY_MIC: AuthType.EXISTING_CERT_MIC_FIRST}[mode]
        missing = auth.auth_password is None if mode is AuthMode.BY_STR else auth.certificate is None
        if missing and session.auth_requests < session.max_auth_requests:
            trace.debug(f"AUTH_RESPONSE lacks the credential of {mode.log}: asking again ({wanted.name})")
            session.start(wanted)
            await conn.flush()
            auth = await conn.expect(AuthResponse)
            if validate_device_name(auth.device_name) != name:
                raise ProtocolError("the phone changed its name between two AUTH_RESPONSEs",
                                    code="DEVPROTO_BAD_ELEMENT")
            if mode is not AuthMode.BY_STR:
                credential = await self._check_certificate(session, auth, name)
        if mode is AuthMode.BY_STR:
            await self._check_auth_string(trace, name, start, auth.auth_password)
            return
        if credential is None:
            raise _Outcome(failure_status(op, "INVALID_CREDENTIALS"),
                           f"{mode.display} but the phone presented no certificate",
                           Reason.INVALID_CERTIFICATE)
        if credential.kind == "MIC" and start.mic_store:
            # A profile may name its own manufacturer trust store: the MIC must chain to that one.
            credential = self._verify(session, auth, name, "MIC", self._mic_store(start.mic_store))
        if not credential.valid:
            reason = "INVALID_MIC" if credential.kind == "MIC" else "INVALID_LSC"
            raise _Outcome(failure_status(op, reason), f"{credential.kind} rejected: {credential.why}",
                           Reason.INVALID_CERTIFICATE)
        trace.debug(f"Authentication Mode={mode.log}: the phone's {credential.kind} is valid")

    async def _check_auth_string(self, trace: SessionTrace, name: str, start: _Start,
                                 given: str | None) -> None:
        assert start.policy is not None
        policy = start.policy
        expected = (policy.auth_string or "").encode()
        ok = given is not None and hmac.compare_digest(given.encode(), expected) and bool(expected)
        if ok:
            if start.failed_auth_count:
                await self._db(self._auth_succeeded, name)
            trace.debug(f"Authentication Mode={AuthMode.BY_STR.log}: authentication string verified")
            return
        locked = await self._db(self._auth_failed, name)
        detail = "wrong authentication string" if given is not None else "no authentication string"
        if locked:
            detail += f"; {self.cfg.max_auth_failures} wrong attempts: locked out for {self.cfg.lockout_minutes:g} min"
        raise _Outcome(failure_status(policy.operation, "INVALID_AUTH_STR"), detail, Reason.OPERATION_REFUSED)

    def _auth_failed(self, s: Session, name: str) -> bool:
        device = inv.get_device(s, name)
        device.failed_auth_count = (device.failed_auth_count or 0) + 1
        if device.failed_auth_count >= self.cfg.max_auth_failures:
            device.locked_until = self.clock() + dt.timedelta(minutes=self.cfg.lockout_minutes)
            device.failed_auth_count = 0
            inv.record_event(s, name, "LOCKED_OUT", f"until {device.locked_until.isoformat()}", actor="capf")
            return True
        return False

    def _auth_succeeded(self, s: Session, name: str) -> None:
        device = inv.get_device(s, name)
        if device.failed_auth_count:
            device.failed_auth_count = 0

    # ------------------------------------------------------------------ what the phone must do

    async def _operation(self, conn: _Connection, trace: SessionTrace, name: str, start: _Start,
                         auth: AuthResponse, credential: Credential | None) -> None:
        assert start.policy is not None
        policy = start.policy
        session, op, now = conn.session, policy.operation, self.clock()
        if op is Operation.NONE:
            trace.debug("no certificate operation is pending for this device")
            raise _Outcome(None, "no operation pending", Reason.NOTHING_PENDING)
        locked_until = start.locked_until
        if locked_until is not None and as_utc(locked_until) > now:
            trace.error(f"device is locked out after repeated wrong authentication strings until "
                        f"{as_utc(locked_until):%Y-%m-%d %H:%M:%S} UTC")
            raise _Outcome(None, "locked out", Reason.LOCKED_OUT)
        if policy.is_late(now):
            raise _Outcome(failure_status(op, "REQUEST_LATE"),
                           f"Operation Completes By {policy.deadline:%Y:%m:%d:%H} has passed",
                           Reason.DEADLINE_PASSED, end_operation=True)
        await self._authenticate(conn, trace, name, start, auth, credential)
        if op is Operation.UPGRADE:
            await self._upgrade(conn, trace, name, policy, start.stored_lsc)
        elif op is Operation.DELETE:
            await self._delete(conn, trace, name)
        elif op is Operation.TROUBLESHOOT:
            await self._troubleshoot(conn, trace, name)
        if not session.closed:
            session.end(Reason.OK)
            trace.debug("MsgType : CAPF_MSG_END_SESSION")
            await conn.flush()

    async def _upgrade(self, conn: _Connection, trace: SessionTrace, name: str, policy: EffectivePolicy,
                       stored: tuple[str, bytes] | None) -> None:
        if stored is not None:
            serial, der = stored
            trace.debug(f"LSC serial {serial} was issued earlier and never confirmed: delivering it "
                        "without a new CA request")
            self.stats.delivered_without_ca += 1
            await self._deliver(conn, trace, name, serial, der)
            return
        public_key, _key_type, _bits = await self._key_gen(conn, trace, policy)
        csr = await self._sign_request(conn, trace, name, public_key)
        cert = await self._enroll(conn, trace, name, csr)
        trace.debug("CAPF CORE: Rcvd Event: CAPF_EV_CA_CERT_REP in State: CAPF_STATE_AWAIT_CA_CERT_RESP")
        trace.debug("CAPF got device certificate")
        row = await self._db(inv.record_lsc_issued, name, pki.cert_der(cert), actor=f"capf:{self.node_id}")
        self.stats.enrolled += 1
        await self._deliver(conn, trace, name, row.serial, pki.cert_der(cert))

    async def _key_gen(self, conn: _Connection, trace: SessionTrace,
                       policy: EffectivePolicy) -> tuple[pki.PublicKey, str, int]:
        session, op = conn.session, policy.operation
        assert session.version is not None
        candidates = key_candidates(policy.key_order, policy.rsa_key_size, policy.ec_key_size, session.version)
        if not candidates:
            raise _Outcome(failure_status(op, "NO_EC_SUPPORT"),
                           f"{policy.key_order.display} but the phone speaks protocol version {session.version}",
                           Reason.UNSUPPORTED)
        index, attempts = 0, 0
        try:
            async with asyncio.timeout(self.cfg.max_keygen_seconds):
                while True:
                    key_type, bits = candidates[index]
                    session.request_key_gen(key_type, bits)
                    attempts += 1
                    trace.debug(f"Sending KEY_GEN_REQ msg ({key_type.upper()} {bits}, attempt {attempts} of "
                                f"{self.cfg.max_keygen_attempts})")
                    await conn.flush()
                    resp = await conn.expect(KeyGenResponse)
                    if resp.reason == Reason.OK and resp.public_key is not None:
                        break
                    trace.error(f"the phone could not make the {key_type.upper()} {bits} key: reason {resp.reason}"
                                + (f" ({resp.reason_info})" if resp.reason_info else ""))
                    if attempts >= self.cfg.max_keygen_attempts:
                        raise _Outcome(failure_status(op, "KEYGEN_FAILED"),
                                       f"key generation failed {attempts} times", Reason.KEY_GEN_FAILED)
                    index = min(index + 1, len(candidates) - 1)  # EC failed: RSA backup, else try again
        except (TimeoutError, PhoneGone) as exc:
            if isinstance(exc, PhoneGone) and "no message" not in str(exc):
                raise
            raise _Outcome(failure_status(op, "KEYGEN_FAILED"),
                           f"no key within {self.cfg.max_keygen_seconds:g} s (Key Generation Timeout)",
                           Reason.KEY_GEN_TIMEOUT) from None
        try:
            public_key = pki.load_public_key(resp.public_key)
        except ParseError as exc:
            raise _Outcome(failure_status(op, "KEYGEN_FAILED"), f"the phone's public key does not parse: {exc.message}",
                           Reason.UNSUPPORTED) from None
        got = pki.key_spec(public_key)
        trace.debug(f"pubKey length: {len(resp.public_key)}")
        if got != (key_type, bits):
            raise _Outcome(failure_status(op, "KEYGEN_FAILED"),
                           f"policy violation: the phone returned a {got[0].upper()} {got[1]} key where "
                           f"{key_type.upper()} {bits} was asked ({policy.key_order.display})", Reason.UNSUPPORTED)
        return public_key, key_type, bits

    async def _sign_request(self, conn: _Connection, trace: SessionTrace, name: str,
                            public_key: pki.PublicKey) -> x509.CertificateSigningRequest:
        session = conn.session
        info = tbs.csr_info_der(f"CN={name}", public_key)
        session.request_signature(info, "sha256")
        trace.debug("Sending SIGN_CERT_REQ msg (the phone signs the certificate request with its new key)")
        await conn.flush()
        resp = await conn.expect(SignCertResponse)
        op = Operation.UPGRADE
        if resp.reason != Reason.OK or resp.signature is None:
            raise _Outcome(failure_status(op, "PHONE_COMM_FAILURE"),
                           f"the phone did not sign the request: reason {resp.reason}", Reason.SIGN_FAILED)
        try:
            return tbs.assemble_csr(info, resp.signature, public_key, "sha256")
        except (ParseError, PKIError) as exc:
            raise _Outcome(failure_status(op, "INVALID_CREDENTIALS"),
                           f"the phone's signature over its request does not verify: {exc.message}",
                           Reason.SIGN_FAILED) from None

    async def _enroll(self, conn: _Connection, trace: SessionTrace, name: str,
                      csr: x509.CertificateSigningRequest) -> x509.Certificate:
        """Enroll at the RA, sending REQUEST_IN_PROGRESS while it works; the enrollment finishes
        (and its certificate is stored) even if the phone goes away meanwhile."""
        session = conn.session
        task = asyncio.create_task(self.enroller.enroll_device(name, csr, trace))
        phone_gone: str | None = None
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=self.cfg.keepalive_seconds)
            if done or phone_gone:
                continue
            try:
                session.keepalive()
                await asyncio.wait_for(conn.flush(), self.cfg.read_timeout)
            except (TimeoutError, ConnectionError, ssl.SSLError) as exc:
                phone_gone = f"connection lost while the RA worked: {exc}"
        try:
            cert = task.result()
        except CAUnavailable as exc:
            delay = max(self.cfg.retry_delay, exc.retry_after or 0)
            raise _Outcome(failure_status(Operation.UPGRADE, "CA_COMM_FAILURE"),
                           f"RA/CA unavailable ({exc.est_code}): {exc.message}; the operation stays pending",
                           Reason.CA_UNAVAILABLE, retry_after=delay) from None
        except CARejected as exc:
            raise _Outcome(failure_status(Operation.UPGRADE, "CA_REJECTED"),
                           f"{exc.message} ({exc.est_code})", Reason.CA_REJECTED) from None
        if phone_gone:
            await self._db(inv.record_lsc_issued, name, pki.cert_der(cert), actor=f"capf:{self.node_id}")
            self.stats.enrolled += 1
            trace.debug("LSC stored in the database; it is delivered at the device's next session")
            raise PhoneGone(phone_gone)
        return cert

    async def _deliver(self, conn: _Connection, trace: SessionTrace, name: str, serial: str, der: bytes) -> None:
        await self._ask(conn, trace, lambda: conn.session.store_certificate(der), "STORE_CERT_REQ", StoreCertResponse,
                        failure_status(Operation.UPGRADE, "PHONE_COMM_FAILURE"), "store the LSC", Reason.STORE_FAILED)
        csr_file = self.enroller.paths.csr_file(name)
        trace.plain(f"debug LSC is verified. removing CSR at {csr_file}")
        csr_file.unlink(missing_ok=True)
        await self._db(self._installed_in, name, serial)
        conn.released = True
        self._log_success(trace, name, Operation.UPGRADE)

    def _installed_in(self, s: Session, name: str, serial: str) -> None:
        """The phone stored its LSC: record it and give the lease back in one commit."""
        inv.mark_lsc_installed(s, name, serial, actor=f"capf:{self.node_id}")
        inv.release_device(s, name, self.node_id)

    async def _delete(self, conn: _Connection, trace: SessionTrace, name: str) -> None:
        await self._ask(conn, trace, conn.session.request_delete, "DELETE_CERT_REQ", DeleteCertResponse,
                        failure_status(Operation.DELETE), "delete its LSC")
        await self._db(inv.mark_lsc_removed, name, actor=f"capf:{self.node_id}")
        self._log_success(trace, name, Operation.DELETE)

    async def _troubleshoot(self, conn: _Connection, trace: SessionTrace, name: str) -> None:
        resp = await self._ask(conn, trace, conn.session.request_fetch, "FETCH_CERT_REQ", FetchCertResponse,
                               failure_status(Operation.TROUBLESHOOT), "send its certificates")
        folder = self.enroller.paths.troubleshoot_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, value in enumerate(resp.certificates):
            kind = "MIC" if value.cert_type == CertificateType.MIC else "LSC"
            (folder / f"{kind.lower()}-{i}.der").write_bytes(value.der)
            try:
                cert = pki.load_certificate(value.der)
                trace.debug(f"{kind}: subject {pki.name_to_slash(cert.subject)} issuer "
                            f"{pki.name_to_slash(cert.issuer)} serial {cert.serial_number:x} valid until "
                            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
            except ParseError as exc:
                trace.error(f"{kind}: does not parse: {exc.message}")
        await self._db(inv.set_status, name, success_status(Operation.TROUBLESHOOT), actor=f"capf:{self.node_id}",
                       detail=f"{len(resp.certificates)} certificate(s) in {folder}", end_operation=True)
        self._log_success(trace, name, Operation.TROUBLESHOOT)

    async def _ask(self, conn: _Connection, trace: SessionTrace, request: Callable[[], None], label: str,
                   kind: type[M], failed: Any, what: str, reason: Reason = Reason.OPERATION_REFUSED) -> M:
        """Send one request to the phone and wait for its answer; an answer that is not OK fails
        the operation with ``failed``."""
        request()
        trace.debug(f"Sending {label} msg")
        await conn.flush()
        resp = await conn.expect(kind)
        answer = getattr(resp, "reason", Reason.OK)
        if answer != Reason.OK:
            info = getattr(resp, "reason_info", None)
            raise _Outcome(failed, f"the phone did not {what}: reason {answer}" + (f" ({info})" if info else ""),
                           reason)
        return resp

    def _log_success(self, trace: SessionTrace, name: str, op: Operation) -> None:
        st = success_status(op)
        self.stats.by_status[st.ident] = self.stats.by_status.get(st.ident, 0) + 1
        trace.plain(f"CAPFDevice::MapCapf_OpStatusToDBLTypeCertificateStatus({op.ident}, Suc =>DbStatus={st.ident}")
        trace.plain(f"SetOperationStatus(Success:CAPF_OP_SUCCESS):0 sql query - (UPDATE Device SET "
                    f"tkCertificateOperation={Operation.NONE.code}, tkcertificatestatus='{st.code}' "
                    f"WHERE my_lower(name)=my_lower('{name}'))")


def _lsc_tuple(row: Any) -> tuple[str, bytes] | None:
    return (row.serial, bytes(row.der)) if row is not None else None


__all__ = ["CAPFServer", "Credential", "PhoneGone", "ServerStats", "key_candidates"]
