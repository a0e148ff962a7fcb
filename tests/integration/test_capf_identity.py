"""Issue 11 item 2, CAPF's side: a certificate proves one identity for one purpose.

By Existing Certificate accepts the LSC CAPF recorded as installed on the device, not any
certificate from the same root that names it: another user's certificate named after the victim,
an LSC CAPF deleted, replaced (renewed) or discarded are all refused (Invalid LSC), over real TLS
with the simulator's phones.  A MIC names the device exactly: a MIC for SEPMICVICTIM12 neither
authenticates SEPMICVICTIM1 nor enrolls it automatically.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from capf_lab import CAPFLab, close_lab, make_lab

from onlineca import pki
from onlineca.phone.client import PhoneAuth
from onlineca.phone.device import Phone
from onlineca.store import devices as inv

BY_LSC = "By Existing Certificate (Precedence to LSC)"
BY_MIC = "By Existing Certificate (Precedence to MIC)"


@pytest.fixture
async def lab(tmp_path: Path, lab_pki) -> CAPFLab:  # type: ignore[no-untyped-def]
    lab = await make_lab(tmp_path, lab_pki, f"sqlite:///{tmp_path / 'capf.db'}")
    yield lab
    await close_lab(lab)


def _clone_lsc(phone: Phone, name: str | None = None) -> Phone:
    """Someone who copied ``phone``'s LSC and its key (a backup, a stolen phone's flash)."""
    copy = Phone(name or phone.name)
    assert phone.lsc is not None and phone._lsc_key is not None
    copy.provision_lsc(phone.lsc, phone._lsc_key)
    return copy


async def _enrolled(lab: CAPFLab, name: str) -> Phone:
    """A phone with the LSC CAPF issued it (By Null String), then Install/Upgrade by its LSC pending."""
    lab.add_device(name, operation="Install/Upgrade", key_order="EC Only")
    phone = Phone(name)
    result = await lab.session(phone)
    assert result.outcome == "installed", result
    lab.set_device(name, operation="Install/Upgrade", auth_mode=BY_LSC)
    return phone


async def test_a_certificate_named_after_a_device_is_not_its_lsc(lab: CAPFLab) -> None:
    """alice's certificate from the same CA, CN=<victim>, on her own key: refused; the victim's own
    LSC still authenticates it."""
    victim = await _enrolled(lab, "SEPVICTIM0001")
    enrolls = lab.backend.enrolls
    alice_key, alice_cert = lab.lab_pki.issue("CN=SEPVICTIM0001")
    alice = Phone("SEPVICTIM0001")
    alice.provision_lsc(alice_cert, alice_key)
    result = await lab.session(alice, PhoneAuth("lsc"))
    assert result.reason == "INVALID_CERTIFICATE" and result.outcome != "installed", result
    assert lab.status("SEPVICTIM0001") == "Upgrade Failed: Invalid LSC"
    assert "is not the LSC CAPF recorded" in lab.capf_log
    assert lab.backend.enrolls == enrolls  # nothing issued on alice's key
    result = await lab.session(victim, PhoneAuth("lsc"))
    assert result.outcome == "installed" and lab.status("SEPVICTIM0001") == "Upgrade Success"


async def test_a_deleted_lsc_no_longer_authenticates(lab: CAPFLab) -> None:
    phone = await _enrolled(lab, "SEPDELETED001")
    thief = _clone_lsc(phone)
    lab.set_device("SEPDELETED001", operation="Delete", auth_mode="By Null String")
    result = await lab.session(phone)
    assert result.outcome == "deleted" and lab.device("SEPDELETED001").lsc_serial is None
    lab.set_device("SEPDELETED001", operation="Install/Upgrade", auth_mode=BY_LSC)
    result = await lab.session(thief, PhoneAuth("lsc"))
    assert result.reason == "INVALID_CERTIFICATE", result
    assert lab.status("SEPDELETED001") == "Upgrade Failed: Invalid LSC"


async def test_a_replaced_lsc_no_longer_authenticates(lab: CAPFLab) -> None:
    phone = await _enrolled(lab, "SEPRENEWED001")
    old = _clone_lsc(phone)
    result = await lab.session(phone, PhoneAuth("lsc"))  # renewed: a new LSC replaces the old one
    assert result.outcome == "installed"
    lab.set_device("SEPRENEWED001", operation="Install/Upgrade", auth_mode=BY_LSC)
    result = await lab.session(old, PhoneAuth("lsc"))
    assert result.reason == "INVALID_CERTIFICATE", result
    assert lab.status("SEPRENEWED001") == "Upgrade Failed: Invalid LSC"
    result = await lab.session(phone, PhoneAuth("lsc"))
    assert result.outcome == "installed"


async def test_a_discarded_lsc_never_authenticates(lab: CAPFLab) -> None:
    await _enrolled(lab, "SEPDISCARD001")
    key, cert = lab.lab_pki.issue("CN=SEPDISCARD001")
    assert lab.db is not None
    with lab.db.session() as s:  # issued by CAPF, never installed, then discarded
        device = inv.get_device(s, "SEPDISCARD001")
        row = inv.record_lsc_issued(s, "SEPDISCARD001", pki.cert_der(cert))
        inv.discard_undelivered(s, device, "the phone refused it", serial=row.serial)
    holder = Phone("SEPDISCARD001")
    holder.provision_lsc(cert, key)
    result = await lab.session(holder, PhoneAuth("lsc"))
    assert result.reason == "INVALID_CERTIFICATE", result
    assert "it is discarded" in lab.capf_log


def _mic_of(lab: CAPFLab, owner: str, presented_as: str) -> Phone:
    """A phone named ``presented_as`` holding the MIC (and its key) made for ``owner``."""
    real = Phone(owner)
    lab.mic_ca.issue(real)
    impostor = Phone(presented_as)
    impostor._mic_key = real._mic_key  # the flash of the phone whose MIC it is, copied
    impostor.install_mic(real.mic_chain)
    return impostor


async def test_a_mic_for_a_longer_name_does_not_authenticate_the_shorter(lab: CAPFLab) -> None:
    lab.add_device("SEPMICVICTIM1", operation="Install/Upgrade", key_order="EC Only", auth_mode=BY_MIC)
    result = await lab.session(_mic_of(lab, "SEPMICVICTIM12", "SEPMICVICTIM1"), PhoneAuth("mic"))
    assert result.reason == "INVALID_CERTIFICATE", result
    assert lab.status("SEPMICVICTIM1") == "Upgrade Failed: Invalid MIC"
    result = await lab.session(_mic_of(lab, "SEPMICVICTIM1", "SEPMICVICTIM1"), PhoneAuth("mic"))
    assert result.outcome == "installed"


async def test_a_mic_for_a_longer_name_does_not_enroll_the_shorter_automatically(lab: CAPFLab) -> None:
    assert lab.db is not None
    with lab.db.session() as s:
        inv.add_profile(s, "factory", auto_enroll_mic=True, mic_trust_store=str(lab.mic_ca.trust_store),
                        key_order="EC Only")
    result = await lab.session(_mic_of(lab, "SEPMICAUTO12", "SEPMICAUTO1"), PhoneAuth("mic"))
    assert result.reason == "DEVICE_UNKNOWN", result
    with lab.db.session() as s:
        assert inv.find_device(s, "SEPMICAUTO1") is None
    result = await lab.session(_mic_of(lab, "SEPMICAUTO1", "SEPMICAUTO1"), PhoneAuth("mic"))
    assert result.outcome == "installed"
