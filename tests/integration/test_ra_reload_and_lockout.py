"""Issue 12 items 8, 10 and 11: a hardened AD CS account, reload, readiness.

Lockout: after ``max_login_failures`` refused logins the RA stops logging in, stays not ready
with CA_AUTH and a fix naming the setting, and logs in again only on reload; ``diagnose`` adds
no login attempt then; an empty password is a configuration error naming
$ONLINECA_RA_CA_PASSWORD.  Reload: SIGHUP to ``onlineca ra serve`` picks up a fixed trust store
without a restart, a broken configuration is refused and the old one keeps serving; the CA
reloads its templates.  Readiness: /readyz turns 503 soon after the CA dies, by itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.integration.ra_lab import (  # noqa: F401  (fixtures)
    PASSWORD,
    USER,
    ca_lab,
    error_log,
    est_csr,
    get,
    iis_requests,
    raw_enroll,
    run_ca,
    run_ra,
)

from onlineca.errors import ConfigError


def _logins(ca_logs: Path, status: str) -> int:
    return sum(1 for ln in iis_requests(ca_logs) if " GET /certsrv/ " in ln and f" {status} " in ln)


async def test_lockout_stops_at_n_refused_logins_until_a_reload(ca_lab, tmp_path):
    ca_logs, logs = tmp_path / "ca-logs", tmp_path / "ra-logs"
    ca = await run_ca(ca_lab, ca_logs)
    ra = await run_ra(ca_lab, logs, ca.url, ra={"ca_password": "wrong-Passw0rd", "max_login_failures": 3,
                                                 "ready_check_interval": 0.05})
    try:
        await ra.state.wait_until(lambda s: s.locked)
        assert _logins(ca_logs, "401") == 3 and ra.state.attempts == 3
        status, _h, body = await get(ra.base + "/readyz", ca_lab.root_pem)
        assert status == 503 and json.loads(body)["reason"].startswith("CA_AUTH: ")
        text = error_log(logs)
        assert "max_login_failures = 3" in text and "$ONLINECA_RA_CA_PASSWORD" in text
        assert "wrong-Passw0rd" not in text
        # Clients, the background check and diagnose add no login while it is locked.
        status, _h, _b = await raw_enroll(ra, est_csr()[1], cafile=ca_lab.root_pem)
        assert status == 503
        from onlineca.diagnose.checks import run_diagnose
        cfg = ca_lab.config(ra={"ca_url": ca.url, "ca_password": "wrong-Passw0rd"}).model_copy(deep=True)
        cfg = cfg.model_copy(update={"capf": cfg.capf.model_copy(update={
            "ra_url": ra.url, "ra_trust_store": str(ca_lab.root_pem), "ra_user": ""})})
        report = await run_diagnose(cfg, hops={"ra", "ca"})
        assert [f.code for f in report.findings] == ["RA_NOT_READY", "CA_AUTH"]
        assert any(c.name == "ca.login" and c.status == "skipped" for c in report.checks)
        assert _logins(ca_logs, "401") == 3
        # The fixed password arrives with a reload: the RA logs in again and is ready.
        await ra.reload(ca_lab.config(ra={"ca_url": ca.url, "ca_password": PASSWORD, "max_login_failures": 3},
                                      log_dir=logs))
        await ra.wait_ready()
        assert "configuration reloaded (SIGHUP): [ra] ca_password" in error_log(logs)
        assert PASSWORD not in error_log(logs)
    finally:
        await ra.close()
        await ca.close()


async def test_an_empty_ca_password_is_a_configuration_error(ca_lab, tmp_path):
    with pytest.raises(ConfigError) as exc:
        await run_ra(ca_lab, tmp_path, "https://127.0.0.1:1/certsrv", ra={"ca_password": ""})
    assert "ca_password is empty" in exc.value.message and "$ONLINECA_RA_CA_PASSWORD" in exc.value.hint


async def test_readyz_turns_503_soon_after_the_ca_dies(ca_lab, tmp_path):
    ca = await run_ca(ca_lab, tmp_path / "ca-logs")
    ra = await run_ra(ca_lab, tmp_path / "ra-logs", ca.url, ra={"ready_check_interval": 0.1})
    try:
        await ra.wait_ready()
        await ca.close()  # no client request reaches the RA meanwhile
        await ra.state.wait_until(lambda s: not s.ready)
        status, _h, body = await get(ra.base + "/readyz", ca_lab.root_pem)
        assert status == 503 and json.loads(body)["reason"].startswith("CA_CONNECT")
    finally:
        await ra.close()


async def test_a_ca_reload_offers_a_new_template(ca_lab, tmp_path):
    from onlineca.certsrv.client import CertsrvClient
    ca = await run_ca(ca_lab, tmp_path / "ca-logs")
    try:
        async with CertsrvClient(ca.url, username=USER, password=PASSWORD, trust=ca_lab.root_pem) as c:
            assert "Later" not in [t.name for t in await c.templates()]
            templates = [*ca_lab.ca_templates, {"name": "Later", "display_name": "Added by reload"}]
            with pytest.raises(ConfigError):  # a broken new configuration changes nothing
                await ca.reload(ca_lab.config(templates=templates).model_copy(update={
                    "ca": ca_lab.config(templates=templates).ca.model_copy(update={"tls_cert": "/nonexistent",
                                                                                   "tls_key": "/nonexistent"})}))
            assert "Later" not in [t.name for t in await c.templates()]
            await ca.reload(ca_lab.config(templates=templates))
            assert "Later" in [t.name for t in await c.templates()]
    finally:
        await ca.close()


def _write_config(path: Path, lab, ca_url: str, trust: Path, logs: Path) -> None:
    path.write_text(f'''
data_dir = "{lab.data_dir}"
log_dir = "{logs}"
[ra]
host = "127.0.0.1"

ca_url = "{ca_url}"
ca_user = "{USER}"
ca_password = "{PASSWORD}"
trust_store = "{trust}"
tls_cert = "{lab.ra_cert}"
tls_key = "{lab.ra_key}"
backoff_initial = 0.05
backoff_max = 0.2
connect_timeout = 2.0
login_timeout = 2.0
enroll_timeout = 2.0
''')


async def test_sighup_picks_up_a_fixed_trust_store_without_a_restart(ca_lab, lab_pki, tmp_path):
    ca = await run_ca(ca_lab, tmp_path / "ca-logs")
    logs = tmp_path / "ra-logs"
    conf = tmp_path / "ra.toml"
    _write_config(conf, ca_lab, ca.url, lab_pki.root_pem, logs)  # the wrong root: CA_TLS_UNTRUSTED
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "onlineca", "--config", str(conf), "ra", "serve", "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = await asyncio.to_thread(proc.stderr.readline)
        assert "RA serving" in line, line
        base = line.split("readiness at ")[1].split("/readyz")[0]
        assert "configuration:" in await asyncio.to_thread(proc.stderr.readline)  # which file is in force

        async def readyz() -> tuple[int, dict]:
            status, _h, body = await get(base + "/readyz", ca_lab.root_pem)
            return status, json.loads(body)

        await _until(lambda: "CA_TLS_UNTRUSTED" in error_log(logs))
        assert (await readyz())[0] == 503
        _write_config(conf, ca_lab, ca.url, ca_lab.root_pem, logs)  # the administrator fixes it
        proc.send_signal(signal.SIGHUP)
        assert "reloaded: [ra] trust_store" in await asyncio.to_thread(proc.stderr.readline)
        await _until_async(lambda: readyz(), lambda got: got[0] == 200)
        assert "configuration reloaded (SIGHUP): [ra] trust_store" in error_log(logs)
        # A broken configuration is refused with its reason; the running one keeps serving.
        conf.write_text(conf.read_text().replace("[ra]", "[ra]\nport = 'not a port'"))
        proc.send_signal(signal.SIGHUP)
        refused = await asyncio.to_thread(proc.stderr.readline)
        assert "reload refused, still serving the previous configuration" in refused, refused
        assert (await readyz())[0] == 200 and proc.poll() is None
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
        await ca.close()


async def _until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def _until_async(call, predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate(await call()):
            await asyncio.sleep(0.05)
