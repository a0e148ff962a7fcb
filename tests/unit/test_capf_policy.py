"""CAPF policy: the document's identifiers and display words, validation naming the field, renewal windows."""

from __future__ import annotations

import datetime as dt
import statistics

import pytest

from onlineca.errors import PolicyError
from onlineca.policy.capf import (
    UTC,
    AuthMode,
    AutoEnrollment,
    CertStatus,
    DeviceOverrides,
    ECKeySize,
    KeyOrder,
    KeySize,
    Operation,
    ProfilePolicy,
    RenewalPolicy,
    effective_policy,
    failure_status,
    format_deadline,
    jitter_unit,
    parse_deadline,
    validate_auth_string,
    validate_device_name,
    validate_ec_key_size,
    validate_rsa_key_size,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)


def test_identifiers_and_codes_match_the_source_document_log() -> None:
    # "Operation Status =CERT_STATUS_UPGRADE_SUCCESS:3", "Authentication Mode=AUTH_BY_STR:1",
    # "AUTH_BY_NULL_STR:2", "KeySize=KEY_SIZE_2048:3", "ECKeySize=INVALID:0", "KEYORDER_RSA_ONLY:1",
    # "Operation=OPERATION_NONE:1" and "tkCertificateOperation=1".
    assert CertStatus.UPGRADE_SUCCESS.log == "CERT_STATUS_UPGRADE_SUCCESS:3"
    assert CertStatus.UPGRADE_SUCCESS.display == "Upgrade Success"
    assert AuthMode.BY_STR.log == "AUTH_BY_STR:1"
    assert AuthMode.BY_NULL_STR.log == "AUTH_BY_NULL_STR:2"
    assert KeySize.KEY_SIZE_2048.log == "KEY_SIZE_2048:3"
    assert ECKeySize.INVALID.log == "INVALID:0"
    assert KeyOrder.RSA_ONLY.log == "KEYORDER_RSA_ONLY:1"
    assert Operation.NONE.log == "OPERATION_NONE:1"
    assert Operation.UPGRADE.ident == "OPERATION_UPGRADE" and Operation.UPGRADE.display == "Install/Upgrade"


def test_every_status_of_the_notes_exists_once() -> None:
    displays = [s.display for s in CertStatus]
    assert len(displays) == len(set(displays)) and len({s.code for s in CertStatus}) == len(displays)
    for words in ("None", "Operation Pending", "Delete Success", "Troubleshoot Success", "Troubleshoot Failed",
                  "Upgrade Failed: CA Communication Failure", "Delete Failed: CA Rejected Connection",
                  "Upgrade Failed: No Support for EC only in CAPF version 3",
                  "Troubleshoot Failed: Key Generation Failed/Timeout",
                  "Upgrade Failed: User Initiated Request Late/Timedout",
                  "Upgrade Failed: Invalid Authentication String", "Delete Failed: Invalid MIC"):
        assert words in displays
    assert "Troubleshoot Failed: CA Communication Failure" not in displays
    assert failure_status(Operation.UPGRADE, "CA_COMM_FAILURE").display == "Upgrade Failed: CA Communication Failure"


@pytest.mark.parametrize("text", ["Install/Upgrade", "install/upgrade", "OPERATION_UPGRADE", "UPGRADE", "2"])
def test_parse_accepts_words_identifiers_and_codes(text: str) -> None:
    assert Operation.parse(text, "operation") is Operation.UPGRADE


def test_parse_error_names_the_field_and_the_choices() -> None:
    with pytest.raises(PolicyError) as err:
        AuthMode.parse("By Password", "auth_mode")
    assert err.value.field == "auth_mode"
    assert str(err.value).startswith("auth_mode: 'By Password' is not one of")
    assert "By Existing Certificate (Precedence to MIC)" in str(err.value)


@pytest.mark.parametrize("value", ["1234", "0000000000", "12345"])
def test_auth_string_accepts_4_to_10_digits(value: str) -> None:
    assert validate_auth_string(value) == value


@pytest.mark.parametrize("value", ["", "123", "12345678901", "12a45", " 1234", "１２３４"])
def test_auth_string_refuses_everything_else(value: str) -> None:
    with pytest.raises(PolicyError) as err:
        validate_auth_string(value)
    assert err.value.field == "auth_string"


def test_key_sizes() -> None:
    assert [validate_rsa_key_size(b) for b in (512, "1024", "KEY_SIZE_2048", 3072, 4096)] == [512, 1024, 2048, 3072, 4096]
    assert [validate_ec_key_size(b) for b in (256, "384", 521)] == [256, 384, 521]
    for bad, check, name in ((768, validate_rsa_key_size, "rsa_key_size"), ("x", validate_rsa_key_size, "rsa_key_size"),
                             (224, validate_ec_key_size, "ec_key_size"), (2048, validate_ec_key_size, "ec_key_size")):
        with pytest.raises(PolicyError) as err:
            check(bad)  # type: ignore[operator]
        assert err.value.field == name


def test_deadline_format() -> None:
    when = parse_deadline("2019:01:20:12")
    assert when == dt.datetime(2019, 1, 20, 12, tzinfo=UTC)
    assert parse_deadline("2019:01:20:12:00") == when  # as the log writes it
    assert format_deadline(when) == "2019:01:20:12"
    for bad in ("2019-01-20 12:00", "2019:13:01:00", "2019:02:30:00", "2019:01:20:24", "", "2019:1:2:3"):
        with pytest.raises(PolicyError) as err:
            parse_deadline(bad)
        assert err.value.field == "deadline"


def test_device_names() -> None:
    assert validate_device_name(" sep74a02fc0a675 ") == "SEP74A02FC0A675"
    for bad in ("", "SEP 1", "x" * 65, "-SEP", "SEP'; DROP", "SEP\x00"):
        with pytest.raises(PolicyError):
            validate_device_name(bad)


def test_effective_policy_is_profile_plus_overrides_and_the_operation_auth_wins() -> None:
    profile = ProfilePolicy(name="phones", auth_mode=AuthMode.BY_NULL_STR, key_order=KeyOrder.EC_ONLY,
                            ec_key_size=384)
    p = effective_policy("SEP1", profile, DeviceOverrides(rsa_key_size=3072))
    assert (p.auth_mode, p.key_order, p.rsa_key_size, p.ec_key_size) == (AuthMode.BY_NULL_STR, KeyOrder.EC_ONLY,
                                                                          3072, 384)
    p = effective_policy("SEP1", profile, DeviceOverrides(auth_mode=AuthMode.BY_MIC), operation=Operation.UPGRADE,
                         operation_auth_mode=AuthMode.BY_LSC)
    assert p.auth_mode is AuthMode.BY_LSC
    with pytest.raises(PolicyError) as err:
        effective_policy("SEP1", profile, DeviceOverrides(auth_mode=AuthMode.BY_STR), operation=Operation.UPGRADE)
    assert err.value.field == "auth_string"
    p = effective_policy("SEP1", profile, DeviceOverrides(auth_mode=AuthMode.BY_STR), operation=Operation.UPGRADE,
                         auth_string="5678", deadline=T0)
    assert "5678" not in repr(p) and not any("5678" in line for line in p.log_lines())
    assert p.log_lines()[-1] == "Select(SEP1) Operation Should Finish By=2026:01:01:00:00"
    assert p.is_late(T0 + dt.timedelta(seconds=1)) and not p.is_late(T0)


def test_profile_validation_names_the_field() -> None:
    with pytest.raises(PolicyError) as err:
        ProfilePolicy(rsa_key_size=1000)
    assert err.value.field == "rsa_key_size"
    for kwargs, name in (({"fraction": 1.0}, "renewal_fraction"), ({"days_before": 0}, "renewal_days_before"),
                         ({"jitter": 0.9}, "renewal_jitter")):
        with pytest.raises(PolicyError) as err:
            RenewalPolicy(**kwargs)  # type: ignore[arg-type]
        assert err.value.field == name
    with pytest.raises(PolicyError) as err:
        AutoEnrollment(by_mic=True)
    assert err.value.field == "mic_trust_store"


def test_renewal_window_default_two_thirds_never_later_and_stable() -> None:
    life = dt.timedelta(days=300)
    nominal = T0 + life * (2 / 3)
    policy = RenewalPolicy()
    opens = [policy.window_opens(f"SEP{i:012X}", "1f2e", T0, T0 + life) for i in range(1000)]
    assert all(nominal - life * 0.1 <= o <= nominal for o in opens)
    assert opens == [policy.window_opens(f"SEP{i:012X}", "1f2e", T0, T0 + life) for i in range(1000)]
    # Spread: a fleet enrolled in one day renews over about 30 days, roughly evenly.
    days = sorted((nominal - o).total_seconds() / 86400 for o in opens)
    assert days[-1] - days[0] > 29
    assert 13 < statistics.median(days) < 17
    assert len({round(d) for d in days}) >= 30
    assert RenewalPolicy(jitter=0).window_opens("SEP1", "1", T0, T0 + life) == nominal
    # A new certificate (new serial) gets its own jitter.
    assert jitter_unit("SEP1", "aa") != jitter_unit("SEP1", "ab")
    assert jitter_unit("sep1", "AA") == jitter_unit("SEP1", "aa")


def test_renewal_window_days_before_expiry() -> None:
    life = dt.timedelta(days=365)
    policy = RenewalPolicy(days_before=30, jitter=0)
    assert policy.window_opens("SEP1", "1", T0, T0 + life) == T0 + life - dt.timedelta(days=30)
    # Shorter than the lifetime: opens at issue, never before it.
    assert RenewalPolicy(days_before=400).window_opens("SEP1", "1", T0, T0 + life) == T0


def test_auto_enrollment() -> None:
    by_name = AutoEnrollment(name_pattern="SEP74A0*")
    assert by_name.grants("sep74a02fc0a675") and not by_name.grants("SEP000000000001")
    by_mic = AutoEnrollment(by_mic=True, mic_trust_store="/etc/mic.pem")
    assert by_mic.grants("ANY", mic_valid=True) and not by_mic.grants("ANY", mic_valid=False)
    assert not AutoEnrollment().enabled and by_mic.enabled


def test_cert_status_table_is_the_notes_eight_then_one_failure_per_reason():
    from onlineca.policy.capf import _CA_REASONS, _REASONS, CertStatus
    expected = [m.name for m in list(CertStatus)[:8]]
    assert expected == ["NONE", "OPERATION_PENDING", "UPGRADE_SUCCESS", "DELETE_SUCCESS", "TROUBLESHOOT_SUCCESS",
                        "UPGRADE_FAILED", "DELETE_FAILED", "TROUBLESHOOT_FAILED"]
    code = 9
    for op in ("UPGRADE", "DELETE", "TROUBLESHOOT"):
        for reason, words in _REASONS + (_CA_REASONS if op != "TROUBLESHOOT" else ()):
            member = CertStatus[f"{op}_FAILED_{reason}"]
            assert (member.ident, member.code, member.display) == (
                f"CERT_STATUS_{op}_FAILED_{reason}", code, f"{op.title()} Failed: {words}")
            code += 1
    assert len(CertStatus) == code - 1 and [m.code for m in CertStatus] == list(range(1, code))
