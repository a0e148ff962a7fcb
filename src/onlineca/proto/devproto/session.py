"""The explicit state machine of one device-protocol session, for the CAPF side and the phone side.

Both sides track the same conversation: ``TRANSITIONS`` maps (state, sender, command) to the next
state, and ``ANY_STATE_RULES`` adds the few moves allowed from every open state (END_SESSION,
ABORT_REQUEST, STATUS_ENQUIRY), in the manner of h11's ``_state.py``.  ``TURN`` says whose move
it is.  A session takes bytes (``receive_data``) and gives back typed messages; the application
answers through methods (``CAPFSession.request_key_gen``, ``PhoneSession.key_gen_response`` ...)
that queue bytes for ``data_to_send``.  Anything the protocol does not allow raises
``ProtocolError`` with a ``DEVPROTO_*`` code and leaves the state as it was, so the adapter can
still ``end(Reason.PROTOCOL_ERROR)`` and close.  Two replies are automatic: an ABORT_REQUEST is
answered with ABORT_RESPONSE (and the session closes), and a phone answers STATUS_ENQUIRY with
STATUS_RESPONSE.  The session never does I/O, reads no clock (timeouts and keepalive intervals are
the adapter's), verifies no signature and makes no policy decision: it says what was received and
refuses what is out of order.

CAPF side, one install::

    s = CAPFSession()
    s.start()                                # AUTH_REQUEST with a fresh nonce
    send(s.data_to_send())
    for msg in s.receive_data(read()):       # AuthResponse(...): check credentials (s.auth_payload)
        ...
    s.request_key_gen("ec", 256)             # ... KeyGenResponse -> build tbs.csr_info_der
    s.request_signature(info_der, "sha256")  # ... SignCertResponse -> tbs.assemble_csr, enroll
    s.store_certificate(cert_der)            # ... StoreCertResponse
    s.end(Reason.OK)
"""

from __future__ import annotations

import dataclasses
import enum
import secrets

from onlineca.errors import ProtocolError
from onlineca.proto.devproto.codec import (
    DEFAULT_LIMITS,
    PEER_HINT,
    Frame,
    FrameDecoder,
    Limits,
    encode_frame,
    protocol_error,
)
from onlineca.proto.devproto.messages import (
    ALL_CAPABILITIES,
    NO_CAPABILITIES,
    SERVER_VERSION,
    SUPPORTED_VERSIONS,
    AbortRequest,
    AbortResponse,
    AuthRequest,
    AuthResponse,
    AuthType,
    Capability,
    CertificateType,
    CertificateValue,
    Command,
    CString,
    DeleteCertRequest,
    DeleteCertResponse,
    DigestType,
    ECCurve,
    EndSession,
    FetchCertRequest,
    FetchCertResponse,
    KeyGenRequest,
    KeyGenResponse,
    KeyType,
    Message,
    Reason,
    RequestInProgress,
    RetryLater,
    SignCertRequest,
    SignCertResponse,
    StatusEnquiry,
    StatusResponse,
    StoreCertRequest,
    StoreCertResponse,
    auth_signed_payload,
    capabilities_needed,
    check_version,
    decode_message,
    encode_message,
    public_client_refuses,
    public_reason,
)

E_STATE = "DEVPROTO_INVALID_TRANSITION"
E_SESSION_ID = "DEVPROTO_SESSION_ID"
E_CLOSED = "DEVPROTO_SESSION_CLOSED"
E_TOO_MANY = "DEVPROTO_TOO_MANY_REQUESTS"
E_VERSION = "DEVPROTO_VERSION"
E_NOT_ANNOUNCED = "DEVPROTO_NOT_ANNOUNCED"
E_NOT_PUBLIC = "DEVPROTO_NOT_PUBLIC"


class Role(enum.Enum):
    CAPF = "CAPF"
    PHONE = "phone"

    @property
    def peer(self) -> Role:
        return Role.PHONE if self is Role.CAPF else Role.CAPF


class State(enum.Enum):
    START = "START"                            # connection open, nothing said yet
    AUTH_REQUESTED = "AUTH_REQUESTED"          # CAPF asked the phone to authenticate
    AUTH_RECEIVED = "AUTH_RECEIVED"            # CAPF checks the credentials and picks the operation
    KEY_GEN_REQUESTED = "KEY_GEN_REQUESTED"    # the phone makes a key (may take minutes)
    KEY_RECEIVED = "KEY_RECEIVED"              # CAPF has the public key (or the phone's failure)
    SIGN_REQUESTED = "SIGN_REQUESTED"          # the phone signs the request info
    SIGNATURE_RECEIVED = "SIGNATURE_RECEIVED"  # CAPF assembles the CSR and enrolls at the RA
    STORE_REQUESTED = "STORE_REQUESTED"        # the phone stores the new LSC
    STORE_CONFIRMED = "STORE_CONFIRMED"        # CAPF records the outcome, then ends
    DELETE_REQUESTED = "DELETE_REQUESTED"      # the phone deletes its LSC
    FETCH_REQUESTED = "FETCH_REQUESTED"        # the phone sends its certificates (troubleshoot)
    OPERATION_DONE = "OPERATION_DONE"          # CAPF records the delete/fetch outcome, then ends
    ABORTING = "ABORTING"                      # one side asked to abort; the other must confirm
    CLOSED = "CLOSED"                          # nothing more may be sent or received


S, P, C = State, Role, Command

# (state, sender, command) -> next state.  Moves allowed in every open state are in ANY_STATE_RULES.
TRANSITIONS: dict[tuple[State, Role, Command], State] = {
    (S.START, P.CAPF, C.AUTH_REQUEST): S.AUTH_REQUESTED,
    (S.AUTH_REQUESTED, P.PHONE, C.AUTH_RESPONSE): S.AUTH_RECEIVED,
    (S.AUTH_RECEIVED, P.CAPF, C.AUTH_REQUEST): S.AUTH_REQUESTED,      # ask once more, for a given AUTH_TYPE
    (S.AUTH_RECEIVED, P.CAPF, C.KEY_GEN_REQUEST): S.KEY_GEN_REQUESTED,
    (S.AUTH_RECEIVED, P.CAPF, C.STORE_CERT_REQUEST): S.STORE_REQUESTED,  # deliver an LSC issued earlier
    (S.AUTH_RECEIVED, P.CAPF, C.DELETE_CERT_REQUEST): S.DELETE_REQUESTED,
    (S.AUTH_RECEIVED, P.CAPF, C.FETCH_CERT_REQUEST): S.FETCH_REQUESTED,
    (S.AUTH_RECEIVED, P.CAPF, C.REQUEST_IN_PROGRESS): S.AUTH_RECEIVED,  # CAPF keepalive
    (S.AUTH_RECEIVED, P.CAPF, C.RETRY_LATER): S.CLOSED,
    (S.KEY_GEN_REQUESTED, P.PHONE, C.REQUEST_IN_PROGRESS): S.KEY_GEN_REQUESTED,  # phone keepalive
    (S.KEY_GEN_REQUESTED, P.PHONE, C.KEY_GEN_RESPONSE): S.KEY_RECEIVED,
    (S.KEY_RECEIVED, P.CAPF, C.KEY_GEN_REQUEST): S.KEY_GEN_REQUESTED,  # e.g. EC failed: RSA backup
    (S.KEY_RECEIVED, P.CAPF, C.SIGN_CERT_REQUEST): S.SIGN_REQUESTED,
    (S.KEY_RECEIVED, P.CAPF, C.STORE_CERT_REQUEST): S.STORE_REQUESTED,  # the public flow: no signing step
    (S.KEY_RECEIVED, P.CAPF, C.REQUEST_IN_PROGRESS): S.KEY_RECEIVED,
    (S.KEY_RECEIVED, P.CAPF, C.RETRY_LATER): S.CLOSED,
    (S.SIGN_REQUESTED, P.PHONE, C.REQUEST_IN_PROGRESS): S.SIGN_REQUESTED,
    (S.SIGN_REQUESTED, P.PHONE, C.SIGN_CERT_RESPONSE): S.SIGNATURE_RECEIVED,
    (S.SIGNATURE_RECEIVED, P.CAPF, C.REQUEST_IN_PROGRESS): S.SIGNATURE_RECEIVED,  # while the RA/CA works
    (S.SIGNATURE_RECEIVED, P.CAPF, C.STORE_CERT_REQUEST): S.STORE_REQUESTED,
    (S.SIGNATURE_RECEIVED, P.CAPF, C.RETRY_LATER): S.CLOSED,
    (S.STORE_REQUESTED, P.PHONE, C.STORE_CERT_RESPONSE): S.STORE_CONFIRMED,
    (S.DELETE_REQUESTED, P.PHONE, C.DELETE_CERT_RESPONSE): S.OPERATION_DONE,
    (S.FETCH_REQUESTED, P.PHONE, C.FETCH_CERT_RESPONSE): S.OPERATION_DONE,
}

# Whose move it is in each state (ABORTING: the side that did not ask; CLOSED: nobody).
TURN: dict[State, Role | None] = {
    S.START: P.CAPF, S.AUTH_REQUESTED: P.PHONE, S.AUTH_RECEIVED: P.CAPF,
    S.KEY_GEN_REQUESTED: P.PHONE, S.KEY_RECEIVED: P.CAPF, S.SIGN_REQUESTED: P.PHONE,
    S.SIGNATURE_RECEIVED: P.CAPF, S.STORE_REQUESTED: P.PHONE, S.STORE_CONFIRMED: P.CAPF,
    S.DELETE_REQUESTED: P.PHONE, S.FETCH_REQUESTED: P.PHONE, S.OPERATION_DONE: P.CAPF,
    S.ABORTING: None, S.CLOSED: None,
}

# Moves allowed from every state but CLOSED (and, for the last two, only where TURN is the phone's).
ANY_STATE_RULES = (
    "CAPF END_SESSION -> CLOSED (from any open state, ABORTING included)",
    "either side ABORT_REQUEST -> ABORTING; the other side's ABORT_RESPONSE (sent automatically) or "
    "crossing ABORT_REQUEST -> CLOSED; other messages of the other side that crossed the abort are ignored",
    "CAPF STATUS_ENQUIRY while it is the phone's turn and none is outstanding -> same state; the "
    "phone's STATUS_RESPONSE (sent automatically, in any open state) -> same state",
    "anything received after CLOSED is ignored; anything sent after CLOSED is an error",
)

_OWN_BUG_HINT = ("This side tried a message the protocol does not allow here: a bug in the CAPF server "
                 "or the phone simulator, not in the peer.")

PHONE_TURN_STATES = frozenset(s for s, r in TURN.items() if r is P.PHONE)


def _random_session_id() -> int:
    return secrets.randbelow(0xFFFFFFFF) + 1  # never 0: 0 marks "no session yet" in logs


class _Session:
    """What both sides share: the conversation state, framing, the session id and the version."""

    role: Role

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.state = State.START
        self.session_id: int | None = None
        self.version: int | None = None           # negotiated on AUTH_RESPONSE
        self.device_name: str | None = None
        self.nonce: bytes | None = None
        self.end_reason: Reason | int | None = None  # END_SESSION / RETRY_LATER / abort reason
        self.retry_delay: int | None = None
        self.aborted_by: Role | None = None
        self.status_enquiry_pending = False
        self._decoder = FrameDecoder(limits)
        self._out = bytearray()

    # ------------------------------------------------------------------ the adapter's interface

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def our_turn(self) -> bool:
        """True when the application must send the next message (the peer waits for us)."""
        return TURN[self.state] is self.role

    def data_to_send(self) -> bytes:
        """Bytes queued by ``send`` and the automatic replies; empties the queue."""
        out, self._out = bytes(self._out), bytearray()
        return out

    def receive_data(self, data: bytes) -> list[Message]:
        """Feed bytes read from the peer; the complete messages they finish, in order.

        On ProtocolError the offending message left the state unchanged; the caller should
        ``end(Reason.PROTOCOL_ERROR)`` (CAPF) or close (phone).  Bytes after the session closed are
        ignored."""
        if self.closed:
            return []  # whatever the peer sent before it saw END_SESSION/RETRY_LATER is moot
        events: list[Message] = []
        for frame in self._decoder.feed(data):
            self._check_frame(frame)
            msg = decode_message(frame)
            self._receive(msg)
            events.append(msg)
        return events

    def send(self, msg: Message) -> None:
        """Queue ``msg`` (with this session's id) if the state machine allows it here."""
        if self.session_id is not None:
            msg = dataclasses.replace(msg, session_id=self.session_id)
        try:
            self._check_version(msg)
            self._check_send(msg)
            self._apply(self.role, msg)
        except ProtocolError as exc:
            if exc.hint == PEER_HINT:  # our own move: the peer is not to blame
                exc.hint = _OWN_BUG_HINT
            raise
        self._out.extend(encode_frame(encode_message(msg)))

    # ------------------------------------------------------------------ shared mechanics

    def _receive(self, msg: Message) -> None:
        self._check_session_id(msg)
        self._check_version(msg)
        self._before_receive(msg)
        if self._apply(self.role.peer, msg):
            self._after_receive(msg)

    def _check_session_id(self, msg: Message) -> None:
        if self.session_id is not None and msg.session_id != self.session_id:
            raise protocol_error(f"{msg.COMMAND.name} for session {msg.session_id:#010x} in session "
                                 f"{self.session_id:#010x}", E_SESSION_ID)

    def _check_version(self, msg: Message) -> None:
        if self.version is not None:
            check_version(msg, self.version)

    def _check_frame(self, frame: Frame) -> None:
        """Side-specific checks of a frame before it is decoded (overridden)."""

    def _check_send(self, msg: Message) -> None:
        """Side-specific checks of a message this side sends, before the state moves (overridden)."""

    def _before_receive(self, msg: Message) -> None:
        """Side-specific checks before the state moves (overridden)."""

    def _after_receive(self, msg: Message) -> None:
        """Side-specific bookkeeping after the state moved (overridden)."""

    def next_state(self, sender: Role, command: Command) -> State:
        """Where ``command`` from ``sender`` leads from here; ProtocolError if it is not allowed."""
        state = self.state
        if state is State.CLOSED:
            raise protocol_error(f"{command.name} from {sender.value} after the session closed", E_CLOSED)
        if command is Command.END_SESSION and sender is Role.CAPF:
            return State.CLOSED
        if state is State.ABORTING:
            if sender is not self.aborted_by:
                # The abort crossed messages already on the wire: those are ignored; the peer's
                # ABORT_RESPONSE (or its own ABORT_REQUEST, sent at the same time) closes.
                return State.CLOSED if command in (Command.ABORT_RESPONSE, Command.ABORT_REQUEST) else state
            raise protocol_error(f"{command.name} from {sender.value} while waiting for ABORT_RESPONSE", E_STATE)
        if command is Command.ABORT_REQUEST:
            return State.ABORTING
        # CAPF asks only while it waits for the phone; the phone answers in any state, because
        # its own next message may have crossed the enquiry on the wire.
        if (command is Command.STATUS_ENQUIRY and sender is Role.CAPF and not self.status_enquiry_pending
                and (state in PHONE_TURN_STATES or self.role is Role.PHONE)):
            return state
        if command is Command.STATUS_RESPONSE and sender is Role.PHONE and self.status_enquiry_pending:
            return state
        nxt = TRANSITIONS.get((state, sender, command))
        if nxt is None:
            raise protocol_error(f"{command.name} from {sender.value} is not allowed in state {state.value}",
                                 E_STATE)
        return nxt

    def _apply(self, sender: Role, msg: Message) -> bool:
        """Move the state for ``msg``; False when it was a crossed message ignored while aborting."""
        nxt = self.next_state(sender, msg.COMMAND)
        cmd = msg.COMMAND
        if self.state is State.ABORTING and cmd not in (Command.ABORT_RESPONSE, Command.ABORT_REQUEST,
                                                        Command.END_SESSION):
            return False
        self._count(sender, msg)
        if cmd is Command.STATUS_ENQUIRY:
            self.status_enquiry_pending = True
        elif cmd is Command.STATUS_RESPONSE:
            self.status_enquiry_pending = False
        elif cmd is Command.ABORT_REQUEST and self.state is not State.ABORTING:
            self.aborted_by = sender
            self.end_reason = msg.reason if msg.reason is not None else Reason.ABORTED  # type: ignore[attr-defined]
        elif cmd is Command.END_SESSION:
            self.end_reason = msg.reason  # type: ignore[attr-defined]
        elif cmd is Command.RETRY_LATER:
            self.end_reason = msg.reason if msg.reason is not None else Reason.CA_UNAVAILABLE  # type: ignore[attr-defined]
            self.retry_delay = msg.retry_delay  # type: ignore[attr-defined]
        self.state = nxt
        return True

    def _count(self, sender: Role, msg: Message) -> None:
        """Per-session request limits (overridden by CAPF's side)."""

    def _reply_abort(self) -> None:
        if self.state is State.ABORTING:  # not when our own abort crossed theirs (already closed)
            self.send(AbortResponse(reason=self._abort_reason()))

    def _abort_reason(self) -> Reason | None:
        return Reason.ABORTED

    # ------------------------------------------------------------------ both sides may abort

    def abort(self, reason: Reason | int = Reason.ABORTED, info: str | None = None) -> None:
        self.send(AbortRequest(reason=reason, reason_info=info))


class CAPFSession(_Session):
    """The CAPF (server) side of one session on one TLS connection.

    CAPF's first message is exactly AUTH_REQUEST{VERSION} (public clients reject anything more);
    the phone's AUTH_RESPONSE says which extensions it understands (``announced``, from its
    CAPABILITIES element; none for a public client).  ``send`` refuses any message the phone has
    not announced it understands (``DEVPROTO_NOT_ANNOUNCED``: a bug of ours, never sent), so a
    public client gets exactly the public flow; ``decline`` says a reason in words the phone knows.
    ``max_auth_requests`` bounds AUTH_REQUESTs per session (the first plus one challenge);
    ``max_key_gen_requests`` bounds KEY_GEN_REQUESTs (e.g. EC, then RSA backup).
    ``session_id`` and ``nonce`` are random unless given (tests and vectors give them).
    """

    role = Role.CAPF

    def __init__(self, *, session_id: int | None = None, version: int = SERVER_VERSION,
                 limits: Limits = DEFAULT_LIMITS, max_auth_requests: int = 2,
                 max_key_gen_requests: int = 3) -> None:
        super().__init__(limits=limits)
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(f"version must be one of {SUPPORTED_VERSIONS}")
        self.session_id = session_id if session_id is not None else _random_session_id()
        self.server_version = version
        self.max_auth_requests = max_auth_requests
        self.max_key_gen_requests = max_key_gen_requests
        self.auth_requests = 0
        self.key_gen_requests = 0
        self.announced = NO_CAPABILITIES          # from the phone's first AUTH_RESPONSE
        self.auth_response: AuthResponse | None = None
        self.public_key: bytes | None = None        # SubjectPublicKeyInfo DER from KEY_GEN_RESPONSE
        self.sign_request: SignCertRequest | None = None
        self.signature: bytes | None = None

    # ------------------------------------------------------------------ what the phone understands

    @property
    def public(self) -> bool:
        """True for a phone that announced no extension: it gets exactly the public flow."""
        return not self.announced

    def may(self, capability: Capability) -> bool:
        """Whether the phone announced ``capability`` (all of its bits)."""
        return capability & self.announced == capability

    def needs(self, msg: Message) -> Capability:
        """What the phone must have announced for ``msg`` here: its command and elements
        (``messages.capabilities_needed``), and where it is sent from."""
        need = capabilities_needed(msg)
        if isinstance(msg, AuthRequest) and self.auth_requests >= 1:
            need |= Capability.CHALLENGE
        elif (isinstance(msg, StoreCertRequest) and self.state is State.AUTH_RECEIVED) or (isinstance(msg, KeyGenRequest) and self.key_gen_requests >= 1):
            need |= Capability.RESUME
        return need

    # ------------------------------------------------------------------ CAPF moves

    def start(self) -> None:
        """The hello: AUTH_REQUEST with VERSION only, exactly what every client accepts."""
        self.send(AuthRequest(version=self.server_version))

    def challenge(self, auth_type: AuthType | None = None, nonce: bytes | None = None) -> None:
        """AUTH_REQUEST again (an extension: CHALLENGE) with a fresh AUTH_NONCE and, when given,
        the AUTH_TYPE CAPF wants; a phone answers with that credential, signed over
        ``auth_payload`` when it is a certificate."""
        self.nonce = nonce if nonce is not None else secrets.token_bytes(32)
        self.send(AuthRequest(version=self.server_version, auth_type=auth_type, nonce=self.nonce))

    def auth_payload(self) -> bytes:
        """The bytes the phone must have signed in its AUTH_RESPONSE (this session, nonce, device)."""
        if self.nonce is None or self.device_name is None or self.session_id is None:
            raise protocol_error("no challenge answered yet", E_STATE)
        return auth_signed_payload(self.session_id, self.nonce, self.device_name)

    def request_key_gen(self, key_type: str, size: int) -> None:
        """KEY_GEN_REQUEST for ("rsa", bits) or ("ec", 256|384|521); RSA always with KEY_TYPE 0
        (one public client requires it, every client accepts it)."""
        if key_type == "ec":
            try:
                curve = ECCurve.from_bits(int(size))
            except KeyError:
                raise protocol_error(f"EC curve of {size} bits does not exist in the protocol", E_VERSION) from None
            msg = KeyGenRequest(key_type=KeyType.EC, ec_curve=curve)
        elif key_type == "rsa":
            msg = KeyGenRequest(key_type=KeyType.RSA, key_size=int(size))
        else:
            raise ValueError(f"key type must be 'rsa' or 'ec', not {key_type!r}")
        self.send(msg)

    def request_signature(self, tbs_data: bytes, digest: str = "sha256") -> None:
        """SIGN_CERT_REQUEST: the phone signs ``tbs_data`` (version 2: always SHA-256)."""
        digest_type = DigestType.from_hash_name(digest)
        if self.version == 2 and digest_type is not DigestType.SHA256:
            raise protocol_error("version 2 phones sign with SHA-256 only", E_VERSION)
        self.send(SignCertRequest(tbs_data=tbs_data, digest_type=None if self.version == 2 else digest_type))

    def store_certificate(self, der: bytes, cert_type: CertificateType = CertificateType.LSC) -> None:
        """STORE_CERT_REQUEST, the certificate in the nested form every client reads."""
        self.send(StoreCertRequest(certificate_type=cert_type, certificate=CertificateValue(cert_type, der)))

    def request_delete(self, cert_type: CertificateType | None = None) -> None:
        """DELETE_CERT_REQUEST, with no element (the public form) unless a type is given."""
        self.send(DeleteCertRequest(certificate_type=cert_type))

    def request_fetch(self, cert_type: CertificateType | None = None) -> None:
        self.send(FetchCertRequest(certificate_type=cert_type))

    def keepalive(self) -> None:
        """REQUEST_IN_PROGRESS while CAPF works (an extension: KEEPALIVE)."""
        self.send(RequestInProgress())

    def status_enquiry(self) -> None:
        self.send(StatusEnquiry())

    def retry_later(self, seconds: int, reason: Reason | int = Reason.CA_UNAVAILABLE, info: str | None = None) -> None:
        """RETRY_LATER (an extension): the phone comes back after ``seconds``.  Ends the session."""
        said = reason if self.may(Capability.REASONS) else public_reason(reason)
        self.send(RetryLater(retry_delay=int(seconds), reason=said,
                             reason_info=info if self.may(Capability.REASONS) else None))

    def end(self, reason: Reason | int = Reason.OK, info: str | None = None) -> None:
        """END_SESSION, allowed from every open state (also after a ProtocolError)."""
        self.send(EndSession(reason=reason, reason_info=info))

    def decline(self, reason: Reason | int, info: str | None = None) -> None:
        """END_SESSION with ``reason`` as this phone can hear it: a phone that announced REASONS
        gets ``reason`` and ``info``; any other gets the public reason (1, 7 or 9) alone."""
        if self.may(Capability.REASONS):
            self.end(reason, info)
        else:
            self.end(public_reason(reason))

    # ------------------------------------------------------------------ bookkeeping

    def _check_send(self, msg: Message) -> None:
        if self.state is State.CLOSED:
            return  # the state machine says so, with its own code
        self.next_state(self.role, msg.COMMAND)  # out of order is a transition error first
        missing = self.needs(msg) & ~self.announced
        if missing:
            raise protocol_error(f"{msg.COMMAND.name} needs {missing!r}, which the phone did not announce",
                                 E_NOT_ANNOUNCED, _OWN_BUG_HINT)

    def send(self, msg: Message) -> None:
        super().send(msg)
        if isinstance(msg, SignCertRequest):
            self.sign_request = msg

    def _abort_reason(self) -> Reason | None:
        return Reason.ABORTED if self.may(Capability.REASONS) else None

    def _count(self, sender: Role, msg: Message) -> None:
        if sender is not Role.CAPF:
            return
        if isinstance(msg, AuthRequest):
            if self.auth_requests >= self.max_auth_requests:
                raise protocol_error(f"more than {self.max_auth_requests} AUTH_REQUESTs in one session", E_TOO_MANY)
            self.auth_requests += 1
        elif isinstance(msg, KeyGenRequest):
            if self.key_gen_requests >= self.max_key_gen_requests:
                raise protocol_error(f"more than {self.max_key_gen_requests} KEY_GEN_REQUESTs in one session",
                                     E_TOO_MANY)
            self.key_gen_requests += 1

    def _before_receive(self, msg: Message) -> None:
        if isinstance(msg, AuthResponse):
            self.next_state(Role.PHONE, msg.COMMAND)  # out of order is a state error, not a version one
            if msg.version not in SUPPORTED_VERSIONS or msg.version > self.server_version:
                raise protocol_error(f"phone announces protocol version {msg.version}; this CAPF offered "
                                     f"{self.server_version} and speaks {SUPPORTED_VERSIONS}", E_VERSION,
                                     "End the session with REASON UNSUPPORTED; the phone needs other firmware.")
            check_version(msg, msg.version)

    def _after_receive(self, msg: Message) -> None:
        if isinstance(msg, AuthResponse):
            if self.auth_response is None:  # what the phone understands is said once, first
                self.announced = msg.announced
            self.version = msg.version
            self.device_name = msg.device_name
            self.auth_response = msg
        elif isinstance(msg, KeyGenResponse):
            self.public_key = msg.public_key
        elif isinstance(msg, SignCertResponse):
            self.signature = msg.signature
        elif isinstance(msg, AbortRequest):
            self._reply_abort()


class PhoneSession(_Session):
    """The phone side of one session: it opened the TLS connection and waits for AUTH_REQUEST.

    ``capabilities`` is what the phone announces in its AUTH_RESPONSE; an empty set makes a public
    client: it announces nothing, and, as the strictest public clients do, it refuses (ProtocolError
    ``DEVPROTO_NOT_PUBLIC``) any command, element, value or order outside the public flow
    (``messages.PUBLIC_CLIENT_KNOWS``).  Strings go out NUL-terminated, as real phones send them."""

    role = Role.PHONE

    def __init__(self, *, device_name: str, max_version: int = SERVER_VERSION,
                 limits: Limits = DEFAULT_LIMITS, capabilities: Capability = ALL_CAPABILITIES) -> None:
        super().__init__(limits=limits)
        if max_version not in SUPPORTED_VERSIONS:
            raise ValueError(f"max_version must be one of {SUPPORTED_VERSIONS}")
        self.device_name = device_name
        self.max_version = max_version
        self.capabilities = Capability(capabilities)
        self.auth_request: AuthRequest | None = None
        self.key_gen_request: KeyGenRequest | None = None
        self.sign_request: SignCertRequest | None = None

    # ------------------------------------------------------------------ phone moves

    def auth_payload(self) -> bytes:
        """What to sign with the LSC's or MIC's key for "By Existing Certificate"."""
        if self.nonce is None or self.session_id is None:
            raise protocol_error("AUTH_REQUEST without AUTH_NONCE: nothing to sign", E_STATE,
                                 "This CAPF cannot authenticate by certificate; use an auth string.")
        assert self.device_name is not None
        return auth_signed_payload(self.session_id, self.nonce, self.device_name)

    def auth_response(self, *, password: str | None = None, certificate: CertificateValue | None = None,
                      signature: bytes | None = None, digest: str = "sha256",
                      sudi_data: bytes | None = None) -> None:
        """AUTH_RESPONSE with the credential the phone's configuration names (none, an auth string,
        or its LSC/MIC and a signature over ``auth_payload()``)."""
        assert self.device_name is not None and self.version is not None
        v3 = self.version >= 3
        self.send(AuthResponse(
            version=self.version, device_name=CString(self.device_name),
            auth_password=CString(password) if password is not None else None,
            status=Reason.OK if self.public else None, certificate=certificate,
            signed_data=signature if signature is not None and not v3 else None,
            signed_data_sha2=signature if v3 else None,
            digest_type=DigestType.from_hash_name(digest) if v3 and signature is not None else None,
            sudi_data=sudi_data, capabilities=int(self.capabilities) if self.capabilities else None))

    @property
    def public(self) -> bool:
        """A public client: it announces no extension."""
        return not self.capabilities

    def in_progress(self) -> None:
        """REQUEST_IN_PROGRESS: still generating or signing; send at least every keepalive interval."""
        self.send(RequestInProgress())

    def key_gen_response(self, public_key_der: bytes) -> None:
        self.send(KeyGenResponse(public_key=public_key_der))

    def key_gen_failed(self, reason: Reason | int = Reason.KEY_GEN_FAILED, info: str | None = None) -> None:
        self.send(KeyGenResponse(reason=reason, reason_info=info))

    def sign_response(self, signature: bytes) -> None:
        if self.version == 2:
            self.send(SignCertResponse(signed_data=signature))
        else:
            self.send(SignCertResponse(signed_data_sha2=signature))

    def sign_failed(self, reason: Reason | int = Reason.SIGN_FAILED, info: str | None = None) -> None:
        self.send(SignCertResponse(reason=reason, reason_info=info))

    def store_response(self, reason: Reason | int = Reason.OK, info: str | None = None) -> None:
        self.send(StoreCertResponse(reason=reason, reason_info=info))

    def delete_response(self, reason: Reason | int = Reason.OK, info: str | None = None) -> None:
        self.send(DeleteCertResponse(reason=reason, reason_info=info))

    def fetch_response(self, certificates: tuple[CertificateValue, ...] | list[CertificateValue],
                       reason: Reason | int = Reason.OK) -> None:
        self.send(FetchCertResponse(reason=reason, certificates=tuple(certificates)))

    # ------------------------------------------------------------------ bookkeeping

    def _check_frame(self, frame: Frame) -> None:
        if self.public:
            why = public_client_refuses(frame, first=self.state is State.START,
                                        after_key=self.state is State.KEY_RECEIVED)
            if why is not None:
                raise protocol_error(f"a public client does not know {why}", E_NOT_PUBLIC,
                                     "CAPF sent this public client something outside the public flow: "
                                     "a CAPF bug (docs/device-protocol.md, 'Public flow and extensions').")

    def _check_session_id(self, msg: Message) -> None:
        if self.session_id is None and isinstance(msg, AuthRequest):
            return  # CAPF names the session in its first message
        super()._check_session_id(msg)

    def _before_receive(self, msg: Message) -> None:
        if isinstance(msg, AuthRequest):
            self.next_state(Role.CAPF, msg.COMMAND)
            if msg.version < min(SUPPORTED_VERSIONS):
                raise protocol_error(f"CAPF offers protocol version {msg.version}; this phone speaks "
                                     f"{SUPPORTED_VERSIONS}", E_VERSION)

    def _after_receive(self, msg: Message) -> None:
        if isinstance(msg, AuthRequest):
            self.session_id = msg.session_id
            self.version = min(msg.version, self.max_version)
            self.nonce = msg.nonce
            self.auth_request = msg
        elif isinstance(msg, KeyGenRequest):
            self.key_gen_request = msg
        elif isinstance(msg, SignCertRequest):
            self.sign_request = msg
        elif isinstance(msg, StatusEnquiry):
            self.send(StatusResponse(reason=Reason.OK, reason_info=self.state.value))
        elif isinstance(msg, AbortRequest):
            self._reply_abort()


__all__ = ["ANY_STATE_RULES", "TRANSITIONS", "TURN", "CAPFSession", "PhoneSession", "Role", "State"]
