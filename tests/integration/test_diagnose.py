"""``onlineca diagnose`` against our CA (onlineca.ca) on 127.0.0.1, with every failure of the source
document reproduced for real: a web certificate from an unknown root, self-signed, for another
name, not yet valid, expired; an unresolvable host (``.invalid``); a refused port; a wrong password;
a mistyped template; a CA slower than the login and the enrollment timeouts; a chain that does
not validate; a CA clock an hour off.  Each is diagnosed with its code, its evidence and a fix, and
a healthy CA raises no alarm."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import shutil
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner
from pydantic import SecretStr

from onlineca import pki
from onlineca.ca import engine as eng, users as ca_users
from onlineca.ca.web import create_app
from onlineca.cli import main_group
from onlineca.config import CAPaths, Config, DataDir, load_config
from onlineca.diagnose.checks import run_diagnose
from onlineca.infra import files as fs, tls

USER, PASSWORD = "ciscora", "Diag-n0se-Pa55"
TEMPLATES = '[[ca.templates]]\nname = "CiscoRA"\ndisplay_name = "Cisco RA"\n[[ca.templates]]\nname = "WebServer"\n'


class LoopThread:
    """An event loop in a thread of its own, for servers that sync tests (and CliRunner) talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class CALab:
    """Our CA's files (EC keys: fast), web certificates in each failing state, and running servers."""

    dir: Path
    files: CAPaths
    loop: LoopThread
    web: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    runners: list[web.AppRunner] = field(default_factory=list)
    releases: list[asyncio.Event] = field(default_factory=list)
    ras: list[Any] = field(default_factory=list)
    capfs: list[Any] = field(default_factory=list)

    def config(self, url: str, *, extra_ra: str = "", extra: str = "", trust: Path | None = None,
               log_dir: Path | None = None, capf: str = "") -> Config:
        text = (f'data_dir = "{self.dir / "data"}"\nlog_dir = "{log_dir or self.dir / "logs"}"\n{extra}\n'
                f'[ca]\nkey_type = "ec"\n'
                f'[ra]\nca_url = "{url}"\nca_user = "{USER}"\nca_password = "{PASSWORD}"\n'
                f'trust_store = "{trust or self.files.root_cert}"\ntemplate = "CiscoRA"\n'
                f"connect_timeout = 2\nlogin_timeout = 2\nenroll_timeout = 2\n{extra_ra}\n" + TEMPLATES
                + (f"[capf]\n{capf}\n" if capf else ""))
        path = self.dir / "diag.toml"
        path.write_text(text)
        return load_config(path, environ={})

    def serve(self, cert: str = "good", *, slow: str | None = None, date_offset: dt.timedelta | None = None,
              log_dir: Path | None = None, delay: tuple[str, float] | None = None, data_dir: Path | None = None) -> int:
        """Start our CA with the named web certificate; ``slow`` holds that path until the test ends;
        ``delay`` answers a path that many seconds late (the fault itself, not a synchronisation);
        ``date_offset`` moves the CA's HTTP Date (its clock, as a client sees it); ``data_dir``
        serves another CA's files."""
        cfg = self.config("https://127.0.0.1:1/certsrv", log_dir=log_dir)
        if data_dir is not None:
            cfg = cfg.model_copy(update={"data_dir": str(data_dir)})
        cert_file, key_file = self.web[cert]

        async def start() -> int:
            release = asyncio.Event()
            self.releases.append(release)

            @web.middleware
            async def lab_middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
                if slow and request.path.lower() == slow:
                    await release.wait()
                if delay and request.path.lower() == delay[0]:
                    await asyncio.sleep(delay[1])
                response = await handler(request)
                if date_offset is not None:
                    when = dt.datetime.now(dt.UTC) + date_offset
                    response.headers["Date"] = email.utils.format_datetime(when, usegmt=True)
                return response

            app = create_app(cfg, cfg.data_path, log_dir or cfg.log_path)
            app.middlewares.insert(0, lab_middleware)
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
            await runner.setup()
            self.runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context(cert_file, key_file))
            await site.start()
            return runner.addresses[0][1]

        return self.loop.run(start())

    def start_ra(self, cfg: Config, log_dir: Path | None = None) -> Any:
        """Our RA in front of the configured CA, on a free port (not waiting for readiness)."""
        from onlineca.ra.app import start_ra
        cert_file, key_file = self.web["good"]

        async def start() -> Any:
            ra = await start_ra(cfg, log_dir or cfg.log_path, port=0, tls_cert=cert_file, tls_key=key_file)
            self.ras.append(ra)
            return ra
        return self.loop.run(start())

    def start_capf(self, cfg: Config, log_dir: Path | None = None) -> Any:
        """Our CAPF (it enrolls its own TLS certificate through the RA) on [capf] port."""
        from onlineca.capf.service import start_capf

        async def start() -> Any:
            capf = await start_capf(cfg, cfg.data_path, log_dir or cfg.log_path, host="127.0.0.1",
                                    port=cfg.capf.port, maintenance=False)
            self.capfs.append(capf)
            return capf
        return self.loop.run(start())

    def stop_all(self) -> None:
        async def stop() -> None:
            for capf in self.capfs:
                await capf.close()
            self.capfs.clear()
            # What a CAPF left in the shared data dir (its certificate, its database) is this test's.
            shutil.rmtree(self.dir / "data" / "capf", ignore_errors=True)
            for db in (self.dir / "data").glob("onlineca.db*"):
                db.unlink()
            for ra in self.ras:
                await ra.close()
            self.ras.clear()
            for e in self.releases:
                e.set()
            for r in self.runners:
                await r.cleanup()
            self.runners.clear()
            self.releases.clear()
        self.loop.run(stop())


@pytest.fixture(scope="module")
def ca_lab(tmp_path_factory: pytest.TempPathFactory, lab_pki) -> Iterator[CALab]:
    d = tmp_path_factory.mktemp("diag")
    (d / "diag.toml").write_text(f'data_dir = "{d / "data"}"\n[ca]\nkey_type = "ec"\n' + TEMPLATES)
    cfg = load_config(d / "diag.toml", environ={})
    files = eng.init_ca(cfg, cfg.data_path)
    ca_users.add_user(eng.users_path(cfg, cfg.data_path), USER, PASSWORD)
    issuing_key = fs.read_private_key(files.issuing_key)
    issuing = pki.load_certificate(files.issuing_cert.read_bytes())
    lab = CALab(d, files, LoopThread())
    wd = d / "web"
    wd.mkdir()
    now = dt.datetime.now(dt.UTC)
    names = ["localhost", "127.0.0.1"]

    def write(name: str, key: pki.PrivateKey, certs: list) -> None:
        fs.write_private_key(wd / f"{name}.key", key)
        (wd / f"{name}.pem").write_bytes(pki.certs_pem(certs))
        lab.web[name] = (wd / f"{name}.pem", wd / f"{name}.key")

    def issued(name: str, **kw: Any) -> None:
        key = pki.generate_key("ec", 256)
        kw.setdefault("subject", "CN=localhost")
        cert = pki.build_certificate(public_key=key.public_key(), issuer_key=issuing_key, issuer_cert=issuing,
                                     extended_key_usage=["server_auth"], **kw)
        write(name, key, [cert, issuing])

    issued("good", sans=names)
    issued("wrong_name", subject="CN=lab-dc")
    issued("not_yet_valid", sans=names, not_before=now + dt.timedelta(days=2))
    issued("expired", sans=names, not_before=now - dt.timedelta(days=10), validity_days=1)
    other_key = pki.generate_key("ec", 256)
    other = pki.build_certificate(subject="CN=Unknown Root CA,O=elsewhere", public_key=other_key.public_key(),
                                  issuer_key=other_key, is_ca=True)
    key = pki.generate_key("ec", 256)
    write("untrusted", key, [pki.build_certificate(subject="CN=localhost", public_key=key.public_key(),
                                                   issuer_key=other_key, issuer_cert=other, sans=names)])
    key = pki.generate_key("ec", 256)
    write("self_signed", key, [pki.build_certificate(subject="CN=localhost", public_key=key.public_key(),
                                                     issuer_key=key, sans=names)])
    # A web certificate from the lab PKI: verifies against lab_pki's root, while the CA's own chain does not.
    write("lab_pki", lab_pki.server_key, [lab_pki.server, lab_pki.issuing])
    yield lab
    lab.stop_all()
    lab.loop.close()


@pytest.fixture
def lab(ca_lab: CALab) -> Iterator[CALab]:
    yield ca_lab
    ca_lab.stop_all()


def diagnose(cfg: Config, hops: set[str] | None = None, **kw: Any):
    return asyncio.run(run_diagnose(cfg, hops=hops or {"ca"}, **kw))


def only(report, code: str):
    errors = [f for f in report.findings if f.severity == "error"]
    assert [f.code for f in errors] == [code], report.to_text()
    f = errors[0]
    assert f.fix and f.message and f.hop in ("ca", "local")
    assert PASSWORD not in report.to_json()
    return f


# --- healthy ---------------------------------------------------------------------------------

def test_healthy_ca_raises_no_alarm(lab):
    port = lab.serve()
    report = diagnose(lab.config(f"https://127.0.0.1:{port}/certsrv"))
    assert report.findings == [], report.to_text()
    assert [(c.name, c.status) for c in report.checks] == [
        ("ca.login", "ok"), ("ca.clock", "ok"), ("ca.chain", "ok"), ("ca.chain_valid", "ok"), ("ca.template", "ok")]
    assert report.ok


# --- the web certificate ---------------------------------------------------------------------

def test_web_certificate_from_an_unknown_root_names_the_missing_issuer(lab):
    port = lab.serve("untrusted")
    f = only(diagnose(lab.config(f"https://127.0.0.1:{port}/certsrv")), "CA_TLS_UNTRUSTED")
    assert f.evidence["missing_issuer"] == "/CN=Unknown Root CA/O=elsewhere"
    assert "Unknown Root CA" in f.message and "Unknown Root CA" in f.fix
    assert "unable to get local issuer certificate" in f.evidence["reason"]


def test_self_signed_web_certificate(lab):
    port = lab.serve("self_signed")
    f = only(diagnose(lab.config(f"https://127.0.0.1:{port}/certsrv")), "CA_TLS_SELF_SIGNED")
    assert f.evidence["subject"] == "/CN=localhost"


def test_name_mismatch_gives_the_certificate_names_and_the_url_host(lab):
    port = lab.serve("wrong_name")
    f = only(diagnose(lab.config(f"https://localhost:{port}/certsrv")), "CA_TLS_NAME_MISMATCH")
    assert f.evidence["url_host"] == "localhost" and f.evidence["certificate_names"] == ["lab-dc"]
    assert "return code 51" in f.evidence["reason"] and "lab-dc" in f.fix


def test_not_yet_valid_gives_the_implied_clock_skew(lab):
    port = lab.serve("not_yet_valid")
    f = only(diagnose(lab.config(f"https://127.0.0.1:{port}/certsrv")), "CA_TLS_NOT_YET_VALID")
    assert 2 * 86400 - 120 <= f.evidence["implied_clock_skew_s"] <= 2 * 86400
    assert "2.0 days behind" in f.message


def test_expired_web_certificate(lab):
    port = lab.serve("expired")
    f = only(diagnose(lab.config(f"https://127.0.0.1:{port}/certsrv")), "CA_TLS_EXPIRED")
    assert 9 * 86400 - 120 <= f.evidence["expired_for_s"] <= 9 * 86400 + 120


# --- reachability --------------------------------------------------------------------------

def test_unresolvable_host(lab):
    f = only(diagnose(lab.config("https://lab-dcc.example.invalid/certsrv")), "CA_DNS")
    assert f.evidence["host"] == "lab-dcc.example.invalid"
    assert f.evidence["reason"] == "return code 6 (Could not resolve: lab-dcc.example.invalid (Domain name not found))"


def test_connection_refused(lab):
    from tests.conftest import free_port
    port = free_port()
    f = only(diagnose(lab.config(f"https://127.0.0.1:{port}/certsrv")), "CA_CONNECT")
    assert f.evidence["port"] == port and "Connection refused" in f.evidence["reason"]


# --- credentials, template, chain ------------------------------------------------------------

def test_wrong_password(lab):
    port = lab.serve()
    cfg = lab.config(f"https://127.0.0.1:{port}/certsrv")
    cfg = cfg.model_copy(update={"ra": cfg.ra.model_copy(update={"ca_password": SecretStr("not-the-password")})})
    report = diagnose(cfg)
    f = only(report, "CA_AUTH")
    assert f.evidence["user"] == USER and f.evidence["status"] == 401
    assert "not-the-password" not in report.to_json() and "not-the-password" not in report.to_text()


def test_mistyped_template_lists_the_offered_and_the_nearest(lab):
    port = lab.serve()
    cfg = lab.config(f"https://127.0.0.1:{port}/certsrv")
    cfg = cfg.model_copy(update={"ra": cfg.ra.model_copy(update={"template": "CsicoRA"})})
    f = only(diagnose(cfg), "CA_TEMPLATE")
    assert f.evidence["offered"] == ["CiscoRA", "WebServer"] and f.evidence["nearest"] == "CiscoRA"
    assert "'CiscoRA'" in f.fix


def test_chain_that_does_not_validate(lab, lab_pki):
    # The web certificate verifies (lab PKI), but the CA's own chain does not lead to that trust store.
    port = lab.serve("lab_pki")
    f = only(diagnose(lab.config(f"https://127.0.0.1:{port}/certsrv", trust=lab_pki.root_pem)), "CA_CHAIN")
    assert f.evidence["chain_error"] == "SELF_SIGNED"  # its root, which the trust store lacks
    assert f.evidence["chain_root"] == "/CN=onlineca Lab Root CA/O=onlineca" and f.evidence["chain_root"] in f.fix


# --- slow CA, wrong clock --------------------------------------------------------------------

def test_ca_slower_than_the_login_timeout(lab):
    port = lab.serve(slow="/certsrv/")
    cfg = lab.config(f"https://127.0.0.1:{port}/certsrv")
    cfg = cfg.model_copy(update={"ra": cfg.ra.model_copy(update={"login_timeout": 0.3})})
    f = only(diagnose(cfg), "CA_TIMEOUT")
    assert f.evidence["phase"] == "login" and f.evidence["timeout_s"] == 0.3
    assert f.evidence["measured_ms"] >= 300 and "login_timeout" in f.fix


def test_ca_slower_than_the_enrollment_timeout(lab):
    """After login, the CA does not answer certnew.p7b in time (the document's retrieve_cacerts 28)."""
    port = lab.serve(slow="/certsrv/certnew.p7b")
    cfg = lab.config(f"https://127.0.0.1:{port}/certsrv")
    cfg = cfg.model_copy(update={"ra": cfg.ra.model_copy(update={"enroll_timeout": 0.3})})
    report = diagnose(cfg)
    f = only(report, "CA_TIMEOUT")
    assert f.evidence["phase"] == "enroll" and f.evidence["url"].endswith("certnew.p7b?ReqID=CACert&Renewal=0&Enc=bin")
    assert "enroll_timeout" in f.fix
    assert [c.status for c in report.checks if c.name == "ca.login"] == ["ok"]


def test_ca_clock_an_hour_off(lab):
    port = lab.serve(date_offset=dt.timedelta(hours=-1))
    f = only(diagnose(lab.config(f"https://127.0.0.1:{port}/certsrv")), "CLOCK_SKEW")
    assert 3590 <= f.evidence["skew_s"] <= 3610 and "ahead of the CA" in f.message


# --- CAPF's own certificate ------------------------------------------------------------------

@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port of 127.0.0.1 bound and never listened on, so a connection to it is refused (the
    default CAPF port may be in use by anything else running on the machine)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def _capf_port_closed(cfg: Config, port: int) -> Config:
    return cfg.model_copy(update={"capf": cfg.capf.model_copy(update={"host": "127.0.0.1", "port": port})})


def test_capf_certificate_expiring_and_healthy(lab, tmp_path, closed_port):
    key = pki.generate_key("ec", 256)
    soon = tmp_path / "capf-soon.pem"
    soon.write_bytes(pki.cert_pem(pki.build_certificate(subject="CN=CAPF-eb606ac0", public_key=key.public_key(),
                                                        issuer_key=key, validity_days=10)))
    later = tmp_path / "capf-later.pem"
    later.write_bytes(pki.cert_pem(pki.build_certificate(subject="CN=CAPF-eb606ac0", public_key=key.public_key(),
                                                         issuer_key=key, validity_days=365)))
    cfg = _capf_port_closed(lab.config("https://127.0.0.1:1/certsrv"), closed_port)
    report = diagnose(cfg, hops={"capf"}, capf_cert=soon)
    # (No CAPF runs here: its port is checked too, and found closed.)
    file_findings = [f for f in report.findings if f.code != "CAPF_CONNECT"]
    assert [f.code for f in file_findings] == ["CAPF_CERT_EXPIRING"]
    assert file_findings[0].severity == "warning" and file_findings[0].evidence["days_left"] in (9, 10)
    assert [c.status for c in report.checks if c.name == "capf.certificate"] == ["ok"]  # a warning is not an error
    assert diagnose(cfg, hops={"capf"}, capf_cert=later).codes() == ["CAPF_CONNECT"]
    assert diagnose(cfg, hops={"capf"}, capf_cert=tmp_path / "none.pem").codes() == ["CAPF_CERT_UNREADABLE",
                                                                                     "CAPF_CONNECT"]


# --- the command ---------------------------------------------------------------------------

def test_cli_exit_status_and_json(lab):
    port = lab.serve()
    good = lab.config(f"https://127.0.0.1:{port}/certsrv")
    runner = CliRunner()
    res = runner.invoke(main_group, ["--config", str(lab.dir / "diag.toml"), "diagnose", "--only", "ca", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["schema"] == "onlineca.diagnose/1" and doc["ok"] and doc["findings"] == []
    assert {c["name"] for c in doc["checks"]} >= {"ca.login", "ca.chain", "ca.template"}
    assert good.ra.ca_url.endswith(f":{port}/certsrv")
    lab.config("https://lab-dcc.example.invalid/certsrv")
    res = runner.invoke(main_group, ["diagnose", "--config", str(lab.dir / "diag.toml"), "--only", "ca"])
    assert res.exit_code == 1
    assert "CA_DNS" in res.output and "fix:" in res.output and PASSWORD not in res.output


# --- the whole chain: CAPF's certificate -> our RA -> our CA ---------------------------------

def _capf_cert(tmp_path: Path, days: int = 365) -> Path:
    key = pki.generate_key("ec", 256)
    path = tmp_path / "capf.pem"
    path.write_bytes(pki.cert_pem(pki.build_certificate(subject="CN=CAPF-eb606ac0", public_key=key.public_key(),
                                                        issuer_key=key, validity_days=days)))
    return path


def system(lab: CALab, *, template: str = "CiscoRA", capf_password: str = PASSWORD,
           ra_trust: Path | None = None, log_dir: Path | None = None, capf_port: int = 1,
           extra: str = "", serve: dict[str, Any] | None = None, ra_extra: dict[str, Any] | None = None,
           ca_url: str | None = None) -> tuple[Config, Any]:
    """Our CA and our RA (passthrough: CAPF's credentials are the CA account's), and CAPF's settings
    (each system logs in its own folder: diagnose reads the RA's recent error.log lines)."""
    log_dir = log_dir or lab.dir / f"logs-{len(lab.ras)}-{template}"
    port = lab.serve(**(serve or {}))
    ca_url = ca_url or f"https://127.0.0.1:{port}/certsrv"
    ra_cfg = lab.config(ca_url, log_dir=log_dir)
    ra_cfg = ra_cfg.model_copy(update={"ra": ra_cfg.ra.model_copy(update={"template": template, "backoff_initial": 30.0,
                                                                          **(ra_extra or {})})})
    ra = lab.start_ra(ra_cfg, log_dir)
    if template == "CiscoRA":
        lab.loop.run(ra.wait_ready(10))
    capf = (f'ra_url = "{ra.url}"\nra_user = "{USER}"\nra_password = "{capf_password}"\n'
            f'ra_trust_store = "{ra_trust or lab.files.root_cert}"\nport = {capf_port}\n{extra}')
    cfg = lab.config(ca_url, capf=capf, log_dir=log_dir)
    return cfg.model_copy(update={"ra": cfg.ra.model_copy(update={"template": template, **(ra_extra or {})})}), ra


def test_healthy_system_raises_no_alarm(lab, tmp_path):
    from tests.conftest import free_port
    cfg, _ra = system(lab, capf_port=free_port())
    lab.start_capf(cfg)  # CAPF enrolls its TLS certificate through the RA and the CA
    report = diagnose(cfg, hops={"capf", "ra", "ca"})
    assert report.findings == [], report.to_text()
    assert [c.name for c in report.checks] == [
        "capf.certificate", "capf.port", "capf.ra", "capf.outcomes", "ra.readyz", "ra.metrics", "ra.error_log",
        "ra.cacerts", "ra.est_auth", "ca.login", "ca.clock", "ca.chain", "ca.chain_valid", "ca.template"]
    assert all(c.status == "ok" for c in report.checks)


def test_ra_refuses_capf_credentials(lab):
    cfg, _ra = system(lab, capf_password="wrong-capf-password")
    report = diagnose(cfg, hops={"ra"})
    assert report.codes() == ["RA_EST_AUTH"], report.to_text()
    assert "wrong-capf-password" not in report.to_json()


def test_ra_not_ready_because_of_the_template(lab, tmp_path):
    cfg, ra = system(lab, template="CsicoRA", log_dir=tmp_path)
    lab.loop.run(ra.state.wait_until(lambda s: s.reason.startswith("CA_"), 10))
    report = diagnose(cfg, hops={"ra", "ca"})
    assert report.codes() == ["RA_NOT_READY", "CA_TEMPLATE"], report.to_text()
    assert "CA_TEMPLATE" in report.findings[0].evidence["reason"]
    # The RA's own error.log says the same to logs analyze, with the nearest name in its fix.
    from onlineca.diagnose.analyze import analyze_paths
    causes = analyze_paths([tmp_path / "error.log"]).causes()
    assert [c.code for c in causes] == ["CA_TEMPLATE"], [c.as_dict() for c in causes]
    assert "'CiscoRA'" in causes[0].fix


def test_ra_certificate_not_trusted_by_capf(lab, lab_pki):
    cfg, _ra = system(lab, ra_trust=lab_pki.root_pem)
    report = diagnose(cfg, hops={"ra"})
    assert report.codes() == ["RA_TLS_UNTRUSTED"], report.to_text()


def test_ra_down(lab):
    from tests.conftest import free_port
    cfg = lab.config("https://127.0.0.1:1/certsrv", capf=f'ra_url = "https://127.0.0.1:{free_port()}/.well-known/est"\n'
                                                           f'ra_trust_store = "{lab.files.root_cert}"')
    report = diagnose(cfg, hops={"ra"})
    assert report.codes() == ["RA_CONNECT"], report.to_text()


def test_capf_certificate_found_where_capf_keeps_it(lab, closed_port):
    cfg = _capf_port_closed(lab.config("https://127.0.0.1:1/certsrv"), closed_port)
    path = DataDir(Path(cfg.data_path)).capf.capf_cert
    path.parent.mkdir(parents=True, exist_ok=True)
    key = pki.generate_key("ec", 256)
    path.write_bytes(pki.cert_pem(pki.build_certificate(subject="CN=CAPF-eb606ac0", public_key=key.public_key(),
                                                        issuer_key=key, validity_days=5)))
    try:
        report = diagnose(cfg, hops={"capf"})
        assert report.codes() == ["CAPF_CERT_EXPIRING", "CAPF_CONNECT"]
        assert report.findings[0].evidence["path"] == str(path)
    finally:
        path.unlink()
