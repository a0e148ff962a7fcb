"""The online-CA signing design end to end at the PKI level: CAPF builds the
CertificationRequestInfo, the device signs it, CAPF assembles the CSR; `cryptography` and
`openssl req -verify` both accept it, and a signature by any other key is refused."""

from __future__ import annotations

import subprocess

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from onlineca import pki
from onlineca.errors import ParseError, PKIError
from onlineca.pki import tbs

SUBJECT = "CN=SEP74A02FC0A675,O=lab,OU=phones"
KU = x509.Extension(x509.KeyUsage.oid, True, x509.KeyUsage(
    digital_signature=True, key_encipherment=True, content_commitment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False))


@pytest.fixture(scope="module")
def rsa_key():
    return pki.generate_key("rsa", 2048)


def _key(spec, rsa_key):
    return rsa_key if spec == "rsa" else pki.generate_key("ec", spec)


def _openssl_verify(tmp_path, der: bytes) -> subprocess.CompletedProcess:
    path = tmp_path / "req.der"
    path.write_bytes(der)
    return subprocess.run(["openssl", "req", "-in", str(path), "-inform", "DER", "-verify", "-noout"],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("spec,digest", [("rsa", "sha256"), ("rsa", "sha384"), ("rsa", "sha512"),
                                         (256, "sha256"), (384, "sha384"), (521, "sha512"), (256, "sha512")])
def test_assembled_csr_verifies_with_cryptography_and_openssl(tmp_path, rsa_key, spec, digest):
    key = _key(spec, rsa_key)
    info = tbs.csr_info_der(SUBJECT, key.public_key(), sans=["sep74a02fc0a675.lab"], extensions=[KU])
    signature = tbs.sign_csr_info(key, info, digest)  # on the phone
    csr = tbs.assemble_csr(info, signature, key.public_key(), digest)  # in CAPF
    assert csr.is_signature_valid
    assert csr.signature_hash_algorithm.name == digest
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "SEP74A02FC0A675"
    assert pki.same_public_key(csr.public_key(), key)
    assert pki.csr_sans(csr).get_values_for_type(x509.DNSName) == ["sep74a02fc0a675.lab"]
    ku = csr.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    # The parser the RA uses accepts it too.
    assert pki.parse_csr(pki.csr_der(csr)).subject == csr.subject
    done = _openssl_verify(tmp_path, pki.csr_der(csr))
    assert done.returncode == 0, done.stderr
    assert "verify OK" in (done.stdout + done.stderr)


def test_info_matches_what_cryptography_would_sign(rsa_key):
    """Our hand-written DER is byte-identical to the TBS part of a CSR cryptography builds itself."""
    key = pki.generate_key("ec", 256)
    reference = pki.build_csr(key, SUBJECT, ["a.lab", "10.0.0.1"], extensions=[KU])
    ours = tbs.csr_info_der(SUBJECT, key.public_key(), sans=["a.lab", "10.0.0.1"], extensions=[KU])
    assert ours == reference.tbs_certrequest_bytes
    bare = tbs.csr_info_der(x509.Name.from_rfc4514_string("CN=x"), key)
    assert bare == pki.build_csr(key, "CN=x").tbs_certrequest_bytes


@pytest.mark.parametrize("spec", ["rsa", 256])
def test_signature_by_another_key_is_refused(tmp_path, rsa_key, spec):
    key = _key(spec, rsa_key)
    info = tbs.csr_info_der(SUBJECT, key.public_key())
    if spec == "rsa":  # the right key's signature with one bit off (keeps the test to one RSA key)
        good = tbs.sign_csr_info(key, info, "sha256")
        forged = good[:-1] + bytes([good[-1] ^ 1])
    else:  # a signature by another key
        forged = tbs.sign_csr_info(pki.generate_key("ec", 256), info, "sha256")
    with pytest.raises(ParseError) as err:
        tbs.assemble_csr(info, forged, key.public_key(), "sha256")
    assert err.value.code == "BAD_SIGNATURE"
    # The same bytes assembled without our check: openssl refuses them as well (OpenSSL 3.0 exits 0
    # on a failed self-signature check, so read what it says).
    raw = tbs._tlv(0x30, info + tbs.signature_algorithm_der(key, "sha256") + tbs._tlv(0x03, b"\x00" + forged))
    done = _openssl_verify(tmp_path, raw)
    assert "verify failure" in done.stdout + done.stderr and "verify OK" not in done.stdout + done.stderr


def test_signature_over_other_info_is_refused():
    key = pki.generate_key("ec", 256)
    info = tbs.csr_info_der(SUBJECT, key)
    other_info = tbs.csr_info_der("CN=SEPFFFFFFFFFFFF", key)
    with pytest.raises(ParseError):
        tbs.assemble_csr(info, tbs.sign_csr_info(key, other_info), key)


def test_public_key_must_be_the_one_in_the_info():
    key, other = pki.generate_key("ec", 256), pki.generate_key("ec", 256)
    info = tbs.csr_info_der(SUBJECT, key)
    with pytest.raises(ParseError) as err:
        tbs.assemble_csr(info, tbs.sign_csr_info(other, info), other)
    assert err.value.code == "KEY_MISMATCH"


def test_garbage_signature_and_info_raise_parse_error():
    key = pki.generate_key("ec", 256)
    info = tbs.csr_info_der(SUBJECT, key)
    with pytest.raises(ParseError):
        tbs.assemble_csr(info, b"", key)
    with pytest.raises(ParseError):
        tbs.assemble_csr(b"\x30\x03\x02\x01\x00", b"\x00" * 64, key)


def test_unsupported_digest_and_duplicate_extension():
    key = pki.generate_key("ec", 256)
    with pytest.raises(PKIError) as err:
        tbs.sign_csr_info(key, b"x", "sha1")
    assert err.value.code == "DIGEST"
    with pytest.raises(PKIError):
        tbs.csr_info_der(SUBJECT, key, extensions=[KU, KU])


def test_verify_data_signature(rsa_key):
    for key in (rsa_key, pki.generate_key("ec", 384)):
        sig = tbs.sign_data(key, b"nonce", "sha384")
        tbs.verify_data_signature(key.public_key(), b"nonce", sig, "sha384")
        with pytest.raises(ParseError):
            tbs.verify_data_signature(key.public_key(), b"nonce!", sig, "sha384")


def test_phone_reads_the_key_of_the_info_it_is_asked_to_sign():
    key = pki.generate_key("ec", 256)
    assert pki.same_public_key(tbs.csr_info_public_key(tbs.csr_info_der(SUBJECT, key)), key)
    for junk in (b"", b"\x30\x00", b"\x04\x02ab", tbs.csr_info_der(SUBJECT, key) + b"\x00"):
        with pytest.raises(ParseError):
            tbs.csr_info_public_key(junk)
