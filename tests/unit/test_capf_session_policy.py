"""What a CAPF device session decides (``policy.capf_session``), as values in and decisions out: which key
to ask for, the auth string and its lockout, certificate verdicts, automatic enrollment, and the
status, ending and finality of every way a session can end."""

from __future__ import annotations

import datetime as dt

import pytest

from onlineca.capf.server import REASONS
from onlineca.policy.capf import (
    UTC,
    AuthMode,
    AutoEnrollment,
    DeviceOverrides,
    KeyOrder,
    Operation,
    ProfilePolicy,
    auth_string_matches,
    effective_policy,
    failure_status,
    hash_auth_string,
    is_auth_string_hash,
)
from onlineca.policy.capf_session import (
    Credential,
    Ending,
    Outcome,
    PresentedCertificate,
    auto_enrollment_grant,
    before_operation,
    ca_rejected,
    ca_unavailable,
    certificate_auth,
    check_returned_key,
    is_locked_out,
    judge_certificate,
    key_candidates,
    key_unusable,
    keygen_failed,
    keygen_timeout,
    lacks_credential,
    locked_out,
    lsc_not_recorded,
    may_auto_enroll,
    names_device,
    next_key_request,
    no_key_for_version,
    phone_gone,
    phone_refused,
    sign_refused,
    signature_invalid,
    wrong_auth_string,
    wrong_guess_delay,
)
from onlineca.proto.devproto.messages import Reason

T0 = dt.datetime(2026, 1, 1, 12, tzinfo=UTC)
NAME = "SEP74A02FC0A675"


def _policy(operation: Operation = Operation.UPGRADE, *, deadline: dt.datetime | None = None,
            key_order: KeyOrder = KeyOrder.EC_ONLY, auth_mode: AuthMode = AuthMode.BY_NULL_STR):  # type: ignore[no-untyped-def]
    return effective_policy(NAME, ProfilePolicy(key_order=key_order, auth_mode=auth_mode), DeviceOverrides(),
                            operation=operation, deadline=deadline,
                            auth_string="12345" if auth_mode is AuthMode.BY_STR else None)


# ---- which key

def test_key_candidates_follow_the_key_order_and_the_phones_version() -> None:
    assert key_candidates(KeyOrder.RSA_ONLY, 2048, 256, 3) == [("rsa", 2048)]
    assert key_candidates(KeyOrder.EC_ONLY, 2048, 384, 3) == [("ec", 384)]
    assert key_candidates(KeyOrder.EC_ONLY, 2048, 384, 2) == []
    assert key_candidates(KeyOrder.EC_PREFERRED_RSA_BACKUP, 3072, 256, 3) == [("ec", 256), ("rsa", 3072)]
    assert key_candidates(KeyOrder.EC_PREFERRED_RSA_BACKUP, 3072, 256, 2) == [("rsa", 3072)]


def test_no_key_for_a_version_2_phone_is_no_ec_support() -> None:
    out = no_key_for_version(_policy(), 2)
    assert out.ending is Ending.UNSUPPORTED and out.final
    assert out.status is failure_status(Operation.UPGRADE, "NO_EC_SUPPORT")
    assert out.detail == "EC Only but the phone speaks protocol version 2"


def test_after_a_failed_key_the_rsa_backup_then_the_same_again_until_the_attempts_run_out() -> None:
    both = [("ec", 256), ("rsa", 2048)]
    assert next_key_request(0, 1, both, 3) == 1        # EC failed: the RSA backup
    assert next_key_request(1, 2, both, 3) == 1        # RSA failed: RSA again
    assert next_key_request(1, 3, both, 3) is None     # three attempts: give up
    assert next_key_request(0, 1, [("ec", 256)], 3) == 0
    out = keygen_failed(Operation.UPGRADE, 3)
    assert (out.ending, out.detail, out.final) == (Ending.KEY_GEN_FAILED, "key generation failed 3 times", True)
    out = keygen_timeout(Operation.UPGRADE, 0.5)
    assert out.ending is Ending.KEY_GEN_TIMEOUT and out.detail == "no key within 0.5 s (Key Generation Timeout)"
    assert out.status is failure_status(Operation.UPGRADE, "KEYGEN_FAILED")
    assert key_unusable(Operation.UPGRADE, "junk").ending is Ending.UNSUPPORTED


def test_a_key_other_than_asked_is_a_policy_violation() -> None:
    policy = _policy()
    assert check_returned_key(policy, ("ec", 256), ("ec", 256)) is None
    out = check_returned_key(policy, ("ec", 256), ("ec", 384))
    assert out is not None and out.ending is Ending.UNSUPPORTED
    assert out.detail == "policy violation: the phone returned a EC 384 key where EC 256 was asked (EC Only)"
    assert out.status is failure_status(Operation.UPGRADE, "KEYGEN_FAILED")


# ---- before the operation starts

def test_nothing_pending_lockout_and_deadline_in_that_order() -> None:
    assert before_operation(_policy(Operation.NONE), T0 + dt.timedelta(hours=1), T0) == \
        Outcome(Ending.NOTHING_PENDING, "no operation pending")
    locked = before_operation(_policy(), T0 + dt.timedelta(minutes=1), T0)
    assert locked is not None and locked.ending is Ending.LOCKED_OUT and locked.status is None
    assert before_operation(_policy(), T0 - dt.timedelta(minutes=1), T0) is None  # the lockout is over
    late = before_operation(_policy(deadline=T0 + dt.timedelta(hours=1)), None, T0 + dt.timedelta(hours=2))
    assert late is not None and late.ending is Ending.DEADLINE_PASSED and late.end_operation
    assert late.status is failure_status(Operation.UPGRADE, "REQUEST_LATE")
    assert late.detail == "Operation Completes By 2026:01:01:13 has passed"
    assert before_operation(_policy(deadline=T0 + dt.timedelta(hours=1)), None, T0) is None


def test_lockout_is_over_at_its_moment() -> None:
    assert not is_locked_out(None, T0)
    assert is_locked_out(T0 + dt.timedelta(seconds=1), T0)
    assert not is_locked_out(T0, T0)
    assert is_locked_out((T0 + dt.timedelta(seconds=1)).replace(tzinfo=None), T0)  # SQLite hands back naive UTC


# ---- the auth string and its lockout

def test_auth_strings_are_kept_as_salted_hashes_and_compared_by_them() -> None:
    stored = hash_auth_string("12345", b"s" * 16)
    assert stored.startswith("scrypt$16384$8$1$") and "12345" not in stored and is_auth_string_hash(stored)
    assert hash_auth_string("12345", b"t" * 16) != stored  # salted: the same string, another hash
    assert auth_string_matches(stored, "12345")
    assert not auth_string_matches(stored, "54321")
    assert not auth_string_matches(stored, "123456")
    assert not auth_string_matches(stored, None)
    assert not auth_string_matches(None, "")
    assert not auth_string_matches("", "")  # no string set: nothing matches it
    assert not auth_string_matches("12345", "12345")  # a clear value is not a stored string
    assert not auth_string_matches("scrypt$1$1$1$!!$!!", "12345")


def test_wrong_guesses_wait_longer_each_time_up_to_the_bound() -> None:
    assert [wrong_guess_delay(n, base=1.0, cap=5.0) for n in range(7)] == [0, 1, 2, 4, 5, 5, 5]
    assert wrong_guess_delay(3, base=0.0, cap=5.0) == 0
    assert wrong_guess_delay(10 ** 6, base=0.5, cap=8.0) == 8.0
    assert locked_out().ending is Ending.LOCKED_OUT and locked_out().status is None


def test_a_wrong_auth_string_is_refused_and_may_be_tried_again() -> None:
    out = wrong_auth_string(Operation.UPGRADE, given=True, locked=False, max_failures=3, lockout_minutes=30)
    assert out.ending is Ending.REFUSED and not out.final and out.renewal_failure is None
    assert out.detail == "wrong authentication string"
    assert out.status is failure_status(Operation.UPGRADE, "INVALID_AUTH_STR")
    out = wrong_auth_string(Operation.DELETE, given=False, locked=True, max_failures=3, lockout_minutes=30)
    assert out.detail == "no authentication string; 3 wrong attempts: locked out for 30 min"
    assert out.status is failure_status(Operation.DELETE, "INVALID_AUTH_STR")


@pytest.mark.parametrize(("mode", "password", "certificate", "lacking"), [
    (AuthMode.BY_NULL_STR, False, False, False),
    (AuthMode.BY_STR, False, True, True),
    (AuthMode.BY_STR, True, False, False),
    (AuthMode.BY_LSC, True, False, True),
    (AuthMode.BY_MIC, False, True, False),
])
def test_which_answer_lacks_the_credential_of_the_mode(mode: AuthMode, password: bool, certificate: bool,
                                                       lacking: bool) -> None:
    assert lacks_credential(mode, password_given=password, certificate_given=certificate) is lacking


# ---- certificates

def test_certificate_verdicts_in_the_documented_order() -> None:
    def judge(**facts: object) -> Credential:
        return judge_certificate(PresentedCertificate(**facts), NAME)  # type: ignore[arg-type]

    assert judge(kind="MIC", trust_configured=False) == Credential("MIC", False, "no trust store is configured for MICs")
    assert judge(kind="LSC", problem="certificate expired") == Credential("LSC", False, "certificate expired")
    assert judge(kind="LSC", subject_cn="SEPOTHER", signed=True).why == f"the LSC names 'SEPOTHER', not {NAME}"
    assert judge(kind="LSC", subject_cn=f"CP-8845-{NAME}", signed=True).why.startswith("the LSC names")
    assert judge(kind="MIC", subject_cn=f"CP-8845-{NAME}", signed=True).valid  # a MIC names the model too
    assert judge(kind="LSC", subject_cn=NAME.lower(), signed=True).valid        # names are case-insensitive
    assert judge(kind="MIC", subject_cn=NAME).why == "the MIC came without a signature over the challenge"
    assert judge(kind="LSC", subject_cn=NAME, signed=True, signature_problem="bad signature").why == "bad signature"


def test_a_mic_names_the_device_exactly_never_a_longer_name() -> None:
    """Issue 11: a MIC for SEPMICVICTIM12 passed as SEPMICVICTIM1 (a substring test)."""
    def judge(cn: str, name: str) -> Credential:
        return judge_certificate(PresentedCertificate("MIC", subject_cn=cn, signed=True), name)

    assert not judge("SEPMICVICTIM12", "SEPMICVICTIM1").valid
    assert not judge("CP-8865-SEPMICVICTIM12", "SEPMICVICTIM1").valid
    assert not judge("XSEPMICVICTIM1", "SEPMICVICTIM1").valid
    assert not judge("SEPMICVICTIM1-CP-8865", "SEPMICVICTIM1").valid
    assert judge("SEPMICVICTIM12", "SEPMICVICTIM12").valid
    assert judge("CP-8865-SEPMICVICTIM1", "SEPMICVICTIM1").valid
    assert names_device("MIC", "CP-8865-SEP1", "SEP1") and not names_device("LSC", "CP-8865-SEP1", "SEP1")


def test_an_lsc_that_is_not_the_recorded_one_is_an_invalid_lsc() -> None:
    out = lsc_not_recorded(Operation.UPGRADE, "1f", "it is superseded")
    assert out.ending is Ending.INVALID_CERTIFICATE and out.status is failure_status(Operation.UPGRADE, "INVALID_LSC")
    assert "serial 1f is not the LSC CAPF recorded" in out.detail and out.renewal_failure == "INVALID_LSC"


def test_certificate_auth_outcomes() -> None:
    assert certificate_auth(Operation.UPGRADE, AuthMode.BY_LSC, Credential("LSC", True)) is None
    none = certificate_auth(Operation.UPGRADE, AuthMode.BY_LSC, None)
    assert none is not None and none.status is failure_status(Operation.UPGRADE, "INVALID_CREDENTIALS")
    assert none.ending is Ending.INVALID_CERTIFICATE and none.final
    assert none.detail == "By Existing Certificate (Precedence to LSC) but the phone presented no certificate"
    mic = certificate_auth(Operation.UPGRADE, AuthMode.BY_MIC, Credential("MIC", False, "expired"))
    assert mic is not None and mic.status is failure_status(Operation.UPGRADE, "INVALID_MIC")
    assert mic.detail == "MIC rejected: expired" and mic.renewal_failure == "INVALID_MIC"
    lsc = certificate_auth(Operation.UPGRADE, AuthMode.BY_MIC, Credential("LSC", False, "x"))
    assert lsc is not None and lsc.status is failure_status(Operation.UPGRADE, "INVALID_LSC")


# ---- automatic enrollment

def test_automatic_enrollment_only_for_new_or_idle_devices_without_an_lsc() -> None:
    assert may_auto_enroll(known=False, operation=Operation.NONE, has_lsc=False)
    assert may_auto_enroll(known=True, operation=Operation.NONE, has_lsc=False)
    assert not may_auto_enroll(known=True, operation=Operation.NONE, has_lsc=True)
    assert not may_auto_enroll(known=True, operation=Operation.DELETE, has_lsc=False)


def test_automatic_enrollment_grants() -> None:
    by_mic = AutoEnrollment(by_mic=True, mic_trust_store="/m.pem")
    grant = auto_enrollment_grant(NAME, "factory", by_mic, mic_valid=True)
    assert grant is not None and grant.why == "a valid MIC"
    assert grant.settings() == {"operation": "OPERATION_UPGRADE", "auth_mode": "AUTH_BY_MIC"}
    assert auto_enrollment_grant(NAME, "factory", by_mic, mic_valid=False) is None
    by_name = AutoEnrollment(name_pattern="sep*")
    grant = auto_enrollment_grant(NAME, "lobby", by_name, mic_valid=False)
    assert grant is not None and grant.settings() == {"operation": "OPERATION_UPGRADE"}
    assert grant.why == "its name matches 'sep*'"
    # A valid MIC authenticates the operation even where the name alone grants it.
    grant = auto_enrollment_grant(NAME, "lobby", by_name, mic_valid=True)
    assert grant is not None and grant.settings()["auth_mode"] == "AUTH_BY_MIC"
    assert auto_enrollment_grant("ATA0011", "lobby", by_name, mic_valid=False) is None
    assert auto_enrollment_grant(NAME, "off", AutoEnrollment(), mic_valid=True) is None


# ---- the request, the CA, the phone's answers

def test_ca_outcomes() -> None:
    out = ca_unavailable("EST_ERR_IP_CONNECT", "connection refused", retry_delay=120, retry_after=None)
    assert out.ending is Ending.CA_UNAVAILABLE and out.retry_after == 120 and not out.final
    assert out.status is failure_status(Operation.UPGRADE, "CA_COMM_FAILURE")
    assert out.detail == "RA/CA unavailable (EST_ERR_IP_CONNECT): connection refused; the operation stays pending"
    assert ca_unavailable("EST_ERR_HTTP_UNSUPPORTED", "busy", retry_delay=120, retry_after=600).retry_after == 600
    assert ca_unavailable("EST_ERR_HTTP_UNSUPPORTED", "busy", retry_delay=120, retry_after=5).retry_after == 120
    out = ca_rejected("EST_ERR_AUTH_FAIL", "the RA refused the request")
    assert out.final and out.renewal_failure == "CA_REJECTED"
    assert out.detail == "the RA refused the request (EST_ERR_AUTH_FAIL)"


def test_signing_outcomes() -> None:
    assert sign_refused("reason 74").status is failure_status(Operation.UPGRADE, "PHONE_COMM_FAILURE")
    assert sign_refused("reason 74").detail == "the phone did not sign the request: reason 74"
    assert signature_invalid("bad").status is failure_status(Operation.UPGRADE, "INVALID_CREDENTIALS")
    assert signature_invalid("bad").final


@pytest.mark.parametrize(("operation", "status", "ending", "words"), [
    (Operation.UPGRADE, "CERT_STATUS_UPGRADE_FAILED_PHONE_COMM_FAILURE", Ending.STORE_FAILED, "store the LSC"),
    (Operation.DELETE, "CERT_STATUS_DELETE_FAILED", Ending.REFUSED, "delete its LSC"),
    (Operation.TROUBLESHOOT, "CERT_STATUS_TROUBLESHOOT_FAILED", Ending.REFUSED, "send its certificates"),
])
def test_a_phone_that_refuses_the_last_step_may_try_again(operation: Operation, status: str, ending: Ending,
                                                            words: str) -> None:
    out = phone_refused(operation, "reason 71 (flash full)")
    assert out.status is not None and out.status.ident == status and out.ending is ending
    assert out.detail == f"the phone did not {words}: reason 71 (flash full)"
    assert not out.final and out.renewal_failure is None


def test_a_phone_gone_is_a_communication_failure_that_may_succeed_next_time() -> None:
    out = phone_gone(Operation.UPGRADE, "the phone closed the connection")
    assert out.status is failure_status(Operation.UPGRADE, "PHONE_COMM_FAILURE")
    assert not out.final and out.renewal_failure is None and not out.end_operation


def test_every_ending_has_a_reason_on_the_wire() -> None:
    assert set(REASONS) == set(Ending)
    assert REASONS[Ending.REFUSED] is Reason.OPERATION_REFUSED
    assert REASONS[Ending.INVALID_CERTIFICATE] is Reason.INVALID_CERTIFICATE
