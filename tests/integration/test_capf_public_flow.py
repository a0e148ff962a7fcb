"""CAPF with public-flow phones on 127.0.0.1 (the simulator's ``flow="public"``, a strict public
client): enrollment by null string and auth string with RSA 1024 and 2048 (CAPF vouching for the
phone's key at the RA), every decline heard as 1, 7 or 9 with the real cause in the status and
the log, lockout, a slow RA, renewal when due and the decline when not, CAPF's own CA as the
issuer, and the three ways a stale LSC is discarded, each an event in the device's history.  The
extended phone's flow is the other tests' (test_capf_sessions, test_capf_enroll)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from capf_lab import CAPFLab, close_lab, make_lab
from cryptography import x509
from sqlalchemy import select

from onlineca import pki
from onlineca.capf.scheduler import SchedulerSettings, run_once
from onlineca.phone.client import Faults, PhoneAuth
from onlineca.phone.device import Phone
from onlineca.store import devices as inv
from onlineca.store.capf_models import LSC, Device

PUBLIC_FLOW = ["AUTH_REQUEST", "KEY_GEN_REQUEST", "STORE_CERT_REQUEST", "END_SESSION"]


@pytest.fixture
async def lab(tmp_path: Path, lab_pki) -> CAPFLab:  # type: ignore[no-untyped-def]
    lab = await make_lab(tmp_path, lab_pki, f"sqlite:///{tmp_path / 'capf.db'}")
    yield lab
    await close_lab(lab)


def _states(lab: CAPFLab, name: str) -> dict[str, str]:
    assert lab.db is not None
    with lab.db.session() as s:
        device = inv.get_device(s, name)
        return {r.serial: r.state for r in s.scalars(select(LSC).where(LSC.device_id == device.id))}


def _events(lab: CAPFLab, name: str, kind: str) -> list[str]:
    return [e for e in lab.events(name) if e.startswith(kind)]


@pytest.mark.parametrize(("auth_mode", "auth", "bits"), [
    ("By Null String", PhoneAuth("null"), 2048),
    ("By Null String", PhoneAuth("null"), 1024),
    ("By Authentication String", PhoneAuth("string", "80251234"), 2048),
    ("By Authentication String", PhoneAuth("string", "80251234"), 1024),
])
async def test_a_public_phone_enrolls(lab: CAPFLab, auth_mode: str, auth: PhoneAuth, bits: int) -> None:
    name = "SEP0000000010" + ("01" if auth.mode == "null" else "02")
    settings = {"auth_string": "80251234"} if auth.mode == "string" else {}
    lab.add_device(name, operation="Install/Upgrade", auth_mode=auth_mode, rsa_key_size=bits, **settings)
    before = lab.backend.enrolls  # CAPF's own certificate was one
    phone = Phone(name)
    result = await lab.session(phone, auth, flow="public")
    assert result.outcome == "installed" and result.reason == "OK", result
    assert result.received == PUBLIC_FLOW and result.keepalives == 0  # nothing else, in this order
    assert pki.key_spec(phone.lsc.public_key()) == ("rsa", bits)
    assert lab.status(name) == "Upgrade Success" and lab.device(name).client_flow == "public"
    assert lab.backend.enrolls == before + 1
    san = phone.lsc.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [name]
    log = lab.capf_log
    assert "public flow (no extension announced)" in log and "CAPF vouches for its key as RA agent" in log
    assert "SIGN_CERT_REQ" not in log and "80251234" not in log


async def test_public_declines_are_7_or_9_and_say_why_elsewhere(lab: CAPFLab) -> None:
    before = lab.backend.enrolls
    result = await lab.session(Phone("SEP000000002001"), flow="public")
    assert (result.outcome, result.reason) == ("ended", "DEVICE_UNKNOWN")  # 9
    lab.add_device("SEP000000002002")
    result = await lab.session(Phone("SEP000000002002"), flow="public")
    assert (result.outcome, result.reason) == ("ended", "OPERATION_REFUSED")  # 7: nothing pending
    assert "no certificate operation is pending" in lab.capf_log
    name = "SEP000000002003"
    lab.add_device(name, operation="Install/Upgrade", auth_mode="By Authentication String", auth_string="2468")
    result = await lab.session(Phone(name), PhoneAuth("string", "1357"), flow="public")
    assert result.reason == "OPERATION_REFUSED" and result.received == ["AUTH_REQUEST", "END_SESSION"]
    assert lab.status(name) == "Upgrade Failed: Invalid Authentication String"
    result = await lab.session(Phone(name), PhoneAuth("null"), flow="public")  # no string: not asked again
    assert result.reason == "OPERATION_REFUSED" and result.received == ["AUTH_REQUEST", "END_SESSION"]
    # max_auth_failures = 3: the third wrong one locks it; then even the right one is declined (7).
    result = await lab.session(Phone(name), PhoneAuth("string", "9999"), flow="public")
    assert result.reason == "OPERATION_REFUSED" and lab.device(name).locked_until is not None
    result = await lab.session(Phone(name), PhoneAuth("string", "2468"), flow="public")
    assert result.reason == "OPERATION_REFUSED" and "locked out" in lab.capf_log
    assert _events(lab, name, "LOCKED_OUT")
    # Policy: EC Only for a phone that announced no EC keys; a certificate it cannot prove.
    lab.add_device("SEP000000002004", operation="Install/Upgrade", key_order="EC Only")
    result = await lab.session(Phone("SEP000000002004"), flow="public")
    assert result.reason == "OPERATION_REFUSED"
    assert lab.status("SEP000000002004") == "Upgrade Failed: No Support for EC only in CAPF version 3"
    lab.add_device("SEP000000002005", operation="Install/Upgrade",
                   auth_mode="By Existing Certificate (Precedence to MIC)")
    phone = Phone("SEP000000002005")
    lab.mic_ca.issue(phone)
    result = await lab.session(phone, flow="public")
    assert result.reason == "OPERATION_REFUSED" and lab.status("SEP000000002005") == \
        "Upgrade Failed: Invalid Credentials"
    assert "cannot give" in lab.events("SEP000000002005")[0]
    # EC Preferred RSA Backup: straight to RSA for a public phone.
    lab.add_device("SEP000000002006", operation="Install/Upgrade", key_order="EC Preferred RSA Backup")
    result = await lab.session(Phone("SEP000000002006"), flow="public")
    assert result.outcome == "installed" and result.key == "RSA 2048"
    assert lab.backend.enrolls == before + 1


async def test_the_ra_down_or_slow_is_a_decline_within_the_phone_s_patience(tmp_path: Path, lab_pki) -> None:  # type: ignore[no-untyped-def]
    lab = await make_lab(tmp_path, lab_pki, f"sqlite:///{tmp_path / 'capf.db'}", public_enroll_timeout=0.5)
    try:
        name = "SEP000000003001"
        lab.add_device(name, operation="Install/Upgrade")
        lab.backend.gate = asyncio.Event()  # the RA takes its time
        result = await lab.session(Phone(name), flow="public")
        assert result.reason == "OPERATION_REFUSED" and result.received == PUBLIC_FLOW[:2] + ["END_SESSION"]
        assert lab.status(name) == "Upgrade Failed: CA Communication Failure"
        assert lab.device(name).operation == "OPERATION_UPGRADE"  # still pending
        assert "public_enroll_timeout" in lab.events(name)[0]
        lab.backend.gate.set()
        await lab.stop_ra()
        result = await lab.session(Phone(name), flow="public")
        assert result.reason == "OPERATION_REFUSED" and lab.status(name) == "Upgrade Failed: CA Communication Failure"
        await lab.start_ra()
        assert (await lab.session(Phone(name), flow="public")).outcome == "installed"
    finally:
        await close_lab(lab)


async def test_renewal_when_due_and_decline_when_not(lab: CAPFLab) -> None:
    name = "SEP000000004001"
    lab.add_device(name, operation="Install/Upgrade")
    before = lab.backend.enrolls
    phone = Phone(name)
    assert (await lab.session(phone, flow="public")).outcome == "installed"
    first = phone.lsc.serial_number
    device = lab.device(name)
    assert device.renewal_due_at is not None and device.operation == "OPERATION_NONE"
    # Not due: declined (7), "already issued", nothing changes.
    result = await lab.session(phone, flow="public")
    assert result.reason == "OPERATION_REFUSED" and phone.lsc.serial_number == first
    assert f"(already issued: LSC serial {first:x} is installed; its renewal window opens" in lab.capf_log
    # The scheduler leaves public-flow devices to renew by asking again.
    assert lab.db is not None
    due = inv.as_utc(device.renewal_due_at) + dt.timedelta(minutes=1)
    assert name not in run_once(lab.db, SchedulerSettings(node_id="test"), now=due).scheduled
    # Due: the same public flow issues a new LSC.
    lab.capf.capf.clock = lambda: due
    result = await lab.session(phone, flow="public")
    assert result.outcome == "installed" and result.received == PUBLIC_FLOW
    assert phone.lsc.serial_number != first and lab.status(name) == "Upgrade Success"
    assert _events(lab, name, "RENEWAL_REQUESTED")
    assert lab.device(name).operation == "OPERATION_NONE" and lab.backend.enrolls == before + 2
    # A renewal the scheduler set for the LSC, met by a public phone: its own auth mode applies.
    lab.force(name, client_flow="extended")
    later = inv.as_utc(lab.device(name).renewal_due_at) + dt.timedelta(minutes=1)
    assert name in run_once(lab.db, SchedulerSettings(node_id="test"), now=later).scheduled
    assert lab.device(name).operation_auth_mode == "AUTH_BY_LSC"
    lab.capf.capf.clock = lambda: later
    result = await lab.session(phone, flow="public")
    assert result.outcome == "installed" and lab.device(name).client_flow == "public"


async def test_capf_as_the_issuer(lab: CAPFLab) -> None:
    assert lab.db is not None
    with lab.db.session() as s:
        inv.add_profile(s, "classic", issuer="capf", key_order="EC Preferred RSA Backup")
    lab.add_device("SEP000000005001", operation="Install/Upgrade", profile="classic")
    before = lab.backend.enrolls
    public = Phone("SEP000000005001")
    result = await lab.session(public, flow="public")
    assert result.outcome == "installed" and result.received == PUBLIC_FLOW
    ca = lab.capf.capf.local_ca
    assert public.lsc.issuer == ca.cert.subject and lab.backend.enrolls == before
    ku = public.lsc.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    eku = public.lsc.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {o.dotted_string for o in eku} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.5"}
    # An extended phone of the profile: no signing step either, an EC key, and its LSC authenticates it.
    lab.add_device("SEP000000005002", operation="Install/Upgrade", profile="classic")
    extended = Phone("SEP000000005002")
    result = await lab.session(extended)
    assert result.outcome == "installed" and "SIGN_CERT_REQUEST" not in result.received and result.key == "EC 256"
    lab.set_device("SEP000000005002", operation="Install/Upgrade",
                   auth_mode="By Existing Certificate (Precedence to LSC)")
    result = await lab.session(extended, PhoneAuth("lsc"))
    assert result.outcome == "installed" and "Authentication Mode=AUTH_BY_LSC:3: the phone's LSC is valid" in lab.capf_log


async def test_stale_lsc_discarded_when_the_phone_refuses_it(lab: CAPFLab) -> None:
    name = "SEP000000006001"
    lab.add_device(name, operation="Install/Upgrade", key_order="EC Only")
    before = lab.backend.enrolls
    result = await lab.session(Phone(name), faults=Faults(store="drop"))  # issued, never confirmed
    assert result.outcome == "comm_failure"
    [serial] = _states(lab, name)
    fresh = Phone(name)  # reinstalled: the key that LSC certifies is gone
    result = await lab.session(fresh)
    assert result.received[:2] == ["AUTH_REQUEST", "STORE_CERT_REQUEST"] and result.reason == "STORE_FAILED"
    assert _states(lab, name) == {serial: "discarded"}
    assert any("the phone refused it" in e for e in _events(lab, name, "LSC_DISCARDED"))
    result = await lab.session(fresh)  # not delivered again: a new key, a new LSC
    assert result.outcome == "installed" and "KEY_GEN_REQUEST" in result.received
    assert lab.backend.enrolls == before + 2 and _states(lab, name)[serial] == "discarded"


async def test_stale_lsc_discarded_on_an_administrator_s_reset(lab: CAPFLab) -> None:
    name = "SEP000000006002"
    lab.add_device(name, operation="Install/Upgrade", key_order="EC Only")
    before = lab.backend.enrolls
    await lab.session(Phone(name), faults=Faults(store="drop"))
    [serial] = _states(lab, name)
    lab.set_device(name, operation="No Pending Operation")
    lab.set_device(name, operation="Install/Upgrade")
    assert _states(lab, name) == {serial: "discarded"}
    [event] = _events(lab, name, "LSC_DISCARDED")
    assert "OPERATION_UPGRADE -> OPERATION_NONE" in event
    result = await lab.session(Phone(name))
    assert result.outcome == "installed" and "KEY_GEN_REQUEST" in result.received
    assert lab.backend.enrolls == before + 2


async def test_stale_lsc_discarded_when_a_new_key_arrives(lab: CAPFLab) -> None:
    name = "SEP000000006003"
    lab.add_device(name, operation="Install/Upgrade")
    phone = Phone(name)
    result = await lab.session(phone, faults=Faults(store="drop"), flow="public")
    assert result.outcome == "comm_failure"
    [serial] = _states(lab, name)
    result = await lab.session(phone, flow="public")  # a public phone is never sent the old one
    assert result.outcome == "installed" and result.received == PUBLIC_FLOW
    states = _states(lab, name)
    assert states[serial] == "discarded" and sorted(states.values()) == ["discarded", "installed"]
    assert any("a new key arrived" in e for e in _events(lab, name, "LSC_DISCARDED"))


async def test_auth_mode_set_during_a_scheduled_renewal_takes_effect(lab: CAPFLab) -> None:
    """Issue 10, item 6: the administrator's auth mode wins over the renewal's LSC."""
    name = "SEP000000007001"
    lab.add_device(name, operation="Install/Upgrade", key_order="EC Only")
    phone = Phone(name)
    assert (await lab.session(phone)).outcome == "installed"
    assert lab.db is not None
    due = inv.as_utc(lab.device(name).renewal_due_at) + dt.timedelta(minutes=1)
    assert name in run_once(lab.db, SchedulerSettings(node_id="test"), now=due).scheduled
    assert lab.device(name).operation_auth_mode == "AUTH_BY_LSC"
    lab.set_device(name, auth_mode="By Authentication String", auth_string="13579")
    device = lab.device(name)
    assert device.operation_auth_mode is None and device.operation == "OPERATION_UPGRADE"
    assert any("operation_auth_mode" in e for e in _events(lab, name, "DEVICE_CHANGED"))
    result = await lab.session(phone, PhoneAuth("lsc"))  # its LSC no longer does: the string is asked for
    assert result.reason == "OPERATION_REFUSED" and lab.status(name) == "Upgrade Failed: Invalid Authentication String"
    result = await lab.session(phone, PhoneAuth("string", "13579"))
    assert result.outcome == "installed"
    with lab.db.session() as s:
        assert s.scalar(select(Device.renewal_for_serial).where(Device.name == name)) is None
