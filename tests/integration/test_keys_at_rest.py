"""Keys at rest: the CA's and CAPF's keys as encrypted PKCS#8 (a passphrase from a file or the
environment), converted both ways by 'onlineca keys', read by the servers; the CA's issuing key in
a PKCS#11 token (SoftHSM2, a throw-away token per test) signing every certificate."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from onlineca import pki
from onlineca.ca.engine import CAEngine
from onlineca.cli import main_group
from onlineca.config import load_config
from onlineca.errors import PKIError
from onlineca.infra import files
from onlineca.proto.results import Issued
from onlineca.store import Database

PASSPHRASE = "correct horse battery staple"


def _invoke(*args: str, env: dict[str, str] | None = None):
    result = CliRunner().invoke(main_group, list(args), env=env)
    return result


def test_ca_init_encrypt_keys_and_the_engine_reads_them(tmp_path: Path) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o600)
    conf = tmp_path / "onlineca.toml"
    conf.write_text('data_dir = "data"\n[ca]\nkey_passphrase_file = "passphrase"\n')
    result = _invoke("--config", str(conf), "ca", "init", "--encrypt-keys", "--password", "x")
    assert result.exit_code == 0, result.output
    ca = tmp_path / "data" / "ca"
    for key in ("root.key", "issuing.key"):
        assert pki.pem_label((ca / key).read_bytes()) == "ENCRYPTED PRIVATE KEY"  # encrypted PKCS#8
        assert (ca / key).stat().st_mode & 0o777 == 0o600
    assert not files.is_encrypted_key_file(ca / "web.key")  # the TLS key stays in clear (see docs/operations.md)
    cfg = load_config(conf, environ={})
    db = Database(f"sqlite:///{tmp_path / 'ca.db'}")
    db.migrate()
    try:
        engine = CAEngine(cfg, cfg.data_path, db)
        assert pki.same_public_key(engine.issuing_key.public_key(), engine.issuing.public_key())
        # without the passphrase: one error naming the file and what to set
        bare = cfg.model_copy(update={"ca": cfg.ca.model_copy(update={"key_passphrase_file": ""})})
        with pytest.raises(PKIError) as exc:
            CAEngine(bare, cfg.data_path, db)
        assert exc.value.code == "KEY_PASSPHRASE" and str(ca / "issuing.key") in str(exc.value)
        assert "key_passphrase_file" in str(exc.value)
    finally:
        db.dispose()


def test_keys_encrypt_and_decrypt_with_the_passphrase_from_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _invoke("--data-dir", str(data), "ca", "init", "--password", "x").exit_code == 0
    capf_key = data / "capf" / "capf.key"
    files.write_private_key(capf_key, pki.generate_key("ec", 256))
    original = {p: files.read_private_key(p) for p in (data / "ca" / "root.key", data / "ca" / "issuing.key", capf_key)}
    missing = _invoke("--data-dir", str(data), "keys", "encrypt", env={"ONLINECA_CA_KEY_PASSPHRASE": ""})
    assert missing.exit_code == 1 and "ONLINECA_CA_KEY_PASSPHRASE" in missing.stderr
    env = {"ONLINECA_CA_KEY_PASSPHRASE": PASSPHRASE, "ONLINECA_CAPF_KEY_PASSPHRASE": PASSPHRASE + "-capf"}
    result = _invoke("--data-dir", str(data), "keys", "encrypt", env=env)
    assert result.exit_code == 0, result.output
    assert f"{capf_key}: encrypted (PKCS#8)" in result.stdout
    for path, key in original.items():
        assert files.is_encrypted_key_file(path)
        with pytest.raises(PKIError):
            files.read_private_key(path)
        phrase = env["ONLINECA_CAPF_KEY_PASSPHRASE" if path == capf_key else "ONLINECA_CA_KEY_PASSPHRASE"].encode()
        assert pki.private_key_der(files.read_private_key(path, phrase)) == pki.private_key_der(key)
    again = _invoke("--data-dir", str(data), "keys", "encrypt", "--role", "ca", env=env)
    assert "already encrypted" in again.stdout
    assert _invoke("--data-dir", str(data), "keys", "decrypt", env=env).exit_code == 0
    for path, key in original.items():
        assert pki.private_key_der(files.read_private_key(path)) == pki.private_key_der(key)


# --------------------------------------------------------------------------- PKCS#11 (SoftHSM2)

SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                   "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so")


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A throw-away SoftHSM2 token in its own SOFTHSM2_CONF: (module, label).  One per module: a
    process loads the PKCS#11 library once, with the configuration of that moment."""
    module = next((m for m in SOFTHSM_MODULES if Path(m).exists()), None)
    if module is None or shutil.which("softhsm2-util") is None:
        if os.environ.get("CI"):
            pytest.fail("SoftHSM2 is missing (.ci/run installs Debian's softhsm2 and opensc)")
        pytest.skip("softhsm2 is not installed")
    if not os.environ.get("CI"):
        pytest.importorskip("pkcs11")
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "onlineca-test", "--pin", "4321",
                        "--so-pin", "87654321"], check=True, capture_output=True, timeout=60)
        yield module, "onlineca-test"


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_pkcs11_issuing_key_signs_what_the_ca_issues(token: tuple[str, str], tmp_path: Path, key_type: str) -> None:
    module, label = token
    (tmp_path / "pin").write_text("4321\n")
    conf = tmp_path / "onlineca.toml"
    conf.write_text(f'data_dir = "data"\n[ca]\nkey_type = "{key_type}"\npkcs11_module = "{module}"\n'
                    f'pkcs11_token_label = "{label}"\npkcs11_key_label = "issuing-{key_type}"\npkcs11_pin_file = "pin"\n')
    result = _invoke("--config", str(conf), "ca", "init", "--pkcs11", "--password", "x")
    assert result.exit_code == 0, result.output
    ca = tmp_path / "data" / "ca"
    assert not (ca / "issuing.key").exists()
    # the key is in the token, as pkcs11-tool sees it
    if shutil.which("pkcs11-tool"):
        listed = subprocess.run(["pkcs11-tool", "--module", module, "--token-label", label, "--login", "--pin", "4321",
                                 "--list-objects"], capture_output=True, text=True, timeout=60)
        blocks = [b for b in listed.stdout.split("Object;") if f"label:      issuing-{key_type}" in b]
        assert any("never extractable" in b for b in blocks), listed.stdout  # the private key, kept inside
    # the web certificate 'ca init' made was signed in the token; so is what the CA issues
    chain = subprocess.run(["openssl", "verify", "-CAfile", str(ca / "root.pem"), "-untrusted", str(ca / "issuing.pem"),
                            str(ca / "web.pem")], capture_output=True, text=True, timeout=30)
    assert chain.returncode == 0, chain.stdout + chain.stderr
    cfg = load_config(conf, environ={})
    db = Database(f"sqlite:///{tmp_path / 'ca.db'}")
    db.migrate()
    try:
        engine = CAEngine(cfg, cfg.data_path, db)
        key = pki.generate_key("ec", 256)
        csr = pki.csr_pem(pki.build_csr(key, "CN=SEP74A02FC0A675"))
        issued = engine.submit("ciscora", csr.decode(), "CertificateTemplate:CiscoRA")
        assert isinstance(issued, Issued), issued
        leaf = tmp_path / "leaf.pem"
        leaf.write_bytes(pki.der_to_pem(issued.cert_der))
        verified = subprocess.run(["openssl", "verify", "-CAfile", str(ca / "root.pem"), "-untrusted",
                                   str(ca / "issuing.pem"), str(leaf)], capture_output=True, text=True, timeout=30)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        # revocation with the key in the token: the CRL is signed there, openssl refuses the leaf
        cert = x509.load_der_x509_certificate(issued.cert_der)
        engine.revocation.revoke(serial=format(cert.serial_number, "x"), reason="keyCompromise")
        crl = engine.revocation.current("base")
        assert crl is not None
        crl_pem = tmp_path / "issuing.crl.pem"
        crl_pem.write_bytes(x509.load_der_x509_crl(crl.der).public_bytes(serialization.Encoding.PEM))
        checked = subprocess.run(["openssl", "verify", "-crl_check", "-CAfile", str(ca / "root.pem"), "-untrusted",
                                  str(ca / "issuing.pem"), "-CRLfile", str(crl_pem), str(leaf)],
                                 capture_output=True, text=True, timeout=30)
        assert checked.returncode != 0 and "certificate revoked" in checked.stdout + checked.stderr, checked
        # OCSP: the token cannot sign through cryptography's OCSP builder, so the delegated responder answers
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, engine.issuing, hashes.SHA1()).build()
        body, status = engine.revocation.ocsp(request.public_bytes(serialization.Encoding.DER))
        answer = ocsp.load_der_ocsp_response(body)
        assert status == "revoked" and answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
        responder = answer.certificates[0]
        assert responder.issuer == engine.issuing.subject
        responder.public_key().verify(answer.signature, answer.tbs_response_bytes,  # raises unless it signed
                                      ec.ECDSA(answer.signature_hash_algorithm))
        # a wrong PIN: one error that says what to check (once no session of ours is logged in)
        engine.issuing_key.close()  # type: ignore[union-attr]
        (tmp_path / "pin").write_text("0000\n")
        with pytest.raises(PKIError) as exc:
            CAEngine(cfg, cfg.data_path, db)
        assert "PIN" in str(exc.value) or "pin" in str(exc.value)
    finally:
        db.dispose()
