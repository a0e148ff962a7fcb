"""The CAPF session server: one device-protocol session per TLS connection on port 3804.

The asyncio glue around ``devproto.session.CAPFSession``: it reads bytes (each read bounded by
``read_timeout``, the whole session by ``session_timeout``, key generation by
``max_keygen_seconds`` over at most ``max_keygen_attempts`` requests), writes what the state machine
queues, and gets the LSC one of three ways: the phone signs its request (SIGN_CERT_REQUEST) and
CAPF enrolls it at the RA; CAPF vouches for the key of a phone that cannot sign; or CAPF's own CA
signs (a profile's ``issuer = capf``).  A phone that announced nothing (a public client) gets the
public flow exactly: no challenge, no signing step, no keepalive, no RETRY_LATER, reasons 1/7/9
only, and its LSC within ``public_enroll_timeout``; the extensions a phone announced are used
(challenge for certificate auth, REQUEST_IN_PROGRESS every ``keepalive_seconds`` while the RA
works, RETRY_LATER, reasons above 9).  What to decide (which key to ask for, whether
a credential authenticates the phone, the lockout, automatic enrollment, which status each ending
records) is ``policy.capf``'s; the checks of a presented certificate are ``capf.credentials``'; the
session's transactions are ``store.capf_sessions``', run off the loop through
``store.group_commit``; its log lines are ``logs.capf_trace``'s.  It never logs an auth string or
a key, and never lets a peer's bytes end in a traceback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import secrets
import ssl
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography import x509
from sqlalchemy.orm import Session

from onlineca import pki
from onlineca.capf.credentials import CertificateChecks
from onlineca.capf.enroll import NOT_SENT_CODES, BeforeSend, IssuedLSC, OnlineCAEnroller
from onlineca.capf.local_ca import CAPFAuthority
from onlineca.capf.reconcile import IssuedLookup, find_issued
from onlineca.config import CAPFConfig
from onlineca.errors import (
    CARejected,
    CAUnavailable,
    ParseError,
    PhoneGone,
    PhoneSilent,
    PKIError,
    PolicyError,
    ProtocolError,
)
from onlineca.infra.serving import own_timeouts
from onlineca.logs.capf_trace import SessionTrace
from onlineca.pki import tbs
from onlineca.policy import capf_session as decide
from onlineca.policy.capf import (
    AuthMode,
    EffectivePolicy,
    Issuer,
    Operation,
    auth_string_matches,
    success_status,
    validate_device_name,
)
from onlineca.policy.capf_session import Credential, Ending, Outcome
from onlineca.proto.devproto.messages import (
    AbortRequest,
    AuthResponse,
    AuthType,
    Capability,
    CertificateType,
    DeleteCertResponse,
    FetchCertResponse,
    KeyGenResponse,
    Message,
    PublicKeyDER,
    Reason,
    RequestInProgress,
    SignCertResponse,
    StatusResponse,
    StoreCertResponse,
)
from onlineca.proto.devproto.session import CAPFSession
from onlineca.store import capf_sessions as tx, devices as inv, lsc_intents as intents
from onlineca.store.db import Database
from onlineca.store.group_commit import Transactions

M = TypeVar("M", bound=Message)
T = TypeVar("T")

_MAX_READ = 65536

# How each way a session ends sounds to the phone.
REASONS: dict[Ending, Reason] = {
    Ending.NOTHING_PENDING: Reason.NOTHING_PENDING,
    Ending.LOCKED_OUT: Reason.LOCKED_OUT,
    Ending.DEADLINE_PASSED: Reason.DEADLINE_PASSED,
    Ending.UNSUPPORTED: Reason.UNSUPPORTED,
    Ending.KEY_GEN_FAILED: Reason.KEY_GEN_FAILED,
    Ending.KEY_GEN_TIMEOUT: Reason.KEY_GEN_TIMEOUT,
    Ending.SIGN_FAILED: Reason.SIGN_FAILED,
    Ending.CA_UNAVAILABLE: Reason.CA_UNAVAILABLE,
    Ending.CA_REJECTED: Reason.CA_REJECTED,
    Ending.STORE_FAILED: Reason.STORE_FAILED,
    Ending.REFUSED: Reason.OPERATION_REFUSED,
    Ending.INVALID_CERTIFICATE: Reason.INVALID_CERTIFICATE,
    Ending.PHONE_GONE: Reason.ABORTED,  # said to nobody: the phone is gone
}
# The AUTH_TYPE that asks a phone again for the credential of an auth mode.
_ASK_AGAIN = {AuthMode.BY_STR: AuthType.PASSWORD, AuthMode.BY_LSC: AuthType.EXISTING_CERT_LSC_FIRST,
              AuthMode.BY_MIC: AuthType.EXISTING_CERT_MIC_FIRST}
# The challenge for a certificate a phone presented unsigned (the hello carries no nonce).
_CHALLENGE = {CertificateType.LSC: AuthType.EXISTING_CERT_LSC_FIRST,
              CertificateType.MIC: AuthType.EXISTING_CERT_MIC_FIRST}


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


def _lsc_of(auth: AuthResponse, credential: Credential | None) -> tuple[str, bytes] | None:
    """(serial hex, DER) of the LSC a phone authenticated with, when its checks passed."""
    if credential is None or credential.kind != "LSC" or not credential.valid or auth.certificate is None:
        return None
    try:
        cert = auth.certificate.certificate()
    except ParseError:
        return None
    return inv.serial_hex(cert.serial_number), auth.certificate.der


class _Connection:
    """Bytes in and out of one session; every read bounded by ``read_timeout``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: CAPFSession,
                 read_timeout: float, trace: SessionTrace) -> None:
        self.reader, self.writer, self.session = reader, writer, session
        self.read_timeout = read_timeout
        self.trace = trace
        self.pending: deque[Message] = deque()
        self.released = False  # the device's lease was given back with the session's last write
        self.owner = ""  # the session's lease owner
        self.presented_lsc: tuple[str, bytes] | None = None
        self.intent_id: int | None = None  # the intent of the request sent last

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
                raise PhoneSilent(f"no message from the phone within {self.read_timeout:g} s") from None
            except (ConnectionError, ssl.SSLError) as exc:
                raise PhoneGone(f"connection lost: {exc}") from None
            if not data:
                raise PhoneGone("the phone closed the connection")
            for msg in self.session.receive_data(data):
                if not isinstance(msg, RequestInProgress):
                    self.trace.received(msg.COMMAND.name, state.value)
                self.pending.append(msg)
            await self.flush()  # automatic answers (ABORT_RESPONSE)

    async def expect(self, kind: type[M]) -> M:
        msg = await self.next_message()
        if isinstance(msg, AbortRequest):
            raise PhoneGone(f"the phone aborted the session (reason {msg.reason})")
        if not isinstance(msg, kind):  # the state machine already refused anything out of order
            raise ProtocolError(f"expected {kind.__name__}, got {msg.COMMAND.name}", code="DEVPROTO_INVALID_TRANSITION")
        return msg

    async def ask(self, request: Callable[[], None], label: str, kind: type[M]) -> M:
        """Send one request to the phone and wait for its answer."""
        request()
        self.trace.sending(label)
        await self.flush()
        return await self.expect(kind)


def _answer(reason: Any, info: str | None) -> str:
    """A phone's refusal in words: ``reason 71 (flash full)``."""
    return f"reason {reason}" + (f" ({info})" if info else "")


class CAPFServer:
    """The per-connection handler; ``handle`` is what ``asyncio.start_server`` calls.  ``local_ca``
    is CAPF's own CA (the ``capf`` issuer); without one, a profile that names it cannot issue.
    ``ca_lookup``: our CA's request table, where a session finds the certificate the
    CA issued for an earlier session's request that CAPF never recorded (``capf.reconcile``)."""

    def __init__(self, cfg: CAPFConfig, db: Database, enroller: OnlineCAEnroller, *, node_id: str,
                 mic_trust: pki.TrustStore | None = None, local_ca: CAPFAuthority | None = None,
                 clock: Callable[[], dt.datetime] = inv.utcnow, ca_lookup: IssuedLookup | None = None) -> None:
        self.cfg, self.db, self.enroller = cfg, db, enroller
        self.ca_lookup = ca_lookup
        self.node_id = node_id
        self.actor = f"capf:{node_id}"
        # Each session leases its device under an owner of its own, ``<node>#<boot>#<n>``:
        # no other session, of this node or another, enters the device meanwhile; the heartbeat
        # renews this life's leases (``<node>#<boot>#``), and the next life frees them at once.
        self.lease_prefix = f"{node_id}#{secrets.token_hex(4)}#"
        self._session_numbers = itertools.count(1)
        self.clock = clock
        self.local_ca = local_ca
        self.certs = CertificateChecks(mic_trust or pki.TrustStore(), self._lsc_trust, clock)
        self.stats = ServerStats()
        self.tasks: set[asyncio.Task[Any]] = set()
        # SQLite's writes queue on one thread and share commits; PostgreSQL's run in parallel.
        self._tx = Transactions(db)

    async def _lsc_trust(self) -> pki.TrustStore:
        """What an LSC must chain to: the RA's CA certificates, and CAPF's own CA when it has one."""
        try:
            trust = await self.enroller.lsc_trust()
        except CAUnavailable:
            if self.local_ca is None:
                raise
            return self.local_ca.trust
        if self.local_ca is None:
            return trust
        return pki.TrustStore([*trust.certs, self.local_ca.cert])

    async def run_tx(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """One transaction off the event loop, as the sessions' own (the heartbeat's)."""
        return await self._tx.run(fn, *args, **kw)

    def close(self) -> None:
        """Release the database thread (after the sessions have ended)."""
        self._tx.close()

    # ------------------------------------------------------------------ one connection

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        own_timeouts(writer.transport)  # read_timeout and session_timeout bound this connection from here
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
            trace.session_timed_out(self.cfg.session_timeout)
            await self._end_quietly(conn, Reason.PROTOCOL_ERROR, "session timeout")
        except ProtocolError as exc:
            trace.protocol_error(exc.message, exc.code)
            await self._end_quietly(conn, Reason.PROTOCOL_ERROR, exc.code)
        except PhoneGone as exc:
            trace.phone_gone(exc.message)
        except asyncio.CancelledError:
            trace.cancelled()
            raise
        except Exception as exc:  # a bug of ours must not kill the server; the phone gets an answer
            trace.internal_error(exc)
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
                conn.session.decline(reason, info)
                await asyncio.wait_for(conn.flush(), 2.0)
        except (Exception, asyncio.CancelledError):
            pass

    async def _session(self, conn: _Connection, trace: SessionTrace) -> None:
        session = conn.session
        session.start()  # exactly {07}[00 01] 03: nothing else, some public clients refuse more
        await conn.flush()
        auth = await conn.expect(AuthResponse)
        try:
            name = validate_device_name(auth.device_name)
        except PolicyError:
            session.decline(Reason.DEVICE_UNKNOWN, "not a device name")
            await conn.flush()
            return
        trace.identified(name, session.version, int(session.announced))
        credential = None
        presented = auth.certificate
        if presented is not None:
            if session.may(Capability.CHALLENGE):
                # Possession first: the certificate may decide the device's automatic enrollment.
                auth = await self._challenge(conn, trace, name, _CHALLENGE[presented.cert_type])
                credential = await self.certs.check(auth, session.auth_payload(), name)
            else:
                trace.certificate_unproven(presented.cert_type.name)
        if credential is not None:
            mic_valid: Callable[[str], bool] = functools.partial(
                self.certs.mic_valid, auth, session.auth_payload(), name, credential)
        else:
            def mic_valid(_store: str) -> bool:
                return False
        owner = f"{self.lease_prefix}{next(self._session_numbers)}"[:128]
        presented_lsc = _lsc_of(auth, credential)
        start = await self._tx.run(tx.start_session, name, owner=owner,
                                   lease=dt.timedelta(seconds=self.cfg.lease_seconds), now=self.clock(),
                                   mic_valid=mic_valid, flow="public" if session.public else "extended",
                                   capabilities=int(session.announced) if not session.public else None,
                                   presented_lsc=presented_lsc)
        if not start.found:
            trace.device_unknown()
            session.decline(Reason.DEVICE_UNKNOWN, "device unknown")
            await conn.flush()
            return
        if start.policy is None:
            trace.device_busy()
            if session.may(Capability.RETRY_LATER):
                session.retry_later(30, Reason.OPERATION_REFUSED, "busy")
            else:
                session.decline(Reason.OPERATION_REFUSED, "busy")
            await conn.flush()
            return
        operation = start.policy.operation
        conn.owner = owner
        conn.presented_lsc = presented_lsc
        try:
            trace.policy(start.policy)
            if start.renewing:
                trace.renewal_on_connect(start.installed)
            outcome = await self._operation(conn, trace, name, start, auth, credential)
            if outcome is not None:
                await self._finish(conn, trace, name, operation, outcome)
        except PhoneGone as exc:
            if operation is not Operation.NONE:
                await self._record(name, decide.phone_gone(operation, exc.message))
            raise
        finally:
            if not conn.released:
                await self._tx.run(inv.release_device, name, owner)

    async def _finish(self, conn: _Connection, trace: SessionTrace, name: str, operation: Operation,
                      out: Outcome) -> None:
        if out.status is not None:
            await self._record(name, out)
            trace.operation_failed(operation, out)
            self.stats.failed += 1
        session = conn.session
        if out.retry_after is not None and session.may(Capability.RETRY_LATER):
            self.stats.retry_later += 1
            trace.retry_later(out.retry_after)
            session.retry_later(out.retry_after, Reason.CA_UNAVAILABLE, out.detail[:200])
        elif not session.closed:
            session.decline(REASONS[out.ending], out.detail[:200])
            trace.end_session()
        await conn.flush()

    async def _record(self, name: str, out: Outcome) -> None:
        assert out.status is not None
        self.stats.by_status[out.status.ident] = self.stats.by_status.get(out.status.ident, 0) + 1
        await self._tx.run(tx.record_outcome, name, out, actor=self.actor, renewal_failed=self._renewal_failed)

    def _renewal_failed(self, s: Session, name: str, reason: str, detail: str) -> None:
        """A scheduled renewal failed for good: the scheduler backs off and tries again later."""
        from onlineca.capf.scheduler import SchedulerSettings, record_renewal_failure  # optional for a bare server
        record_renewal_failure(s, name, reason, detail, settings=SchedulerSettings(node_id=self.node_id))

    # ------------------------------------------------------------------ who is the phone

    async def _challenge(self, conn: _Connection, trace: SessionTrace, name: str, auth_type: AuthType) -> AuthResponse:
        """AUTH_REQUEST again, with a nonce and the credential wanted (the CHALLENGE extension)."""
        conn.session.challenge(auth_type)
        trace.challenging(auth_type.name)
        await conn.flush()
        auth = await conn.expect(AuthResponse)
        if validate_device_name(auth.device_name) != name:
            raise ProtocolError("the phone changed its name between two AUTH_RESPONSEs", code="DEVPROTO_BAD_ELEMENT")
        return auth

    async def _authenticate(self, conn: _Connection, trace: SessionTrace, name: str, start: tx.SessionStart,
                            auth: AuthResponse, credential: Credential | None) -> Outcome | None:
        assert start.policy is not None
        session, policy = conn.session, start.policy
        mode = policy.auth_mode
        if mode is AuthMode.BY_NULL_STR:
            trace.auth_not_needed(mode)
            return None
        if mode is not AuthMode.BY_STR and not session.may(Capability.CHALLENGE):
            return decide.certificate_needs_challenge(policy.operation, mode)
        lacking = decide.lacks_credential(mode, password_given=auth.password is not None,
                                          certificate_given=credential is not None)
        if lacking and session.may(Capability.CHALLENGE) and session.auth_requests < session.max_auth_requests:
            trace.auth_asking_again(mode, _ASK_AGAIN[mode].name)
            auth = await self._challenge(conn, trace, name, _ASK_AGAIN[mode])
            if mode is not AuthMode.BY_STR:
                credential = await self.certs.check(auth, session.auth_payload(), name)
        if mode is AuthMode.BY_STR:
            return await self._check_auth_string(trace, name, start, auth.password)
        if credential is not None and credential.kind == "MIC" and start.mic_store:
            # A profile may name its own manufacturer trust store: the MIC must chain to that one.
            credential = self.certs.judge(auth, session.auth_payload(), name, "MIC", self.certs.mic_store(start.mic_store))
        refused = decide.certificate_auth(policy.operation, mode, credential)
        if refused is not None:
            return refused
        assert credential is not None
        if credential.kind == "LSC":
            # The LSC CAPF recorded as installed on this device, not merely one that
            # chains to the root and names it (revoked, deleted, replaced, discarded: refused).
            presented = _lsc_of(auth, credential)
            if presented is not None:
                problem = start.lsc_problem if presented == conn.presented_lsc else \
                    await self._tx.run(tx.lsc_problem, name, *presented)
                if problem is not None:
                    trace.lsc_not_recorded(presented[0], problem)
                    return decide.lsc_not_recorded(policy.operation, presented[0], problem)
        trace.certificate_accepted(mode, credential.kind)
        return None

    async def _check_auth_string(self, trace: SessionTrace, name: str, start: tx.SessionStart,
                                 given: str | None) -> Outcome | None:
        """The attempt is counted in the database before the comparison (one
        conditional UPDATE), so no number of parallel sessions gets more than
        ``max_auth_failures`` strings compared; a wrong one is answered after a growing delay,
        the device's lease held meanwhile."""
        assert start.policy is not None
        cfg = self.cfg
        attempt = await self._tx.run(tx.reserve_auth_attempt, name, max_failures=cfg.max_auth_failures,
                                     lockout_minutes=cfg.lockout_minutes, now=self.clock())
        if attempt is None:
            trace.auth_attempts_used()
            return decide.locked_out()
        # scrypt, off the event loop (hashlib releases the GIL while it works).
        if await asyncio.to_thread(auth_string_matches, attempt.stored, given):
            await self._tx.run(tx.auth_string_accepted, name)
            trace.auth_string_verified()
            return None
        delay = decide.wrong_guess_delay(attempt.failures, base=cfg.auth_failure_delay, cap=cfg.auth_failure_max_delay)
        trace.auth_string_wrong(attempt.failures, delay)
        if delay:
            await asyncio.sleep(delay)  # a deliberate delay: guessing costs time, the lease held
        if attempt.locks:
            await self._tx.run(tx.auth_string_locked, name, lockout_minutes=cfg.lockout_minutes, now=self.clock())
        return decide.wrong_auth_string(start.policy.operation, given=given is not None, locked=attempt.locks,
                                        max_failures=cfg.max_auth_failures, lockout_minutes=cfg.lockout_minutes)

    # ------------------------------------------------------------------ what the phone must do

    async def _operation(self, conn: _Connection, trace: SessionTrace, name: str, start: tx.SessionStart,
                         auth: AuthResponse, credential: Credential | None) -> Outcome | None:
        """The pending operation, start to end; the outcome when it cannot go on."""
        assert start.policy is not None
        policy = start.policy
        refused = decide.before_operation(policy, start.locked_until, self.clock(), start.installed)
        if refused is not None:
            trace.not_started(refused, start.locked_until)
            return refused
        out = await self._authenticate(conn, trace, name, start, auth, credential)
        if out is None:
            if policy.operation is Operation.UPGRADE:
                out = await self._upgrade(conn, trace, name, policy, start.stored_lsc, start.intent)
            elif policy.operation is Operation.DELETE:
                out = await self._delete(conn, trace, name)
            elif policy.operation is Operation.TROUBLESHOOT:
                out = await self._troubleshoot(conn, trace, name)
        if out is not None:
            return out
        if not conn.session.closed:
            conn.session.end(Reason.OK)
            trace.end_session()
            await conn.flush()
        return None

    async def _upgrade(self, conn: _Connection, trace: SessionTrace, name: str, policy: EffectivePolicy,
                       stored: tuple[str, bytes] | None, intent: tx.OpenIntent | None = None) -> Outcome | None:
        session = conn.session
        if stored is None and intent is not None:
            collected = await self._collect(conn, trace, name, intent)
            if isinstance(collected, Outcome):
                return collected
            stored = collected
        if stored is not None and session.may(Capability.RESUME):
            serial, der = stored
            trace.redelivering(serial)
            self.stats.delivered_without_ca += 1
            return await self._deliver(conn, trace, name, serial, der, redelivered=True)
        public_key = await self._key_gen(conn, trace, policy)
        if isinstance(public_key, Outcome):
            return public_key
        if stored is not None:  # issued for a key the phone no longer has: never delivered now
            await self._tx.run(tx.lsc_discarded, name, stored[0], "a new key arrived", actor=self.actor)
            trace.lsc_discarded(stored[0], "a new key arrived")
        issued = await self._issue(conn, trace, name, policy, public_key)
        if isinstance(issued, Outcome):
            return issued
        trace.ca_certificate_received()
        serial = await self._tx.run(tx.lsc_issued, name, issued.der, issued.cert, actor=self.actor,
                                    intent_id=conn.intent_id)
        self.stats.enrolled += 1
        return await self._deliver(conn, trace, name, serial, issued.der)

    async def _collect(self, conn: _Connection, trace: SessionTrace, name: str,
                       intent: tx.OpenIntent) -> tuple[str, bytes] | Outcome | None:
        """An earlier session sent a request and never recorded its answer (it
        crashed, or the RA or CA did).  Its certificate, when the CA issued one, is collected
        instead of a second one: read from our CA's request table when CAPF may read it (nothing
        there: a new enrollment), else by sending the same request again to a phone that resumes
        (the RA hands back what the CA issued for it after its client had gone; a phone that no
        longer holds that key refuses it, and its next session makes a new one).  Returns (serial, DER) to deliver, an outcome, or None (a new key then);
        a certificate a phone that does not resume can no longer take is recorded for revocation."""
        resumes = conn.session.may(Capability.RESUME)
        trace.debug(f"an earlier enrollment (request {intent.request_id}) was never recorded: collecting it")
        der = None
        if self.ca_lookup is not None:
            der = await asyncio.to_thread(find_issued, self.ca_lookup, intent.request_der, intent.key,
                                          intent.created_at)
        if der is not None:
            cert = pki.load_certificate(der)
            if resumes:
                try:
                    await self.enroller.check_lsc(cert, [], pki.parse_csr(intent.request_der, verify=False))
                except CAUnavailable as exc:
                    return decide.ca_unavailable(exc.est_code, exc.message, retry_delay=self.cfg.retry_delay,
                                                 retry_after=exc.retry_after)
                except CARejected as exc:
                    await self._tx.run(tx.intent_orphaned, name, intent.id, der, cert, exc.message, actor=self.actor)
                    return None
                serial = await self._tx.run(tx.lsc_issued, name, der, cert, actor=self.actor, intent_id=intent.id,
                                            intent_state=intents.ADOPTED)
                trace.debug(f"the CA had issued it: serial {serial}, delivered instead of a new enrollment")
                return serial, der
            await self._tx.run(tx.intent_orphaned, name, intent.id, der, cert,
                               "issued for an earlier session's key, which a phone that does not resume no longer "
                               "holds", actor=self.actor)
            return None
        if self.ca_lookup is not None:  # the CA issued nothing for it: a new enrollment
            await self._tx.run(tx.intent_resolved, name, intent.id, intents.ABANDONED)
            return None
        if not resumes:  # a new key now; what the CA may have issued for the old one is left on record
            await self._tx.run(tx.intent_resolved, name, intent.id, intents.ABANDONED, actor=self.actor,
                               detail=f"request {intent.request_id} was never answered; if the CA issued it, "
                                      "revoke that certificate")
            return None
        issued = await self._enroll(conn, trace, name, self.enroller.resend(
            name, intent.request_der, intent.vouched, trace,
            self._before_send(conn, name, intent.key, intent.vouched, reuse=intent.id)), vouched=intent.vouched)
        if isinstance(issued, Outcome):
            return issued
        serial = await self._tx.run(tx.lsc_issued, name, issued.der, issued.cert, actor=self.actor,
                                    intent_id=conn.intent_id)
        self.stats.enrolled += 1
        return serial, issued.der

    def _before_send(self, conn: _Connection, name: str, key: str, vouched: bool,
                     reuse: int | None = None) -> BeforeSend:
        """What the enroller calls before a request leaves: its intent, committed."""
        async def record(request_der: bytes, request_id: str) -> None:
            conn.intent_id = await self._tx.run(tx.intent_sent, name, key=key, request_der=request_der,
                                                request_id=request_id, vouched=vouched, node=self.node_id,
                                                now=self.clock(), intent_id=reuse)
        return record

    async def _issue(self, conn: _Connection, trace: SessionTrace, name: str, policy: EffectivePolicy,
                     public_key: pki.PublicKey) -> IssuedLSC | Outcome:
        """The LSC for ``public_key``: from CAPF's own CA, or the online CA with the phone's own
        signature when it can sign, or with CAPF vouching for its key when it cannot."""
        if policy.issuer is Issuer.CAPF:
            return self._issue_locally(trace, name, public_key)
        key = intents.key_sha256(pki.public_key_der(public_key))
        if conn.session.may(Capability.SIGN):
            csr = await self._sign_request(conn, trace, name, public_key)
            if isinstance(csr, Outcome):
                return csr
            return await self._enroll(conn, trace, name, self.enroller.enroll_device(
                name, csr, trace, self._before_send(conn, name, key, False)))
        return await self._enroll(conn, trace, name, self.enroller.enroll_vouched(
            name, public_key, trace, self._before_send(conn, name, key, True)), vouched=True)

    def _issue_locally(self, trace: SessionTrace, name: str, public_key: pki.PublicKey) -> IssuedLSC | Outcome:
        if self.local_ca is None:
            return decide.ca_rejected("CAPF_CA", "the profile's issuer is 'capf' but CAPF has no CA of its own "
                                      "(onlineca capf ca init)")
        trace.signing_locally(pki.name_to_slash(self.local_ca.cert.subject))
        cert = self.local_ca.issue_lsc(name, public_key, validity_days=self.cfg.lsc_validity_days)
        der = pki.cert_der(cert)
        self.enroller.keep_copies(name, der)
        return IssuedLSC(der, cert)

    async def _key_gen(self, conn: _Connection, trace: SessionTrace,
                       policy: EffectivePolicy) -> pki.PublicKey | Outcome:
        session, op = conn.session, policy.operation
        assert session.version is not None
        ec_ok = session.may(Capability.EC)
        candidates = decide.key_candidates(policy.key_order, policy.rsa_key_size, policy.ec_key_size,
                                           session.version, ec_announced=ec_ok)
        if not candidates:
            return decide.no_key_for_version(policy, session.version, ec_announced=ec_ok)
        # Asking again (EC then RSA, or the same again) is an extension; a public client gets one try.
        max_attempts = self.cfg.max_keygen_attempts if session.may(Capability.RESUME) else 1
        index, attempts = 0, 0
        try:
            async with asyncio.timeout(self.cfg.max_keygen_seconds):
                while True:
                    asked = candidates[index]
                    session.request_key_gen(*asked)
                    attempts += 1
                    trace.keygen_request(asked, attempts, max_attempts)
                    await conn.flush()
                    resp = await conn.expect(KeyGenResponse)
                    if resp.ok and resp.public_key is not None:
                        break
                    trace.keygen_refused(asked, resp.reason, resp.reason_info)
                    following = decide.next_key_request(index, attempts, candidates, max_attempts)
                    if following is None:
                        return decide.keygen_failed(op, attempts)
                    index = following
        except (TimeoutError, PhoneSilent):
            return decide.keygen_timeout(op, self.cfg.max_keygen_seconds)
        spki = resp.public_key
        try:  # the decoder parsed it already; a value made another way is parsed here
            public_key: pki.PublicKey = spki.key if isinstance(spki, PublicKeyDER) else pki.load_public_key(spki)
        except ParseError as exc:
            return decide.key_unusable(op, exc.message)
        trace.public_key_received(len(spki))
        refused = decide.check_returned_key(policy, asked, pki.key_spec(public_key))
        return refused if refused is not None else public_key

    async def _sign_request(self, conn: _Connection, trace: SessionTrace, name: str,
                            public_key: pki.PublicKey) -> x509.CertificateSigningRequest | Outcome:
        info = tbs.csr_info_der(f"CN={name}", public_key)
        conn.session.request_signature(info, "sha256")
        trace.sign_request()
        await conn.flush()
        resp = await conn.expect(SignCertResponse)
        if resp.reason != Reason.OK or resp.signature is None:
            return decide.sign_refused(_answer(resp.reason, None))
        try:
            return tbs.assemble_csr(info, resp.signature, public_key, "sha256")
        except (ParseError, PKIError) as exc:
            return decide.signature_invalid(exc.message)

    async def _enroll(self, conn: _Connection, trace: SessionTrace, name: str,
                      enrollment: Coroutine[Any, Any, IssuedLSC], *, vouched: bool = False) -> IssuedLSC | Outcome:
        """Enroll at the RA.  A phone that takes keepalives hears REQUEST_IN_PROGRESS while the RA
        works, and the enrollment finishes (its certificate stored) even if the phone goes away
        meanwhile; one that does not (a public client) gets its certificate within
        ``public_enroll_timeout`` or a decline, and a late certificate is not kept."""
        session = conn.session
        task = asyncio.create_task(enrollment)
        phone_gone: str | None = None
        if not session.may(Capability.KEEPALIVE):
            try:
                await asyncio.wait_for(asyncio.shield(task), self.cfg.public_enroll_timeout)
            except TimeoutError:
                task.cancel()
                await self._intent_ended(name, conn, intents.UNANSWERED)
                return decide.enrollment_too_slow(self.cfg.public_enroll_timeout, retry_delay=self.cfg.retry_delay)
            except (CAUnavailable, CARejected):
                pass  # task.result() below says which
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
            issued = task.result()
        except CAUnavailable as exc:
            # Unless it never left, the CA may have issued it: the next session collects it.
            await self._intent_ended(name, conn, intents.FAILED if exc.est_code in NOT_SENT_CODES
                                     else intents.UNANSWERED)
            return decide.ca_unavailable(exc.est_code, exc.message, retry_delay=self.cfg.retry_delay,
                                         retry_after=exc.retry_after)
        except CARejected as exc:
            await self._intent_ended(name, conn, intents.FAILED)
            return decide.ca_rejected(exc.est_code, exc.message, vouched=vouched)
        if phone_gone:
            await self._tx.run(tx.lsc_issued, name, issued.der, issued.cert, actor=self.actor,
                               intent_id=conn.intent_id)
            self.stats.enrolled += 1
            trace.lsc_kept_for_next_session()
            raise PhoneGone(phone_gone)
        return issued

    async def _intent_ended(self, name: str, conn: _Connection, state: str) -> None:
        if conn.intent_id is not None:
            await self._tx.run(tx.intent_resolved, name, conn.intent_id, state)

    async def _deliver(self, conn: _Connection, trace: SessionTrace, name: str, serial: str,
                       der: bytes, *, redelivered: bool = False) -> Outcome | None:
        resp = await conn.ask(lambda: conn.session.store_certificate(der), "STORE_CERT_REQ", StoreCertResponse)
        if resp.reason != Reason.OK:
            answer = _answer(resp.reason, resp.reason_info)
            if redelivered:  # the phone no longer holds that key: a new one next session, not this LSC again
                await self._tx.run(tx.lsc_discarded, name, serial, f"the phone refused it ({answer})",
                                   actor=self.actor)
                trace.lsc_discarded(serial, "the phone refused it")
            return decide.phone_refused(Operation.UPGRADE, answer)
        trace.csr_removed(await self.enroller.remove_csr(name))
        await self._tx.run(tx.lsc_installed, name, serial, node_id=self.node_id, owner=conn.owner)
        conn.released = True
        self._succeeded(trace, name, Operation.UPGRADE)
        return None

    async def _delete(self, conn: _Connection, trace: SessionTrace, name: str) -> Outcome | None:
        resp = await conn.ask(conn.session.request_delete, "DELETE_CERT_REQ", DeleteCertResponse)
        if resp.reason != Reason.OK:
            return decide.phone_refused(Operation.DELETE, _answer(resp.reason, resp.reason_info))
        await self._tx.run(inv.mark_lsc_removed, name, actor=self.actor)
        self._succeeded(trace, name, Operation.DELETE)
        return None

    async def _troubleshoot(self, conn: _Connection, trace: SessionTrace, name: str) -> Outcome | None:
        resp = await conn.ask(conn.session.request_fetch, "FETCH_CERT_REQ", FetchCertResponse)
        if resp.reason != Reason.OK:
            return decide.phone_refused(Operation.TROUBLESHOOT, _answer(resp.reason, resp.reason_info))
        named = []
        for i, value in enumerate(resp.certificates):
            kind = "MIC" if value.cert_type == CertificateType.MIC else "LSC"
            named.append((f"{kind.lower()}-{i}.der", value.der))
            try:
                trace.fetched_certificate(kind, value.certificate())
            except ParseError as exc:
                trace.fetched_unparseable(kind, exc.message)
        folder = await self.enroller.write_troubleshoot(name, named)
        await self._tx.run(tx.troubleshoot_done, name, f"{len(resp.certificates)} certificate(s) in {folder}",
                           actor=self.actor)
        self._succeeded(trace, name, Operation.TROUBLESHOOT)
        return None

    def _succeeded(self, trace: SessionTrace, name: str, op: Operation) -> None:
        st = success_status(op)
        self.stats.by_status[st.ident] = self.stats.by_status.get(st.ident, 0) + 1
        trace.operation_succeeded(name, op)


__all__ = ["REASONS", "CAPFServer", "ServerStats"]
