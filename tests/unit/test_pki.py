"""onlineca.pki against test vectors and cross-checked with the ``openssl`` CLI.

What we write, openssl must read (keys, CSRs, certificates and their extensions, PKCS#7); what
openssl writes, we must read, in every encoding peers send (PEM, DER, bare base64, CRLF).
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from onlineca import pki
from onlineca.errors import ParseError, PKIError
from onlineca.infra import files as fs

VECTORS = Path(__file__).parent.parent / "vectors" / "pki"


def openssl(*args: str | Path, input: bytes | None = None) -> str:
    """Run the openssl CLI; its combined output, or a test failure naming the command."""
    proc = subprocess.run(["openssl", *map(str, args)], input=input, capture_output=True, timeout=60)
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    assert proc.returncode == 0, f"openssl {' '.join(map(str, args))} failed: {out}"
    return out


def openssl_bytes(*args: str | Path, input: bytes | None = None) -> bytes:
    proc = subprocess.run(["openssl", *map(str, args)], input=input, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    return proc.stdout


# RSA generation is the slow part of the suite: each size once per session.
@pytest.fixture(scope="session")
def rsa_keys() -> dict[int, pki.PrivateKey]:
    return {bits: pki.generate_key("rsa", bits) for bits in (1024, 2048, 3072, 4096)}


KEY_SPECS = [("rsa", 1024), ("rsa", 2048), ("rsa", 3072), ("rsa", 4096), ("ec", 256), ("ec", 384), ("ec", 521)]
CURVE_OF = {256: "P-256", 384: "P-384", 521: "P-521"}


def _key(rsa_keys: dict[int, pki.PrivateKey], key_type: str, bits: int) -> pki.PrivateKey:
    return rsa_keys[bits] if key_type == "rsa" else pki.generate_key("ec", bits)


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize(("key_type", "bits"), KEY_SPECS, ids=[f"{t}{b}" for t, b in KEY_SPECS])
def test_generated_keys_are_read_by_openssl(rsa_keys, tmp_path: Path, key_type: str, bits: int) -> None:
    key = _key(rsa_keys, key_type, bits)
    assert pki.key_spec(key) == (key_type, bits)
    path = tmp_path / "k.pem"
    fs.write_private_key(path, key)
    text = openssl("pkey", "-in", path, "-noout", "-text")
    assert f"Private-Key: ({bits} bit" in text
    if key_type == "ec":
        assert f"NIST CURVE: {CURVE_OF[bits]}" in text
    # openssl derives the same public key from our private key file
    assert openssl_bytes("pkey", "-in", path, "-pubout", "-outform", "DER") == pki.public_key_der(key)
    # and our DER private key is the same key
    der_path = tmp_path / "k.der"
    der_path.write_bytes(pki.private_key_der(key))
    assert openssl_bytes("pkey", "-inform", "DER", "-in", der_path, "-pubout", "-outform", "DER") == \
        pki.public_key_der(key)
    assert pki.same_public_key(pki.load_public_key(pki.public_key_pem(key)), key)


def test_generate_key_by_curve_name() -> None:
    assert pki.key_spec(pki.generate_key("ec", "P-384")) == ("ec", 384)
    assert pki.key_spec(pki.generate_key("ec", "prime256v1")) == ("ec", 256)


@pytest.mark.parametrize(("key_type", "size"), [("rsa", 1536), ("ec", 192), ("ec", "P-192"), ("dsa", 2048)])
def test_unsupported_keys_are_refused_with_a_hint(key_type: str, size) -> None:
    with pytest.raises(PKIError) as info:
        pki.generate_key(key_type, size)
    assert info.value.code in ("KEY_SIZE", "KEY_TYPE") and info.value.hint


def test_write_private_key_is_0600_even_over_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "issuing.key"
    path.parent.mkdir()
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    key = pki.generate_key("ec", 256)
    fs.write_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pki.same_public_key(fs.read_private_key(path), key)
    assert [p.name for p in path.parent.iterdir()] == ["issuing.key"]  # no temp file left behind


@pytest.mark.parametrize(("name", "spec"), [("rsa1024-pkcs1.pem", ("rsa", 1024)), ("ec256-sec1.pem", ("ec", 256))])
def test_traditional_key_vectors_load(name: str, spec: tuple[str, int]) -> None:
    data = (VECTORS / name).read_bytes()
    key = pki.load_private_key(data)
    assert pki.key_spec(key) == spec
    assert pki.key_spec(pki.load_private_key(pki.private_key_der(key))) == spec  # DER PKCS#8 too
    assert pki.public_key_der(key) == openssl_bytes("pkey", "-in", VECTORS / name, "-pubout", "-outform", "DER")


def test_encrypted_key_vector_needs_its_password() -> None:
    data = (VECTORS / "ec256-pkcs8-encrypted.pem").read_bytes()
    with pytest.raises(ParseError):
        pki.load_private_key(data)
    with pytest.raises(ParseError):
        pki.load_private_key(data, password=b"wrong")
    key = pki.load_private_key(data, password=b"test-vector")
    assert pki.same_public_key(key, pki.load_private_key((VECTORS / "ec256-sec1.pem").read_bytes()))


def test_read_private_key_missing_file_is_a_pki_error(tmp_path: Path) -> None:
    with pytest.raises(PKIError) as info:
        fs.read_private_key(tmp_path / "absent.key")
    assert "absent.key" in info.value.message


# ---------------------------------------------------------------- CSRs


@pytest.mark.parametrize(("key_type", "bits"), [("rsa", 2048), ("ec", 256), ("ec", 384), ("ec", 521)])
def test_our_csrs_verify_with_openssl(rsa_keys, tmp_path: Path, key_type: str, bits: int) -> None:
    key = _key(rsa_keys, key_type, bits)
    csr = pki.build_csr(key, "CN=SEP74A02FC0A675,O=Example", sans=["sep.example", "192.0.2.7"],
                        challenge_password="otp-42")
    path = tmp_path / "req.pem"
    path.write_bytes(pki.csr_pem(csr))
    out = openssl("req", "-in", path, "-verify", "-noout", "-text", "-nameopt", "compat")
    assert "verify OK" in out
    assert "/O=Example" in out or "O=Example" in out
    assert "DNS:sep.example" in out and "IP Address:192.0.2.7" in out
    assert "challengePassword" in out and "otp-42" in out
    assert pki.parse_csr(pki.csr_der(csr)).subject == csr.subject


@pytest.fixture(scope="module")
def openssl_csr(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A CSR made by ``openssl req`` now (PEM, DER)."""
    d = tmp_path_factory.mktemp("osslcsr")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", d / "k.pem", "-subj", "/O=Cisco/CN=CP-8865-SEP74A02FC0A675", "-out", d / "r.pem")
    pem = (d / "r.pem").read_bytes()
    return pem, openssl_bytes("req", "-in", d / "r.pem", "-outform", "DER")


def _encodings(pem: bytes, der: bytes) -> dict[str, bytes]:
    b64 = base64.b64encode(der)
    body = pem.split(b"-----")[2].strip()
    return {
        "pem": pem,
        "pem-crlf": pem.replace(b"\n", b"\r\n"),
        "der": der,
        "base64-one-line": b64,
        "base64-wrapped": b"\n".join(b64[i:i + 76] for i in range(0, len(b64), 76)) + b"\n",
        "base64-crlf": body.replace(b"\n", b"\r\n") + b"\r\n",
        "new-certificate-request": b"-----BEGIN NEW CERTIFICATE REQUEST-----\n" + body
        + b"\n-----END NEW CERTIFICATE REQUEST-----\n",
        "pem-with-text-around": b"Certificate request follows\n" + pem + b"\ntrailer\n",
    }


@pytest.mark.parametrize("form", ["pem", "pem-crlf", "der", "base64-one-line", "base64-wrapped", "base64-crlf",
                                  "new-certificate-request", "pem-with-text-around"])
def test_parse_csr_reads_openssl_csrs_in_every_form(openssl_csr: tuple[bytes, bytes], form: str) -> None:
    pem, der = openssl_csr
    csr = pki.parse_csr(_encodings(pem, der)[form])
    assert pki.name_to_slash(csr.subject) == "/O=Cisco/CN=CP-8865-SEP74A02FC0A675"
    assert pki.csr_der(csr) == der


def test_parse_csr_accepts_text(openssl_csr: tuple[bytes, bytes]) -> None:
    pem, der = openssl_csr
    assert pki.csr_der(pki.parse_csr(pem.decode())) == der


def test_csr_vector_facts() -> None:
    csr = pki.parse_csr((VECTORS / "openssl-csr.pem").read_bytes())
    assert pki.name_to_slash(csr.subject) == "/C=US/O=Example/CN=SEP74A02FC0A675"
    assert pki.csr_challenge_password(csr) == b"otp-1234"
    sans = pki.csr_sans(csr)
    assert sans is not None
    assert sans.get_values_for_type(x509.DNSName) == ["sep74a02fc0a675.example"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["192.0.2.10"]
    assert pki.same_public_key(csr.public_key(), pki.load_private_key((VECTORS / "ec256-sec1.pem").read_bytes()))


def test_a_csr_with_a_tampered_signature_is_rejected(openssl_csr: tuple[bytes, bytes], tmp_path: Path) -> None:
    _pem, der = openssl_csr
    # The signature BIT STRING ends the DER: flip a bit in its last byte.
    bad = der[:-1] + bytes([der[-1] ^ 0x01])
    (tmp_path / "bad.der").write_bytes(bad)
    proc = subprocess.run(["openssl", "req", "-inform", "DER", "-in", tmp_path / "bad.der", "-verify", "-noout"],
                          capture_output=True, timeout=60)
    assert b"verify OK" not in proc.stdout + proc.stderr  # openssl agrees it is bad
    with pytest.raises(ParseError) as info:
        pki.parse_csr(bad)
    assert info.value.code == "BAD_SIGNATURE"
    assert pki.parse_csr(bad, verify=False).subject == pki.parse_csr(der).subject


def test_a_csr_whose_subject_was_changed_is_rejected() -> None:
    key = pki.generate_key("ec", 256)
    der = pki.csr_der(pki.build_csr(key, "CN=AAAA"))
    forged = der.replace(b"AAAA", b"BBBB")
    with pytest.raises(ParseError):
        pki.parse_csr(forged)


@pytest.mark.parametrize("data", [b"", b"   ", b"not a csr", b"-----BEGIN CERTIFICATE REQUEST-----\n!!!\n"
                                  b"-----END CERTIFICATE REQUEST-----", b"\x30\x03\x02\x01\x00", b"MIIB",
                                  b"A" * (70 * 1024)])
def test_garbage_csrs_are_parse_errors(data: bytes) -> None:
    with pytest.raises(ParseError):
        pki.parse_csr(data)


# ---------------------------------------------------------------- certificates


@pytest.fixture(scope="module")
def ec_tree() -> dict[str, object]:
    """An all-EC two-tier PKI (P-384 root, P-256 issuing) and a leaf with every extension we set."""
    root_key = pki.generate_key("ec", 384)
    root = pki.build_certificate(subject="CN=EC Root,O=onlineca tests", public_key=root_key.public_key(),
                                 issuer_key=root_key, is_ca=True, validity_days=3650)
    issuing_key = pki.generate_key("ec", 256)
    issuing = pki.build_certificate(subject="CN=EC Issuing,O=onlineca tests", public_key=issuing_key.public_key(),
                                    issuer_key=root_key, issuer_cert=root, is_ca=True, path_length=0)
    leaf_key = pki.generate_key("ec", 521)
    leaf = pki.build_certificate(subject="CN=SEP74A02FC0A675,O=Example", public_key=leaf_key.public_key(),
                                 issuer_key=issuing_key, issuer_cert=issuing, validity_days=30,
                                 extended_key_usage=["client_auth", "server_auth"],
                                 sans=["sep.example", "192.0.2.7", "admin@example.com"])
    return {"root": root, "issuing": issuing, "leaf": leaf, "root_key": root_key, "issuing_key": issuing_key}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_certificates_we_build_are_read_by_openssl_with_their_extensions(ec_tree, tmp_path: Path) -> None:
    leaf = _write(tmp_path, "leaf.pem", pki.cert_pem(ec_tree["leaf"]))
    out = openssl("x509", "-in", leaf, "-noout", "-text")
    assert "X509v3 Key Usage: critical\n                Digital Signature, Key Encipherment" in out
    assert "X509v3 Extended Key Usage: \n                TLS Web Client Authentication, TLS Web Server Authentication" \
        in out
    assert "X509v3 Basic Constraints: critical\n                CA:FALSE" in out
    assert "X509v3 Subject Alternative Name: \n                DNS:sep.example, IP Address:192.0.2.7, " \
        "email:admin@example.com" in out
    ski = openssl("x509", "-in", _write(tmp_path, "iss.pem", pki.cert_pem(ec_tree["issuing"])), "-noout", "-ext",
                  "subjectKeyIdentifier").split("\n", 1)[1].strip()
    aki = openssl("x509", "-in", leaf, "-noout", "-ext", "authorityKeyIdentifier").split("\n", 1)[1].strip()
    assert ski and ski in aki  # the leaf's AKI is its issuer's SKI
    assert "ecdsa-with-SHA256" in out  # signed by the P-256 issuing key

    issuing = openssl("x509", "-in", tmp_path / "iss.pem", "-noout", "-text")
    assert "CA:TRUE, pathlen:0" in issuing
    assert "Digital Signature, Certificate Sign, CRL Sign" in issuing
    assert "ecdsa-with-SHA384" in issuing  # signed by the P-384 root


def test_openssl_verifies_our_chains(ec_tree, lab_pki, tmp_path: Path) -> None:
    root = _write(tmp_path, "root.pem", pki.cert_pem(ec_tree["root"]))
    issuing = _write(tmp_path, "issuing.pem", pki.cert_pem(ec_tree["issuing"]))
    leaf = _write(tmp_path, "leaf.pem", pki.cert_pem(ec_tree["leaf"]))
    assert ": OK" in openssl("verify", "-CAfile", root, "-untrusted", issuing, leaf)
    # the RSA lab PKI of conftest, with an EC leaf, for the purposes a phone's LSC is used for
    _key, rsa_leaf = lab_pki.issue("CN=SEP001122334455", extended_key_usage=["client_auth"])
    rsa_leaf_path = _write(tmp_path, "rsa-leaf.pem", pki.cert_pem(rsa_leaf))
    lab_issuing = _write(tmp_path, "lab-issuing.pem", pki.cert_pem(lab_pki.issuing))
    assert ": OK" in openssl("verify", "-purpose", "sslclient", "-CAfile", lab_pki.root_pem, "-untrusted",
                             lab_issuing, rsa_leaf_path)
    assert ": OK" in openssl("verify", "-purpose", "sslserver", "-CAfile", lab_pki.root_pem, "-untrusted",
                             lab_issuing, lab_pki.server_cert_pem)
    # and it refuses a leaf without its intermediate: our test would notice a broken chain
    proc = subprocess.run(["openssl", "verify", "-CAfile", root, leaf], capture_output=True, timeout=60)
    assert proc.returncode != 0


def test_name_and_fingerprint_match_openssl(ec_tree, tmp_path: Path) -> None:
    path = _write(tmp_path, "leaf.pem", pki.cert_pem(ec_tree["leaf"]))
    subject = openssl("x509", "-in", path, "-noout", "-subject", "-nameopt", "compat").strip()
    assert subject == "subject=" + pki.name_to_slash(ec_tree["leaf"].subject)
    assert pki.name_to_slash(ec_tree["leaf"].subject) == "/CN=SEP74A02FC0A675/O=Example"
    fp = openssl("x509", "-in", path, "-noout", "-fingerprint", "-sha256").strip()
    assert fp.split("=", 1)[1] == pki.fingerprint(ec_tree["leaf"])
    assert pki.common_name(ec_tree["leaf"].subject) == "SEP74A02FC0A675"
    assert pki.san_names(ec_tree["leaf"]) == ["sep.example", "192.0.2.7"]
    assert pki.key_usage_names(ec_tree["leaf"]) == {"digital_signature", "key_encipherment"}


def test_certificate_vector_facts() -> None:
    cert = pki.load_certificate((VECTORS / "openssl-root.pem").read_bytes())
    assert cert.serial_number == 4660
    assert pki.name_to_slash(cert.subject) == "/O=Example/CN=Vector Root"
    assert pki.fingerprint(cert) == ("4C:2D:9C:85:C1:2B:0D:AD:29:58:DE:77:8B:A5:78:5A:23:F9:ED:19:D0:72:5D:FA:"
                                     "E8:91:83:A8:23:42:F9:50")
    assert pki.is_self_signed(cert)


def test_parse_name_forms() -> None:
    assert pki.parse_name("/O=Cisco/CN=ACT2 SUDI CA") == pki.parse_name("O=Cisco,CN=ACT2 SUDI CA")
    assert pki.common_name(pki.parse_name(r"CN=Doe\, John,O=x")) == "Doe, John"
    with pytest.raises(PKIError):
        pki.parse_name("CN=x,BOGUS=y")


def test_leaf_never_outlives_its_issuer(ec_tree) -> None:
    key = pki.generate_key("ec", 256)
    cert = pki.build_certificate(subject="CN=long", public_key=key.public_key(), issuer_key=ec_tree["issuing_key"],
                                 issuer_cert=ec_tree["issuing"], validity_days=100000)
    assert cert.not_valid_after_utc == ec_tree["issuing"].not_valid_after_utc


# ---------------------------------------------------------------- PEM / DER


def test_pem_der_round_trips_agree_with_openssl(ec_tree, tmp_path: Path) -> None:
    cert = ec_tree["leaf"]
    pem, der = pki.cert_pem(cert), pki.cert_der(cert)
    assert pki.pem_to_der(pem) == der
    assert pki.der_to_pem(der) == pem
    assert pki.pem_to_der(pki.der_to_pem(der)) == der
    assert pki.pem_armor(der) == pem  # armour alone, no parse, byte for byte what cryptography writes
    path = _write(tmp_path, "leaf.pem", pem)
    assert openssl_bytes("x509", "-in", path, "-outform", "DER") == der
    der_path = _write(tmp_path, "leaf.der", der)
    assert openssl_bytes("x509", "-inform", "DER", "-in", der_path).replace(b"\r\n", b"\n") == pem
    assert pki.load_certificate(base64.b64encode(der)) == cert
    assert pki.load_certificate(pem.replace(b"\n", b"\r\n")) == cert


def test_load_certificates_reads_a_bundle_in_order(ec_tree) -> None:
    bundle = pki.certs_pem([ec_tree["leaf"], ec_tree["issuing"], ec_tree["root"]])
    assert pki.load_certificates(bundle) == [ec_tree["leaf"], ec_tree["issuing"], ec_tree["root"]]
    assert pki.load_certificates(b"junk\n" + bundle.replace(b"\n", b"\r\n")) == \
        [ec_tree["leaf"], ec_tree["issuing"], ec_tree["root"]]


# ---------------------------------------------------------------- PKCS#7


def test_our_pkcs7_is_read_by_openssl(ec_tree, tmp_path: Path) -> None:
    certs = [ec_tree["leaf"], ec_tree["issuing"], ec_tree["root"]]
    der = _write(tmp_path, "c.p7b", pki.pkcs7_der(certs))
    out = openssl("pkcs7", "-inform", "DER", "-in", der, "-print_certs", "-noout")
    for cert in certs:
        assert "subject=" + ", ".join(f"{a.rfc4514_string().split('=')[0]} = {a.value}"
                                      for a in cert.subject) in out
    pem = _write(tmp_path, "c.pem.p7b", pki.pkcs7_pem(certs))
    printed = openssl_bytes("pkcs7", "-in", pem, "-print_certs")
    assert set(pki.load_certificates(printed)) == set(certs)
    # EST's base64 body is the same DER
    assert base64.b64decode(pki.pkcs7_b64(certs)) == pki.pkcs7_der(certs)
    assert b"\n" not in pki.pkcs7_b64(certs, line_length=0)
    assert max(len(line) for line in pki.pkcs7_b64(certs).splitlines()) == 64


@pytest.mark.parametrize("form", ["der", "pem", "base64", "base64-crlf", "certificate-markers"])
def test_parse_pkcs7_reads_openssl_crl2pkcs7(lab_pki, tmp_path: Path, form: str) -> None:
    bundle = _write(tmp_path, "bundle.pem", pki.certs_pem([lab_pki.issuing, lab_pki.root]))
    der = openssl_bytes("crl2pkcs7", "-nocrl", "-certfile", bundle, "-outform", "DER")
    pem = openssl_bytes("crl2pkcs7", "-nocrl", "-certfile", bundle)
    b64 = pem.split(b"-----")[2].strip()
    data = {
        "der": der,
        "pem": pem,
        "base64": b64,
        "base64-crlf": b64.replace(b"\n", b"\r\n"),
        # AD CS's certnew.p7b?Enc=b64 wraps the PKCS#7 in CERTIFICATE markers
        "certificate-markers": b"-----BEGIN CERTIFICATE-----\r\n" + b64.replace(b"\n", b"\r\n")
        + b"\r\n-----END CERTIFICATE-----\r\n",
    }[form]
    assert pki.parse_pkcs7(data) == [lab_pki.issuing, lab_pki.root]


def test_empty_pkcs7_is_refused() -> None:
    with pytest.raises(ValueError):
        pki.pkcs7_der([])
    empty = openssl_bytes("crl2pkcs7", "-nocrl", "-outform", "DER", input=b"")
    with pytest.raises(ParseError):
        pki.parse_pkcs7(empty)


def test_keys_load_from_text_too() -> None:
    text = (VECTORS / "ec256-sec1.pem").read_text()
    assert pki.key_spec(pki.load_private_key(text)) == ("ec", 256)
    assert pki.key_spec(pki.load_public_key(pki.public_key_pem(pki.load_private_key(text)).decode())) == ("ec", 256)
    with pytest.raises(ParseError):
        pki.load_private_key(12345)  # type: ignore[arg-type]
