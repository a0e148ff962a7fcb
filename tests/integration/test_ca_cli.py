"""``onlineca ca`` as an administrator runs it, in real processes: init (files, modes, refusal to
overwrite), users add/list/remove, requests list/show/approve/deny, and ``serve`` with a web
certificate given on the command line (here an expired one, which curl must refuse)."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import free_port

from onlineca import pki
from onlineca.ca import engine as eng
from onlineca.config import DataDir, load_config
from onlineca.infra import files as fs
from onlineca.store import Database


def onlineca(data: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "ONLINECA_CA_PASSWORD"}
    full_env.update(env or {})
    result = subprocess.run([sys.executable, "-m", "onlineca", "--data-dir", str(data), *args],
                            capture_output=True, text=True, timeout=120, env=full_env)
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def test_init_users_and_refusal_to_overwrite(tmp_path):
    data = tmp_path / "data"
    out = onlineca(data, "ca", "init", "--key-type", "ec", "--root-name", "CN=Test Root,O=x",
                   "--issuing-name", "CN=Test Issuing,O=x").stdout
    password = out.split("password for ciscora: ")[1].split()[0]
    files = DataDir(Path(data)).ca
    for key in (files.root_key, files.issuing_key, files.web_key, data / "ca" / "users"):
        assert key.stat().st_mode & 0o777 == 0o600, key
    root = pki.load_certificate(files.root_cert.read_bytes())
    issuing = pki.load_certificate(files.issuing_cert.read_bytes())
    web = pki.load_certificates(files.web_cert.read_bytes())[0]
    assert pki.common_name(root.subject) == "Test Root" and issuing.issuer == root.subject
    assert web.issuer == issuing.subject and pki.san_names(web) == ["localhost", "127.0.0.1"]
    assert password not in (data / "ca" / "users").read_text()

    again = onlineca(data, "ca", "init", check=False)
    assert again.returncode == 1 and "already exists" in again.stderr and "--force" in again.stderr
    assert pki.load_certificate(files.root_cert.read_bytes()) == root

    onlineca(data, "ca", "users", "add", "bob", env={"ONLINECA_CA_PASSWORD": "bob-pw"})
    assert json.loads(onlineca(data, "ca", "users", "list", "--json").stdout) == ["bob", "ciscora"]
    assert "bob-pw" not in (data / "ca" / "users").read_text()
    onlineca(data, "ca", "users", "remove", "bob")
    assert onlineca(data, "ca", "users", "list").stdout.split() == ["ciscora"]
    assert onlineca(data, "ca", "users", "remove", "bob", check=False).returncode == 1

    onlineca(data, "ca", "init", "--force", "--key-type", "ec")
    assert pki.load_certificate(files.root_cert.read_bytes()) != root
    # The existing users file is kept (no second generated password).
    assert onlineca(data, "ca", "users", "list").stdout.split() == ["ciscora"]


def test_requests_commands(tmp_path):
    data = tmp_path / "data"
    config_path = tmp_path / "c.toml"
    config_path.write_text(f'data_dir = "{data}"\n[ca]\nkey_type = "ec"\n[[ca.templates]]\nname = "Manual"\n'
                           "manager_approval = true\n")
    base = ["--config", str(config_path)]
    onlineca(data, *base, "ca", "init", env={"ONLINECA_CA_PASSWORD": "pw"})
    config = load_config(config_path)
    engine = eng.CAEngine(config, data, Database(config.database_url))
    key = pki.generate_key("ec", 256)
    first = engine.submit("ciscora", pki.csr_pem(pki.build_csr(key, "CN=one")).decode(), "CertificateTemplate:Manual")
    second = engine.submit("ciscora", pki.csr_pem(pki.build_csr(key, "CN=two")).decode(), "CertificateTemplate:Manual")
    assert (first.disposition, second.disposition) == ("pending", "pending")
    listed = json.loads(onlineca(data, *base, "ca", "requests", "list", "--json").stdout)
    assert [(r["req_id"], r["disposition"], r["subject"]) for r in listed] == [
        (first.req_id, "pending", "/CN=one"), (second.req_id, "pending", "/CN=two")]
    assert "issued" in onlineca(data, *base, "ca", "requests", "approve", str(first.req_id)).stdout
    assert "denied" in onlineca(data, *base, "ca", "requests", "deny", str(second.req_id)).stdout
    pem = onlineca(data, *base, "ca", "requests", "show", str(first.req_id), "--pem").stdout
    assert pki.common_name(pki.load_certificate(pem.encode()).subject) == "one"
    again = onlineca(data, *base, "ca", "requests", "approve", str(second.req_id), check=False)
    assert again.returncode == 1 and "denied, not pending" in again.stderr
    assert onlineca(data, *base, "ca", "requests", "show", "999", check=False).returncode == 1


def _wait_listening(port: int, proc: subprocess.Popen, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling the port is the readiness check; the process gives no other
    raise AssertionError("ca serve did not listen")


@pytest.fixture(scope="module")
def served_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("serve") / "data"
    onlineca(data, "ca", "init", "--key-type", "ec", env={"ONLINECA_CA_PASSWORD": "pw"})
    return data


@pytest.mark.parametrize("kind,curl_code", [("expired", 60), ("wrong-name", 60), ("good", 0)])
def test_serve_with_a_given_web_certificate(served_data, tmp_path, kind, curl_code):
    data = served_data
    files = DataDir(Path(data)).ca
    issuing_key = fs.read_private_key(files.issuing_key)
    issuing = pki.load_certificate(files.issuing_cert.read_bytes())
    key = pki.generate_key("ec", 256)
    kw = {"expired": dict(sans=["127.0.0.1"], not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=10),
                          validity_days=2),
          "wrong-name": dict(sans=["other.example.com"]), "good": dict(sans=["127.0.0.1"])}[kind]
    cert = pki.build_certificate(subject="CN=web", public_key=key.public_key(), issuer_key=issuing_key,
                                 issuer_cert=issuing, extended_key_usage=["server_auth"], **kw)
    (tmp_path / "web.pem").write_bytes(pki.certs_pem([cert, issuing]))
    fs.write_private_key(tmp_path / "web.key", key)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "onlineca", "--data-dir", str(data), "ca", "serve",
                             "--port", str(port), "--tls-cert", str(tmp_path / "web.pem"),
                             "--tls-key", str(tmp_path / "web.key")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(port, proc)
        got = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", str(files.root_cert), "-u", "ciscora:pw",
                              "-o", "/dev/null", "-w", "%{http_code}", f"https://127.0.0.1:{port}/certsrv/"],
                             capture_output=True, text=True, timeout=30)
        assert got.returncode == curl_code, got.stderr
        if curl_code == 0:
            assert got.stdout == "200"
    finally:
        proc.terminate()
        proc.wait(30)
    assert "pw" not in (data / "logs" / "ca.log").read_text().split()
