"""The hop checks of ``onlineca diagnose``: CAPF's own certificate, then the RA as CAPF reaches it,
then the CA as the RA reaches it, each turned into coded findings.

The CA hop reuses the certsrv client (its CA_* failure codes, curl wording and peer-certificate
probe), so diagnose sees exactly what the RA would; the RA hop reuses the EST client.  Checks are
read-only: they log in, list templates and fetch chains, but never enroll (a probe POST without a
CSR, marked as diagnose's probe, shows whether the RA accepts CAPF's credentials).  Because they
enroll nothing, they also read what the tiers saw of real enrollments (``observed``: the RA's
/metrics and error.log, CAPF's outcomes), and check CAPF's own port (``capf_hop``).  When the RA
reports a CA failure that diagnose, with this configuration, does not meet, the RA runs with
another configuration, trust store or clock, and the report says so.  Every network call has the
configured timeout; credentials are sent only after the peer's certificate verified, and never
reported.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from cryptography import x509

from onlineca import __version__, pki
from onlineca.certsrv.client import CertsrvClient
from onlineca.config import Config, DataDir
from onlineca.diagnose import capf_hop, observed
from onlineca.diagnose.findings import CheckResult, Finding, Hop, Report, est_failure_code, finding
from onlineca.errors import (
    CAChainError,
    CertsrvFailure,
    ChainError,
    ConfigError,
    ESTCodedError,
    OnlineCAError,
    ParseError,
)
from onlineca.infra import files, tls
from onlineca.proto.certsrv import client as p
from onlineca.proto.libest import rv_text
from onlineca.proto.request_id import PROBE_HEADER, PROBE_USER_AGENT

T = TypeVar("T")

CLOCK_SKEW_WARNING_S = 60
CLOCK_SKEW_ERROR_S = 300  # Kerberos' default tolerance: NTLM/Kerberos logons start failing here
SLOW_FRACTION = 0.5       # a CA answering in more than half the timeout is one bad day from CA_TIMEOUT
CERT_EXPIRING_DAYS = 30
# Every request diagnose sends says what it is: the RA logs it as a probe, never as an error.
PROBE_HEADERS = {PROBE_HEADER: "diagnose", "User-Agent": f"{PROBE_USER_AGENT}/{__version__}"}


class _Run:
    """Collects check results and findings in order."""

    def __init__(self, now: dt.datetime) -> None:
        self.report = Report()
        self.now = now
        self.ra_said: dict[str, Any] = {}  # what the RA's /readyz says it runs with
        self.ra_chain: list[x509.Certificate] = []
        self.ca_skew: float | None = None  # this machine's clock minus the CA's, when the CA said

    def add(self, f: Finding) -> None:
        self.report.findings.append(f)

    def skip(self, name: str, hop: Hop, why: str) -> None:
        self.report.checks.append(CheckResult(name, hop, "skipped", 0, why))

    async def check(self, name: str, hop: Hop, call: Awaitable[T], on_failure: Callable[[Exception], list[Finding]]
                    ) -> tuple[T | None, bool, float]:
        """Run one check; on a coded failure record its findings.  Returns (value, ok, seconds)."""
        started = time.monotonic()
        try:
            value = await call
        except (OnlineCAError, OSError, aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            elapsed = time.monotonic() - started
            found = on_failure(exc)
            for f in found:
                self.add(f)
            self.report.checks.append(CheckResult(name, hop, "failed", int(elapsed * 1000),
                                                  found[0].code if found else type(exc).__name__))
            return None, False, elapsed
        elapsed = time.monotonic() - started
        self.report.checks.append(CheckResult(name, hop, "ok", int(elapsed * 1000)))
        return value, True, elapsed


# --- certificates --------------------------------------------------------------------------


def _skew_words(seconds: float) -> str:
    s = abs(int(seconds))
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} hours"
    if s >= 60:
        return f"{s / 60:.1f} minutes"
    return f"{s} s"


def _parse_peer_time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        return None


def _ca_failure_findings(exc: Exception, cfg: Config, now: dt.datetime) -> list[Finding]:
    """A CertsrvFailure (or anything else) as findings with the evidence that proves it."""
    if not isinstance(exc, CertsrvFailure):
        return [finding("CA_CONNECT", f"{type(exc).__name__}: {exc}")]
    d = exc.details
    ev: dict[str, Any] = {"reason": exc.reason, "url": d.get("url")}
    code = exc.code
    fix = None
    message = exc.message
    if code == "CA_TLS_UNTRUSTED":
        issuer = d.get("issuer") or "(unknown)"
        message = f"the CA's web certificate is issued by {issuer}, which is not in the RA's trust store"
        ev.update(missing_issuer=issuer, subject=d.get("subject"),
                  trust_store=cfg.ra.trust_store or "(system store)")
        fix = f"Add {issuer} (and its root) to the RA's trust store ([ra] trust_store)."
    elif code == "CA_TLS_SELF_SIGNED":
        ev.update(subject=d.get("subject"))
    elif code == "CA_TLS_NAME_MISMATCH":
        host = d.get("host") or urlsplit(cfg.ra.ca_url).hostname
        names = d.get("names") or []
        cn = (d.get("subject") or "").rsplit("CN=", 1)[-1] if "CN=" in (d.get("subject") or "") else None
        ev.update(url_host=host, certificate_names=names or ([cn] if cn else []), subject=d.get("subject"))
        held = ", ".join(names or ([cn] if cn else ["(none)"]))
        message = f"the CA's web certificate holds {held}, but ca_url names {host!r}"
        fix = (f"Put one of {held} in [ra] ca_url, or reissue the CA web certificate with {host!r} in its "
               "subjectAltName.")
    elif code == "CA_TLS_NOT_YET_VALID":
        nb = _parse_peer_time(d.get("not_before", ""))
        ev.update(not_before=d.get("not_before"), subject=d.get("subject"), local_time=f"{now:%Y-%m-%d %H:%M:%S} UTC")
        if nb is not None:
            skew = (nb - now).total_seconds()
            ev["implied_clock_skew_s"] = int(skew)
            message = (f"the CA's web certificate is valid only from {d.get('not_before')}: this machine's clock "
                       f"is at least {_skew_words(skew)} behind the certificate's start")
    elif code == "CA_TLS_EXPIRED":
        na = _parse_peer_time(d.get("not_after", ""))
        ev.update(not_after=d.get("not_after"), subject=d.get("subject"))
        if na is not None:
            ev["expired_for_s"] = int((now - na).total_seconds())
    elif code == "CA_TIMEOUT":
        ev.update(phase=d.get("phase"), timeout_s=d.get("timeout"), measured_ms=d.get("elapsed_ms"))
        setting = {"login": "login_timeout", "enroll": "enroll_timeout", "connect": "connect_timeout"}.get(
            str(d.get("phase")), "enroll_timeout")
        message = (f"the CA did not answer {urlsplit(str(d.get('url') or '')).path or 'the request'} within the "
                   f"{d.get('phase')} timeout of {d.get('timeout')} s (waited {d.get('elapsed_ms')} ms)")
        fix = f"Find why the CA is slow (load, network, its domain controller), or raise [ra] {setting}."
    elif code == "CA_TEMPLATE":
        ev.update(template=d.get("template"), offered=d.get("offered"), nearest=d.get("nearest"))
        nearest = d.get("nearest")
        fix = (f"Set [ra] template = {nearest!r} (the nearest offered name)" if nearest else
               "Set [ra] template to one of the offered templates") + \
            ", or enable the template for this user on the CA."
    elif code == "CA_AUTH":
        ev.update(user=cfg.ra.ca_user, status=d.get("status"), offered=d.get("offered"))
        fix = exc.hint if exc.hint and "does not offer" in exc.hint else None
    elif code == "CA_CHAIN":
        ev.update(chain_error=d.get("chain_error"), chain_root=d.get("chain_root"), failing=d.get("failing"))
        fix = _chain_fix(d)
    elif code in ("CA_DNS", "CA_CONNECT"):
        ev.update(host=d.get("host"), port=d.get("port"))
    return [finding(code, message, fix=fix, **ev)]


def _chain_fix(d: dict[str, Any]) -> str | None:
    """What to do about a CA chain that does not validate depends on why: a root the trust store
    lacks is added, an expired CA certificate is renewed, a CA certificate valid only later means a
    clock or a future start date."""
    failing = d.get("failing") or "a CA certificate of the chain"
    if d.get("chain_error") == "EXPIRED":
        return (f"Renew the CA certificate {failing} on the CA (it has expired; the root in [ra] trust_store is "
                "fine) and publish the new chain on certnew.p7b.")
    if d.get("chain_error") == "NOT_YET_VALID":
        return f"Check the clocks (NTP) of the CA and the RA: {failing} is valid only from a later date."
    if d.get("chain_root") and d.get("chain_error") in ("SELF_SIGNED", "UNTRUSTED_ISSUER"):
        return (f"If {d['chain_root']} is your CA's root, add it to the RA's trust store ([ra] trust_store); "
                "otherwise ca_url points at the wrong CA.")
    return None


def check_certificate_file(path: Path, now: dt.datetime, *, what: str, hop: Hop, code_expiring: str,
                           code_expired: str, code_unreadable: str, days: int = CERT_EXPIRING_DAYS) -> list[Finding]:
    """Findings about a certificate file's validity: expired, expiring within ``days``, unreadable."""
    try:
        cert = files.load_cert_file(path)[0]
    except (OSError, ParseError, IndexError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return [finding(code_unreadable, f"cannot read {what} {path}: {why}", hop=hop, path=str(path))]
    left = cert.not_valid_after_utc - now
    ev: dict[str, Any] = dict(path=str(path), subject=pki.name_to_slash(cert.subject),
              not_after=f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC", days_left=left.days)
    if left.total_seconds() <= 0:
        return [finding(code_expired, f"{what} expired on {ev['not_after']}", hop=hop, **ev)]
    if left <= dt.timedelta(days=days):
        return [finding(code_expiring, f"{what} expires in {left.days} day(s), on {ev['not_after']}",
                        severity="warning", hop=hop, **ev)]
    return []


# --- CAPF ----------------------------------------------------------------------------------


def capf_certificate_path(cfg: Config, given: Path | None) -> Path | None:
    """CAPF's own certificate: the one given, else where ``onlineca capf`` keeps it
    (``<data dir>/capf/capf.pem``, ``CAPFPaths.capf_cert``), when it exists."""
    if given is not None:
        return given
    path = DataDir(Path(cfg.data_path)).capf.capf_cert
    return path if path.exists() else None


def _record(run: _Run, name: str, hop: Hop, found: list[Finding], detail: str = "", elapsed_ms: int = 0) -> None:
    """A check whose findings were made outside ``_Run.check`` (failed when one is an error)."""
    for f in found:
        run.add(f)
    failed = any(f.severity == "error" for f in found)
    run.report.checks.append(CheckResult(name, hop, "failed" if failed else "ok", elapsed_ms,
                                         found[0].code if found else detail))


def _trust_files(*paths: str) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for path in paths:
        if path:
            try:
                certs.extend(files.load_cert_file(path))
            except (OSError, ParseError):
                continue
    return certs


async def _check_capf(run: _Run, cfg: Config, capf_cert: Path | None, timeout: float) -> None:
    path = capf_certificate_path(cfg, capf_cert)
    if path is None:
        run.skip("capf.certificate", "capf", "no CAPF certificate configured or found in the data dir")
    else:
        _record(run, "capf.certificate", "capf", check_certificate_file(
            path, run.now, what="CAPF's certificate", hop="capf", code_expiring="CAPF_CERT_EXPIRING",
            code_expired="CAPF_CERT_EXPIRED", code_unreadable="CAPF_CERT_UNREADABLE"), str(path))
    # The CA that issued CAPF's certificate: the RA's cacerts (issuing CA and root) when it answers,
    # else what the configured trust stores hold.
    trust = _trust_files(cfg.ra.trust_store, cfg.capf.ra_trust_store, str(path) if path else "")
    if cfg.capf.ra_trust_store:
        from onlineca.est.client import ESTClient
        try:
            async with ESTClient(cfg.capf.ra_url, cafile=cfg.capf.ra_trust_store, timeout=timeout,
                                 connect_timeout=timeout, max_retries=0) as est:
                trust += await est.cacerts()
        except (OnlineCAError, OSError):
            pass
    started = time.monotonic()
    found = await capf_hop.check_capf_port(cfg, trust, run.now, timeout)
    _record(run, "capf.port", "capf", found, f"{cfg.capf.host}:{cfg.capf.port}",
            int((time.monotonic() - started) * 1000))
    if not any(f.code == "CAPF_CONNECT" for f in found):
        _record(run, "capf.ra", "capf", capf_hop.check_capf_ra(cfg, cfg.log_path), "as configured")
    _record(run, "capf.outcomes", "capf", observed.capf_outcome_findings(cfg, run.now), "no recent failure")


# --- RA ------------------------------------------------------------------------------------


def _ra_findings(exc: Exception, cfg: Config, now: dt.datetime) -> list[Finding]:
    if isinstance(exc, ESTCodedError):
        return [finding(est_failure_code(exc.code, exc.message), exc.message, hop="ra", est_error=rv_text(exc.code),
                        http_status=exc.http_status, url=cfg.capf.ra_url)]
    if isinstance(exc, ConfigError):
        return [finding("CONFIG", exc.message, hop="ra")]
    return [finding("RA_CONNECT", f"{type(exc).__name__}: {exc}", hop="ra", url=cfg.capf.ra_url)]


async def _name_ra_certificate(run: _Run, cfg: Config, timeout: float) -> None:
    """A TLS failure towards the RA names the certificate the RA presents: its issuer (to add to
    [capf] ra_trust_store), its names, its dates."""
    f = run.report.findings[-1] if run.report.findings else None
    if f is None or not f.code.startswith("RA_TLS"):
        return
    url = urlsplit(cfg.capf.ra_url)
    try:
        cert = await capf_hop.peer_certificate(url.hostname or "", url.port or 443, timeout)
    except (OSError, TimeoutError, ParseError):
        return
    issuer, subject = pki.name_to_slash(cert.issuer), pki.name_to_slash(cert.subject)
    ev = {**f.evidence, "subject": subject, "issuer": issuer, "certificate_names": pki.san_names(cert),
          "not_before": f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
          "not_after": f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"}
    message, fix = f.message, f.fix
    if f.code == "RA_TLS_UNTRUSTED":
        ev["missing_issuer"] = issuer
        message = f"the RA's TLS certificate {subject} is issued by {issuer}, which is not in [capf] ra_trust_store"
        fix = f"Add {issuer} (and its root) to [capf] ra_trust_store ({cfg.capf.ra_trust_store})."
    elif f.code == "RA_TLS_SELF_SIGNED":
        message = f"the RA presents a self-signed TLS certificate {subject}"
    run.report.findings[-1] = Finding(f.code, f.severity, f.hop, message, fix, ev)


def _ra_origin(ra_url: str) -> str:
    parts = urlsplit(ra_url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


async def _get_status(session: aiohttp.ClientSession, url: str, timeout: float) -> tuple[int, str, str]:
    async with asyncio.timeout(timeout):
        async with session.get(url, allow_redirects=False) as resp:
            body = await resp.content.read(1024 * 1024)
            return resp.status, body.decode("utf-8", "replace").strip(), resp.headers.get("Date", "")


def _ra_clock(run: _Run, date_header: str, local: float) -> None:
    """The RA's clock, from the Date of its /readyz answer, against this machine's."""
    try:
        when = email.utils.parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return
    skew = local - when.timestamp()
    run.ra_said["clock_skew_s"] = round(skew, 1)
    if abs(skew) >= CLOCK_SKEW_WARNING_S:
        run.add(finding("CLOCK_SKEW", f"the RA's clock is {_skew_words(skew)} {'behind' if skew > 0 else 'ahead of'} "
                        "this machine's", severity="error" if abs(skew) >= CLOCK_SKEW_ERROR_S else "warning",
                        hop="ra", ra_date=when.strftime("%Y-%m-%d %H:%M:%S UTC"), skew_s=round(skew, 1)))


async def _check_ra(run: _Run, cfg: Config, timeout: float) -> bool:
    """/readyz (reachability, TLS, start-up checks, the RA's clock and configuration), /metrics and
    its error.log (what real enrollments met), cacerts (the chain), then CAPF's credentials; False
    when the RA cannot be reached."""
    from onlineca.est.client import ESTClient, client_ssl_context, map_transport_error
    c = cfg.capf
    trust = c.ra_trust_store or None
    if trust is None:
        run.add(finding("CONFIG", "[capf] ra_trust_store is not set: nothing to verify the RA's certificate with",
                        hop="ra", fix="Set [capf] ra_trust_store to the root of the RA's TLS certificate."))
        run.report.checks.append(CheckResult("ra.readyz", "ra", "failed", 0, "CONFIG"))
        return False
    try:
        ctx = client_ssl_context(cafile=trust)
        est = ESTClient(c.ra_url, cafile=trust, user=c.ra_user or None,
                        password=c.ra_password.get_secret_value(), timeout=timeout, connect_timeout=timeout,
                        max_retries=0)
    except (OnlineCAError, OSError) as exc:
        run.add(finding("CONFIG", f"[capf] ra_trust_store {trust}: {exc}", hop="ra"))
        run.report.checks.append(CheckResult("ra.readyz", "ra", "failed", 0, "CONFIG"))
        return False
    origin = _ra_origin(c.ra_url)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), trust_env=False,
                                     headers=PROBE_HEADERS) as session:
        async def get(path: str) -> tuple[int, str, str]:
            try:
                return await _get_status(session, origin + path, timeout)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise map_transport_error(exc, origin + path) from None

        sent = time.time()
        got, ok, _ = await run.check("ra.readyz", "ra", get("/readyz"), lambda e: _ra_findings(e, cfg, run.now))
        if not ok or got is None:
            await _name_ra_certificate(run, cfg, timeout)
            await est.close()
            return False
        _ra_clock(run, got[2], (sent + time.time()) / 2)
        try:
            said = json.loads(got[1])
            run.ra_said.update(said if isinstance(said, dict) else {})
        except ValueError:
            pass
        if got[0] != 200:
            last = next(i for i in range(len(run.report.checks) - 1, -1, -1) if run.report.checks[i].name == "ra.readyz")
            run.report.checks[last] = CheckResult("ra.readyz", "ra", "failed", run.report.checks[last].elapsed_ms,
                                                  f"HTTP {got[0]}")
            reason = str(run.ra_said.get("reason", got[1][:500]))
            run.add(finding("RA_NOT_READY", f"the RA is not ready (HTTP {got[0]} on /readyz): {reason}", hop="ra",
                            status=got[0], reason=reason))
        try:
            metrics: tuple[int, str, str] | None = await get("/metrics")
        except ESTCodedError:
            metrics = None
        if metrics is not None and metrics[0] == 200:
            _record(run, "ra.metrics", "ra", observed.metrics_findings(observed.parse_prometheus(metrics[1]), cfg,
                                                                       run.now), "no recent CA failure")
        else:
            run.skip("ra.metrics", "ra", "the RA publishes no /metrics")
    error_log = cfg.log_path / "error.log"
    if error_log.is_file():
        _record(run, "ra.error_log", "ra", observed.error_log_findings(error_log, run.now), "no recent CA failure")
    if got[0] != 200:
        await est.close()
        return True  # why it is not ready: its reason, and the CA checks below
    async with est:
        chain, ok, _ = await run.check("ra.cacerts", "ra", est.cacerts(), lambda e: _ra_findings(e, cfg, run.now))
        if ok:
            run.ra_chain = list(chain or [])
            for cert in chain or []:
                if cert.not_valid_after_utc <= run.now:
                    run.add(finding("RA_CACERTS", f"the RA serves an expired CA certificate "
                                    f"{pki.name_to_slash(cert.subject)}", hop="ra",
                                    not_after=f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"))
            if not chain:
                run.add(finding("RA_CACERTS", "the RA's /cacerts holds no certificate", hop="ra"))
        if not c.ra_user:
            run.skip("ra.est_auth", "ra", "no [capf] ra_user configured")
            return True
        # A simpleenroll without a CSR: the RA checks credentials first, so 401 is a refusal and
        # 400 (no CSR) proves they were accepted, with nothing enrolled.  Marked as a probe, the
        # RA logs it as one (never as an error that logs analyze would report).
        probe = est.request("simpleenroll", "POST", body=b"",
                            headers={"Content-Type": "application/pkcs10", **PROBE_HEADERS})
        await run.check("ra.est_auth", "ra", _auth_probe(probe), lambda e: _ra_findings(e, cfg, run.now))
    return True


async def _auth_probe(call: Awaitable[object]) -> None:
    try:
        await call
    except ESTCodedError as exc:
        if exc.http_status == 401 or exc.code == "EST_ERR_AUTH_FAIL":
            raise ESTCodedError("EST_ERR_AUTH_FAIL", "the RA refused CAPF's EST credentials (HTTP 401)",
                                http_status=401) from None
        if exc.http_status is not None and 400 <= exc.http_status < 500:
            return  # the credentials passed; the empty CSR did not
        raise


# --- CA ------------------------------------------------------------------------------------


async def server_date(url: str, timeout: float) -> tuple[dt.datetime | None, float]:
    """The CA's HTTP Date and our clock at the middle of the exchange (an unauthenticated GET of the
    login page: no credential is sent, so the certificate need not verify for this)."""
    ctx = tls.unverified_client_context()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), trust_env=False) as session:
        async with asyncio.timeout(timeout):
            sent = time.time()
            async with session.get(url, allow_redirects=False) as resp:
                got = time.time()
                header = resp.headers.get("Date")
    if not header:
        return None, got
    try:
        return email.utils.parsedate_to_datetime(header), (sent + got) / 2
    except (TypeError, ValueError):
        return None, got


async def _check_clock(run: _Run, cfg: Config, base: str) -> None:
    started = time.monotonic()
    try:
        when, local = await server_date(p.login_url(base), cfg.ra.connect_timeout + cfg.ra.login_timeout)
    except (OSError, aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
        run.skip("ca.clock", "ca", f"no HTTP Date from the CA ({type(exc).__name__})")
        return
    elapsed = int((time.monotonic() - started) * 1000)
    if when is None:
        run.skip("ca.clock", "ca", "the CA sent no HTTP Date header")
        return
    skew = local - when.timestamp()
    run.ca_skew = skew
    ev: dict[str, Any] = dict(ca_date=when.strftime("%Y-%m-%d %H:%M:%S UTC"),
              local_time=dt.datetime.fromtimestamp(local, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
              skew_s=round(skew, 1))
    if abs(skew) >= CLOCK_SKEW_WARNING_S:
        ahead = "ahead of" if skew > 0 else "behind"
        run.add(finding("CLOCK_SKEW", f"this machine's clock is {_skew_words(skew)} {ahead} the CA's",
                        severity="error" if abs(skew) >= CLOCK_SKEW_ERROR_S else "warning", **ev))
        run.report.checks.append(CheckResult("ca.clock", "ca", "failed", elapsed, f"skew {skew:+.0f} s"))
    else:
        run.report.checks.append(CheckResult("ca.clock", "ca", "ok", elapsed, f"skew {skew:+.1f} s"))


def _slow(run: _Run, name: str, elapsed: float, timeout: float, setting: str) -> None:
    if elapsed > timeout * SLOW_FRACTION:
        run.add(finding("CA_TIMEOUT", f"the CA took {elapsed * 1000:.0f} ms on {name}, more than half of "
                        f"{setting} ({timeout:g} s)", severity="warning", measured_ms=int(elapsed * 1000),
                        timeout_s=timeout,
                        fix=f"Find why the CA is slow before it exceeds the timeout, or raise [ra] {setting}."))


def _validate_chain(chain: list[Any], trust_path: str, base: str) -> list[Any]:
    if not chain:
        raise CAChainError("certnew.p7b holds no certificate", details={"url": p.certnew_p7b_url(base)})
    ordered = pki.order_chain(chain)
    trust = files.load_trust_store(trust_path) if trust_path else pki.TrustStore([ordered[-1]])
    try:
        pki.validate_chain(ordered[0], ordered[1:], trust)
    except ChainError as exc:
        failing = next((pki.name_to_slash(c.subject) for c in ordered if pki.name_to_slash(c.subject) in exc.message),
                       None)
        raise CAChainError(f"the CA chain does not validate: {exc.message}", hint=exc.hint or None,
                           details={"url": p.certnew_p7b_url(base), "chain_error": exc.code, "failing": failing,
                                    "chain_root": pki.name_to_slash(ordered[-1].subject)}) from None
    return ordered


async def _check_ca(run: _Run, cfg: Config) -> None:
    ra = cfg.ra
    try:
        client = CertsrvClient.from_config(ra)
    except ConfigError as exc:
        run.add(finding("CONFIG", exc.message, hop="ca", fix=exc.hint or None))
        run.report.checks.append(CheckResult("ca.login", "ca", "failed", 0, "CONFIG"))
        return
    fail = lambda e: _ca_failure_findings(e, cfg, run.now)  # noqa: E731
    async with client:
        _, ok, elapsed = await run.check("ca.login", "ca", client.login(), fail)
        if run.report.findings and run.report.findings[-1].code == "CA_TIMEOUT" and not ok:
            run.skip("ca.clock", "ca", "the CA is too slow to ask its time")
        else:
            await _check_clock(run, cfg, client.base)
        if ok:
            _slow(run, "login", elapsed, ra.login_timeout, "login_timeout")
            chain, ok_chain, elapsed = await run.check("ca.chain", "ca", client.ca_chain(0), fail)
            if ok_chain:
                _slow(run, "certnew.p7b", elapsed, ra.enroll_timeout, "enroll_timeout")
                _, _, _ = await run.check("ca.chain_valid", "ca", _async(_validate_chain, chain, ra.trust_store,
                                                                          client.base), fail)
            _, ok_tpl, elapsed = await run.check("ca.template", "ca", client.check_template(ra.template), fail)
            if ok_tpl:
                _slow(run, "certrqxt.asp", elapsed, ra.enroll_timeout, "enroll_timeout")


async def _async(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


async def run_diagnose(cfg: Config, *, capf_cert: Path | None = None, hops: set[str] | None = None,
                       now: dt.datetime | None = None) -> Report:
    """Every hop in order, CAPF -> RA -> CA; the report holds each check and each finding."""
    run = _Run(now or dt.datetime.now(dt.UTC))
    hops = hops or {"capf", "ra", "ca"}
    timeout = max(cfg.ra.connect_timeout, 1.0) + cfg.ra.login_timeout
    if "capf" in hops:
        await _check_capf(run, cfg, capf_cert, timeout)
    if "ra" in hops:
        await _check_ra(run, cfg, timeout)
    if "ca" in hops:
        if cfg.ra.connector != "certsrv":
            run.skip("ca.login", "ca", f"the RA signs locally (connector = {cfg.ra.connector!r})")
            if cfg.ra.local_cert:
                for f in check_certificate_file(Path(cfg.ra.local_cert), run.now, what="the RA's signing CA certificate",
                                                hop="ca", code_expiring="CA_CHAIN", code_expired="CA_CHAIN",
                                                code_unreadable="CA_CHAIN", days=CERT_EXPIRING_DAYS):
                    run.add(f)
        elif _ra_reports_ca_auth(run):
            # Another login with a password the CA refuses would bring the account closer to its
            # lockout: the RA already says why (its reason is in the RA_NOT_READY finding).
            run.skip("ca.login", "ca", "the RA already reports CA_AUTH: no login attempt added (the CA account "
                     "would lock)")
            run.add(finding("CA_AUTH", "the RA reports that the CA refuses its login (no login attempt added by "
                            "diagnose)", hop="ca"))
        else:
            await _check_ca(run, cfg)
    _reconcile(run, cfg, hops)
    return run.report


def _reconcile(run: _Run, cfg: Config, hops: set[str]) -> None:
    """Findings that say more together: one finding per fault however many sources saw it; the
    clocks behind a certificate that is not valid yet; an RA whose reason diagnose cannot reproduce."""
    own = {f.code for f in run.report.findings if "source" not in f.evidence}  # diagnose met it itself
    findings = observed.merge(run.report.findings)
    by_code = {f.code: i for i, f in enumerate(findings)}
    if "CA_TLS_NOT_YET_VALID" in by_code and run.ca_skew is not None and abs(run.ca_skew) < CLOCK_SKEW_WARNING_S:
        i = by_code["CA_TLS_NOT_YET_VALID"]
        f = findings[i]
        findings[i] = Finding(f.code, f.severity, f.hop, f"{f.message}, while this machine's clock and the CA's agree "
                              f"(skew {run.ca_skew:+.0f} s): the certificate was issued with a start date in the future",
                              "Reissue the CA web certificate with a start date that has passed (or wait until it "
                              "starts); the clocks are in step.", {**f.evidence, "clock_skew_s": round(run.ca_skew, 1)})
    elif "CA_TLS_NOT_YET_VALID" in by_code and run.ca_skew is not None:
        i = by_code["CA_TLS_NOT_YET_VALID"]
        f = findings[i]
        findings[i] = Finding(f.code, f.severity, f.hop, f.message, "Fix the clocks (NTP): this machine's and the CA's "
                              f"differ by {_skew_words(run.ca_skew)} (see CLOCK_SKEW); the certificate is fine.",
                              f.evidence)
    if "RA_NOT_READY" in by_code:
        i = by_code["RA_NOT_READY"]
        f = findings[i]
        said = re.match(r"([A-Z][A-Z0-9_]+):", str(f.evidence.get("reason", "")))
        code = said.group(1) if said else ""
        if code and code in own and by_code[code] != i:
            fix = f"Fix what the {code} finding below says; the RA retries its start-up checks by itself."
        elif code.startswith("CA_") and "ca" in hops and cfg.ra.connector == "certsrv":
            fix = "See RA_CONFIG_DRIFT: the RA runs with another configuration, trust store or clock than this one."
            findings.append(_drift(run, cfg, code, str(f.evidence.get("reason", ""))))
        elif code.startswith("CA_"):
            fix = "Run 'onlineca diagnose' with the ca hop (or on the RA's machine) to see why the RA fails at the CA."
        else:
            fix = f.fix
        findings[i] = Finding(f.code, f.severity, f.hop, f.message, fix, f.evidence)
    run.report.findings = findings


def _drift(run: _Run, cfg: Config, code: str, reason: str) -> Finding:
    """The RA fails at the CA with ``code``; diagnose, with this configuration, does not."""
    said = run.ra_said
    ev: dict[str, Any] = {"ra_reason": reason}
    if said.get("ca_url") and str(said["ca_url"]).rstrip("/") != cfg.ra.ca_url.rstrip("/"):
        ev.update(ra_ca_url=said["ca_url"], ca_url=cfg.ra.ca_url)
    if said.get("template") and str(said["template"]).lower() != cfg.ra.template.lower():
        ev.update(ra_template=said["template"], template=cfg.ra.template)
    if isinstance(said.get("trust_store"), list):
        mine = sorted(pki.fingerprint(c) for c in _trust_files(cfg.ra.trust_store))
        if sorted(said["trust_store"]) != mine:
            ev.update(ra_trust_store_fingerprints=said["trust_store"], trust_store_fingerprints=mine)
    if "clock_skew_s" in said:
        ev["ra_clock_skew_s"] = said["clock_skew_s"]
    differs = [k for k in ("ra_ca_url", "ra_template", "ra_trust_store_fingerprints") if k in ev]
    what = (", ".join(k.removeprefix("ra_").replace("_fingerprints", "") for k in differs) + " differ"
            if differs else "nothing in its /readyz differs")
    return finding("RA_CONFIG_DRIFT", f"the RA reports {code}, but diagnose, with this configuration, reaches the CA "
                   f"without it ({what}): the RA runs with another configuration, trust store or clock", **ev)


def _ra_reports_ca_auth(run: _Run) -> bool:
    """The RA's /readyz said it is not ready because of CA_AUTH (its lockout, or a refused login)."""
    return any(f.code == "RA_NOT_READY" and "CA_AUTH" in f.message for f in run.report.findings)


__all__ = [
    "CERT_EXPIRING_DAYS",
    "CLOCK_SKEW_ERROR_S",
    "CLOCK_SKEW_WARNING_S",
    "capf_certificate_path",
    "check_certificate_file",
    "run_diagnose",
    "server_date",
]

