"""CAPF sessions on 127.0.0.1: each authentication mode and each wrong credential with its status,
the lockout, Delete and Troubleshoot, the deadline passing, automatic enrollment by MIC and by name
pattern, unknown devices, nothing pending, and hostile bytes."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from capf_lab import CAPFLab, close_lab, make_lab, past

from onlineca import pki
from onlineca.phone.client import Faults, PhoneAuth
from onlineca.phone.device import Phone
from onlineca.proto.devproto.messages import AuthRequest, AuthType, Message
from onlineca.store import devices as inv


@pytest.fixture
async def lab(tmp_path: Path, lab_pki) -> CAPFLab:  # type: ignore[no-untyped-def]
    lab = await make_lab(tmp_path, lab_pki, f"sqlite:///{tmp_path / 'capf.db'}")
    yield lab
    await close_lab(lab)


def _upgrade(lab: CAPFLab, name: str, **settings: object) -> None:
    lab.add_device(name, operation="Install/Upgrade", key_order="EC Only", **settings)


def _auth_types(into: list[AuthType | None]):  # type: ignore[no-untyped-def]
    """An ``on_message`` that notes what each AUTH_REQUEST asked for."""
    def seen(msg: Message) -> None:
        if isinstance(msg, AuthRequest):
            into.append(msg.auth_type)
    return seen


def _with_lsc(name: str, cert, key) -> Phone:  # type: ignore[no-untyped-def]
    phone = Phone(name)
    phone.provision_lsc(cert, key)
    return phone


async def test_auth_string_right_wrong_and_asked_again(lab: CAPFLab) -> None:
    _upgrade(lab, "SEPSTRING001", auth_mode="By Authentication String", auth_string="12345")
    result = await lab.session(Phone("SEPSTRING001"), PhoneAuth("string", "54321"))
    assert result.reason == "OPERATION_REFUSED"
    assert lab.status("SEPSTRING001") == "Upgrade Failed: Invalid Authentication String"
    assert lab.device("SEPSTRING001").operation == "OPERATION_UPGRADE"
    assert lab.device("SEPSTRING001").failed_auth_count == 1
    # The phone first answers without its string; CAPF asks for it by AUTH_TYPE.
    asked: list[AuthType | None] = []
    result = await lab.session(Phone("SEPSTRING001"), PhoneAuth("null", "12345"), on_message=_auth_types(asked))
    assert result.reason == "OK"
    assert asked == [None, AuthType.PASSWORD]
    assert lab.status("SEPSTRING001") == "Upgrade Success"
    assert lab.device("SEPSTRING001").failed_auth_count == 0
    assert "12345" not in lab.capf_log and "54321" not in lab.capf_log


async def test_lockout_after_repeated_wrong_auth_strings(lab: CAPFLab) -> None:
    _upgrade(lab, "SEPLOCKED001", auth_mode="By Authentication String", auth_string="2468")
    for _ in range(3):  # max_auth_failures = 3
        result = await lab.session(Phone("SEPLOCKED001"), PhoneAuth("string", "1111"))
        assert result.reason == "OPERATION_REFUSED"
    assert lab.device("SEPLOCKED001").locked_until is not None
    result = await lab.session(Phone("SEPLOCKED001"), PhoneAuth("string", "2468"))
    assert result.reason == "LOCKED_OUT"
    assert "locked out" in lab.capf_log
    assert any(e.startswith("LOCKED_OUT") for e in lab.events("SEPLOCKED001"))


async def test_null_string(lab: CAPFLab) -> None:
    _upgrade(lab, "SEPNULLSTR01", auth_mode="By Null String")
    assert (await lab.session(Phone("SEPNULLSTR01"))).reason == "OK"


async def test_existing_lsc_valid_and_invalid(lab: CAPFLab) -> None:
    name = "SEPLSCAUTH01"
    _upgrade(lab, name, auth_mode="By Existing Certificate (Precedence to LSC)")
    key, lsc = lab.lab_pki.issue(f"CN={name}")
    lab.record_installed(name, lsc)  # the LSC CAPF recorded for the device, as if it had issued it
    result = await lab.session(_with_lsc(name, lsc, key), PhoneAuth("lsc"))
    assert result.reason == "OK" and lab.status(name) == "Upgrade Success"

    def self_signed(n: str):  # type: ignore[no-untyped-def]
        k = pki.generate_key("ec", 256)
        return k, pki.build_certificate(subject=f"CN={n}", public_key=k.public_key(), issuer_key=k)

    cases = {
        "SEPLSCAUTH02": (self_signed, Faults()),
        "SEPLSCAUTH03": (lambda n: lab.lab_pki.issue("CN=SEPSOMEONEELSE"), Faults()),  # another device's LSC
        "SEPLSCAUTH04": (lambda n: lab.lab_pki.issue(f"CN={n}"), Faults(auth_signature="wrong_key")),  # not its key
    }
    for other, (make, faults) in cases.items():
        _upgrade(lab, other, auth_mode="By Existing Certificate (Precedence to LSC)")
        key, cert = make(other)
        result = await lab.session(_with_lsc(other, cert, key), PhoneAuth("lsc"), faults=faults)
        assert result.reason == "INVALID_CERTIFICATE", other
        assert lab.status(other) == "Upgrade Failed: Invalid LSC", other

    # No certificate at all, even when asked again: Invalid Credentials.
    _upgrade(lab, "SEPLSCAUTH05", auth_mode="By Existing Certificate (Precedence to LSC)")
    asked: list[AuthType | None] = []
    result = await lab.session(Phone("SEPLSCAUTH05"), on_message=_auth_types(asked))
    assert asked == [None, AuthType.EXISTING_CERT_LSC_FIRST]
    assert lab.status("SEPLSCAUTH05") == "Upgrade Failed: Invalid Credentials"


async def test_existing_mic_valid_and_invalid(lab: CAPFLab) -> None:
    name = "SEPMICAUTH01"
    _upgrade(lab, name, auth_mode="By Existing Certificate (Precedence to MIC)")
    phone = Phone(name)
    lab.mic_ca.issue(phone)
    result = await lab.session(phone, PhoneAuth("mic"))
    assert result.reason == "OK" and lab.status(name) == "Upgrade Success"

    other_maker = lab.manufacturer("Unknown Manufacturer CA")
    _upgrade(lab, "SEPMICAUTH02", auth_mode="By Existing Certificate (Precedence to MIC)")
    phone = Phone("SEPMICAUTH02")
    other_maker.issue(phone)
    result = await lab.session(phone, PhoneAuth("mic"))
    assert result.reason == "INVALID_CERTIFICATE"
    assert lab.status("SEPMICAUTH02") == "Upgrade Failed: Invalid MIC"


async def test_delete_and_troubleshoot(lab: CAPFLab) -> None:
    name = "SEPOPS000001"
    _upgrade(lab, name)
    phone = Phone(name)
    lab.mic_ca.issue(phone)
    assert (await lab.session(phone)).reason == "OK"
    serial = lab.device(name).lsc_serial

    lab.set_device(name, operation="Troubleshoot")
    result = await lab.session(phone)
    assert "FETCH_CERT_REQUEST" in result.received and result.reason == "OK"
    assert lab.status(name) == "Troubleshoot Success"
    folder = lab.data_dir / "capf" / "troubleshoot" / name
    assert sorted(p.name for p in folder.iterdir()) == ["lsc-0.der", "mic-1.der"]
    assert f"serial {serial}" in lab.capf_log

    lab.set_device(name, operation="Delete")
    result = await lab.session(phone)
    assert "DELETE_CERT_REQUEST" in result.received and result.reason == "OK"
    assert phone.lsc is None
    device = lab.device(name)
    assert lab.status(name) == "Delete Success" and device.lsc_serial is None
    assert device.operation == "OPERATION_NONE"
    assert "DbStatus=CERT_STATUS_DELETE_SUCCESS" in lab.capf_log


async def test_deadline_passed(lab: CAPFLab) -> None:
    name = "SEPLATE00001"
    _upgrade(lab, name)
    lab.force(name, operation_deadline=past(2))
    before = lab.backend.enrolls
    result = await lab.session(Phone(name))
    assert result.reason == "DEADLINE_PASSED"
    assert "KEY_GEN_REQUEST" not in result.received
    assert lab.status(name) == "Upgrade Failed: User Initiated Request Late/Timedout"
    assert lab.device(name).operation == "OPERATION_NONE"  # not executed after its deadline
    assert lab.backend.enrolls == before


async def test_unknown_device_and_nothing_pending(lab: CAPFLab) -> None:
    result = await lab.session(Phone("SEPNOBODY0001"))
    assert result.reason == "DEVICE_UNKNOWN"
    lab.add_device("SEPIDLE00001")
    result = await lab.session(Phone("SEPIDLE00001"))
    assert result.reason == "NOTHING_PENDING"
    assert lab.status("SEPIDLE00001") == "None"


async def test_automatic_enrollment_by_mic_and_by_name(lab: CAPFLab) -> None:
    with lab.db.session() as s:
        inv.add_profile(s, "factory", auto_enroll_mic=True, mic_trust_store=str(lab.mic_ca.trust_store),
                        key_order="EC Only")
        inv.add_profile(s, "lobby", auto_enroll_name_pattern="ATA*", key_order="EC Only")
    name = "SEPNEWPHONE1"
    phone = Phone(name)
    lab.mic_ca.issue(phone)
    result = await lab.session(phone, PhoneAuth("mic"))
    assert result.reason == "OK"
    device = lab.device(name)
    assert lab.status(name) == "Upgrade Success" and device.profile.name == "factory"
    assert any(e.startswith("AUTO_ENROLLMENT profile factory: a valid MIC") for e in lab.events(name))

    # A MIC from another manufacturer grants nothing; neither does no MIC.
    stranger = lab.manufacturer("Grey Market CA")
    phone = Phone("SEPNEWPHONE2")
    stranger.issue(phone)
    result = await lab.session(phone, PhoneAuth("mic"))
    assert result.reason == "DEVICE_UNKNOWN"
    assert (await lab.session(Phone("SEPNEWPHONE3"))).reason == "DEVICE_UNKNOWN"

    # A profile with its own manufacturer store: only that store counts for its devices.
    partner = lab.manufacturer("Partner Phones CA")
    with lab.db.session() as s:
        inv.add_profile(s, "partner", auto_enroll_mic=True, mic_trust_store=str(partner.trust_store),
                        key_order="EC Only")
    phone = Phone("SEPPARTNER01")
    partner.issue(phone)
    result = await lab.session(phone, PhoneAuth("mic"))
    assert result.reason == "OK" and lab.device("SEPPARTNER01").profile.name == "partner"

    result = await lab.session(Phone("ATA0011223344"))
    assert result.reason == "OK" and lab.device("ATA0011223344").profile.name == "lobby"


async def test_hostile_bytes_do_not_hurt_the_server(lab: CAPFLab) -> None:
    ctx = ssl.create_default_context(cafile=str(lab.lab_pki.root_pem))
    for junk in (b"\x00" * 64, b"\x55\x02\x00\x00\x00\x01\xff\xff" + b"A" * 100, b"GET / HTTP/1.1\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", lab.capf.port, ssl=ctx,
                                                       server_hostname="127.0.0.1")
        await reader.read(65536)  # AUTH_REQUEST
        writer.write(junk)
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 10)  # CAPF answers and closes
        writer.close()
        assert rest[:2] == b"\x55\x0f"  # END_SESSION (reason PROTOCOL_ERROR)
    assert "protocol error from the phone" in lab.capf_log
    assert "Traceback" not in lab.capf_log
    _upgrade(lab, "SEPAFTERJUNK1")
    assert (await lab.session(Phone("SEPAFTERJUNK1"))).reason == "OK"


async def test_failed_renewal_backs_off(lab: CAPFLab) -> None:
    name = "SEPRENEW0001"
    _upgrade(lab, name)
    phone = Phone(name)
    assert (await lab.session(phone)).reason == "OK"
    serial = lab.device(name).lsc_serial
    # What the scheduler sets when the LSC's renewal window opens.
    lab.force(name, operation="OPERATION_UPGRADE", operation_auth_mode="AUTH_BY_LSC", renewal_for_serial=serial,
              operation_deadline=past(-48))
    # The phone presents its LSC signed by a key that is not the LSC's.
    result = await lab.session(phone, PhoneAuth("lsc"), faults=Faults(auth_signature="wrong_key"))
    assert result.reason == "INVALID_CERTIFICATE"
    device = lab.device(name)
    assert lab.status(name) == "Upgrade Failed: Invalid LSC"
    assert device.operation == "OPERATION_NONE" and device.renewal_attempts == 1
    assert device.renewal_next_at is not None and device.lsc_serial == serial
    # The phone with its real LSC renews when the scheduler tries again.
    lab.force(name, operation="OPERATION_UPGRADE", operation_auth_mode="AUTH_BY_LSC", renewal_for_serial=serial,
              operation_deadline=past(-48))
    assert (await lab.session(phone, PhoneAuth("lsc"))).reason == "OK"
    assert lab.device(name).lsc_serial != serial and lab.status(name) == "Upgrade Success"
