"""The hop checks of ``onlineca diagnose``: CAPF's own certificate, then the RA as CAPF reaches it,
then the CA as the RA reaches it, each turned into coded findings.

The CA hop reuses the certsrv client (its CA_* failure codes, curl wording and peer-certificate
probe), so diagnose sees exactly what the RA would; the RA hop reuses the EST client.  Checks are
read-only: they log in, list templates and fetch chains, but never enroll (a probe POST without a
CSR shows whether the RA accepts CAPF's credentials).  Every network call has the configured
timeout; credentials are sent only after the peer's certificate verified, and never reported.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from onlineca import pki
from onlineca.certsrv.client import CertsrvClient
from onlineca.config import Config, DataDir
from onlineca.diagnose.findings import CheckResult, Finding, Hop, Report, finding
from onlineca.errors import CAChainError, CertsrvFailure, ChainError, ConfigError, OnlineCAError, ParseError
from onlineca.infra import files, tls
from onlineca.proto.certsrv import client as p
from onlineca.proto.libest import rv_text

T = TypeVar("T")

CLOCK_SKEW_WARNING_S = 60
CLOCK_SKEW_ERROR_S = 300  # Kerberos' default tolerance: NTLM/Kerberos logons start failing here
SLOW_FRACTION = 0.5       # a CA answering in more than half the timeout is one bad day from CA_TIMEOUT
CERT_EXPIRING_DAYS = 30


class _Run:
    """Collects check results and findings in order."""

    def __init__(self, now: dt.datetime) -> None:
        self.report = Report()
        self.now = now

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
                       f"is at least {_skew_words(skew)} behind, or the certificate was issued with a future date")
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
        ev.update(chain_error=d.get("chain_error"), chain_root=d.get("chain_root"))
        if d.get("chain_root"):
            fix = (f"If {d['chain_root']} is your CA's root, add it to the RA's trust store ([ra] trust_store); "
                   "otherwise ca_url points at the wrong CA.")
    elif code in ("CA_DNS", "CA_CONNECT"):
        ev.update(host=d.get("host"), port=d.get("port"))
    return [finding(code, message, fix=fix, **ev)]


def check_certificate_file(path: Path, now: dt.datetime, *, what: str, hop: Hop, code_expiring: str,
                           code_expired: str, code_unreadable: str, days: int = CERT_EXPIRING_DAYS) -> list[Finding]:
    """Findings about a certificate file's validity: expired, expiring within ``days``, unreadable."""
    try:
        cert = files.load_cert_file(path)[0]
    except (OSError, ParseError, IndexError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return [finding(code_unreadable, f"cannot read {what} {path}: {why}", hop=hop, path=str(path))]
    left = cert.not_valid_after_utc - now
    ev = dict(path=str(path), subject=pki.name_to_slash(cert.subject),
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


def _check_capf(run: _Run, cfg: Config, capf_cert: Path | None) -> None:
    path = capf_certificate_path(cfg, capf_cert)
    if path is None:
        run.skip("capf.certificate", "capf", "no CAPF certificate configured or found in the data dir")
        return
    found = check_certificate_file(path, run.now, what="CAPF's certificate", hop="capf",
                                   code_expiring="CAPF_CERT_EXPIRING", code_expired="CAPF_CERT_EXPIRED",
                                   code_unreadable="CAPF_CERT_UNREADABLE")
    for f in found:
        run.add(f)
    status = "failed" if any(f.severity == "error" for f in found) else "ok"
    run.report.checks.append(CheckResult("capf.certificate", "capf", status, 0, found[0].code if found else str(path)))


# --- RA ------------------------------------------------------------------------------------


def _ra_findings(exc: Exception, cfg: Config, now: dt.datetime) -> list[Finding]:
    from onlineca.errors import ESTCodedError
    if isinstance(exc, ESTCodedError):
        code = {"EST_ERR_IP_GETADDR": "RA_DNS", "EST_ERR_IP_CONNECT": "RA_CONNECT",
                "EST_ERR_FQDN_MISMATCH": "RA_TLS_NAME_MISMATCH", "EST_ERR_CACERT_VERIFICATION": "RA_TLS_UNTRUSTED",
                "EST_ERR_SSL_CONNECT": "RA_TLS", "EST_ERR_SSL_READ": "RA_TIMEOUT",
                "EST_ERR_AUTH_FAIL": "RA_EST_AUTH", "EST_ERR_LOAD_TRUST_CERTS": "CONFIG"}.get(exc.code, "RA_EST_ERROR")
        if code == "RA_TLS_UNTRUSTED":
            low = exc.message.lower()
            if "not yet valid" in low:
                code = "RA_TLS_NOT_YET_VALID"
            elif "expired" in low:
                code = "RA_TLS_EXPIRED"
            elif "self-signed certificate" in low and "in certificate chain" not in low:
                code = "RA_TLS_SELF_SIGNED"
        return [finding(code, exc.message, hop="ra", est_error=rv_text(exc.code),
                        http_status=exc.http_status, url=cfg.capf.ra_url)]
    if isinstance(exc, ConfigError):
        return [finding("CONFIG", exc.message, hop="ra")]
    return [finding("RA_CONNECT", f"{type(exc).__name__}: {exc}", hop="ra", url=cfg.capf.ra_url)]


def _ra_origin(ra_url: str) -> str:
    parts = urlsplit(ra_url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


async def _get_status(session: aiohttp.ClientSession, url: str, timeout: float) -> tuple[int, str]:
    async with asyncio.timeout(timeout):
        async with session.get(url, allow_redirects=False) as resp:
            body = await resp.content.read(4096)
            return resp.status, body.decode("utf-8", "replace").strip()


async def _check_ra(run: _Run, cfg: Config, timeout: float) -> bool:
    """/readyz (reachability, TLS, start-up checks), cacerts (the chain), then CAPF's credentials;
    False when the RA cannot be reached."""
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
    readyz = _ra_origin(c.ra_url) + "/readyz"

    async def get_readyz() -> tuple[int, str]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), trust_env=False) as session:
            try:
                return await _get_status(session, readyz, timeout)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise map_transport_error(exc, readyz) from None

    got, ok, _ = await run.check("ra.readyz", "ra", get_readyz(), lambda e: _ra_findings(e, cfg, run.now))
    if not ok or got is None:
        return False
    if got[0] != 200:
        last = run.report.checks[-1]
        run.report.checks[-1] = CheckResult("ra.readyz", "ra", "failed", last.elapsed_ms, f"HTTP {got[0]}")
        reason = got[1][:500]
        try:
            reason = str(json.loads(got[1]).get("reason", reason))
        except (ValueError, AttributeError):
            pass
        run.add(finding("RA_NOT_READY", f"the RA is not ready (HTTP {got[0]} on /readyz): {reason}", hop="ra",
                        status=got[0], reason=reason))
        return True  # its CA_* findings below say why
    async with est:
        chain, ok, _ = await run.check("ra.cacerts", "ra", est.cacerts(), lambda e: _ra_findings(e, cfg, run.now))
        if ok:
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
        # 400 (no CSR) proves they were accepted, with nothing enrolled.
        probe = est.request("simpleenroll", "POST", body=b"", headers={"Content-Type": "application/pkcs10"})
        await run.check("ra.est_auth", "ra", _auth_probe(probe), lambda e: _ra_findings(e, cfg, run.now))
    return True


async def _auth_probe(call: Awaitable[object]) -> None:
    from onlineca.errors import ESTCodedError
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
    ev = dict(ca_date=when.strftime("%Y-%m-%d %H:%M:%S UTC"),
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
        raise CAChainError(f"the CA chain does not validate: {exc.message}", hint=exc.hint or None,
                             details={"url": p.certnew_p7b_url(base), "chain_error": exc.code,
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
    if "capf" in hops:
        _check_capf(run, cfg, capf_cert)
    if "ra" in hops:
        timeout = max(cfg.ra.connect_timeout, 1.0) + cfg.ra.login_timeout
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
    return run.report


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

