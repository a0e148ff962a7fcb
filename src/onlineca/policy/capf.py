"""CAPF device policy: the administrators' vocabulary, the source document's identifiers, validation.

Every value an administrator sets on a device (certificate operation, authentication mode, key
order and sizes, "Operation Completes By") and every certificate status has two names here: the
identifier the CAPF log uses (``OPERATION_UPGRADE``, ``AUTH_BY_STR``, ``KEY_SIZE_2048``,
``CERT_STATUS_UPGRADE_SUCCESS:3``) and the words the administration pages show ("Install/Upgrade",
"By Authentication String", "Upgrade Success").  The database stores the identifier.  The
effective policy of a device is its profile's defaults with the device's own overrides on top,
as frozen values.  The last part holds what a device session decides (which key to ask for,
whether an auth string or a certificate authenticates the phone, the lockout, automatic
enrollment, and which status each way a session can end records), as functions from values to a
decision, so the session server only moves bytes and waits.  This module is pure: no I/O, no
database, no clock of its own; it never logs an auth string.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Self

from onlineca.errors import PolicyError

UTC = dt.UTC


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
        for member in cls:
            if member.value == ident:
                return member
        raise ValueError(f"{ident!r} is not a valid {cls.__name__}")

    @classmethod
    def parse(cls, text: str | int | Self, field_name: str) -> Self:
        """Accept the identifier, the display words (any case), the member name or the numeric code."""
        if isinstance(text, cls):
            return text
        wanted = str(text).strip()
        folded = wanted.casefold()
        for member in cls:
            if folded in (member.ident.casefold(), member.display.casefold(), member.name.casefold(),
                          str(member.code)):
                return member
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
    auth_string: str | None = field(default=None, repr=False)

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
        validate_auth_string(policy.auth_string)


# ---- a device session's decisions -----------------------------------------------------------
#
# Values in, decision out.  A session that cannot go on ends with an ``Outcome``: the status to
# record, the words for the log, and an ``Ending`` in CAPF's own terms; the session server says
# the ending in the device protocol's words (which reason number a phone hears is the protocol's
# business, not policy's).

KeySpec = tuple[str, int]


class Ending(Enum):
    """How a session that cannot go on ends, in CAPF's terms."""

    NOTHING_PENDING = "nothing pending"
    LOCKED_OUT = "locked out"
    DEADLINE_PASSED = "deadline passed"
    UNSUPPORTED = "unsupported"            # a key the phone cannot make, or one it should not have made
    KEY_GEN_FAILED = "key generation failed"
    KEY_GEN_TIMEOUT = "key generation timeout"
    SIGN_FAILED = "signing failed"
    CA_UNAVAILABLE = "CA unavailable"      # the phone comes back after ``retry_after``
    CA_REJECTED = "CA rejected"
    STORE_FAILED = "store failed"
    REFUSED = "refused"                    # a wrong auth string; the phone would not delete or send
    INVALID_CERTIFICATE = "invalid certificate"
    PHONE_GONE = "phone gone"              # nothing more can be said to the phone


@dataclass(frozen=True)
class Outcome:
    """How a session ends when it cannot go on: ``status`` to record (None: leave the device as it
    is), ``detail`` for the log and the status history, whether the pending operation ends, and
    when to come back."""

    ending: Ending
    detail: str
    status: _Named | None = None
    end_operation: bool = False
    retry_after: int | None = None

    @property
    def final(self) -> bool:
        """A failure the phone's next session cannot fix by itself: a scheduled renewal that ends
        so backs off (a phone that could not store, a wrong auth string, an unreachable CA or a
        lost connection may well succeed next time)."""
        return self.retry_after is None and self.ending not in (Ending.STORE_FAILED, Ending.REFUSED,
                                                                Ending.PHONE_GONE)

    @property
    def renewal_failure(self) -> str | None:
        """The reason a scheduled renewal records when it fails for good (``"INVALID_LSC"``), or
        None when this outcome is not such a failure."""
        if self.status is None or not self.final:
            return None
        return self.status.ident.partition("_FAILED_")[2] or None


def is_locked_out(locked_until: dt.datetime | None, now: dt.datetime) -> bool:
    return locked_until is not None and as_utc(locked_until) > as_utc(now)


def before_operation(policy: EffectivePolicy, locked_until: dt.datetime | None,
                     now: dt.datetime) -> Outcome | None:
    """Why the session must end before the phone is even authenticated, if it must: nothing
    pending, a lockout, or an operation whose "Operation Completes By" has passed (which ends it)."""
    if policy.operation is Operation.NONE:
        return Outcome(Ending.NOTHING_PENDING, "no operation pending")
    if is_locked_out(locked_until, now):
        return Outcome(Ending.LOCKED_OUT, "locked out")
    if policy.is_late(now):
        assert policy.deadline is not None
        return Outcome(Ending.DEADLINE_PASSED, f"Operation Completes By {policy.deadline:%Y:%m:%d:%H} has passed",
                       failure_status(policy.operation, "REQUEST_LATE"), end_operation=True)
    return None


# ---- who the phone is

def lacks_credential(mode: AuthMode, *, password_given: bool, certificate_given: bool) -> bool:
    """True when the phone's answer lacks what ``mode`` asks for (CAPF asks once more)."""
    if mode is AuthMode.BY_NULL_STR:
        return False
    return not password_given if mode is AuthMode.BY_STR else not certificate_given


def auth_string_matches(expected: str | None, given: str | None) -> bool:
    """The auth string check, in constant time; an empty expected string matches nothing."""
    if given is None or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class AuthFailures:
    """The wrong-auth-string counter after one more failure: ``count`` to store, and
    ``locked_until`` when this failure locked the device out (the counter then starts again)."""

    count: int
    locked_until: dt.datetime | None = None


def after_wrong_auth_string(failed_before: int, *, max_failures: int, lockout_minutes: float,
                            now: dt.datetime) -> AuthFailures:
    count = failed_before + 1
    if count >= max_failures:
        return AuthFailures(0, as_utc(now) + dt.timedelta(minutes=lockout_minutes))
    return AuthFailures(count)


def wrong_auth_string(operation: Operation, *, given: bool, locked: bool, max_failures: int,
                      lockout_minutes: float) -> Outcome:
    detail = "wrong authentication string" if given else "no authentication string"
    if locked:
        detail += f"; {max_failures} wrong attempts: locked out for {lockout_minutes:g} min"
    return Outcome(Ending.REFUSED, detail, failure_status(operation, "INVALID_AUTH_STR"))


@dataclass(frozen=True)
class Credential:
    """What the certificate in the phone's AUTH_RESPONSE proved (``kind``: "LSC" or "MIC")."""

    kind: str
    valid: bool
    why: str = ""


@dataclass(frozen=True)
class PresentedCertificate:
    """What CAPF found when it checked the certificate a phone presented; the checks are pki's,
    the rules that turn them into a verdict are ``judge_certificate``'s.

    ``problem``: the certificate did not parse or did not chain to the trust store (pki's words);
    ``signature_problem``: the signature over this session's challenge did not verify."""

    kind: str
    trust_configured: bool = True
    problem: str | None = None
    subject_cn: str = ""
    signed: bool = False
    signature_problem: str | None = None


def judge_certificate(seen: PresentedCertificate, device_name: str) -> Credential:
    """An LSC authenticates the device it names exactly; a MIC one whose name it contains (MICs
    name the model too); either only when it chains to its trust store and its key signed this
    session's challenge."""
    kind = seen.kind
    if not seen.trust_configured:
        return Credential(kind, False, f"no trust store is configured for {kind}s")
    if seen.problem is not None:
        return Credential(kind, False, seen.problem)
    cn, name = seen.subject_cn.upper(), device_name.upper()
    if (kind == "LSC" and cn != name) or (kind == "MIC" and name not in cn):
        return Credential(kind, False, f"the {kind} names {cn!r}, not {name}")
    if not seen.signed:
        return Credential(kind, False, f"the {kind} came without a signature over the challenge")
    if seen.signature_problem is not None:
        return Credential(kind, False, seen.signature_problem)
    return Credential(kind, True)


def certificate_auth(operation: Operation, mode: AuthMode, credential: Credential | None) -> Outcome | None:
    """Whether the certificate the phone presented authenticates it for ``mode`` (LSC or MIC):
    None when it does."""
    if credential is None:
        return Outcome(Ending.INVALID_CERTIFICATE, f"{mode.display} but the phone presented no certificate",
                       failure_status(operation, "INVALID_CREDENTIALS"))
    if not credential.valid:
        reason = "INVALID_MIC" if credential.kind == "MIC" else "INVALID_LSC"
        return Outcome(Ending.INVALID_CERTIFICATE, f"{credential.kind} rejected: {credential.why}",
                       failure_status(operation, reason))
    return None


@dataclass(frozen=True)
class AutoGrant:
    """An Install/Upgrade a profile grants by itself; by MIC, authenticated by that MIC."""

    profile: str
    by_mic: bool
    why: str

    def settings(self) -> dict[str, Any]:
        """The device settings the grant writes."""
        out: dict[str, Any] = {"operation": Operation.UPGRADE.ident}
        if self.by_mic:
            out["auth_mode"] = AuthMode.BY_MIC.ident
        return out


def may_auto_enroll(*, known: bool, operation: Operation, has_lsc: bool) -> bool:
    """Automatic enrollment is for new devices and for known ones with nothing pending and no LSC;
    it never overrides an administrator's operation nor re-enrolls a device that has its LSC."""
    return not known or (operation is Operation.NONE and not has_lsc)


def auto_enrollment_grant(device_name: str, profile: str, auto: AutoEnrollment, *,
                          mic_valid: bool) -> AutoGrant | None:
    """The grant of ``profile`` for this device (``mic_valid``: it presented a MIC that chains to
    the profile's manufacturer trust store), or None."""
    if not auto.enabled or not auto.grants(device_name, mic_valid=mic_valid):
        return None
    # A valid MIC is the stronger credential: it authenticates the operation even where the
    # name pattern alone would have granted it.
    why = "a valid MIC" if mic_valid else f"its name matches {auto.name_pattern!r}"
    return AutoGrant(profile, mic_valid, why)


# ---- which key

def key_candidates(order: KeyOrder, rsa_bits: int, ec_bits: int, version: int) -> list[KeySpec]:
    """The keys to ask for, in order; a version 2 phone knows no EC key."""
    if order is KeyOrder.RSA_ONLY:
        return [("rsa", rsa_bits)]
    if order is KeyOrder.EC_ONLY:
        return [("ec", ec_bits)] if version >= 3 else []
    return [("ec", ec_bits), ("rsa", rsa_bits)] if version >= 3 else [("rsa", rsa_bits)]


def no_key_for_version(policy: EffectivePolicy, version: int) -> Outcome:
    return Outcome(Ending.UNSUPPORTED, f"{policy.key_order.display} but the phone speaks protocol version {version}",
                   failure_status(policy.operation, "NO_EC_SUPPORT"))


def next_key_request(index: int, attempts: int, candidates: Sequence[KeySpec], max_attempts: int) -> int | None:
    """After the phone could not make ``candidates[index]`` (``attempts`` asked so far): which
    candidate to ask for next (EC failed: the RSA backup, else the same again), or None when
    CAPF gives up."""
    if attempts >= max_attempts:
        return None
    return min(index + 1, len(candidates) - 1)


def keygen_failed(operation: Operation, attempts: int) -> Outcome:
    return Outcome(Ending.KEY_GEN_FAILED, f"key generation failed {attempts} times",
                   failure_status(operation, "KEYGEN_FAILED"))


def keygen_timeout(operation: Operation, seconds: float) -> Outcome:
    return Outcome(Ending.KEY_GEN_TIMEOUT, f"no key within {seconds:g} s (Key Generation Timeout)",
                   failure_status(operation, "KEYGEN_FAILED"))


def key_unusable(operation: Operation, why: str) -> Outcome:
    return Outcome(Ending.UNSUPPORTED, f"the phone's public key does not parse: {why}",
                   failure_status(operation, "KEYGEN_FAILED"))


def check_returned_key(policy: EffectivePolicy, asked: KeySpec, got: KeySpec) -> Outcome | None:
    """A key of another type or size than asked is a policy violation; None when it is the one."""
    if got == asked:
        return None
    return Outcome(Ending.UNSUPPORTED,
                   f"policy violation: the phone returned a {got[0].upper()} {got[1]} key where "
                   f"{asked[0].upper()} {asked[1]} was asked ({policy.key_order.display})",
                   failure_status(policy.operation, "KEYGEN_FAILED"))


# ---- the request, the CA, the phone's answers

def sign_refused(answer: str) -> Outcome:
    return Outcome(Ending.SIGN_FAILED, f"the phone did not sign the request: {answer}",
                   failure_status(Operation.UPGRADE, "PHONE_COMM_FAILURE"))


def signature_invalid(why: str) -> Outcome:
    return Outcome(Ending.SIGN_FAILED, f"the phone's signature over its request does not verify: {why}",
                   failure_status(Operation.UPGRADE, "INVALID_CREDENTIALS"))


def ca_unavailable(est_code: str, message: str, *, retry_delay: int, retry_after: int | None) -> Outcome:
    """The RA or CA is down, slow or busy: the operation stays pending and the phone comes back
    after CAPF's retry delay, or later if the RA asked for more."""
    return Outcome(Ending.CA_UNAVAILABLE, f"RA/CA unavailable ({est_code}): {message}; the operation stays pending",
                   failure_status(Operation.UPGRADE, "CA_COMM_FAILURE"),
                   retry_after=max(retry_delay, retry_after or 0))


def ca_rejected(est_code: str, message: str) -> Outcome:
    return Outcome(Ending.CA_REJECTED, f"{message} ({est_code})", failure_status(Operation.UPGRADE, "CA_REJECTED"))


_PHONE_TASK = {Operation.UPGRADE: ("store the LSC", Ending.STORE_FAILED),
               Operation.DELETE: ("delete its LSC", Ending.REFUSED),
               Operation.TROUBLESHOOT: ("send its certificates", Ending.REFUSED)}


def phone_refused(operation: Operation, answer: str) -> Outcome:
    """The phone answered the operation's last request (store, delete, fetch) with a failure."""
    what, ending = _PHONE_TASK[operation]
    status = failure_status(operation, "PHONE_COMM_FAILURE" if operation is Operation.UPGRADE else None)
    return Outcome(ending, f"the phone did not {what}: {answer}", status)


def phone_gone(operation: Operation, detail: str) -> Outcome:
    """The connection broke or the phone stopped answering during ``operation``."""
    return Outcome(Ending.PHONE_GONE, detail, failure_status(operation, "PHONE_COMM_FAILURE"))
