"""CAPF device policy: the administrators' vocabulary, the source document's identifiers, validation.

Every value an administrator sets on a device (certificate operation, authentication mode, key
order and sizes, "Operation Completes By") and every certificate status has two names here: the
identifier the CAPF log uses (``OPERATION_UPGRADE``, ``AUTH_BY_STR``, ``KEY_SIZE_2048``,
``CERT_STATUS_UPGRADE_SUCCESS:3``) and the words the administration pages show ("Install/Upgrade",
"By Authentication String", "Upgrade Success").  The database stores the identifier.  The
effective policy of a device is its profile's defaults with the device's own overrides on top,
as frozen values.  What a device session decides lives beside it, in ``policy.capf_session``.
This module is pure: no I/O, no database, no clock of its own; it never logs an auth string.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import fnmatch
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Self

from onlineca.errors import PolicyError

UTC = dt.UTC


_PARSE_WORDS: dict[type, dict[str, Any]] = {}  # _Named.parse's spellings, built once per enum


class _Named(Enum):
    """An enum whose value is the document's identifier, with its numeric code and display words."""

    code: int
    display: str

    def __new__(cls, ident: str, code: int, display: str) -> Self:
        obj = object.__new__(cls)
        obj._value_ = ident
        obj.code = code
        obj.display = display
        return obj

    @property
    def ident(self) -> str:
        return str(self.value)

    @property
    def log(self) -> str:
        """As the CAPF log writes it: ``KEY_SIZE_2048:3``."""
        return f"{self.value}:{self.code}"

    def __str__(self) -> str:
        return self.display

    @classmethod
    def from_ident(cls, ident: str) -> Self:
        """The member whose identifier is ``ident`` (``ValueError`` if none)."""
        member = cls._value2member_map_.get(ident)  # the enum's own index: a bulk import asks 100,000 times
        if member is None:
            raise ValueError(f"{ident!r} is not a valid {cls.__name__}")
        return member  # type: ignore[return-value]

    @classmethod
    def parse(cls, text: str | int | Self, field_name: str) -> Self:
        """Accept the identifier, the display words (any case), the member name or the numeric code."""
        if isinstance(text, cls):
            return text
        wanted = str(text).strip()
        words = _PARSE_WORDS.get(cls)
        if words is None:  # every accepted spelling -> its member, the first member winning a tie
            words = {}
            for member in cls:
                for word in (member.ident.casefold(), member.display.casefold(), member.name.casefold(),
                             str(member.code)):
                    words.setdefault(word, member)
            _PARSE_WORDS[cls] = words
        found = words.get(wanted.casefold())
        if found is not None:
            return found  # type: ignore[no-any-return]
        allowed = ", ".join(f"'{m.display}'" for m in cls)
        raise PolicyError(field_name, f"{wanted!r} is not one of {allowed}")


class Operation(_Named):
    NONE = ("OPERATION_NONE", 1, "No Pending Operation")
    UPGRADE = ("OPERATION_UPGRADE", 2, "Install/Upgrade")
    DELETE = ("OPERATION_DELETE", 3, "Delete")
    TROUBLESHOOT = ("OPERATION_TROUBLESHOOT", 4, "Troubleshoot")


class AuthMode(_Named):
    BY_STR = ("AUTH_BY_STR", 1, "By Authentication String")
    BY_NULL_STR = ("AUTH_BY_NULL_STR", 2, "By Null String")
    BY_LSC = ("AUTH_BY_LSC", 3, "By Existing Certificate (Precedence to LSC)")
    BY_MIC = ("AUTH_BY_MIC", 4, "By Existing Certificate (Precedence to MIC)")


class KeyOrder(_Named):
    RSA_ONLY = ("KEYORDER_RSA_ONLY", 1, "RSA Only")
    EC_ONLY = ("KEYORDER_EC_ONLY", 2, "EC Only")
    EC_PREFERRED_RSA_BACKUP = ("KEYORDER_EC_PREFERRED_RSA_BACKUP", 3, "EC Preferred RSA Backup")


class Issuer(_Named):
    """Who signs a profile's LSCs: the online CA through the RA (default), or CAPF's own CA (the
    vendor's classic mode: works with any CA, and with phones that cannot sign a request)."""

    ONLINE_CA = ("online-ca", 1, "Online CA")
    CAPF = ("capf", 2, "CAPF")


class KeySize(_Named):
    """RSA key sizes; ``bits`` is the size itself."""

    KEY_SIZE_512 = ("KEY_SIZE_512", 1, "512")
    KEY_SIZE_1024 = ("KEY_SIZE_1024", 2, "1024")
    KEY_SIZE_2048 = ("KEY_SIZE_2048", 3, "2048")
    KEY_SIZE_3072 = ("KEY_SIZE_3072", 4, "3072")
    KEY_SIZE_4096 = ("KEY_SIZE_4096", 5, "4096")

    @property
    def bits(self) -> int:
        return int(self.display)


class ECKeySize(_Named):
    """EC key sizes (curve P-256/P-384/P-521); ``INVALID:0`` is what the log shows for an RSA-only device."""

    INVALID = ("INVALID", 0, "-")
    EC_KEY_SIZE_256 = ("EC_KEY_SIZE_256", 1, "256")
    EC_KEY_SIZE_384 = ("EC_KEY_SIZE_384", 2, "384")
    EC_KEY_SIZE_521 = ("EC_KEY_SIZE_521", 3, "521")

    @property
    def bits(self) -> int:
        return 0 if self is ECKeySize.INVALID else int(self.display)


RSA_KEY_SIZES: tuple[int, ...] = tuple(k.bits for k in KeySize)
EC_KEY_SIZES: tuple[int, ...] = tuple(k.bits for k in ECKeySize if k is not ECKeySize.INVALID)


def key_size(bits: int) -> KeySize:
    return KeySize.from_ident(f"KEY_SIZE_{bits}")


def ec_key_size(bits: int) -> ECKeySize:
    return ECKeySize.from_ident(f"EC_KEY_SIZE_{bits}") if bits else ECKeySize.INVALID


# Failure reasons of the notes, per operation; upgrade and delete also fail on the CA side.
_REASONS: tuple[tuple[str, str], ...] = (
    ("INVALID_LSC", "Invalid LSC"),
    ("INVALID_AUTH_STR", "Invalid Authentication String"),
    ("INVALID_MIC", "Invalid MIC"),
    ("INVALID_CREDENTIALS", "Invalid Credentials"),
    ("PHONE_COMM_FAILURE", "Phone Communication Failure"),
    ("KEYGEN_FAILED", "Key Generation Failed/Timeout"),
    ("REQUEST_LATE", "User Initiated Request Late/Timedout"),
)
_CA_REASONS: tuple[tuple[str, str], ...] = (
    ("CA_COMM_FAILURE", "CA Communication Failure"),
    ("CA_REJECTED", "CA Rejected Connection"),
    ("NO_EC_SUPPORT", "No Support for EC only in CAPF version 3"),
)


class CertStatus(_Named):
    """Certificate status as administrators know it (``CERT_STATUS_UPGRADE_SUCCESS:3``): the eight
    of the notes, then for each operation's failure one status per reason (``_REASONS``, plus
    ``_CA_REASONS`` for upgrade and delete), numbered in that order from 9."""

    NONE = ("CERT_STATUS_NONE", 1, "None")
    OPERATION_PENDING = ("CERT_STATUS_OPERATION_PENDING", 2, "Operation Pending")
    UPGRADE_SUCCESS = ("CERT_STATUS_UPGRADE_SUCCESS", 3, "Upgrade Success")
    DELETE_SUCCESS = ("CERT_STATUS_DELETE_SUCCESS", 4, "Delete Success")
    TROUBLESHOOT_SUCCESS = ("CERT_STATUS_TROUBLESHOOT_SUCCESS", 5, "Troubleshoot Success")
    UPGRADE_FAILED = ("CERT_STATUS_UPGRADE_FAILED", 6, "Upgrade Failed")
    DELETE_FAILED = ("CERT_STATUS_DELETE_FAILED", 7, "Delete Failed")
    TROUBLESHOOT_FAILED = ("CERT_STATUS_TROUBLESHOOT_FAILED", 8, "Troubleshoot Failed")
    UPGRADE_FAILED_INVALID_LSC = ("CERT_STATUS_UPGRADE_FAILED_INVALID_LSC", 9, "Upgrade Failed: Invalid LSC")
    UPGRADE_FAILED_INVALID_AUTH_STR = ("CERT_STATUS_UPGRADE_FAILED_INVALID_AUTH_STR", 10, "Upgrade Failed: Invalid Authentication String")
    UPGRADE_FAILED_INVALID_MIC = ("CERT_STATUS_UPGRADE_FAILED_INVALID_MIC", 11, "Upgrade Failed: Invalid MIC")
    UPGRADE_FAILED_INVALID_CREDENTIALS = ("CERT_STATUS_UPGRADE_FAILED_INVALID_CREDENTIALS", 12, "Upgrade Failed: Invalid Credentials")
    UPGRADE_FAILED_PHONE_COMM_FAILURE = ("CERT_STATUS_UPGRADE_FAILED_PHONE_COMM_FAILURE", 13, "Upgrade Failed: Phone Communication Failure")
    UPGRADE_FAILED_KEYGEN_FAILED = ("CERT_STATUS_UPGRADE_FAILED_KEYGEN_FAILED", 14, "Upgrade Failed: Key Generation Failed/Timeout")
    UPGRADE_FAILED_REQUEST_LATE = ("CERT_STATUS_UPGRADE_FAILED_REQUEST_LATE", 15, "Upgrade Failed: User Initiated Request Late/Timedout")
    UPGRADE_FAILED_CA_COMM_FAILURE = ("CERT_STATUS_UPGRADE_FAILED_CA_COMM_FAILURE", 16, "Upgrade Failed: CA Communication Failure")
    UPGRADE_FAILED_CA_REJECTED = ("CERT_STATUS_UPGRADE_FAILED_CA_REJECTED", 17, "Upgrade Failed: CA Rejected Connection")
    UPGRADE_FAILED_NO_EC_SUPPORT = ("CERT_STATUS_UPGRADE_FAILED_NO_EC_SUPPORT", 18, "Upgrade Failed: No Support for EC only in CAPF version 3")
    DELETE_FAILED_INVALID_LSC = ("CERT_STATUS_DELETE_FAILED_INVALID_LSC", 19, "Delete Failed: Invalid LSC")
    DELETE_FAILED_INVALID_AUTH_STR = ("CERT_STATUS_DELETE_FAILED_INVALID_AUTH_STR", 20, "Delete Failed: Invalid Authentication String")
    DELETE_FAILED_INVALID_MIC = ("CERT_STATUS_DELETE_FAILED_INVALID_MIC", 21, "Delete Failed: Invalid MIC")
    DELETE_FAILED_INVALID_CREDENTIALS = ("CERT_STATUS_DELETE_FAILED_INVALID_CREDENTIALS", 22, "Delete Failed: Invalid Credentials")
    DELETE_FAILED_PHONE_COMM_FAILURE = ("CERT_STATUS_DELETE_FAILED_PHONE_COMM_FAILURE", 23, "Delete Failed: Phone Communication Failure")
    DELETE_FAILED_KEYGEN_FAILED = ("CERT_STATUS_DELETE_FAILED_KEYGEN_FAILED", 24, "Delete Failed: Key Generation Failed/Timeout")
    DELETE_FAILED_REQUEST_LATE = ("CERT_STATUS_DELETE_FAILED_REQUEST_LATE", 25, "Delete Failed: User Initiated Request Late/Timedout")
    DELETE_FAILED_CA_COMM_FAILURE = ("CERT_STATUS_DELETE_FAILED_CA_COMM_FAILURE", 26, "Delete Failed: CA Communication Failure")
    DELETE_FAILED_CA_REJECTED = ("CERT_STATUS_DELETE_FAILED_CA_REJECTED", 27, "Delete Failed: CA Rejected Connection")
    DELETE_FAILED_NO_EC_SUPPORT = ("CERT_STATUS_DELETE_FAILED_NO_EC_SUPPORT", 28, "Delete Failed: No Support for EC only in CAPF version 3")
    TROUBLESHOOT_FAILED_INVALID_LSC = ("CERT_STATUS_TROUBLESHOOT_FAILED_INVALID_LSC", 29, "Troubleshoot Failed: Invalid LSC")
    TROUBLESHOOT_FAILED_INVALID_AUTH_STR = ("CERT_STATUS_TROUBLESHOOT_FAILED_INVALID_AUTH_STR", 30, "Troubleshoot Failed: Invalid Authentication String")
    TROUBLESHOOT_FAILED_INVALID_MIC = ("CERT_STATUS_TROUBLESHOOT_FAILED_INVALID_MIC", 31, "Troubleshoot Failed: Invalid MIC")
    TROUBLESHOOT_FAILED_INVALID_CREDENTIALS = ("CERT_STATUS_TROUBLESHOOT_FAILED_INVALID_CREDENTIALS", 32, "Troubleshoot Failed: Invalid Credentials")
    TROUBLESHOOT_FAILED_PHONE_COMM_FAILURE = ("CERT_STATUS_TROUBLESHOOT_FAILED_PHONE_COMM_FAILURE", 33, "Troubleshoot Failed: Phone Communication Failure")
    TROUBLESHOOT_FAILED_KEYGEN_FAILED = ("CERT_STATUS_TROUBLESHOOT_FAILED_KEYGEN_FAILED", 34, "Troubleshoot Failed: Key Generation Failed/Timeout")
    TROUBLESHOOT_FAILED_REQUEST_LATE = ("CERT_STATUS_TROUBLESHOOT_FAILED_REQUEST_LATE", 35, "Troubleshoot Failed: User Initiated Request Late/Timedout")


def failure_status(operation: Operation, reason: str | None = None) -> CertStatus:
    """The status for ``operation`` failing for ``reason`` (e.g. ``"CA_COMM_FAILURE"``)."""
    op = operation.name if operation is not Operation.NONE else "UPGRADE"
    return CertStatus[f"{op}_FAILED" + (f"_{reason}" if reason else "")]


def success_status(operation: Operation) -> CertStatus:
    op = operation.name if operation is not Operation.NONE else "UPGRADE"
    return CertStatus[f"{op}_SUCCESS"]


# ---- values: parse and validate ------------------------------------------------------------

_AUTH_STRING = re.compile(r"[0-9]{4,10}")
_DEADLINE = re.compile(r"(\d{4}):(\d{2}):(\d{2}):(\d{2})(?::(\d{2}))?")
_DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def validate_device_name(name: str) -> str:
    """Device names are case-insensitive (the CAPF queries compare lower-cased); we keep them upper-case."""
    name = (name or "").strip()
    if not _DEVICE_NAME.fullmatch(name):
        raise PolicyError("name", f"{name!r} is not a device name (1-64 letters, digits, '.', '_', '-')",
                          hint="Use the device's name as the phone reports it, e.g. SEP74A02FC0A675.")
    return name.upper()


def validate_auth_string(value: str) -> str:
    if not _AUTH_STRING.fullmatch(value or ""):
        raise PolicyError("auth_string", "must be 4 to 10 digits",
                          hint="Choose a numeric string the phone's user can type, e.g. 12345.")
    return value


# Auth strings are kept as salted scrypt hashes, in the users file's format
# (``scrypt$n$r$p$salt$hash``, base64 fields), so a copy of the database or of an export does not
# hand them out; the parameters travel with each hash.  docs/security.md says why scrypt.
AUTH_STRING_SCRYPT = (2 ** 14, 8, 1)
_SCRYPT_HASH = re.compile(r"scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+")


def is_auth_string_hash(value: str | None) -> bool:
    """Whether ``value`` is a stored auth string (its hash), not the digits themselves."""
    return bool(value) and _SCRYPT_HASH.fullmatch(value or "") is not None


def hash_auth_string(value: str, salt: bytes, *, params: tuple[int, int, int] = AUTH_STRING_SCRYPT) -> str:
    """The stored form of a (valid) auth string; ``salt``: 16 random bytes of the caller's."""
    n, r, p = params
    digest = hashlib.scrypt(validate_auth_string(value).encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def auth_string_matches(stored: str | None, given: str | None) -> bool:
    """Whether ``given`` is the auth string whose hash is ``stored``, compared in constant time;
    nothing matches a missing or malformed hash, and a missing answer matches nothing."""
    if given is None or not stored or not is_auth_string_hash(stored):
        return False
    _, n, r, p, salt, want = stored.split("$")
    try:
        expected = base64.b64decode(want)
        got = hashlib.scrypt(given.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected), maxmem=256 * 1024 * 1024)
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(got, expected)


def validate_rsa_key_size(bits: int | str) -> int:
    try:
        value = int(str(bits).strip().removeprefix("KEY_SIZE_"))
    except ValueError:
        value = -1
    if value not in RSA_KEY_SIZES:
        raise PolicyError("rsa_key_size", f"{bits!r} is not one of {', '.join(map(str, RSA_KEY_SIZES))}")
    return value


def validate_ec_key_size(bits: int | str) -> int:
    try:
        value = int(str(bits).strip().removeprefix("EC_KEY_SIZE_"))
    except ValueError:
        value = -1
    if value not in EC_KEY_SIZES:
        raise PolicyError("ec_key_size", f"{bits!r} is not one of {', '.join(map(str, EC_KEY_SIZES))}")
    return value


def parse_deadline(text: str) -> dt.datetime:
    """``YYYY:MM:DD:HH`` (the administration page) or ``YYYY:MM:DD:HH:MM`` (the log), UTC."""
    m = _DEADLINE.fullmatch((text or "").strip())
    if m is None:
        raise PolicyError("deadline", f"{text!r} is not YYYY:MM:DD:HH", hint="For example 2026:12:31:12.")
    year, month, day, hour, minute = (int(g) if g else 0 for g in m.groups())
    try:
        return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)
    except ValueError as exc:
        raise PolicyError("deadline", f"{text!r} is not a date and hour: {exc}") from None


def format_deadline(when: dt.datetime) -> str:
    """As the administration page shows "Operation Completes By": ``YYYY:MM:DD:HH``."""
    return as_utc(when).strftime("%Y:%m:%d:%H")


def log_deadline(when: dt.datetime | None) -> str:
    """As the CAPF log writes it: ``Operation Should Finish By=2019:01:20:12:00``."""
    return as_utc(when).strftime("%Y:%m:%d:%H:%M") if when else "INVALID"


def as_utc(when: dt.datetime) -> dt.datetime:
    """Aware UTC; naive values (SQLite hands them back) are taken as UTC."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def default_deadline(now: dt.datetime, days: int = 10) -> dt.datetime:
    """The default "Operation Completes By": ``days`` ahead, on the hour (the field has no minutes)."""
    return (as_utc(now) + dt.timedelta(days=days)).replace(minute=0, second=0, microsecond=0)


# ---- renewal and automatic enrollment ------------------------------------------------------

@dataclass(frozen=True)
class RenewalPolicy:
    """When an LSC's renewal window opens.

    By default at ``fraction`` (2/3) of the LSC's lifetime; with ``days_before`` set, that many
    days before it expires instead.  ``jitter`` (a fraction of the lifetime) opens the window up
    to that much earlier, by an amount fixed per device and certificate serial, so a fleet
    enrolled in one day does not renew in one minute, and every node computes the same moment.
    The window never opens later than configured.
    """

    enabled: bool = True
    fraction: float = 2 / 3
    days_before: int | None = None
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise PolicyError("renewal_fraction", f"{self.fraction} must be between 0 and 1 (exclusive)")
        if self.days_before is not None and self.days_before < 1:
            raise PolicyError("renewal_days_before", f"{self.days_before} must be at least 1 day")
        if not 0 <= self.jitter <= 0.5:
            raise PolicyError("renewal_jitter", f"{self.jitter} must be between 0 and 0.5 of the lifetime")

    def window_opens(self, device_name: str, serial: str, not_before: dt.datetime,
                     not_after: dt.datetime) -> dt.datetime:
        start, end = as_utc(not_before), as_utc(not_after)
        lifetime = end - start
        if self.days_before is not None:
            nominal = max(start, end - dt.timedelta(days=self.days_before))
        else:
            nominal = start + lifetime * self.fraction
        return max(start, nominal - lifetime * (self.jitter * jitter_unit(device_name, serial)))


def jitter_unit(device_name: str, serial: str) -> float:
    """A number in [0, 1) fixed by the device and its certificate serial (stable across runs and nodes)."""
    digest = hashlib.sha256(f"{device_name.upper()}|{serial.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class AutoEnrollment:
    """A profile may grant Install/Upgrade by itself to devices that present a MIC from
    ``mic_trust_store`` or whose name matches ``name_pattern`` (a glob such as ``SEP*``).
    The session server applies it; this only says whether a device qualifies."""

    by_mic: bool = False
    mic_trust_store: str = ""
    name_pattern: str = ""

    def __post_init__(self) -> None:
        if self.by_mic and not self.mic_trust_store:
            raise PolicyError("mic_trust_store", "automatic enrollment by MIC needs a manufacturer trust store")

    @property
    def enabled(self) -> bool:
        return self.by_mic or bool(self.name_pattern)

    def grants(self, device_name: str, mic_valid: bool = False) -> bool:
        if self.by_mic and mic_valid:
            return True
        return bool(self.name_pattern) and fnmatch.fnmatchcase(device_name.upper(), self.name_pattern.upper())


# ---- profiles, overrides and the effective policy -----------------------------------------

@dataclass(frozen=True)
class ProfilePolicy:
    """Defaults a profile gives its devices."""

    name: str = "default"
    auth_mode: AuthMode = AuthMode.BY_NULL_STR
    key_order: KeyOrder = KeyOrder.RSA_ONLY
    rsa_key_size: int = 2048
    ec_key_size: int = 256
    deadline_days: int = 10
    renewal: RenewalPolicy = field(default_factory=RenewalPolicy)
    auto_enrollment: AutoEnrollment = field(default_factory=AutoEnrollment)
    issuer: Issuer = Issuer.ONLINE_CA

    def __post_init__(self) -> None:
        validate_rsa_key_size(self.rsa_key_size)
        validate_ec_key_size(self.ec_key_size)
        if not 1 <= self.deadline_days <= 365:
            raise PolicyError("deadline_days", f"{self.deadline_days} must be between 1 and 365")


@dataclass(frozen=True)
class DeviceOverrides:
    """What a device sets for itself; ``None`` means "as the profile says"."""

    auth_mode: AuthMode | None = None
    key_order: KeyOrder | None = None
    rsa_key_size: int | None = None
    ec_key_size: int | None = None


@dataclass(frozen=True)
class EffectivePolicy:
    """What a session with this device must do: the profile's defaults, the device's overrides,
    and the pending operation (whose own auth mode, e.g. a renewal's ``AUTH_BY_LSC``, wins)."""

    device_name: str
    profile: str
    operation: Operation
    auth_mode: AuthMode
    key_order: KeyOrder
    rsa_key_size: int
    ec_key_size: int
    deadline: dt.datetime | None
    auth_string: str | None = field(default=None, repr=False)  # as stored: its hash
    issuer: Issuer = Issuer.ONLINE_CA

    def log_lines(self) -> list[str]:
        """The ``Select(DEVICE) ...`` lines of the CAPF log (never the auth string)."""
        name = self.device_name
        ec = ec_key_size(self.ec_key_size) if self.key_order is not KeyOrder.RSA_ONLY else ECKeySize.INVALID
        return [
            f"Select({name}) BEFORE DB query Authentication Mode={self.auth_mode.log}",
            f"Select({name}) KeySize={key_size(self.rsa_key_size).log}",
            f"Select({name}) ECKeySize={ec.log}",
            f"Select({name}) KeyOrder={self.key_order.log}",
            f"Select({name}) Operation={self.operation.log}",
            f"Select({name}) Operation Should Finish By={log_deadline(self.deadline)}",
        ]

    def is_late(self, now: dt.datetime) -> bool:
        return self.deadline is not None and as_utc(now) > as_utc(self.deadline)


def effective_policy(device_name: str, profile: ProfilePolicy, overrides: DeviceOverrides, *,
                     operation: Operation = Operation.NONE, operation_auth_mode: AuthMode | None = None,
                     deadline: dt.datetime | None = None, auth_string: str | None = None) -> EffectivePolicy:
    policy = EffectivePolicy(
        device_name=device_name,
        profile=profile.name,
        operation=operation,
        auth_mode=operation_auth_mode or overrides.auth_mode or profile.auth_mode,
        key_order=overrides.key_order or profile.key_order,
        rsa_key_size=overrides.rsa_key_size or profile.rsa_key_size,
        ec_key_size=overrides.ec_key_size or profile.ec_key_size,
        deadline=as_utc(deadline) if deadline else None,
        auth_string=auth_string,
        issuer=profile.issuer,
    )
    validate_effective(policy)
    return policy


def validate_effective(policy: EffectivePolicy) -> None:
    """Rules that involve several settings at once."""
    validate_rsa_key_size(policy.rsa_key_size)
    validate_ec_key_size(policy.ec_key_size)
    if policy.auth_mode is AuthMode.BY_STR and policy.operation is not Operation.NONE:
        if not policy.auth_string:
            raise PolicyError("auth_string", "is required when the authentication mode is "
                              f"'{AuthMode.BY_STR.display}' and an operation is pending")
        if not is_auth_string_hash(policy.auth_string):
            validate_auth_string(policy.auth_string)
