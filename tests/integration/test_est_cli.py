"""``onlineca est ...`` as an administrator runs it: a real ``onlineca est serve`` process and the
client subcommands as separate processes, over TLS on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onlineca import pki
from onlineca.infra import files as fs
from onlineca.infra.users import hash_password

USER, PASSWORD = "ciscora", "cli-Passw0rd"


def onlineca(*args: str | Path, env_password: str | None = PASSWORD, tmp: Path | None = None,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ONLINECA_EST_PASSWORD"}
    if env_password is not None:
        env["ONLINECA_EST_PASSWORD"] = env_password
    if tmp is not None:
        env["ONLINECA_DATA_DIR"] = str(tmp)
    return subprocess.run([sys.executable, "-m", "onlineca", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=60, input=stdin)


@pytest.fixture(scope="module")
def served(lab_pki, tmp_path_factory):
    d = tmp_path_factory.mktemp("estcli")
    (d / "users").write_text(f"# EST users\n{USER}:{hash_password(PASSWORD, n=2 ** 12)}\n")
    key, cert = lab_pki.issue("CN=SEP74A02FC0A675,O=onlineca tests", sans=["SEP74A02FC0A675.lab"],
                              extended_key_usage=["client_auth"])
    (d / "device.pem").write_bytes(pki.certs_pem([cert, lab_pki.issuing]))
    fs.write_private_key(d / "device.key", key)
    (d / "issuing-chain.pem").write_bytes(pki.certs_pem([lab_pki.issuing, lab_pki.root]))
    with serve(lab_pki, d, "--label", "lsc") as url:
        yield url, d


@contextlib.contextmanager
def serve(lab_pki, d: Path, *extra: str):
    """``onlineca est serve`` in its own process; yields its URL once it listens."""
    env = dict(os.environ, ONLINECA_DATA_DIR=str(d / "data"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "onlineca", "est", "serve", "--port", "0",
         "--tls-cert", lab_pki.server_cert_pem, "--tls-key", lab_pki.server_key_pem,
         "--issuer-cert", d / "issuing-chain.pem", "--issuer-key", lab_pki.dir / "issuing.key",
         "--users-file", d / "users", "--client-ca", lab_pki.root_pem, *extra],
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()  # readiness: the server prints its URL once it listens
        assert "EST server listening on " in line, line + proc.stderr.read()
        yield line.split("listening on ")[1].strip()
    finally:
        proc.terminate()
        proc.wait(10)


def test_cli_cacerts_pem_and_der(served, lab_pki, tmp_path):
    url, _ = served
    r = onlineca("est", "cacerts", "--server", url, "--cafile", lab_pki.root_pem, "--out", tmp_path / "ca.pem")
    assert r.returncode == 0, r.stderr
    assert pki.order_chain(pki.load_certificates((tmp_path / "ca.pem").read_bytes())) == [lab_pki.issuing, lab_pki.root]
    r = onlineca("est", "cacerts", "--server", url, "--label", "lsc", "--cafile", lab_pki.root_pem,
                 "--der", "--out", tmp_path / "ca.p7b")
    assert r.returncode == 0, r.stderr
    assert set(pki.parse_pkcs7((tmp_path / "ca.p7b").read_bytes())) == {lab_pki.issuing, lab_pki.root}


def test_cli_enroll_makes_key_and_csr(served, lab_pki, tmp_path):
    url, _ = served
    r = onlineca("est", "enroll", "--server", url, "--cafile", lab_pki.root_pem, "--user", USER,
                 "--subject", "CN=cli-device,O=lab", "--san", "cli.lab", "--key-out", tmp_path / "k.pem",
                 "--out", tmp_path / "c.der", "--der")
    assert r.returncode == 0, r.stderr
    assert "Enrollment rv = 0 (EST_ERR_NONE) with pkcs7 length = " in r.stderr
    assert PASSWORD not in r.stderr + r.stdout
    cert = pki.load_certificate((tmp_path / "c.der").read_bytes())
    assert pki.same_public_key(cert.public_key(), fs.read_private_key(tmp_path / "k.pem"))
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert pki.san_names(cert) == ["cli.lab"]


def test_cli_enroll_csr_file_with_client_cert_for_its_own_names(served, lab_pki, tmp_path):
    url, d = served
    # A client authenticated by its certificate alone may ask only for its own names (issue 12 item 7).
    csr = pki.build_csr(pki.generate_key("ec", 256), "CN=SEP74A02FC0A675,O=onlineca tests", ["SEP74A02FC0A675.lab"])
    (tmp_path / "r.csr").write_bytes(pki.csr_pem(csr))
    r = onlineca("est", "enroll", "--server", url, "--cafile", lab_pki.root_pem, "--cert", d / "device.pem",
                 "--key", d / "device.key", "--csr", tmp_path / "r.csr", env_password=None)
    assert r.returncode == 0, r.stderr
    assert pki.load_certificate(r.stdout.encode()).subject == csr.subject


def test_cli_reenroll_keeps_names(served, lab_pki, tmp_path):
    url, d = served
    r = onlineca("est", "reenroll", "--server", url, "--cafile", lab_pki.root_pem, "--cert", d / "device.pem",
                 "--key", d / "device.key", "--key-out", tmp_path / "new.key", "--out", tmp_path / "new.pem")
    assert r.returncode == 0, r.stderr
    cert = pki.load_certificate((tmp_path / "new.pem").read_bytes())
    assert pki.name_to_slash(cert.subject) == "/CN=SEP74A02FC0A675/O=onlineca tests"
    assert pki.san_names(cert) == ["SEP74A02FC0A675.lab"]


def test_cli_csrattrs_and_serverkeygen(served, lab_pki, tmp_path):
    url, _ = served
    r = onlineca("est", "csrattrs", "--server", url, "--cafile", lab_pki.root_pem)
    assert r.returncode == 0 and "no CSR attributes requested" in r.stdout, r.stderr
    r = onlineca("est", "serverkeygen", "--server", url, "--cafile", lab_pki.root_pem, "--user", USER,
                 "--subject", "CN=keygen", "--key-out", tmp_path / "sk.pem", "--out", tmp_path / "sc.pem")
    assert r.returncode == 0, r.stderr
    cert = pki.load_certificate((tmp_path / "sc.pem").read_bytes())
    assert pki.same_public_key(cert.public_key(), fs.read_private_key(tmp_path / "sk.pem"))


def test_cli_wrong_password_logs_like_capf(served, lab_pki):
    url, _ = served
    r = onlineca("est", "enroll", "--server", url, "--cafile", lab_pki.root_pem, "--user", USER,
                 "--subject", "CN=x", env_password="wrong")
    assert r.returncode == 1
    assert "Enrollment rv = 22 (EST_ERR_AUTH_FAIL) with pkcs7 length = 0" in r.stderr
    assert "rv = 22 (EST_ERR_AUTH_FAIL)" in r.stderr and "Traceback" not in r.stderr


def test_cli_bootstrap_by_fingerprint(served, lab_pki, tmp_path):
    url, _ = served
    r = onlineca("est", "cacerts", "--server", url, "--insecure-bootstrap",
                 "--expect-fingerprint", pki.fingerprint(lab_pki.root))
    assert r.returncode == 0, r.stderr
    assert pki.fingerprint(lab_pki.issuing) in r.stderr
    r = onlineca("est", "cacerts", "--server", url, "--insecure-bootstrap", "--expect-fingerprint", "AB:CD")
    assert r.returncode == 1 and "EST_ERR_CACERT_VERIFICATION" in r.stderr
    r = onlineca("est", "cacerts", "--server", url, "--insecure-bootstrap", stdin="y\n")
    assert r.returncode == 1  # no terminal: never trust silently


def test_cli_needs_trust(served):
    url, _ = served
    r = onlineca("est", "cacerts", "--server", url)
    assert r.returncode == 2 and "--cafile" in r.stderr


def test_cli_pop_against_a_pop_server(served, lab_pki, tmp_path):
    _, d = served
    with serve(lab_pki, d, "--pop") as url:
        args = ("est", "enroll", "--server", url, "--cafile", lab_pki.root_pem, "--user", USER, "--subject", "CN=pop")
        r = onlineca(*args)
        assert r.returncode == 1 and "rv = 22 (EST_ERR_AUTH_FAIL)" in r.stderr  # no PoP: the server says 401
        r = onlineca(*args, "--pop", "--out", tmp_path / "pop.pem")
        assert r.returncode == 0, r.stderr
        assert pki.name_to_slash(pki.load_certificate((tmp_path / "pop.pem").read_bytes()).subject) == "/CN=pop"


def test_cli_serve_publishes_the_root_in_cacerts_or_refuses_to_start(lab_pki, tmp_path):
    """Issue 12 item 4: RFC 7030 4.1.3 wants the root in /cacerts (libEST's client checks it)."""
    (tmp_path / "issuing.pem").write_bytes(pki.cert_pem(lab_pki.issuing))
    r = onlineca("est", "serve", "--port", "0", "--tls-cert", lab_pki.server_cert_pem, "--tls-key",
                 lab_pki.server_key_pem, "--issuer-cert", tmp_path / "issuing.pem", "--issuer-key",
                 lab_pki.dir / "issuing.key", tmp=tmp_path)
    assert r.returncode == 1 and "/cacerts would lack the root CA" in r.stderr and "--ca-chain" in r.stderr
    (tmp_path / "users").write_text(f"{USER}:{hash_password(PASSWORD, n=2 ** 10)}\n")
    (tmp_path / "issuing-chain.pem").write_bytes(pki.cert_pem(lab_pki.root))
    env = dict(os.environ, ONLINECA_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "onlineca", "est", "serve", "--port", "0", "--tls-cert", lab_pki.server_cert_pem,
         "--tls-key", lab_pki.server_key_pem, "--issuer-cert", tmp_path / "issuing.pem", "--ca-chain",
         tmp_path / "issuing-chain.pem", "--issuer-key", lab_pki.dir / "issuing.key",
         "--users-file", tmp_path / "users"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        assert "EST server listening on " in line, line
        url = line.split("listening on ")[1].strip()
        got = onlineca("est", "cacerts", "--server", url, "--cafile", lab_pki.root_pem, "--out", tmp_path / "ca.pem")
        assert got.returncode == 0, got.stderr
        assert lab_pki.root in pki.load_certificates((tmp_path / "ca.pem").read_bytes())
    finally:
        proc.terminate()
        proc.wait(10)
