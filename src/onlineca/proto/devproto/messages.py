"""The device protocol's messages as typed values: one frozen dataclass per command we send or
accept, the numbers of commands, elements, reasons, key types, curves, digests and certificate
types, and the exact bytes a phone signs to authenticate with an existing certificate.

``decode_message(frame)`` turns a ``codec.Frame`` into a message (or raises ``ProtocolError``);
``encode_message(msg)`` turns a message into a ``Frame``; ``to_bytes``/``from_bytes`` do both with
the wire bytes.  Each message class lists its elements in ``ELEMENTS`` (field, element, how often),
so the spec in docs/device-protocol.md and this module say the same thing.  Elements that a
command does not list, and element tags we do not know, are ignored (a newer phone may send more);
a listed element given twice, a missing required one, or a value of the wrong shape is an error.
Rules that depend on the negotiated version (2 or 3) live in ``check_version``; the order of
messages lives in ``session.py``.  This module must never do I/O, log, or verify signatures.

Example::

    msg = KeyGenRequest(session_id=0x1234, key_type=KeyType.EC, ec_curve=ECCurve.P256)
    wire = to_bytes(msg)
    assert from_bytes(wire) == msg
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from onlineca import pki
from onlineca.errors import OnlineCAError, ProtocolError
from onlineca.proto.devproto.codec import (
    DEFAULT_LIMITS,
    Element,
    Frame,
    Limits,
    decode_frame,
    encode_frame,
    protocol_error,
)

# Versions: CAPF sends 3; phones may announce 2 (see check_version for what differs).
VERSION_2 = 2
VERSION_3 = 3
SUPPORTED_VERSIONS = (VERSION_2, VERSION_3)
SERVER_VERSION = VERSION_3

E_BAD_ELEMENT = "DEVPROTO_BAD_ELEMENT"
E_MISSING_ELEMENT = "DEVPROTO_MISSING_ELEMENT"
E_DUPLICATE_ELEMENT = "DEVPROTO_DUPLICATE_ELEMENT"
E_UNSUPPORTED_COMMAND = "DEVPROTO_UNSUPPORTED_COMMAND"
E_VERSION = "DEVPROTO_VERSION"


class Command(enum.IntEnum):
    AUTH_REQUEST = 1
    AUTH_RESPONSE = 2
    KEY_GEN_REQUEST = 3
    KEY_GEN_RESPONSE = 4
    ENCRYPT_RESPONSE = 5
    ENCRYPT_REQUEST = 6
    DECRYPT_REQUEST = 7
    DECRYPT_RESPONSE = 8
    STORE_CERT_REQUEST = 9
    STORE_CERT_RESPONSE = 10
    FETCH_CERT_REQUEST = 11
    FETCH_CERT_RESPONSE = 12
    DELETE_CERT_REQUEST = 13
    DELETE_CERT_RESPONSE = 14
    END_SESSION = 15
    RETRY_LATER = 16
    REQUEST_IN_PROGRESS = 17
    STATUS_ENQUIRY = 18
    STATUS_RESPONSE = 19
    ABORT_REQUEST = 20
    ABORT_RESPONSE = 21
    SIGN_CERT_REQUEST = 22
    SIGN_CERT_RESPONSE = 23


class Tag(enum.IntEnum):
    """Element tags.  1-20 are the publicly known numbers; 64 and up are ours (documented)."""

    REASON = 1
    REASON_INFO = 2
    CERTIFICATE_TYPE = 3
    CERTIFICATE = 4
    CERTIFICATE_ID = 5
    SIGNED_DATA = 6
    VERSION = 7
    AUTH_TYPE = 8
    PUBLIC_KEY = 9
    KEY_SIZE = 10
    AUTH_PASSWORD = 11
    RETRY_DELAY = 12
    DEVICE_NAME = 13
    SUDI_DATA = 16
    KEY_TYPE = 17
    EC_CURVE = 18
    DIGEST_TYPE = 19
    SIGNED_DATA_SHA2 = 20
    AUTH_NONCE = 64   # ours: CAPF's random challenge in AUTH_REQUEST
    TBS_DATA = 65     # ours: the DER CertificationRequestInfo the phone must sign
    CAPABILITIES = 66  # ours: the extensions a phone understands, announced in AUTH_RESPONSE


class Reason(enum.IntEnum):
    """REASON values.  1, 7 and 9 are the publicly known ones; 64 and up are ours."""

    OK = 1
    OPERATION_REFUSED = 7   # wrong auth string, another node busy, ... (REASON_INFO says which)
    DEVICE_UNKNOWN = 9
    KEY_GEN_FAILED = 64
    KEY_GEN_TIMEOUT = 65
    CA_UNAVAILABLE = 66
    CA_REJECTED = 67
    DEADLINE_PASSED = 68
    UNSUPPORTED = 69        # key type/size, curve, digest or version the peer cannot do
    PROTOCOL_ERROR = 70
    STORE_FAILED = 71
    NO_CERTIFICATE = 72
    ABORTED = 73
    SIGN_FAILED = 74
    INVALID_CERTIFICATE = 75  # the LSC/MIC (or its signature) did not authenticate the phone
    LOCKED_OUT = 76
    NOTHING_PENDING = 77      # the device has no certificate operation: nothing to do, not a failure


# The reasons every client knows (the public flow); any other one needs Capability.REASONS.
PUBLIC_REASONS = frozenset({Reason.OK, Reason.OPERATION_REFUSED, Reason.DEVICE_UNKNOWN})


def public_reason(reason: Reason | int) -> Reason:
    """How ``reason`` is said to a client that announced no extension: 1 stays 1 (success), 9
    stays 9 (no such device), everything else is 7, the public decline."""
    if reason == Reason.OK:
        return Reason.OK
    if reason == Reason.DEVICE_UNKNOWN:
        return Reason.DEVICE_UNKNOWN
    return Reason.OPERATION_REFUSED


class Capability(enum.IntFlag):
    """What a phone announces it understands, in the CAPABILITIES element of its AUTH_RESPONSE
    (4 bytes, big-endian; bits this side does not know are kept and ignored).  A client that sends
    no CAPABILITIES (every public client) gets the public flow exactly; CAPF uses an extension only
    when its bit was announced (``capabilities_needed``, enforced by ``session.CAPFSession``)."""

    REASONS = 0x01      # reasons above 9, and REASON_INFO in CAPF's messages
    CHALLENGE = 0x02    # a second AUTH_REQUEST (AUTH_TYPE, AUTH_NONCE) and signed certificate auth
    SIGN = 0x04         # SIGN_CERT_REQUEST/RESPONSE, TBS_DATA, DIGEST_TYPE: the online-CA signing step
    KEEPALIVE = 0x08    # REQUEST_IN_PROGRESS and STATUS_ENQUIRY from CAPF
    RETRY_LATER = 0x10  # RETRY_LATER, RETRY_DELAY
    EC = 0x20           # KEY_GEN_REQUEST for an EC key (KEY_TYPE 1, EC_CURVE)
    RESUME = 0x40       # an LSC issued earlier delivered right after AUTH_RESPONSE; KEY_GEN_REQUEST again


NO_CAPABILITIES = Capability(0)
ALL_CAPABILITIES = Capability(0x7F)


class AuthType(enum.IntEnum):
    NONE = 0                     # By Null String
    PASSWORD = 1                 # By Authentication String
    EXISTING_CERT_LSC_FIRST = 2  # ours: By Existing Certificate (Precedence to LSC)
    EXISTING_CERT_MIC_FIRST = 3  # ours: By Existing Certificate (Precedence to MIC)


class CertificateType(enum.IntEnum):
    LSC = 1
    MIC = 2


class KeyType(enum.IntEnum):
    RSA = 0
    EC = 1


class ECCurve(enum.IntEnum):
    P256 = 0
    P384 = 1
    P521 = 2

    @property
    def bits(self) -> int:
        return (256, 384, 521)[self.value]

    @classmethod
    def from_bits(cls, bits: int) -> ECCurve:
        return {256: cls.P256, 384: cls.P384, 521: cls.P521}[bits]


class DigestType(enum.IntEnum):
    """Ours (the public notes name the element, not its values).  SHA-1 is never accepted."""

    SHA256 = 1
    SHA384 = 2
    SHA512 = 3

    @property
    def hash_name(self) -> str:
        return self.name.lower()

    @classmethod
    def from_hash_name(cls, name: str) -> DigestType:
        return cls[name.upper()]


# --------------------------------------------------------------------------- element values


@dataclass(frozen=True)
class CertificateValue:
    """A CERTIFICATE element: the certificate type and the DER certificate.  On the wire it is
    nested, ``{01}[L] 00 <type> DER`` (what public clients and real phones send, and what we always
    send), or flat, ``00 <type> DER`` (our earlier form, still accepted).  ``nested`` keeps the form
    a decoded value came in, so it encodes back to the same bytes; it is not part of the value.
    A decoded value keeps the certificate the decoder parsed to check it, so nobody parses it again."""

    cert_type: CertificateType
    der: bytes
    parsed: Any = field(default=None, compare=False, repr=False)
    nested: bool = field(default=True, compare=False, repr=False)

    def certificate(self) -> Any:
        """The ``x509.Certificate`` (parsed once, by the decoder or at the first call)."""
        if self.parsed is None:
            object.__setattr__(self, "parsed", pki.load_certificate(self.der))
        return self.parsed


class CString(str):
    """Text that came NUL-terminated (DEVICE_NAME and AUTH_PASSWORD of public clients: the length
    counts the NUL).  It equals the text without the NUL; ``nul`` only makes it encode back the
    way it came.  Build one with ``CString(text)`` to send text NUL-terminated."""

    nul: bool

    def __new__(cls, value: str, nul: bool = True) -> CString:
        obj = super().__new__(cls, value)
        obj.nul = nul
        return obj


class PublicKeyDER(bytes):
    """A decoded PUBLIC_KEY element: the SubjectPublicKeyInfo DER (equal to the plain bytes),
    with ``key``, the public key the decoder parsed to check it."""

    key: Any


DEVICE_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_TEXT = 1024
MAX_SIGNATURE = 1024      # an RSA 8192 signature; ECDSA P-521 is ~139 bytes
NONCE_SIZES = range(16, 65)


def _bad(tag: int, why: str) -> ProtocolError:
    name = Tag(tag).name if tag in Tag._value2member_map_ else str(tag)
    return protocol_error(f"element {name}: {why}", E_BAD_ELEMENT)


# One element's codec: encode(tag, value) -> bytes, decode(tag, bytes) -> value.
ElementCodec = tuple[Callable[[int, Any], bytes], Callable[[int, bytes], Any]]


def _uint(size: int) -> ElementCodec:
    def enc(tag: int, v: Any) -> bytes:
        if not isinstance(v, int) or not 0 <= v < 1 << (8 * size):
            raise _bad(tag, f"{v!r} does not fit {size} byte(s)")
        return int(v).to_bytes(size, "big")

    def dec(tag: int, b: bytes) -> int:
        if len(b) != size:
            raise _bad(tag, f"{len(b)} bytes where {size} are expected")
        return int.from_bytes(b, "big")
    return enc, dec


def _enum(cls: type[enum.IntEnum], strict: bool = True) -> ElementCodec:
    enc8, dec8 = _uint(1)

    def dec(tag: int, b: bytes) -> Any:
        v = dec8(tag, b)
        try:
            return cls(v)
        except ValueError:
            if strict:
                raise _bad(tag, f"unknown {cls.__name__} value {v}") from None
            return v  # e.g. a REASON we do not know yet: keep the number
    return enc8, dec


def _text(pattern: re.Pattern[str] | None, encoding: str, max_len: int = MAX_TEXT,
          nul_terminated: bool = False) -> ElementCodec:
    """Text; with ``nul_terminated``, one trailing NUL is accepted (the value is then a
    ``CString`` that encodes back with it).  A NUL anywhere else is a control character."""
    def check(tag: int, s: str) -> str:
        if len(s) > max_len:
            raise _bad(tag, f"longer than {max_len} characters")
        if pattern is not None and not pattern.match(s):
            raise _bad(tag, f"{s[:40]!r} is not allowed")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in s):
            raise _bad(tag, "control characters are not allowed")
        return s

    def enc(tag: int, v: Any) -> bytes:
        if not isinstance(v, str):
            raise _bad(tag, "must be text")
        try:
            wire = check(tag, str(v)).encode(encoding)
        except UnicodeEncodeError:
            raise _bad(tag, f"not {encoding}") from None
        return wire + b"\x00" if nul_terminated and isinstance(v, CString) and v.nul else wire

    def dec(tag: int, b: bytes) -> str:
        nul = nul_terminated and b.endswith(b"\x00")
        try:
            text = check(tag, (b[:-1] if nul else b).decode(encoding))
        except UnicodeDecodeError:
            raise _bad(tag, f"not {encoding}") from None
        return CString(text) if nul else text
    return enc, dec


def _opaque(min_len: int = 0, max_len: int = 0xFFFF, first: int | None = None) -> ElementCodec:
    def check(tag: int, b: bytes) -> bytes:
        if not min_len <= len(b) <= max_len:
            raise _bad(tag, f"{len(b)} bytes, expected {min_len}..{max_len}")
        if first is not None and b[:1] != bytes([first]):
            raise _bad(tag, "not a DER SEQUENCE")
        return bytes(b)

    def enc(tag: int, v: Any) -> bytes:
        if not isinstance(v, (bytes, bytearray)):
            raise _bad(tag, "must be bytes")
        return check(tag, bytes(v))
    return enc, check


def _public_key() -> ElementCodec:
    enc_raw, dec_raw = _opaque(1, first=0x30)

    def dec(tag: int, b: bytes) -> bytes:
        try:
            key = pki.load_public_key(dec_raw(tag, b))
        except OnlineCAError as exc:
            raise _bad(tag, f"not an RSA or EC SubjectPublicKeyInfo ({exc.message})") from None
        value = PublicKeyDER(b)
        value.key = key
        return value
    return enc_raw, dec


_NESTED_CERTIFICATE = 0x01  # the sub-element tag inside a nested CERTIFICATE


def _certificate() -> ElementCodec:
    def enc(tag: int, v: Any) -> bytes:
        if not isinstance(v, CertificateValue):
            raise _bad(tag, "must be a CertificateValue")
        flat = b"\x00" + bytes([int(v.cert_type)]) + v.der
        if not v.nested:
            return flat
        if len(flat) > 0xFFFF - 3:
            raise _bad(tag, f"a certificate of {len(v.der)} bytes does not fit a nested element")
        return bytes([_NESTED_CERTIFICATE]) + len(flat).to_bytes(2, "big") + flat

    def dec(tag: int, b: bytes) -> CertificateValue:
        nested = b[:1] == bytes([_NESTED_CERTIFICATE])
        if nested:
            # {01}[L] 00 <type> DER: exactly one sub-element, filling the element.
            if len(b) < 3 or int.from_bytes(b[1:3], "big") != len(b) - 3:
                raise _bad(tag, "the nested sub-element's length does not fill the element")
            b = b[3:]
        if len(b) < 3 or b[0] != 0:
            raise _bad(tag, "must hold 0x00 and the certificate type (flat, or nested in sub-element 0x01)")
        try:
            cert_type = CertificateType(b[1])
        except ValueError:
            raise _bad(tag, f"unknown certificate type {b[1]}") from None
        der = bytes(b[2:])
        try:
            cert = pki.load_certificate(der)
        except OnlineCAError as exc:
            raise _bad(tag, f"not a DER certificate ({exc.message})") from None
        return CertificateValue(cert_type, der, cert, nested=nested)
    return enc, dec


ELEMENT_CODECS: dict[Tag, ElementCodec] = {
    Tag.REASON: _enum(Reason, strict=False),
    Tag.REASON_INFO: _text(None, "utf-8"),
    Tag.CERTIFICATE_TYPE: _enum(CertificateType),
    Tag.CERTIFICATE: _certificate(),
    Tag.CERTIFICATE_ID: _opaque(1, 256),
    Tag.SIGNED_DATA: _opaque(1, MAX_SIGNATURE),
    Tag.VERSION: _uint(1),
    Tag.AUTH_TYPE: _enum(AuthType),
    Tag.PUBLIC_KEY: _public_key(),
    Tag.KEY_SIZE: _uint(2),
    Tag.AUTH_PASSWORD: _text(None, "ascii", 64, nul_terminated=True),
    Tag.RETRY_DELAY: _uint(4),
    Tag.DEVICE_NAME: _text(DEVICE_NAME_RE, "ascii", 64, nul_terminated=True),
    Tag.SUDI_DATA: _opaque(0, 0xFFFF),
    Tag.KEY_TYPE: _enum(KeyType),
    Tag.EC_CURVE: _enum(ECCurve),
    Tag.DIGEST_TYPE: _enum(DigestType),
    Tag.SIGNED_DATA_SHA2: _opaque(1, MAX_SIGNATURE),
    Tag.AUTH_NONCE: _opaque(NONCE_SIZES.start, NONCE_SIZES.stop - 1),
    Tag.TBS_DATA: _opaque(2, 0xFFFF, first=0x30),
    Tag.CAPABILITIES: _uint(4),
}

# How often an element appears in a message.
ONE, OPTIONAL, MANY = "one", "optional", "many"


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, kw_only=True)
class Message:
    """Base of every message: the command it is, the session id it carries, its elements."""

    COMMAND: ClassVar[Command]
    ELEMENTS: ClassVar[tuple[tuple[str, Tag, str], ...]] = ()
    session_id: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Rules between elements of one message (overridden where there are some)."""


@dataclass(frozen=True, kw_only=True)
class _Outcome(Message):
    """The shape shared by answers that only say how something went: REASON and REASON_INFO."""

    ELEMENTS = (("reason", Tag.REASON, ONE), ("reason_info", Tag.REASON_INFO, OPTIONAL))
    reason: Reason | int = Reason.OK
    reason_info: str | None = None


@dataclass(frozen=True, kw_only=True)
class AuthRequest(Message):
    """CAPF -> phone, first message of every session.  ``auth_type`` None: answer with the
    credential your configuration names; set: CAPF asks again for that kind (see the spec)."""

    COMMAND = Command.AUTH_REQUEST
    ELEMENTS = (("version", Tag.VERSION, ONE), ("auth_type", Tag.AUTH_TYPE, OPTIONAL),
                ("nonce", Tag.AUTH_NONCE, OPTIONAL))
    version: int = SERVER_VERSION
    auth_type: AuthType | None = None
    nonce: bytes | None = None


@dataclass(frozen=True, kw_only=True)
class AuthResponse(Message):
    """Phone -> CAPF: who the phone is and the credential its configuration names.  Public clients
    add a status (REASON 1) and NUL-terminate the strings; ``capabilities`` (ours) announces the
    extensions the phone understands: absent, it gets the public flow exactly."""

    COMMAND = Command.AUTH_RESPONSE
    ELEMENTS = (("version", Tag.VERSION, ONE), ("device_name", Tag.DEVICE_NAME, ONE),
                ("auth_password", Tag.AUTH_PASSWORD, OPTIONAL), ("status", Tag.REASON, OPTIONAL),
                ("certificate", Tag.CERTIFICATE, OPTIONAL),
                ("signed_data", Tag.SIGNED_DATA, OPTIONAL), ("signed_data_sha2", Tag.SIGNED_DATA_SHA2, OPTIONAL),
                ("digest_type", Tag.DIGEST_TYPE, OPTIONAL), ("sudi_data", Tag.SUDI_DATA, OPTIONAL),
                ("capabilities", Tag.CAPABILITIES, OPTIONAL))
    version: int
    device_name: str
    auth_password: str | None = None
    status: Reason | int | None = None
    certificate: CertificateValue | None = None
    signed_data: bytes | None = None
    signed_data_sha2: bytes | None = None
    digest_type: DigestType | None = None
    sudi_data: bytes | None = None
    capabilities: int | None = None

    @property
    def password(self) -> str | None:
        """The auth string, or None when none was given (an empty one, e.g. a lone NUL sent in
        null-string mode, is none)."""
        return self.auth_password or None

    @property
    def announced(self) -> Capability:
        """The extensions the phone announced (none: a public client)."""
        return Capability(self.capabilities or 0)

    def validate(self) -> None:
        signed = self.signed_data is not None or self.signed_data_sha2 is not None
        if signed and self.certificate is None:
            raise protocol_error("AUTH_RESPONSE carries a signature without the CERTIFICATE that made it",
                                 E_MISSING_ELEMENT)
        if self.signed_data is not None and self.signed_data_sha2 is not None:
            raise protocol_error("AUTH_RESPONSE carries both SIGNED_DATA and SIGNED_DATA_SHA2", E_BAD_ELEMENT)

    @property
    def signature(self) -> bytes | None:
        return self.signed_data_sha2 if self.signed_data_sha2 is not None else self.signed_data

    @property
    def effective_digest(self) -> DigestType:
        """The signature's digest: DIGEST_TYPE, or SHA-256 when absent (always so in version 2)."""
        return DigestType.SHA256 if self.digest_type is None else self.digest_type


@dataclass(frozen=True, kw_only=True)
class KeyGenRequest(Message):
    """CAPF -> phone: make a new key pair.  RSA needs KEY_SIZE, EC needs EC_CURVE; no KEY_TYPE
    means RSA.  CAPF always sends KEY_TYPE (one public client requires it)."""

    COMMAND = Command.KEY_GEN_REQUEST
    # KEY_SIZE first, then KEY_TYPE: the public flow's order (a public server adds KEY_TYPE).
    ELEMENTS = (("key_size", Tag.KEY_SIZE, OPTIONAL), ("key_type", Tag.KEY_TYPE, OPTIONAL),
                ("ec_curve", Tag.EC_CURVE, OPTIONAL))
    key_type: KeyType | None = None
    key_size: int | None = None
    ec_curve: ECCurve | None = None

    def validate(self) -> None:
        if self.effective_key_type is KeyType.EC:
            if self.ec_curve is None:
                raise protocol_error("KEY_GEN_REQUEST for an EC key without EC_CURVE", E_MISSING_ELEMENT)
        elif self.key_size is None:
            raise protocol_error("KEY_GEN_REQUEST for an RSA key without KEY_SIZE", E_MISSING_ELEMENT)
        elif self.ec_curve is not None:
            raise protocol_error("KEY_GEN_REQUEST for an RSA key with an EC_CURVE", E_BAD_ELEMENT)

    @property
    def effective_key_type(self) -> KeyType:
        return KeyType.RSA if self.key_type is None else self.key_type

    @property
    def key_spec(self) -> tuple[str, int]:
        """("rsa", bits) or ("ec", bits), as ``pki.generate_key`` takes them."""
        if self.effective_key_type is KeyType.EC:
            assert self.ec_curve is not None
            return "ec", self.ec_curve.bits
        assert self.key_size is not None
        return "rsa", self.key_size


@dataclass(frozen=True, kw_only=True)
class KeyGenResponse(Message):
    """Phone -> CAPF: the new public key (SubjectPublicKeyInfo DER), or a REASON why not.  A
    public client sends PUBLIC_KEY alone: no REASON means OK."""

    COMMAND = Command.KEY_GEN_RESPONSE
    ELEMENTS = (("reason", Tag.REASON, OPTIONAL), ("public_key", Tag.PUBLIC_KEY, OPTIONAL),
                ("reason_info", Tag.REASON_INFO, OPTIONAL))
    reason: Reason | int | None = None
    public_key: bytes | None = None
    reason_info: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason in (None, Reason.OK)

    def validate(self) -> None:
        if self.ok and self.public_key is None:
            raise protocol_error("KEY_GEN_RESPONSE without PUBLIC_KEY or a failure REASON", E_MISSING_ELEMENT)


@dataclass(frozen=True, kw_only=True)
class SignCertRequest(Message):
    """CAPF -> phone: sign TBS_DATA (a DER CertificationRequestInfo holding the phone's new public
    key) with the new key and DIGEST_TYPE (version 3; version 2 implies SHA-256 and omits it)."""

    COMMAND = Command.SIGN_CERT_REQUEST
    ELEMENTS = (("tbs_data", Tag.TBS_DATA, ONE), ("digest_type", Tag.DIGEST_TYPE, OPTIONAL))
    tbs_data: bytes
    digest_type: DigestType | None = None

    @property
    def effective_digest(self) -> DigestType:
        return DigestType.SHA256 if self.digest_type is None else self.digest_type


@dataclass(frozen=True, kw_only=True)
class SignCertResponse(Message):
    """Phone -> CAPF: the signature, in SIGNED_DATA_SHA2 (version 3) or SIGNED_DATA (version 2)."""

    COMMAND = Command.SIGN_CERT_RESPONSE
    ELEMENTS = (("reason", Tag.REASON, OPTIONAL), ("signed_data", Tag.SIGNED_DATA, OPTIONAL),
                ("signed_data_sha2", Tag.SIGNED_DATA_SHA2, OPTIONAL), ("reason_info", Tag.REASON_INFO, OPTIONAL))
    reason: Reason | int = Reason.OK
    signed_data: bytes | None = None
    signed_data_sha2: bytes | None = None
    reason_info: str | None = None

    def validate(self) -> None:
        if self.signed_data is not None and self.signed_data_sha2 is not None:
            raise protocol_error("SIGN_CERT_RESPONSE carries both SIGNED_DATA and SIGNED_DATA_SHA2", E_BAD_ELEMENT)
        if self.reason == Reason.OK and self.signature is None:
            raise protocol_error("SIGN_CERT_RESPONSE without a signature or a failure REASON", E_MISSING_ELEMENT)

    @property
    def signature(self) -> bytes | None:
        return self.signed_data_sha2 if self.signed_data_sha2 is not None else self.signed_data


@dataclass(frozen=True, kw_only=True)
class StoreCertRequest(Message):
    COMMAND = Command.STORE_CERT_REQUEST
    ELEMENTS = (("certificate_type", Tag.CERTIFICATE_TYPE, ONE), ("certificate", Tag.CERTIFICATE, ONE))
    certificate_type: CertificateType = CertificateType.LSC
    certificate: CertificateValue

    def validate(self) -> None:
        if self.certificate.cert_type != self.certificate_type:
            raise protocol_error("STORE_CERT_REQUEST: CERTIFICATE_TYPE and the certificate's own type differ",
                                 E_BAD_ELEMENT)


@dataclass(frozen=True, kw_only=True)
class StoreCertResponse(_Outcome):
    """Phone -> CAPF: the LSC is stored (OK) or why not."""

    COMMAND = Command.STORE_CERT_RESPONSE


@dataclass(frozen=True, kw_only=True)
class FetchCertRequest(Message):
    """CAPF -> phone (Troubleshoot): send your certificates; no CERTIFICATE_TYPE means all."""

    COMMAND = Command.FETCH_CERT_REQUEST
    ELEMENTS = (("certificate_type", Tag.CERTIFICATE_TYPE, OPTIONAL),)
    certificate_type: CertificateType | None = None


@dataclass(frozen=True, kw_only=True)
class FetchCertResponse(Message):
    COMMAND = Command.FETCH_CERT_RESPONSE
    ELEMENTS = (("reason", Tag.REASON, OPTIONAL), ("certificates", Tag.CERTIFICATE, MANY),
                ("reason_info", Tag.REASON_INFO, OPTIONAL))
    reason: Reason | int = Reason.OK
    certificates: tuple[CertificateValue, ...] = ()
    reason_info: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeleteCertRequest(Message):
    """CAPF -> phone: delete your LSC.  Sent with no elements (the public form); a
    CERTIFICATE_TYPE, if present, must say LSC."""

    COMMAND = Command.DELETE_CERT_REQUEST
    ELEMENTS = (("certificate_type", Tag.CERTIFICATE_TYPE, OPTIONAL),)
    certificate_type: CertificateType | None = None


@dataclass(frozen=True, kw_only=True)
class DeleteCertResponse(_Outcome):
    """Phone -> CAPF: the LSC is deleted (OK) or why not."""

    COMMAND = Command.DELETE_CERT_RESPONSE


@dataclass(frozen=True, kw_only=True)
class EndSession(_Outcome):
    """CAPF -> phone: the session's outcome; the connection closes after it."""

    COMMAND = Command.END_SESSION


@dataclass(frozen=True, kw_only=True)
class RetryLater(Message):
    """CAPF -> phone: the CA cannot be reached now; come back in RETRY_DELAY seconds."""

    COMMAND = Command.RETRY_LATER
    ELEMENTS = (("retry_delay", Tag.RETRY_DELAY, ONE), ("reason", Tag.REASON, OPTIONAL),
                ("reason_info", Tag.REASON_INFO, OPTIONAL))
    retry_delay: int
    reason: Reason | int | None = None
    reason_info: str | None = None


@dataclass(frozen=True, kw_only=True)
class RequestInProgress(Message):
    """Either way: still working (key generation, enrollment); also the keepalive."""

    COMMAND = Command.REQUEST_IN_PROGRESS


@dataclass(frozen=True, kw_only=True)
class StatusEnquiry(Message):
    COMMAND = Command.STATUS_ENQUIRY


@dataclass(frozen=True, kw_only=True)
class StatusResponse(_Outcome):
    """Phone -> CAPF: the answer to STATUS_ENQUIRY (REASON_INFO: the phone's state)."""

    COMMAND = Command.STATUS_RESPONSE


@dataclass(frozen=True, kw_only=True)
class AbortRequest(Message):
    COMMAND = Command.ABORT_REQUEST
    ELEMENTS = (("reason", Tag.REASON, OPTIONAL), ("reason_info", Tag.REASON_INFO, OPTIONAL))
    reason: Reason | int | None = None
    reason_info: str | None = None


@dataclass(frozen=True, kw_only=True)
class AbortResponse(Message):
    COMMAND = Command.ABORT_RESPONSE
    ELEMENTS = (("reason", Tag.REASON, OPTIONAL),)
    reason: Reason | int | None = None


MESSAGE_TYPES: dict[Command, type[Message]] = {
    cls.COMMAND: cls for cls in (
        AuthRequest, AuthResponse, KeyGenRequest, KeyGenResponse, SignCertRequest, SignCertResponse,
        StoreCertRequest, StoreCertResponse, FetchCertRequest, FetchCertResponse, DeleteCertRequest,
        DeleteCertResponse, EndSession, RetryLater, RequestInProgress, StatusEnquiry, StatusResponse,
        AbortRequest, AbortResponse)
}
# Known numbers we neither send nor accept (the vendor's offline-CA encrypt/decrypt exchange).
UNSUPPORTED_COMMANDS = frozenset({Command.ENCRYPT_RESPONSE, Command.ENCRYPT_REQUEST,
                                  Command.DECRYPT_REQUEST, Command.DECRYPT_RESPONSE})


# --------------------------------------------------------------------------- encode / decode


def encode_message(msg: Message) -> Frame:
    """The frame of ``msg``: its elements in ``ELEMENTS`` order, absent optionals left out."""
    elements: list[Element] = []
    for name, tag, how in msg.ELEMENTS:
        value = getattr(msg, name)
        enc = ELEMENT_CODECS[tag][0]
        if how == MANY:
            elements.extend(Element(tag, enc(tag, v)) for v in value)
        elif value is not None:
            elements.append(Element(tag, enc(tag, value)))
        elif how == ONE:
            raise protocol_error(f"{msg.COMMAND.name} needs {tag.name}", E_MISSING_ELEMENT)
    return Frame(int(msg.COMMAND), msg.session_id, tuple(elements))


def decode_message(frame: Frame) -> Message:
    """The typed message in ``frame`` (ProtocolError for unknown commands or bad elements)."""
    try:
        command = Command(frame.command)
    except ValueError:
        raise protocol_error(f"unknown command {frame.command}", E_UNSUPPORTED_COMMAND) from None
    cls = MESSAGE_TYPES.get(command)
    if cls is None:
        raise protocol_error(f"command {command.name} is not used by this CAPF", E_UNSUPPORTED_COMMAND,
                             "Configure the phone for an online CA; encrypt/decrypt exchanges are not supported.")
    by_tag: dict[int, tuple[str, str]] = {tag: (name, how) for name, tag, how in cls.ELEMENTS}
    values: dict[str, Any] = {}
    for element in frame.elements:
        if element.tag not in by_tag:
            continue  # unknown or not ours in this command: ignored, as the spec says
        name, how = by_tag[element.tag]
        value = ELEMENT_CODECS[Tag(element.tag)][1](element.tag, element.value)
        if how == MANY:
            values[name] = values.get(name, ()) + (value,)
        elif name in values:
            raise protocol_error(f"{command.name} carries {Tag(element.tag).name} twice", E_DUPLICATE_ELEMENT)
        else:
            values[name] = value
    for name, tag, how in cls.ELEMENTS:
        if how == ONE and name not in values:
            raise protocol_error(f"{command.name} without {tag.name}", E_MISSING_ELEMENT)
    try:
        return cls(session_id=frame.session_id, **values)
    except TypeError as exc:  # a required dataclass field without an element: a bug, named plainly
        raise protocol_error(f"{command.name}: {exc}", E_MISSING_ELEMENT) from None


def to_bytes(msg: Message) -> bytes:
    return encode_frame(encode_message(msg))


def from_bytes(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Exactly one message from exactly one frame's bytes."""
    return decode_message(decode_frame(data, limits))


def message_fields(msg: Message) -> dict[str, Any]:
    """The message as plain values (enums by name, bytes as hex), for logs, vectors and JSON."""
    def plain(v: Any) -> Any:
        if isinstance(v, enum.Enum):
            return v.name
        if isinstance(v, (bytes, bytearray)):
            return bytes(v).hex()
        if isinstance(v, CertificateValue):
            return {"cert_type": v.cert_type.name, "der": v.der.hex()}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v
    out: dict[str, Any] = {"command": msg.COMMAND.name}
    for f in fields(msg):
        out[f.name] = plain(getattr(msg, f.name))
    return out


# --------------------------------------------------------------------------- public or extension

C_, T_, X_ = Command, Tag, Capability
# What a phone must have announced before CAPF sends each command or element (None: the public
# flow, any client).  Position matters too: a second AUTH_REQUEST needs CHALLENGE, an LSC
# delivered right after AUTH_RESPONSE or a second KEY_GEN_REQUEST needs RESUME
# (``session.CAPFSession`` adds those).  docs/device-protocol.md shows this table.
COMMAND_NEEDS: dict[Command, Capability | None] = {
    C_.AUTH_REQUEST: None, C_.KEY_GEN_REQUEST: None, C_.STORE_CERT_REQUEST: None,
    C_.FETCH_CERT_REQUEST: None, C_.DELETE_CERT_REQUEST: None, C_.END_SESSION: None,
    C_.ABORT_RESPONSE: None,  # the answer to a phone's own abort
    C_.RETRY_LATER: X_.RETRY_LATER, C_.REQUEST_IN_PROGRESS: X_.KEEPALIVE, C_.STATUS_ENQUIRY: X_.KEEPALIVE,
    C_.SIGN_CERT_REQUEST: X_.SIGN, C_.ABORT_REQUEST: X_.REASONS,  # CAPF never starts an abort with a public client
}
TAG_NEEDS: dict[Tag, Capability | None] = {
    T_.VERSION: None, T_.REASON: None, T_.CERTIFICATE_TYPE: None, T_.CERTIFICATE: None, T_.KEY_SIZE: None,
    T_.KEY_TYPE: None,  # KEY_TYPE 1 (EC) needs EC
    T_.REASON_INFO: X_.REASONS, T_.AUTH_TYPE: X_.CHALLENGE, T_.AUTH_NONCE: X_.CHALLENGE, T_.EC_CURVE: X_.EC,
    T_.TBS_DATA: X_.SIGN, T_.DIGEST_TYPE: X_.SIGN, T_.RETRY_DELAY: X_.RETRY_LATER,
}


# What the strictest public client accepts from CAPF (the notes' frame-level facts): these
# commands with these elements only, REASON 0, 1, 7 or 9, KEY_TYPE 0, CERTIFICATE nested; one
# AUTH_REQUEST (VERSION alone), STORE_CERT_REQUEST only right after its KEY_GEN_RESPONSE.  The
# phone simulator's public flow refuses the rest, as such a client aborts on it.
PUBLIC_CLIENT_KNOWS: dict[Command, frozenset[Tag]] = {
    C_.AUTH_REQUEST: frozenset({T_.VERSION}),
    C_.KEY_GEN_REQUEST: frozenset({T_.KEY_SIZE, T_.KEY_TYPE}),
    C_.STORE_CERT_REQUEST: frozenset({T_.CERTIFICATE_TYPE, T_.CERTIFICATE}),
    C_.FETCH_CERT_REQUEST: frozenset(),
    C_.DELETE_CERT_REQUEST: frozenset(),
    C_.END_SESSION: frozenset({T_.REASON}),
}
PUBLIC_CLIENT_REASONS = frozenset({0, 1, 7, 9})  # a public server says 0 for "nothing pending"


def public_client_refuses(frame: Frame, *, first: bool, after_key: bool) -> str | None:
    """What in ``frame`` (from CAPF) the strictest public client does not know, in words, or None.
    ``first``: nothing was received yet; ``after_key``: the client has just sent its public key."""
    try:
        command = Command(frame.command)
    except ValueError:
        return f"command {frame.command}"
    known = PUBLIC_CLIENT_KNOWS.get(command)
    if known is None:
        return command.name
    if command is Command.AUTH_REQUEST and not first:
        return "a second AUTH_REQUEST"
    if command is Command.STORE_CERT_REQUEST and not after_key:
        return "STORE_CERT_REQUEST before its KEY_GEN_RESPONSE"
    if command is Command.KEY_GEN_REQUEST and after_key:
        return "a second KEY_GEN_REQUEST"
    for el in frame.elements:
        name = Tag(el.tag).name if el.tag in Tag._value2member_map_ else str(el.tag)
        if el.tag not in known:
            return f"element {name} in {command.name}"
        if el.tag == Tag.REASON and (len(el.value) != 1 or el.value[0] not in PUBLIC_CLIENT_REASONS):
            return f"REASON {el.value.hex()}"
        if el.tag == Tag.KEY_TYPE and el.value != b"\x00":
            return f"KEY_TYPE {el.value.hex()} (only RSA, 0)"
        if el.tag == Tag.CERTIFICATE and el.value[:1] != bytes([_NESTED_CERTIFICATE]):
            return "a CERTIFICATE not in the nested form"
    return None


def capabilities_needed(msg: Message) -> Capability:
    """The extensions a phone must have announced before CAPF may send ``msg`` (by its command,
    its elements and their values; none for the public flow)."""
    need = COMMAND_NEEDS.get(msg.COMMAND) or NO_CAPABILITIES
    for name, tag, how in msg.ELEMENTS:
        value = getattr(msg, name)
        if value is None or (how == MANY and not value):
            continue
        need |= TAG_NEEDS.get(tag) or NO_CAPABILITIES
        if tag is Tag.REASON and value not in PUBLIC_REASONS:
            need |= Capability.REASONS
        elif tag is Tag.KEY_TYPE and value == KeyType.EC:
            need |= Capability.EC
    return need


# --------------------------------------------------------------------------- version rules


def check_version(msg: Message, version: int) -> None:
    """Raise ProtocolError (code DEVPROTO_VERSION) if ``msg`` is not allowed in a session of
    ``version``.  Version 2 has no EC keys, no DIGEST_TYPE and no SIGNED_DATA_SHA2 (signatures are
    SHA-256 in SIGNED_DATA); version 3 signs with SIGNED_DATA_SHA2 and names its DIGEST_TYPE."""
    if version not in SUPPORTED_VERSIONS:
        raise protocol_error(f"protocol version {version} is not supported (2 and 3 are)", E_VERSION)
    name = msg.COMMAND.name
    if version == VERSION_2:
        if isinstance(msg, KeyGenRequest) and (msg.effective_key_type is KeyType.EC or msg.ec_curve is not None):
            raise protocol_error(f"{name}: EC keys need protocol version 3; the phone speaks 2", E_VERSION,
                                 "Use an RSA key order for this device, or upgrade its firmware.")
        if getattr(msg, "signed_data_sha2", None) is not None:
            raise protocol_error(f"{name}: SIGNED_DATA_SHA2 does not exist in version 2", E_VERSION)
        if getattr(msg, "digest_type", None) is not None:
            raise protocol_error(f"{name}: DIGEST_TYPE does not exist in version 2", E_VERSION)
    else:
        if isinstance(msg, SignCertRequest) and msg.digest_type is None:
            raise protocol_error(f"{name} without DIGEST_TYPE in version 3", E_VERSION)
        if isinstance(msg, (SignCertResponse, AuthResponse)) and msg.signed_data is not None:
            raise protocol_error(f"{name}: version 3 signs in SIGNED_DATA_SHA2, not SIGNED_DATA", E_VERSION)


def auth_signed_payload(session_id: int, nonce: bytes, device_name: str) -> bytes:
    """What a phone signs to authenticate with its LSC or MIC: a fixed label, the session id, CAPF's
    nonce from AUTH_REQUEST and the device name, so a signature is good for one session of one
    device only (replaying it in another session, or for another device, fails)."""
    return (b"onlineca-capf-auth-v1\x00" + session_id.to_bytes(4, "big") + bytes([len(nonce)]) + nonce
            + device_name.encode("ascii"))


__all__ = [
    "ALL_CAPABILITIES",
    "COMMAND_NEEDS",
    "MESSAGE_TYPES",
    "NO_CAPABILITIES",
    "PUBLIC_CLIENT_KNOWS",
    "PUBLIC_CLIENT_REASONS",
    "PUBLIC_REASONS",
    "SERVER_VERSION",
    "SUPPORTED_VERSIONS",
    "TAG_NEEDS",
    "AbortRequest",
    "AbortResponse",
    "AuthRequest",
    "AuthResponse",
    "AuthType",
    "CString",
    "Capability",
    "CertificateType",
    "CertificateValue",
    "Command",
    "DeleteCertRequest",
    "DeleteCertResponse",
    "DigestType",
    "ECCurve",
    "EndSession",
    "FetchCertRequest",
    "FetchCertResponse",
    "KeyGenRequest",
    "KeyGenResponse",
    "KeyType",
    "Message",
    "PublicKeyDER",
    "Reason",
    "RequestInProgress",
    "RetryLater",
    "SignCertRequest",
    "SignCertResponse",
    "StatusEnquiry",
    "StatusResponse",
    "StoreCertRequest",
    "StoreCertResponse",
    "Tag",
    "auth_signed_payload",
    "capabilities_needed",
    "check_version",
    "decode_message",
    "encode_message",
    "from_bytes",
    "message_fields",
    "public_client_refuses",
    "public_reason",
    "to_bytes",
]
