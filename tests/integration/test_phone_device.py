"""The simulated phone's key store on disk: files and modes, what it agrees to sign, what it stores,
the MIC CA, and the ``onlineca phone`` commands that need no CAPF (show, mic-ca)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from onlineca import pki
from onlineca.errors import PhoneError
from onlineca.infra import files as fs
from onlineca.phone.device import KeyPool, Phone
from onlineca.phone.fleet import device_names, percentile
from onlineca.phone.mic import MICAuthority
from onlineca.pki import tbs
from onlineca.proto.devproto import CertificateType, auth_signed_payload


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_phone_folder_keys_are_private_and_survive_reopen(tmp_path):
    mic_ca = MICAuthority.init(tmp_path / "mic")
    phone = Phone.create(tmp_path / "p", "sep74a02fc0a675")
    assert phone.name == "SEP74A02FC0A675"
    mic_ca.issue(phone)
    spki = phone.new_key("ec", 256)
    assert _mode(tmp_path / "p" / "mic.key") == 0o600
    assert _mode(tmp_path / "p" / "new.key") == 0o600
    assert _mode(tmp_path / "mic" / "mic-ca.key") == 0o600
    again = Phone.open(tmp_path / "p")
    assert again.has_mic and again.pending_key and not again.has_lsc
    # The pending key is the same one after reopening: a request info for it is signed.
    info = tbs.csr_info_der("CN=SEP74A02FC0A675", pki.load_public_key(spki))
    signature = again.sign_request_info(info, "sha256")
    csr = tbs.assemble_csr(info, signature, pki.load_public_key(spki), "sha256")
    assert pki.public_key_der(csr.public_key()) == spki
    # The MIC chains to the manufacturer CA, and its CN is the device name.
    store = fs.load_trust_store(str(mic_ca.trust_store))
    pki.validate_chain(again.mic_chain[0], again.mic_chain[1:], store)
    assert pki.common_name(again.mic_chain[0].subject) == "SEP74A02FC0A675"
    assert MICAuthority.init(tmp_path / "mic").cert == mic_ca.cert  # init twice reopens


def test_phone_signs_only_a_request_for_its_own_new_key():
    phone = Phone("SEP000000000001")
    with pytest.raises(PhoneError) as no_key:
        phone.sign_request_info(b"\x30\x00")
    assert no_key.value.code == "SIGN_FAILED"
    phone.new_key("ec", 256)
    other = pki.generate_key("ec", 256)
    foreign = tbs.csr_info_der("CN=SEP000000000001", other.public_key())
    with pytest.raises(PhoneError, match="another key"):
        phone.sign_request_info(foreign)
    with pytest.raises(PhoneError, match="not a request info"):
        phone.sign_request_info(b"\x30\x03\x02\x01\x00")


def test_store_lsc_needs_the_pending_key_and_replaces_the_old_one_only_then(tmp_path, lab_pki):
    phone = Phone.create(tmp_path / "p", "SEP000000000002")
    spki = phone.new_key("ec", 256)
    _, wrong = lab_pki.issue("CN=SEP000000000002")  # a certificate for some other key
    with pytest.raises(PhoneError) as exc:
        phone.store_lsc(pki.cert_der(wrong))
    assert exc.value.code == "STORE_FAILED" and not phone.has_lsc and phone.pending_key
    first = _issue_for(lab_pki, spki, "SEP000000000002")
    phone.store_lsc(pki.cert_der(first))
    assert phone.has_lsc and not phone.pending_key
    assert _mode(tmp_path / "p" / "lsc.key") == 0o600 and not (tmp_path / "p" / "new.key").exists()
    phone.store_lsc(pki.cert_der(first))  # the same LSC delivered again is fine
    spki2 = phone.new_key("ec", 384)
    assert phone.lsc == first  # the old LSC stays until the new one is stored
    second = _issue_for(lab_pki, spki2, "SEP000000000002")
    phone.store_lsc(pki.cert_der(second))
    reopened = Phone.open(tmp_path / "p")
    assert reopened.lsc == second and pki.key_spec(reopened.lsc.public_key()) == ("ec", 384)
    cert, signature = reopened.auth_credential(CertificateType.LSC, auth_signed_payload(7, b"n" * 16, "SEP000000000002"))
    tbs.verify_data_signature(second.public_key(), auth_signed_payload(7, b"n" * 16, "SEP000000000002"), signature)
    assert cert.der == pki.cert_der(second)
    assert [c.cert_type for c in reopened.certificates()] == [CertificateType.LSC]
    assert reopened.delete_lsc() and not reopened.has_lsc and not (tmp_path / "p" / "lsc.pem").exists()
    assert reopened.delete_lsc() is False


def _issue_for(lab_pki, spki: bytes, name: str):
    """An LSC from the lab's issuing CA for a public key the phone handed out (no private key here)."""
    return pki.build_certificate(subject=f"CN={name}", public_key=pki.load_public_key(spki),
                                 issuer_key=lab_pki.issuing_key, issuer_cert=lab_pki.issuing, validity_days=1)


def test_key_pool_hands_each_key_out_once_and_phone_falls_back_to_generating():
    pool = KeyPool()
    pool.fill({("ec", 256): 2}, workers=2)
    assert len(pool) == 2
    phone = Phone("SEP000000000003", key_pool=pool)
    a = phone.new_key("ec", 256)
    b = phone.new_key("ec", 256)
    c = phone.new_key("ec", 256)  # pool empty: made on the spot
    assert len({a, b, c}) == 3 and len(pool) == 0
    with pytest.raises(PhoneError) as exc:
        phone.new_key("rsa", 1000)
    assert exc.value.code == "KEY_UNSUPPORTED"


def test_bad_names_and_folders_are_clear_errors(tmp_path):
    with pytest.raises(PhoneError, match="not allowed"):
        Phone("bad name")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "phone.json").write_text("{not json")
    with pytest.raises(PhoneError, match="not a phone folder"):
        Phone.open(tmp_path / "junk")
    assert device_names(2) == ["SEP74A02FC00000", "SEP74A02FC00001"]
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0 and percentile([1.0] * 99 + [9.0], 99) == 1.0
    assert percentile([], 99) == 0.0


def test_cli_mic_ca_and_show(tmp_path):
    base = [sys.executable, "-m", "onlineca", "--data-dir", str(tmp_path)]
    run = lambda *a: subprocess.run([*base, *a], capture_output=True, text=True, timeout=60)  # noqa: E731
    r = run("phone", "mic-ca", "init")
    assert r.returncode == 0, r.stderr
    assert "mic-ca.pem" in r.stdout
    r = run("phone", "mic-ca", "issue", "--name", "SEP74A02FC0A675")
    assert r.returncode == 0, r.stderr
    r = run("phone", "show", "--name", "SEP74A02FC0A675", "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["name"] == "SEP74A02FC0A675"
    assert [c["kind"] for c in shown["certificates"]] == ["MIC"]
    assert "PRIVATE KEY" not in r.stdout
    r = run("phone", "show", "--name", "SEP000000000099")
    assert r.returncode == 1 and "not a phone folder" in r.stderr and "Traceback" not in r.stderr
    r = run("phone", "fleet", "--pregenerate", "dsa:1=2", "--count", "1")
    assert r.returncode == 2 and "TYPE:BITS=COUNT" in r.stderr
