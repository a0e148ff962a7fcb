"""Interop: ``curl`` as the EST client of the RA, with CSRs from ``openssl req`` and answers read by
``openssl pkcs7``.  The RA runs as a real process (``onlineca ra serve``) in front of our CA
(certsrv connector), and in-process with the local connector."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from tests.conftest import free_port
from tests.integration.ra_lab import (  # noqa: F401  (fixtures)
    FAST_RA,
    PASSWORD,
    USER,
    ca_lab,
    error_log,
    local_ra,
    ra_running,
    run_ca,
)

pytestmark = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")),
                                reason="needs curl and openssl")


async def run(*args: str | Path, env: dict | None = None) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(*map(str, args), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out, err


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def write_config(path: Path, top: dict, sections: dict[str, dict]) -> Path:
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, values in sections.items():
        lines += ["", f"[{name}]"] + [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def csr_b64(d: Path, subject: str) -> Path:
    rc, _, err = await run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                           "-nodes", "-keyout", d / "dev.key", "-subj", subject, "-outform", "DER",
                           "-out", d / "dev.der")
    assert rc == 0, err
    rc, _, err = await run("openssl", "base64", "-in", d / "dev.der", "-out", d / "dev.b64")
    assert rc == 0, err
    return d / "dev.b64"


async def curl_enroll(base: str, cafile: Path, body: Path, out: Path, user: str, password: str) -> tuple[int, str]:
    rc, stdout, err = await run(
        "curl", "-sS", "--cacert", cafile, "-u", f"{user}:{password}", "-H", "Content-Type: application/pkcs10",
        "--data-binary", f"@{body}", "-o", out, "-w", "%{http_code}", f"{base}/.well-known/est/simpleenroll")
    assert rc == 0, err
    return int(stdout), out.read_bytes().decode(errors="replace") if out.exists() else ""


async def print_certs(p7: Path) -> str:
    der = p7.with_suffix(".der")
    rc, _, err = await run("openssl", "base64", "-d", "-in", p7, "-out", der)
    assert rc == 0, err
    rc, out, err = await run("openssl", "pkcs7", "-inform", "DER", "-in", der, "-print_certs", "-noout")
    assert rc == 0, err
    return out.decode()


async def wait_ready(base: str, cafile: Path, proc: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    """Wait on the RA's readiness endpoint (curl), failing at once if the process died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        assert proc.returncode is None, "the RA process exited"
        _rc, out, _ = await run("curl", "-s", "--cacert", cafile, "-o", "/dev/null", "-w", "%{http_code}",
                               f"{base}/readyz")
        if out == b"200":
            return
        await asyncio.sleep(0.05)  # poll interval of the readiness wait
    raise AssertionError("the RA did not become ready")


async def test_curl_through_the_ra_process_at_our_ca(ca_lab, tmp_path):
    ca = await run_ca(ca_lab, tmp_path / "ca-logs")
    port = free_port()
    logs = tmp_path / "ra-logs"
    cfg = write_config(tmp_path / "ra.toml", {"data_dir": str(tmp_path / "data"), "log_dir": str(logs)}, {
        "ra": {"ca_url": ca.url, "ca_user": USER, "trust_store": str(ca_lab.root_pem), "template": "CiscoRA",
               "tls_cert": str(ca_lab.ra_cert), "tls_key": str(ca_lab.ra_key), **FAST_RA},
    })
    env = {**os.environ, "ONLINECA_RA_CA_PASSWORD": PASSWORD}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "onlineca", "--config", str(cfg), "ra", "serve", "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    base = f"https://127.0.0.1:{port}"
    try:
        await wait_ready(base, ca_lab.root_pem, proc)
        body = await csr_b64(tmp_path, "/CN=SEP74A02FC0A675/O=onlineca tests")
        status, text = await curl_enroll(base, ca_lab.root_pem, body, tmp_path / "cert.p7", USER, PASSWORD)
        assert status == 200, text
        printed = await print_certs(tmp_path / "cert.p7")
        assert "subject=CN=SEP74A02FC0A675, O=onlineca tests" in printed.replace(" = ", "=")
        assert "issuer=CN=onlineca Lab Issuing CA, O=onlineca" in printed.replace(" = ", "=")
        status, text = await curl_enroll(base, ca_lab.root_pem, body, tmp_path / "no.p7", USER, "wrong-pw")
        assert status == 401
        log = error_log(logs)
        assert "login_to_certsrv_ca: Secure connection to MS CertServ completed successfully" in log
        assert "Enrollment failed with rc=22 (EST_ERR_AUTH_FAIL)" in log
        assert PASSWORD not in log
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        await ca.close()
    assert proc.returncode == 0, err


async def test_curl_with_the_local_connector(ca_lab, tmp_path):
    async with ra_running(ca_lab, tmp_path / "ra-logs", "https://127.0.0.1:1/certsrv", **local_ra(ca_lab, tmp_path)) as r:
        body = await csr_b64(tmp_path, "/CN=SEP-LOCAL-CURL")
        status, text = await curl_enroll(r.base, ca_lab.root_pem, body, tmp_path / "cert.p7", USER, PASSWORD)
        assert status == 200, text
        assert "subject=CN=SEP-LOCAL-CURL" in (await print_certs(tmp_path / "cert.p7")).replace(" = ", "=")


async def test_ra_serve_refuses_a_bad_configuration_clearly(ca_lab, tmp_path):
    cfg = write_config(tmp_path / "ra.toml", {"data_dir": str(tmp_path)}, {"ra": {
        "connector": "local", "client_auth": "users", "tls_cert": str(ca_lab.ra_cert), "tls_key": str(ca_lab.ra_key)}})
    rc, _out, err = await run(sys.executable, "-m", "onlineca", "--config", cfg, "ra", "serve",
                              "--port", str(free_port()))
    assert rc == 1 and b"Traceback" not in err
    assert b"error: connector = 'local' needs local_key and local_cert in [ra]" in err
