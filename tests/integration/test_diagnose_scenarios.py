"""Fault scenarios of issue 13, run for real on 127.0.0.1: our CA, RA and CAPF, simulated phones,
and faults made the way they happen (a CA that stalls on certfnsh.asp or answers it late, CAPF
stopped, certificates from another CA or valid only from the future, an RA started with another
trust store, a proxy that breaks the RA's connection to the CA...).  Nothing under test is mocked;
no assertion depends on how long anything took."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner
from tests.conftest import free_port
from tests.integration.test_diagnose import PASSWORD, USER, CALab, ca_lab, diagnose, lab, system  # noqa: F401

from onlineca import pki
from onlineca.cli import main_group
from onlineca.config import Config
from onlineca.diagnose.analyze import analyze_paths
from onlineca.infra import files as fs, tls
from onlineca.phone.client import PhoneAuth, SessionResult, Target, phone_ssl_context, run_session
from onlineca.phone.device import Phone
from onlineca.store import Database, devices as inventory


def codes(report: Any) -> list[str]:
    return [f.code for f in report.findings]


def by_code(report: Any, code: str) -> Any:
    found = [f for f in report.findings if f.code == code]
    assert found, report.to_text()
    return found[0]


def register(cfg: Config, *names: str) -> None:
    """Phones in CAPF's inventory with Install/Upgrade pending, authenticated by null string."""
    db = Database(cfg.database_url)
    db.migrate()
    try:
        with db.session() as s:
            for name in names:
                inventory.add_device(s, name, actor="test", operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_NULL_STR",
                                     key_order="KEYORDER_EC_ONLY", ec_key_size=256)
    finally:
        db.dispose()


def phones(lab: CALab, cfg: Config, tmp_path: Path, *names: str) -> list[SessionResult]:
    """One session of each phone with the running CAPF (concurrently)."""
    target = Target("127.0.0.1", cfg.capf.port, phone_ssl_context(lab.files.root_cert), read_timeout=30, keepalive=5)

    async def all_sessions() -> list[SessionResult]:
        return list(await asyncio.gather(*(run_session(Phone.create(tmp_path / n, n), target, PhoneAuth("null"))
                                           for n in names)))
    return lab.loop.run(all_sessions(), timeout=120)


def chain(lab: CALab, tmp_path: Path, *, capf_extra: str = "", **kw: Any) -> Config:
    """CA, RA and CAPF running, CAPF with its own database and a TLS certificate of our CA (so it
    starts whatever fault the CA has); returns the configuration of all three."""
    db = f'[database]\nurl = "sqlite:///{tmp_path / "capf.db"}"'
    kw["serve"] = {"log_dir": tmp_path / "logs", **kw.get("serve", {})}  # the CA's IIS log beside the others
    cfg, _ra = system(lab, capf_port=free_port(), extra=db, log_dir=tmp_path / "logs", **kw)
    cert_file, key_file = lab.web["good"]
    cfg = cfg.model_copy(update={"capf": _capf(cfg, f'tls_cert = "{cert_file}"\ntls_key = "{key_file}"\n'
                                                    + capf_extra)})
    lab.start_capf(cfg)
    return cfg


def _capf(cfg: Config, extra: str) -> Any:
    """``[capf]`` settings given as ``key = value`` lines (numbers or quoted strings)."""
    values: dict[str, Any] = {}
    for line in extra.splitlines():
        key, _, value = line.partition(" = ")
        values[key.strip()] = float(value) if re.fullmatch(r"[\d.]+", value.strip()) else value.strip().strip('"')
    return cfg.capf.model_copy(update=values)


# --- item 1: faults that only hit enrollments ---------------------------------------------------

def test_a_ca_that_stalls_on_certfnsh_is_found_from_what_the_ra_and_capf_saw(lab, tmp_path):
    cfg = chain(lab, tmp_path, serve={"slow": "/certsrv/certfnsh.asp"}, ra_extra={"enroll_timeout": 1.0},
                capf_extra="enroll_timeout = 20")
    register(cfg, "SEP00AA11BB2201", "SEP00AA11BB2202")
    results = phones(lab, cfg, tmp_path, "SEP00AA11BB2201", "SEP00AA11BB2202")
    assert {r.outcome for r in results} == {"retry_later"}
    report = diagnose(cfg, hops={"capf", "ra", "ca"})
    # diagnose's own CA checks pass (login, chain, template): certfnsh.asp is never asked for...
    assert all(c.status == "ok" for c in report.checks if c.hop == "ca"), report.to_text()
    # ... but the RA's metrics and error.log, and CAPF's outcomes, tell.
    timeout = by_code(report, "CA_TIMEOUT")
    assert timeout.severity == "error" and timeout.evidence["count"] == 2
    assert set(timeout.evidence["seen_by"]) >= {"ra /metrics", "ra error.log"}
    capf = by_code(report, "CAPF_CA_COMM_FAILURE")
    assert capf.evidence["devices"] == ["SEP00AA11BB2201", "SEP00AA11BB2202"]
    assert not report.ok


def test_an_ra_slower_than_capfs_timeout_is_found(lab, tmp_path):
    # The CA answers certfnsh.asp 1.5 s late: the RA waits (its timeout is 10 s), CAPF does not (0.5 s).
    cfg = chain(lab, tmp_path, serve={"delay": ("/certsrv/certfnsh.asp", 1.5)}, ra_extra={"enroll_timeout": 10.0},
                capf_extra="enroll_timeout = 0.5")
    register(cfg, "SEP00AA11BB2203")
    assert phones(lab, cfg, tmp_path, "SEP00AA11BB2203")[0].outcome == "retry_later"
    report = diagnose(cfg, hops={"capf", "ra", "ca"})
    slow = by_code(report, "RA_TIMEOUT")
    assert slow.severity == "error" and "enroll_timeout" in slow.fix and "0.5" in slow.message
    assert "CA_TIMEOUT" not in [f.code for f in report.findings if f.severity == "error"]


# --- item 2: CAPF's own port ------------------------------------------------------------------------

def test_capf_stopped_is_found(lab, tmp_path):
    cfg = chain(lab, tmp_path)
    up = diagnose(cfg, hops={"capf"})
    assert [c.status for c in up.checks if c.name == "capf.port"] == ["ok"] and up.findings == [], up.to_text()
    lab.loop.run(lab.capfs.pop().close())
    down = diagnose(cfg, hops={"capf"})
    f = by_code(down, "CAPF_CONNECT")
    assert f.evidence["address"] == f"127.0.0.1:{cfg.capf.port}" and "Connection refused" in f.evidence["reason"]
    assert not down.ok


def _tls_server(lab: CALab, cert: Path, key: Path) -> int:
    """A TLS port that presents ``cert`` (CAPF's port as a phone sees it), answering nothing."""
    async def start() -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls.server_context(cert, key))
        lab.releases.append(asyncio.Event())
        lab.ras.append(_Closer(server))
        return int(server.sockets[0].getsockname()[1])
    return int(lab.loop.run(start()))


class _Closer:
    def __init__(self, server: asyncio.base_events.Server) -> None:
        self.server = server

    async def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("kind,code", [("other_ca", "CAPF_CERT_UNTRUSTED"), ("future", "CAPF_CERT_NOT_YET_VALID")])
def test_capf_serving_a_certificate_phones_cannot_use(lab, lab_pki, tmp_path, kind, code):
    if kind == "other_ca":  # from another CA than the one the RA serves
        key, cert = lab_pki.issue("CN=capf.example.org", sans=["127.0.0.1"], extended_key_usage=["server_auth"])
        chain_certs = [cert, lab_pki.issuing]
    else:  # from our CA, but valid only from tomorrow (issued by a CA whose clock runs ahead)
        issuing_key = fs.read_private_key(lab.files.issuing_key)
        issuing = pki.load_certificate(lab.files.issuing_cert.read_bytes())
        key = pki.generate_key("ec", 256)
        cert = pki.build_certificate(subject="CN=capf.example.org", public_key=key.public_key(), issuer_key=issuing_key,
                                     issuer_cert=issuing, sans=["127.0.0.1"],
                                     not_before=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        chain_certs = [cert, issuing]
    (tmp_path / "capf.pem").write_bytes(pki.certs_pem(chain_certs))
    fs.write_private_key(tmp_path / "capf.key", key)
    port = _tls_server(lab, tmp_path / "capf.pem", tmp_path / "capf.key")
    cfg, _ra = system(lab, capf_port=port, log_dir=tmp_path / "logs")
    report = diagnose(cfg, hops={"capf"})
    f = by_code(report, code)
    assert f.hop == "capf" and f.evidence["address"] == f"127.0.0.1:{port}" and f.fix


def test_capf_started_with_another_ra_is_found(lab, tmp_path):
    cfg = chain(lab, tmp_path)
    elsewhere = cfg.model_copy(update={"capf": cfg.capf.model_copy(update={"ra_url": "https://ra2.example.org:8084"})})
    f = by_code(diagnose(elsewhere, hops={"capf"}), "CAPF_RA_MISMATCH")
    assert f.evidence["capf_ra"].startswith("127.0.0.1:") and "ra2.example.org" in f.evidence["ra_url"]


# --- item 3: an RA with another configuration, trust store or clock -------------------------------

def test_an_ra_running_with_another_trust_store_is_told_apart(lab, lab_pki, tmp_path):
    # The RA was started with a trust store that lacks our CA's root; diagnose's configuration has it.
    logs = tmp_path / "logs"
    port = lab.serve()
    ra_cfg = lab.config(f"https://127.0.0.1:{port}/certsrv", log_dir=logs, trust=lab_pki.root_pem)
    ra_cfg = ra_cfg.model_copy(update={"ra": ra_cfg.ra.model_copy(update={"backoff_initial": 30.0})})
    ra = lab.start_ra(ra_cfg, logs)
    lab.loop.run(ra.state.wait_until(lambda s: s.reason.startswith("CA_"), 10))
    cfg = lab.config(f"https://127.0.0.1:{port}/certsrv", log_dir=logs,
                     capf=f'ra_url = "{ra.url}"\nra_user = "{USER}"\nra_password = "{PASSWORD}"\n'
                          f'ra_trust_store = "{lab.files.root_cert}"\nport = 1')
    report = diagnose(cfg, hops={"ra", "ca"})
    assert all(c.status == "ok" for c in report.checks if c.hop == "ca"), report.to_text()
    not_ready = by_code(report, "RA_NOT_READY")
    assert "CA_TLS_UNTRUSTED" in not_ready.evidence["reason"] and "RA_CONFIG_DRIFT" in not_ready.fix
    drift = by_code(report, "RA_CONFIG_DRIFT")
    assert drift.evidence["ra_trust_store_fingerprints"] == [pki.fingerprint(lab_pki.root)]
    assert drift.evidence["trust_store_fingerprints"] == [pki.fingerprint(pki.load_certificate(
        lab.files.root_cert.read_bytes()))]
    assert "trust_store differ" in drift.message and "restart" in drift.fix.lower()


# --- item 4: fix texts that fit the case -------------------------------------------------------------

def test_a_web_certificate_with_a_future_start_while_the_clocks_agree(lab):
    port = lab.serve("not_yet_valid")
    report = diagnose(lab.config(f"https://127.0.0.1:{port}/certsrv"))
    f = by_code(report, "CA_TLS_NOT_YET_VALID")
    assert abs(f.evidence["clock_skew_s"]) < 60 and "future" in f.message
    assert f.fix.startswith("Reissue the CA web certificate") and "NTP" not in f.fix
    assert "CLOCK_SKEW" not in codes(report)


def test_a_ca_clock_ahead_blames_the_clocks(lab):
    port = lab.serve("not_yet_valid", date_offset=dt.timedelta(days=2))
    report = diagnose(lab.config(f"https://127.0.0.1:{port}/certsrv"))
    assert set(codes(report)) == {"CA_TLS_NOT_YET_VALID", "CLOCK_SKEW"}, report.to_text()
    f = by_code(report, "CA_TLS_NOT_YET_VALID")
    assert "clock_skew_s" not in f.evidence and "clocks" in f.fix  # the clocks disagree: they are the cause
    assert by_code(report, "CLOCK_SKEW").evidence["skew_s"] < -86400


def test_an_expired_issuing_ca_is_renewed_not_added(lab, lab_pki, tmp_path):
    """The CA's own chain: its issuing CA certificate expired (same key, re-signed by the root with
    past dates); the root is already in the trust store, so the fix is to renew, not to add."""
    import shutil

    from onlineca.ca import engine as eng
    data = tmp_path / "ca-data"
    shutil.copytree(lab.files.dir, data / "ca")
    root_key = fs.read_private_key(lab.files.root_key)
    root = pki.load_certificate(lab.files.root_cert.read_bytes())
    issuing_key = fs.read_private_key(lab.files.issuing_key)
    expired = pki.build_certificate(subject=pki.load_certificate(lab.files.issuing_cert.read_bytes()).subject,
                                    public_key=issuing_key.public_key(), issuer_key=root_key, issuer_cert=root,
                                    is_ca=True, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30),
                                    validity_days=10)
    (data / "ca" / "issuing.pem").write_bytes(pki.cert_pem(expired))
    assert eng.CAEngine  # the CA serves this chain on certnew.p7b; its web certificate is from the lab PKI
    both = tmp_path / "trust.pem"
    both.write_bytes(pki.certs_pem([lab_pki.root, root]))
    port = lab.serve("lab_pki", data_dir=data)
    report = diagnose(lab.config(f"https://127.0.0.1:{port}/certsrv", trust=both))
    f = by_code(report, "CA_CHAIN")
    assert f.evidence["chain_error"] == "EXPIRED" and f.fix.startswith("Renew the CA certificate")
    assert "trust store ([ra] trust_store)" not in f.fix


def test_ra_tls_untrusted_names_the_issuer(lab, lab_pki):
    cfg, _ra = system(lab, ra_trust=lab_pki.root_pem)
    f = by_code(diagnose(cfg, hops={"ra"}), "RA_TLS_UNTRUSTED")
    assert f.evidence["missing_issuer"] == "/CN=onlineca Lab Issuing CA/O=onlineca"
    assert "onlineca Lab Issuing CA" in f.message and "onlineca Lab Issuing CA" in f.fix


class _AheadSigner:
    """A CA whose clock runs a day ahead: what it issues is valid only from tomorrow."""

    def __init__(self, issuer_key: Any, issuer: Any, root: Any) -> None:
        from onlineca.est.backend import LocalSigner
        self.signer = LocalSigner(issuer_key, issuer, ca_chain=[root])
        self.signer.sign = self.sign  # type: ignore[method-assign]

    def sign(self, csr: Any) -> Any:
        return pki.build_certificate(subject=csr.subject, public_key=csr.public_key(), issuer_key=self.signer.issuer_key,
                                     issuer_cert=self.signer.issuer_cert, key_usage=["digital_signature",
                                                                                     "key_encipherment"],
                                     not_before=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))


def _ahead(lab: CALab) -> Any:
    return _AheadSigner(fs.read_private_key(lab.files.issuing_key),
                        pki.load_certificate(lab.files.issuing_cert.read_bytes()),
                        pki.load_certificate(lab.files.root_cert.read_bytes()))


def test_a_ca_clock_ahead_is_not_valid_yet_for_the_phone_and_for_est_enroll(lab, tmp_path):
    from onlineca.ra.app import start_ra
    logs = tmp_path / "logs"
    # An RA signing locally (its CA's clock runs ahead), checking EST clients against a users file.
    base = lab.config("https://127.0.0.1:1/certsrv", log_dir=logs,
                      extra=f'[est]\nusers_file = "{lab.files.users}"')
    base = base.model_copy(update={"ra": base.ra.model_copy(update={"client_auth": "users"})})
    cert_file, key_file = lab.web["good"]
    ahead = lab.loop.run(start_ra(base, logs, port=0, tls_cert=cert_file, tls_key=key_file,
                                  connector=_ahead(lab).signer))
    lab.ras.append(ahead)
    lab.loop.run(ahead.wait_ready(10))
    # CAPF keeps its TLS certificate from a right clock, and enrolls its phones at the RA whose CA runs ahead.
    capf = (f'ra_url = "{ahead.url}"\nra_user = "{USER}"\nra_password = "{PASSWORD}"\n'
            f'ra_trust_store = "{lab.files.root_cert}"\nport = {free_port()}\n'
            f'tls_cert = "{cert_file}"\ntls_key = "{key_file}"')
    cfg = lab.config("https://127.0.0.1:1/certsrv", log_dir=logs, capf=capf,
                     extra=f'[database]\nurl = "sqlite:///{tmp_path / "capf.db"}"')
    lab.start_capf(cfg)
    register(cfg, "SEP00AA11BB2204")
    result = phones(lab, cfg, tmp_path, "SEP00AA11BB2204")[0]
    assert result.outcome == "ended" and result.reason == "CA_REJECTED"
    assert "chains to the RA's CA but is not valid yet" in (result.reason_info or "")
    assert "does not chain" not in (result.reason_info or "")
    # est enroll keeps the certificate but does not call it a success.
    out = tmp_path / "future.pem"
    res = CliRunner().invoke(main_group, [
        "est", "enroll", "--server", ahead.url, "--cafile", str(lab.files.root_cert), "--user", USER,
        "--password", PASSWORD, "--subject", "CN=est-client-1", "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "valid only from" in res.stderr and "clock" in res.stderr
    assert pki.load_certificate(out.read_bytes()).not_valid_before_utc > dt.datetime.now(dt.UTC)


# --- item 5: template names compare case-insensitively ---------------------------------------------

def test_a_template_differing_only_in_case_is_offered(lab, tmp_path):
    cfg, ra = system(lab, template="ciscora", log_dir=tmp_path / "logs")
    lab.loop.run(ra.wait_ready(10))
    report = diagnose(cfg, hops={"ra", "ca"})
    assert "CA_TEMPLATE" not in codes(report) and report.ok, report.to_text()


# --- item 6: diagnose's probes are recognisable and never logged as errors ---------------------------

def test_diagnose_leaves_no_false_alarm_in_the_ra_logs(lab, tmp_path):
    cfg, _ra = system(lab, log_dir=tmp_path / "logs")
    assert diagnose(cfg, hops={"ra", "ca"}).ok
    error_log = (tmp_path / "logs" / "error.log").read_text()
    assert "[error]" not in error_log and "diagnose probe of simpleenroll" in error_log
    assert "onlineca-diagnose/" in (tmp_path / "logs" / "access.log").read_text()
    result = analyze_paths([tmp_path / "logs"])
    assert result.causes() == [] and result.ok, result.to_text()


# --- item 7: a self-signed CA web certificate is refused even in the trust store ---------------------

def test_a_self_signed_web_certificate_in_the_trust_store_is_refused(lab, tmp_path):
    cert, _key = lab.web["self_signed"]
    both = tmp_path / "trust.pem"
    both.write_bytes(pki.certs_pem(fs.load_cert_file(cert) + fs.load_cert_file(lab.files.root_cert)))
    port = lab.serve("self_signed")
    cfg = lab.config(f"https://127.0.0.1:{port}/certsrv", trust=both, log_dir=tmp_path / "logs")
    f = by_code(diagnose(cfg), "CA_TLS_SELF_SIGNED")
    assert f.evidence["reason"] == "return code 60 (SSL certificate problem: self-signed certificate)"
    ra = lab.start_ra(cfg.model_copy(update={"ra": cfg.ra.model_copy(update={"backoff_initial": 30.0})}),
                      tmp_path / "logs")
    lab.loop.run(ra.state.wait_until(lambda s: s.reason.startswith("CA_"), 10))
    assert ra.state.reason.startswith("CA_TLS_SELF_SIGNED")


# --- items 1, 10, 12: a proxy that breaks the RA's connection to the CA, CAPF unable to reach the RA ---

class FaultProxy:
    """An HTTPS proxy that drops the connection on the paths in ``drop`` and moves the ``Date`` of
    its answers by ``date_offset`` (a server whose clock is off, as a client sees it)."""

    def __init__(self, lab: CALab, upstream: str, drop: set[str], date_offset: dt.timedelta | None = None) -> None:
        self.lab, self.upstream, self.drop, self.date_offset = lab, upstream, drop, date_offset

    async def handle(self, request: web.Request) -> web.StreamResponse:
        import aiohttp
        if request.path.lower() in self.drop and request.transport is not None:
            request.transport.abort()  # the connection breaks mid-request: no answer at all
            return web.Response(status=500)
        ctx = tls.client_context(fs.load_cert_file(self.lab.files.root_cert))
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session, session.request(
                request.method, self.upstream + request.path_qs, data=await request.read(), headers=headers,
                allow_redirects=False) as resp:
            answer = web.Response(status=resp.status, body=await resp.read(),
                                  headers={k: v for k, v in resp.headers.items()
                                           if k.lower() not in ("content-length", "transfer-encoding",
                                                                "content-encoding", "connection", "date")})
        if self.date_offset is not None:
            import email.utils
            answer.headers["Date"] = email.utils.format_datetime(dt.datetime.now(dt.UTC) + self.date_offset,
                                                                 usegmt=True)
        return answer

    def start(self) -> int:
        cert, key = self.lab.web["good"]

        async def start() -> int:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            self.lab.runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context(cert, key))
            await site.start()
            return int(runner.addresses[0][1])
        return int(self.lab.loop.run(start()))


def test_a_proxy_breaking_certfnsh_is_found_by_diagnose_and_analyze(lab, tmp_path):
    ca_port = lab.serve()
    proxy = FaultProxy(lab, f"https://127.0.0.1:{ca_port}", {"/certsrv/certfnsh.asp"}).start()
    cfg = chain(lab, tmp_path, ca_url=f"https://127.0.0.1:{proxy}/certsrv")
    register(cfg, "SEP00AA11BB2205")
    assert phones(lab, cfg, tmp_path, "SEP00AA11BB2205")[0].outcome == "retry_later"
    report = diagnose(cfg, hops={"capf", "ra", "ca"})
    assert all(c.status == "ok" for c in report.checks if c.hop == "ca"), report.to_text()
    assert by_code(report, "CA_CONNECT").severity == "error"  # what the RA met, from its metrics and error.log
    causes = analyze_paths([tmp_path / "logs"]).causes()
    assert causes[0].code == "CA_CONNECT", [c.as_dict() for c in causes]
    assert causes[0].evidence["curl_code"] in ("52", "56")
    assert any(code == "CAPF_CA_COMM_FAILURE" for code, _sig, _n in causes[0].consequence_counts())


def test_an_ra_whose_clock_is_off_is_told(lab, tmp_path):
    cfg, ra = system(lab, log_dir=tmp_path / "logs")
    proxy = FaultProxy(lab, f"https://127.0.0.1:{ra.port}", set(), date_offset=dt.timedelta(minutes=-20)).start()
    via = cfg.model_copy(update={"capf": cfg.capf.model_copy(update={"ra_url": f"https://127.0.0.1:{proxy}"})})
    f = by_code(diagnose(via, hops={"ra"}), "CLOCK_SKEW")
    assert f.hop == "ra" and f.severity == "error" and 1190 <= f.evidence["skew_s"] <= 1210
    assert "RA's clock" in f.message and "behind" in f.message


def test_capf_unable_to_reach_the_ra_is_ra_connect_in_its_log(lab, tmp_path):
    # CAPF (with its own TLS certificate) points at a port where no RA listens.
    cert_file, key_file = lab.web["good"]
    capf = (f'ra_url = "https://127.0.0.1:{free_port()}/.well-known/est"\nra_user = "{USER}"\n'
            f'ra_password = "{PASSWORD}"\nra_trust_store = "{lab.files.root_cert}"\nport = {free_port()}\n'
            f'tls_cert = "{cert_file}"\ntls_key = "{key_file}"')
    cfg = lab.config("https://127.0.0.1:1/certsrv", log_dir=tmp_path / "logs", capf=capf,
                     extra=f'[database]\nurl = "sqlite:///{tmp_path / "capf.db"}"')
    lab.start_capf(cfg)
    register(cfg, "SEP00AA11BB2206")
    assert phones(lab, cfg, tmp_path, "SEP00AA11BB2206")[0].outcome == "retry_later"
    assert "Enrollment rv = 43 (EST_ERR_IP_CONNECT)" in (tmp_path / "logs" / "capf.log").read_text()
    causes = analyze_paths([tmp_path / "logs" / "capf.log"]).causes()
    assert [c.code for c in causes] == ["RA_CONNECT"] and "never saw" in causes[0].cause
    f = by_code(diagnose(cfg, hops={"capf"}), "RA_CONNECT")
    assert f.evidence["source"] == "capf outcomes" and f.evidence["devices"] == ["SEP00AA11BB2206"]


# --- item 14: logs trace follows one device by request through our three tiers -----------------------

def test_trace_of_one_device_in_a_fleet_holds_its_requests_only(lab, tmp_path):
    cfg = chain(lab, tmp_path)
    names = [f"SEP00AA11BB{n:04d}" for n in range(3000, 3012)]
    register(cfg, *names)
    assert {r.outcome for r in phones(lab, cfg, tmp_path, *names)} == {"installed"}
    res = CliRunner().invoke(main_group, ["logs", "trace", names[5], "--log-dir", str(tmp_path / "logs"), "--json"])
    assert res.exit_code == 0, res.output
    import json
    doc = json.loads(res.output)
    assert {e["tier"] for e in doc["events"]} == {"CAPF", "RA", "CA"}
    assert len(doc["request_ids"]) == 1 and len(doc["req_ids"]) == 1
    rid, req_id = doc["request_ids"][0], doc["req_ids"][0]
    ca_lines = [e["text"] for e in doc["events"] if e["tier"] == "CA"]
    assert any("POST /certsrv/certfnsh.asp" in t and rid in t for t in ca_lines)
    assert any(f"ReqID={req_id}&" in t for t in ca_lines)
    assert all(rid in t for t in ca_lines)  # every CA line is this request's: none of the 11 others'
    for other in names[:5] + names[6:]:
        assert not any(other in e["text"] for e in doc["events"])
