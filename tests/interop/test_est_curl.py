"""Interop: ``curl`` as the EST client against our server, with CSRs made by ``openssl req`` and
the answers read by ``openssl pkcs7 -print_certs`` (RFC 7030 appendix A shows the same exchanges)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from onlineca import pki
from onlineca.est.backend import LocalSigner
from onlineca.est.server import ESTServerSettings, start_est_server
from onlineca.infra import files as fs
from onlineca.infra.users import UsersFile

pytestmark = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")),
                                reason="needs curl and openssl")

USER, PASSWORD = "ciscora", "curl-Passw0rd"
DEVICE = "/CN=SEP74A02FC0A675/O=onlineca tests"


async def run(*args: str | Path) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(*map(str, args), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def files(lab_pki, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("curl")
    key, cert = lab_pki.issue("CN=SEP74A02FC0A675,O=onlineca tests", sans=["SEP74A02FC0A675.lab"],
                              extended_key_usage=["client_auth"])
    # The chain goes with the leaf: the server trusts only the root.
    (d / "device.pem").write_bytes(pki.certs_pem([cert, lab_pki.issuing]))
    fs.write_private_key(d / "device.key", key)
    return d


@pytest.fixture
async def server(lab_pki):
    signer = LocalSigner(lab_pki.issuing_key, lab_pki.issuing, ca_chain=[lab_pki.root])
    srv = await start_est_server(
        signer, cert_file=lab_pki.server_cert_pem, key_file=lab_pki.server_key_pem,
        settings=ESTServerSettings(password_check=UsersFile.from_plain({USER: PASSWORD})),
        client_trust=pki.TrustStore([lab_pki.root]))
    yield srv
    await srv.close()


async def openssl_req(d: Path, subject: str, name: str, san: str | None = None) -> Path:
    """A P-256 key and CSR from openssl, sent as base64 of the DER (as RFC 7030 asks)."""
    args = ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", d / f"{name}.key", "-subj", subject, "-outform", "DER", "-out", d / f"{name}.der"]
    if san:
        args += ["-addext", f"subjectAltName={san}"]
    rc, _, err = await run(*args)
    assert rc == 0, err
    rc, _, err = await run("openssl", "base64", "-in", d / f"{name}.der", "-out", d / f"{name}.b64")
    assert rc == 0, err
    return d / f"{name}.b64"


async def curl(url: str, cafile: Path, out: Path, *extra: str | Path) -> int:
    rc, code, err = await run("curl", "-sS", "--max-time", "30", "--cacert", cafile, "-o", out,
                              "-w", "%{http_code}", *extra, url)
    assert rc == 0, err
    return int(code)


async def print_certs(b64: Path) -> str:
    der = b64.with_suffix(".p7")
    rc, _, err = await run("openssl", "base64", "-d", "-in", b64, "-out", der)
    assert rc == 0, err
    rc, out, err = await run("openssl", "pkcs7", "-inform", "DER", "-in", der, "-print_certs", "-noout")
    assert rc == 0, err
    return out.decode()


async def test_curl_cacerts(server, lab_pki, tmp_path):
    status = await curl(f"{server.url}/cacerts", lab_pki.root_pem, tmp_path / "cacerts.b64")
    assert status == 200
    text = await print_certs(tmp_path / "cacerts.b64")
    assert "CN = Test Lab Issuing CA" in text and "CN = Test Lab Root CA" in text


async def test_curl_simpleenroll_basic_auth(server, lab_pki, tmp_path):
    req = await openssl_req(tmp_path, "/CN=curl-device-1/O=onlineca tests", "r1")
    args = ("--data-binary", f"@{req}", "-H", "Content-Type: application/pkcs10")
    status = await curl(f"{server.url}/simpleenroll", lab_pki.root_pem, tmp_path / "bad.b64",
                        "-u", f"{USER}:wrong", *args)
    assert status == 401
    status = await curl(f"{server.url}/simpleenroll", lab_pki.root_pem, tmp_path / "cert.b64",
                        "-u", f"{USER}:{PASSWORD}", *args)
    assert status == 200, (tmp_path / "cert.b64").read_text()
    text = await print_certs(tmp_path / "cert.b64")
    assert "subject=CN = curl-device-1, O = onlineca tests" in text
    assert "issuer=CN = Test Lab Issuing CA" in text


async def test_curl_simpleenroll_pem_body_is_tolerated(server, lab_pki, tmp_path):
    rc, _, err = await run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                           "-nodes", "-keyout", tmp_path / "p.key", "-subj", "/CN=curl-pem", "-out", tmp_path / "p.pem")
    assert rc == 0, err
    status = await curl(f"{server.url}/simpleenroll", lab_pki.root_pem, tmp_path / "cert.b64",
                        "-u", f"{USER}:{PASSWORD}", "--data-binary", f"@{tmp_path / 'p.pem'}",
                        "-H", "Content-Type: application/pkcs10")
    assert status == 200
    assert "subject=CN = curl-pem" in await print_certs(tmp_path / "cert.b64")


async def test_curl_simpleenroll_client_certificate(server, lab_pki, files, tmp_path):
    # A certificate alone may ask only for its own names (RFC 7030 3.3.2): another is 403.
    auth = ("--cert", files / "device.pem", "--key", files / "device.key")
    req = await openssl_req(tmp_path, DEVICE, "r2", san="DNS:SEP74A02FC0A675.lab")
    status = await curl(f"{server.url}/simpleenroll", lab_pki.root_pem, tmp_path / "cert.b64", *auth,
                        "--data-binary", f"@{req}", "-H", "Content-Type: application/pkcs10")
    assert status == 200, (tmp_path / "cert.b64").read_text()
    assert "subject=CN = SEP74A02FC0A675, O = onlineca tests" in await print_certs(tmp_path / "cert.b64")
    other = await openssl_req(tmp_path, "/CN=curl-device-2", "r2b")
    status = await curl(f"{server.url}/simpleenroll", lab_pki.root_pem, tmp_path / "other.txt", *auth,
                        "--data-binary", f"@{other}", "-H", "Content-Type: application/pkcs10")
    assert status == 403


async def test_curl_simplereenroll(server, lab_pki, files, tmp_path):
    req = await openssl_req(tmp_path, DEVICE, "r3", san="DNS:SEP74A02FC0A675.lab")
    auth = ("--cert", files / "device.pem", "--key", files / "device.key")
    status = await curl(f"{server.url}/simplereenroll", lab_pki.root_pem, tmp_path / "cert.b64", *auth,
                        "--data-binary", f"@{req}", "-H", "Content-Type: application/pkcs10")
    assert status == 200, (tmp_path / "cert.b64").read_text()
    text = await print_certs(tmp_path / "cert.b64")
    assert "subject=CN = SEP74A02FC0A675, O = onlineca tests" in text
    # A renewal that changes the subject is refused (RFC 7030 4.2.2).
    bad = await openssl_req(tmp_path, "/CN=SOMEONE-ELSE", "r4", san="DNS:SEP74A02FC0A675.lab")
    status = await curl(f"{server.url}/simplereenroll", lab_pki.root_pem, tmp_path / "bad.txt", *auth,
                        "--data-binary", f"@{bad}", "-H", "Content-Type: application/pkcs10")
    assert status == 400
