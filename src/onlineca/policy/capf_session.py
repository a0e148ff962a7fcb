"""What a CAPF device session decides, as functions from values to a decision.

Which key to ask for (key order, sizes, the phone's protocol version), whether an auth string or
a certificate authenticates the phone, the lockout, automatic enrollment, and which status each
way a session can end records (an ``Outcome``), so the session server only moves bytes and waits.
The vocabulary (operations, auth modes, statuses, the effective policy) is ``policy.capf``.  This
module is pure: no I/O, no database, no clock of its own; it never logs an auth string.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from onlineca.policy.capf import (
    AuthMode,
    AutoEnrollment,
    CertStatus,
    EffectivePolicy,
    KeyOrder,
    Operation,
    as_utc,
    failure_status,
)

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
    status: CertStatus | None = None
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


@dataclass(frozen=True)
class InstalledLSC:
    """The LSC a device has confirmed, as far as a session decides on it."""

    serial: str
    not_after: dt.datetime
    renewal_due: dt.datetime | None  # when its renewal window opens (None: renewal is off)


def renewal_on_connect(operation: Operation, installed: InstalledLSC | None, now: dt.datetime) -> bool:
    """A public-flow phone renews by asking again (it cannot answer a scheduled renewal's LSC
    challenge): with nothing pending, a new LSC is issued in the same session once the installed
    one's renewal window has opened (two thirds of its life by default, the profile's rule), and
    while it still is valid; before that the phone is declined, as the vendor does."""
    if operation is not Operation.NONE or installed is None or installed.renewal_due is None:
        return False
    return as_utc(installed.renewal_due) <= as_utc(now) < as_utc(installed.not_after)


def public_auth_mode(policy_mode: AuthMode, own_mode: AuthMode, scheduled_renewal: bool) -> AuthMode:
    """The auth mode a public-flow phone is held to: a scheduled renewal asks for the LSC, which
    such a phone cannot prove (it answers no challenge), so the device's own mode applies; any
    other operation's mode stands."""
    return own_mode if scheduled_renewal else policy_mode


def certificate_needs_challenge(operation: Operation, mode: AuthMode) -> Outcome:
    """By Existing Certificate for a phone that announced no challenge: its signature cannot be
    checked (the public flow carries no nonce), so its certificate proves nothing."""
    return Outcome(Ending.INVALID_CERTIFICATE,
                   f"{mode.display} needs a signature over CAPF's challenge, which this public-flow phone "
                   "cannot give: set the device's auth mode to By Authentication String or By Null String, "
                   "or use a phone that announces the onlineca challenge",
                   failure_status(operation, "INVALID_CREDENTIALS"))


def is_locked_out(locked_until: dt.datetime | None, now: dt.datetime) -> bool:
    return locked_until is not None and as_utc(locked_until) > as_utc(now)


def locked_out() -> Outcome:
    """The device is locked out (or its last attempts are in use): nothing is compared."""
    return Outcome(Ending.LOCKED_OUT, "locked out")


def before_operation(policy: EffectivePolicy, locked_until: dt.datetime | None,
                     now: dt.datetime, installed: InstalledLSC | None = None) -> Outcome | None:
    """Why the session must end before the phone is even authenticated, if it must: nothing
    pending (or, for a device with its LSC, "already issued"), a lockout, or an operation whose
    "Operation Completes By" has passed (which ends it)."""
    if policy.operation is Operation.NONE:
        if installed is not None:
            opens = f"; its renewal window opens {as_utc(installed.renewal_due):%Y-%m-%d %H:%M} UTC" \
                if installed.renewal_due is not None else "; renewal is off for its profile"
            return Outcome(Ending.NOTHING_PENDING, f"already issued: LSC serial {installed.serial} is installed"
                           + opens)
        return Outcome(Ending.NOTHING_PENDING, "no operation pending")
    if is_locked_out(locked_until, now):
        return locked_out()
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


def wrong_guess_delay(failures: int, *, base: float, cap: float) -> float:
    """Seconds to wait before answering the ``failures``-th wrong auth string in a row: ``base``,
    doubled for each one before it, never more than ``cap`` (guessing costs time
    even below the lockout, and the device's lease is held meanwhile)."""
    if failures <= 0 or base <= 0:
        return 0.0
    return float(min(cap, base * (1 << min(failures - 1, 30))))


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


def names_device(kind: str, cn: str, name: str) -> bool:
    """Whether a certificate's CN names the device ``name`` exactly (both upper-case): an LSC's CN
    is the name; a MIC's is the name, or the model then the name (``CP-8865-SEP74A02FC0A675``),
    the name a whole hyphen-separated tail, never a prefix of a longer name (a MIC for
    ``SEPMICVICTIM12`` does not name ``SEPMICVICTIM1``)."""
    if kind == "MIC":
        return cn == name or cn.endswith("-" + name)
    return cn == name


def judge_certificate(seen: PresentedCertificate, device_name: str) -> Credential:
    """An LSC authenticates the device it names exactly; a MIC the device its CN ends with
    (``names_device``: MICs may name the model first); either only when it chains to its trust
    store and its key signed this session's challenge."""
    kind = seen.kind
    if not seen.trust_configured:
        return Credential(kind, False, f"no trust store is configured for {kind}s")
    if seen.problem is not None:
        return Credential(kind, False, seen.problem)
    cn, name = seen.subject_cn.upper(), device_name.upper()
    if not names_device(kind, cn, name):
        return Credential(kind, False, f"the {kind} names {cn!r}, not {name}")
    if not seen.signed:
        return Credential(kind, False, f"the {kind} came without a signature over the challenge")
    if seen.signature_problem is not None:
        return Credential(kind, False, seen.signature_problem)
    return Credential(kind, True)


def lsc_not_recorded(operation: Operation, serial: str, why: str) -> Outcome:
    """An LSC that chains and names the device, but is not the one CAPF recorded as
    installed on it (another certificate from the same CA, or one revoked, deleted, replaced or
    discarded): a certificate proves one identity for one purpose, not merely a chain to a root."""
    return Outcome(Ending.INVALID_CERTIFICATE, f"LSC rejected: serial {serial} is not the LSC CAPF recorded for this "
                   f"device ({why})", failure_status(operation, "INVALID_LSC"))


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

def key_candidates(order: KeyOrder, rsa_bits: int, ec_bits: int, version: int,
                   ec_announced: bool = True) -> list[KeySpec]:
    """The keys to ask for, in order; a version 2 phone, or one that did not announce EC keys
    (every public client), is asked for RSA only."""
    ec_ok = version >= 3 and ec_announced
    if order is KeyOrder.RSA_ONLY:
        return [("rsa", rsa_bits)]
    if order is KeyOrder.EC_ONLY:
        return [("ec", ec_bits)] if ec_ok else []
    return [("ec", ec_bits), ("rsa", rsa_bits)] if ec_ok else [("rsa", rsa_bits)]


def no_key_for_version(policy: EffectivePolicy, version: int, ec_announced: bool = True) -> Outcome:
    why = f"the phone speaks protocol version {version}" if ec_announced or version < 3 else \
        "the phone did not announce EC keys (a public-flow phone)"
    return Outcome(Ending.UNSUPPORTED, f"{policy.key_order.display} but {why}",
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


def ca_rejected(est_code: str, message: str, *, vouched: bool = False) -> Outcome:
    """The RA or CA refused.  A vouched request (a phone that cannot sign, ``pki.vouch``) refused
    for its signature means a CA that insists on a self-signed PKCS#10 (AD CS always does): the
    detail says how to get such phones their LSC."""
    detail = f"{message} ({est_code})"
    if vouched and _SELF_SIGNATURE_REQUIRED in message:
        detail = ("the CA insists on a PKCS#10 signed by the phone's own key, which a public-flow phone cannot "
                  "make: set the profile's issuer to 'capf', or issue from a template with vouched_keys on an "
                  f"onlineca CA; {detail}")
    return Outcome(Ending.CA_REJECTED, detail, failure_status(Operation.UPGRADE, "CA_REJECTED"))


# What AD CS (and our CA, as it does) says of a request whose self-signature does not verify.
_SELF_SIGNATURE_REQUIRED = "Error Verifying Request Signature"


def enrollment_too_slow(seconds: float, *, retry_delay: int) -> Outcome:
    """The RA/CA did not issue within a public-flow phone's patience: the operation stays pending."""
    return ca_unavailable("EST_ERR_SSL_READ", f"no certificate within {seconds:g} s, the longest a phone without "
                          "keepalives waits ([capf] public_enroll_timeout)", retry_delay=retry_delay, retry_after=None)


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
