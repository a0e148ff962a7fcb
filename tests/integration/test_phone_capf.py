"""The phone simulator against the real CAPF server (in-process ``start_capf``), our RA (EST) and our
CA (/certsrv), all on 127.0.0.1 over TLS: an enrollment with each authentication mode, renewal by
LSC, a wrong auth string, a broken session finished by the next one, troubleshoot and delete,
and the ``onlineca phone`` commands as processes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from onlineca import pki
from onlineca.infra import files as fs
from onlineca.lab import Servers, make_lab, prepare_folder, start_servers
from onlineca.phone.client import Faults, PhoneAuth, Target, check_in, phone_ssl_context, run_session
from onlineca.phone.device import Phone
from onlineca.phone.fleet import make_fleet, run_fleet, run_open_loop
from onlineca.store import Database, devices as inventory

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Stack:
    def __init__(self, root: Path, config, mic, servers: Servers) -> None:  # type: ignore[no-untyped-def]
        self.root, self.config, self.mic, self.servers = root, config, mic, servers
        self.db = Database(config.database_url)

    def target(self, **kw) -> Target:  # type: ignore[no-untyped-def]
        return Target(self.servers.capf.host, self.servers.capf.port,
                      phone_ssl_context(self.root / "ca" / "root.pem"), read_timeout=30, **kw)

    def add(self, name: str, **settings) -> None:  # type: ignore[no-untyped-def]
        with self.db.session() as s:
            inventory.add_device(s, name, actor="test", **settings)

    def set(self, name: str, **settings) -> None:  # type: ignore[no-untyped-def]
        with self.db.session() as s:
            inventory.set_device(s, name, actor="test", **settings)

    def device(self, name: str) -> dict:
        with self.db.session() as s:
            return inventory.device_dict(inventory.get_device(s, name))

    async def sessions_done(self) -> None:
        """Wait until CAPF has finished its open sessions (their last writes and the lease given
        back): a phone that hangs up is gone before CAPF records why."""
        if self.servers.capf.capf.tasks:
            await asyncio.wait(set(self.servers.capf.capf.tasks), timeout=30)

    def ca_requests(self) -> int:
        return len(self.servers.ca.engine.list())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("phonecapf") / "lab"
    prepare_folder(root)
    config, mic = make_lab(root)
    servers = Servers()
    try:
        await start_servers(config, root, servers, default_ports=False)
        st = Stack(root, config, mic, servers)
        yield st
        st.db.dispose()
    finally:
        await servers.close()


def _status(stack: Stack, name: str) -> str:
    return stack.device(name)["status"]


async def test_enroll_by_auth_string_ec(stack: Stack, tmp_path):
    name = "SEP0000000A0001"
    stack.add(name, operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_STR", auth_string="123456",
              key_order="KEYORDER_EC_ONLY", ec_key_size=256)
    phone = Phone.create(tmp_path / name, name)
    result = await check_in(phone, stack.target(), PhoneAuth("string", "123456"), retries=0)
    assert result.outcome == "installed", result
    assert result.reason == "OK" and result.key == "EC 256"
    assert pki.key_spec(phone.lsc.public_key()) == ("ec", 256)
    assert pki.common_name(phone.lsc.subject) == name
    assert {"digital_signature", "key_encipherment"} <= set(pki.key_usage_names(phone.lsc))
    # The LSC chains to the lab CA; the phone's folder holds it, its key 0600.
    store = fs.load_trust_store(str(stack.root / "ca" / "root.pem"))
    issuing = pki.load_certificate((stack.root / "ca" / "issuing.pem").read_bytes())
    pki.validate_chain(phone.lsc, [issuing], store)
    assert oct((tmp_path / name / "lsc.key").stat().st_mode & 0o777) == "0o600"
    info = stack.device(name)
    assert info["status"] == "CERT_STATUS_UPGRADE_SUCCESS" and info["operation"] == "OPERATION_NONE"
    assert info["lsc"]["serial"] == result.lsc_serial


async def test_enroll_by_null_string_rsa(stack: Stack):
    name = "SEP0000000A0002"
    stack.add(name, operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_NULL_STR", key_order="KEYORDER_RSA_ONLY",
              rsa_key_size=2048)
    phone = Phone(name)
    result = await run_session(phone, stack.target(), PhoneAuth("null"))
    assert result.outcome == "installed" and result.key == "RSA 2048", result
    assert pki.key_spec(phone.lsc.public_key()) == ("rsa", 2048)
    assert _status(stack, name) == "CERT_STATUS_UPGRADE_SUCCESS"


async def test_capf_serves_its_chain_so_the_root_alone_is_trusted(stack: Stack):
    # Every phone here trusts only ca/root.pem (Stack.target); CAPF must send the issuing CA.
    anchors = fs.load_cert_file(stack.root / "ca" / "root.pem")
    assert len(anchors) == 1 and pki.is_self_signed(anchors[0])
    served = fs.load_cert_file(stack.root / "capf" / "capf.pem")
    assert [c.subject for c in served[1:]] == [served[0].issuer]
    phone = Phone("SEP0000000A00F0")
    result = await run_session(phone, stack.target(), PhoneAuth("null"))
    assert result.outcome == "ended" and result.reason == "DEVICE_UNKNOWN", result  # TLS passed
    # A root CAPF's chain does not lead to: no session at all.
    other = Target(stack.servers.capf.host, stack.servers.capf.port, phone_ssl_context(stack.mic.trust_store))
    result = await run_session(phone, other, PhoneAuth("null"))
    assert result.outcome == "comm_failure" and "certificate verify failed" in (result.error or ""), result


async def test_enroll_by_mic_then_renew_by_lsc(stack: Stack):
    name = "SEP0000000A0003"
    stack.add(name, operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_MIC", key_order="KEYORDER_EC_ONLY",
              ec_key_size=384)
    phone = Phone(name)
    stack.mic.issue(phone)
    first = await run_session(phone, stack.target(), PhoneAuth("mic"))
    assert first.outcome == "installed" and first.key == "EC 384", first
    old_serial = first.lsc_serial
    # Renewal: Install/Upgrade authenticated by the LSC; the phone answers with its LSC.
    stack.set(name, operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_LSC")
    requests_before = stack.ca_requests()
    second = await run_session(phone, stack.target(), PhoneAuth("auto"))
    assert second.outcome == "installed", second
    assert second.lsc_serial != old_serial and phone.lsc is not None
    assert f"{phone.lsc.serial_number:x}" == second.lsc_serial
    assert stack.ca_requests() == requests_before + 1
    assert stack.device(name)["lsc"]["serial"] == second.lsc_serial


async def test_mic_from_an_unknown_manufacturer_is_refused(stack: Stack, tmp_path):
    from onlineca.phone.mic import MICAuthority
    name = "SEP0000000A0004"
    stack.add(name, operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_MIC", key_order="KEYORDER_EC_ONLY")
    phone = Phone(name)
    MICAuthority.init(tmp_path / "rogue", name="CN=Rogue Factory").issue(phone)
    result = await run_session(phone, stack.target(), PhoneAuth("mic"))
    assert result.outcome == "ended" and result.reason == "INVALID_CERTIFICATE", result
    assert not phone.has_lsc and not result.ok
    assert _status(stack, name) == "CERT_STATUS_UPGRADE_FAILED_INVALID_MIC"


async def test_wrong_auth_string_gets_no_lsc(stack: Stack):
    name = "SEP0000000A0005"
    stack.add(name, operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_STR", auth_string="4321",
              key_order="KEYORDER_EC_ONLY")
    phone = Phone(name)
    result = await run_session(phone, stack.target(), PhoneAuth("string", "9999"))
    assert result.outcome == "ended" and result.reason == "OPERATION_REFUSED" and not result.ok, result
    assert not phone.has_lsc and not phone.pending_key  # refused before any key was asked for
    assert _status(stack, name) == "CERT_STATUS_UPGRADE_FAILED_INVALID_AUTH_STR"
    # The null string is no way around it: CAPF asks again for the auth string, the phone has none.
    result = await run_session(phone, stack.target(), PhoneAuth("null"))
    assert result.reason == "OPERATION_REFUSED" and not phone.has_lsc


async def test_broken_session_is_finished_by_the_next_without_a_second_request(stack: Stack):
    name = "SEP0000000A0006"
    stack.add(name, operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_NULL_STR", key_order="KEYORDER_EC_ONLY")
    phone = Phone(name)
    before = stack.ca_requests()
    dropped = await run_session(phone, stack.target(), PhoneAuth("null"), faults=Faults(store="drop"))
    assert dropped.outcome == "comm_failure" and not phone.has_lsc and phone.pending_key, dropped
    assert stack.ca_requests() == before + 1
    await stack.sessions_done()  # the lease is per session: the dropped one gives it back first
    delivered = await run_session(phone, stack.target(), PhoneAuth("null"))
    assert delivered.outcome == "installed" and delivered.key is None, delivered  # no new key this time
    assert stack.ca_requests() == before + 1  # the CA signed once
    assert _status(stack, name) == "CERT_STATUS_UPGRADE_SUCCESS"


async def test_troubleshoot_then_delete(stack: Stack):
    name = "SEP0000000A0007"
    stack.add(name, operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_NULL_STR", key_order="KEYORDER_EC_ONLY")
    phone = Phone(name)
    stack.mic.issue(phone)
    assert (await run_session(phone, stack.target(), PhoneAuth("null"))).outcome == "installed"
    stack.set(name, operation="OPERATION_TROUBLESHOOT")
    fetched = await run_session(phone, stack.target(), PhoneAuth("null"))
    assert fetched.outcome == "fetched" and fetched.fetched == 2 and fetched.reason == "OK", fetched
    assert _status(stack, name) == "CERT_STATUS_TROUBLESHOOT_SUCCESS"
    stack.set(name, operation="OPERATION_DELETE")
    deleted = await run_session(phone, stack.target(), PhoneAuth("null"))
    assert deleted.outcome == "deleted" and not phone.has_lsc and phone.has_mic, deleted
    assert _status(stack, name) == "CERT_STATUS_DELETE_SUCCESS"
    # Nothing pending now: the session ends with nothing done on the phone.
    idle = await run_session(phone, stack.target(), PhoneAuth("null"))
    assert idle.outcome == "nothing_pending" and idle.ok and not phone.has_lsc


async def test_unknown_device_and_fleet(stack: Stack):
    unknown = await run_session(Phone("SEP0000000AFFFF"), stack.target(), PhoneAuth("null"))
    assert unknown.outcome == "ended" and unknown.reason == "DEVICE_UNKNOWN"
    members = make_fleet(6, first=0xB0000)
    for m in members:
        stack.add(m.phone.name, operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_NULL_STR",
                  key_order="KEYORDER_EC_ONLY")
    report = await run_fleet(members, stack.target(), concurrency=3, retries=0)
    assert report.ok == 6 and report.outcomes == {"installed": 6}, [r.as_dict() for r in report.failed]
    summary = report.summary()
    assert summary["latency_p50"] <= summary["latency_p99"] <= summary["latency_max"]


async def test_open_loop_fleet_reports_latency_from_arrival_and_its_own_lag(stack: Stack):
    members = make_fleet(5, first=0xB1000)
    for m in members:
        stack.add(m.phone.name, operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_NULL_STR",
                  key_order="KEYORDER_EC_ONLY")
    report = await run_open_loop(members, stack.target(), rate=50.0, arrival="fixed", retries=0)
    assert report.ok == 5 and report.outcomes == {"installed": 5}, [r.as_dict() for r in report.failed]
    summary = report.summary()
    loop = summary["open_loop"]
    assert {"rate": 50.0, "arrival": "fixed", "seed": 0}.items() <= loop.items()
    assert loop["achieved_rate"] > 0 and 0 <= loop["lag_p50_ms"] <= loop["lag_p99_ms"] <= loop["lag_max_ms"]
    assert summary["latency_p50"] <= summary["latency_p90"] <= summary["latency_p99"] <= summary["latency_max"]
    # a latency counts from the scheduled arrival: never shorter than the session itself
    assert all(lat >= r.seconds for lat, r in zip(report.latencies, report.results, strict=True))


async def test_phone_cli_enroll_and_check_in(stack: Stack, tmp_path):
    name = "SEP0000000A0008"
    stack.add(name, operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_STR", auth_string="24680",
              key_order="KEYORDER_RSA_ONLY")
    base = [sys.executable, "-m", "onlineca", "--data-dir", str(tmp_path), "phone"]
    where = ["--capf", f"{stack.servers.capf.host}:{stack.servers.capf.port}",
             "--cafile", str(stack.root / "ca" / "root.pem")]

    async def run(*args: str, env: dict | None = None) -> tuple[int, str, str]:
        import os
        proc = await asyncio.create_subprocess_exec(*base, *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode(), err.decode()

    rc, out, err = await run("enroll", "--name", name, *where, "--auth", "string", "--retries", "0", "--json",
                             env={"ONLINECA_PHONE_AUTH_STRING": "24680"})
    assert rc == 0, err
    result = json.loads(out)
    assert result["outcome"] == "installed" and result["key"] == "RSA 2048"
    assert "24680" not in out + err  # the auth string is never printed
    rc, out, err = await run("show", "--name", name)
    assert rc == 0 and "LSC:" in out and "RSA 2048" in out
    # A check-in with nothing pending succeeds and changes nothing; a wrong string fails with exit 1.
    rc, out, _ = await run("check-in", "--name", name, *where, "--retries", "0")
    assert rc == 0 and "nothing_pending" in out
    stack.set(name, operation="OPERATION_UPGRADE")
    rc, out, _ = await run("check-in", "--name", name, *where, "--auth", "string", "--auth-string", "11111",
                           "--retries", "0")
    assert rc == 1 and "OPERATION_REFUSED" in out


async def test_capf_serve_process_serves_until_sigterm_and_names_a_taken_port(stack: Stack):
    import os
    import signal
    cfg = stack.config.capf
    env = {**os.environ, "ONLINECA_DATABASE_URL": stack.config.database_url,
           "ONLINECA_CAPF_RA_URL": stack.servers.ra.url, "ONLINECA_CAPF_RA_USER": cfg.ra_user,
           "ONLINECA_CAPF_RA_PASSWORD": cfg.ra_password.get_secret_value(),
           "ONLINECA_CAPF_RA_TRUST_STORE": cfg.ra_trust_store}
    base = [sys.executable, "-m", "onlineca", "--data-dir", str(stack.root), "capf", "serve", "--no-scheduler"]
    taken = stack.servers.capf.port
    proc = await asyncio.create_subprocess_exec(*base, "--port", str(taken), env=env,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and f"error: cannot listen on 127.0.0.1:{taken}" in err.decode(), err
    proc = await asyncio.create_subprocess_exec(*base, "--port", "0", env=env, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert line.startswith("CAPF serving 127.0.0.1:"), line
        port = int(line.split()[2].rsplit(":", 1)[1])
        target = Target("127.0.0.1", port, phone_ssl_context(stack.root / "ca" / "root.pem"), read_timeout=30)
        result = await run_session(Phone("SEP0000000A00F1"), target, PhoneAuth("null"))
        assert result.reason == "DEVICE_UNKNOWN", result  # a real session with the served process
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_ra_down_gets_retry_later_which_the_phone_honours(stack: Stack):
    """Last in this module: it stops the RA, then starts it again on the same port."""
    from onlineca.ra.app import start_ra
    name = "SEP0000000A0009"
    stack.add(name, operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_NULL_STR", key_order="KEYORDER_EC_ONLY")
    phone = Phone(name)
    ra = stack.servers.ra
    await ra.close()
    result = await run_session(phone, stack.target(), PhoneAuth("null"))
    assert result.outcome == "retry_later" and result.retry_delay == stack.config.capf.retry_delay, result
    assert not phone.has_lsc and not result.ok
    info = stack.device(name)
    assert info["operation"] == "OPERATION_UPGRADE"  # still pending
    assert info["status"] == "CERT_STATUS_UPGRADE_FAILED_CA_COMM_FAILURE"
    # check_in comes back after the delay CAPF named (capped here), as often as it is told to.
    again = await check_in(phone, stack.target(), PhoneAuth("null"), retries=1, max_retry_delay=0.05)
    assert again.outcome == "retry_later" and again.attempts == 2
    # The RA is back: the next check-in gets the LSC; nothing was lost.
    ra_config = stack.config.model_copy(update={"ra": stack.config.ra.model_copy(
        update={"ca_url": stack.servers.ca.url})})
    stack.servers.ra = await start_ra(ra_config, stack.config.log_path, host="127.0.0.1", port=ra.port)
    stack.servers.closers.append(stack.servers.ra.close)
    await stack.servers.ra.wait_ready(timeout=30)
    done = await check_in(phone, stack.target(), PhoneAuth("null"), retries=0)
    assert done.outcome == "installed" and phone.has_lsc, done
    assert _status(stack, name) == "CERT_STATUS_UPGRADE_SUCCESS"
