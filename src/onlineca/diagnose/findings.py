"""What ``onlineca diagnose`` reports: findings with a stable code, and the report's JSON schema.

A ``Finding`` is one problem (or one observation) on one hop: its ``code`` never changes once
published (runbooks and monitoring match on it), ``evidence`` holds the facts that prove it
(names, dates, latencies, curl's wording) and ``fix`` is one sentence saying what to do.  A
``Report`` is the ordered list of checks run and the findings they made.  This module only holds
values and their JSON form; it never does I/O and never holds a secret (evidence carries no
credential).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info", "ok"]
Hop = Literal["capf", "ra", "ca", "local"]

SCHEMA_VERSION = 1
_RANK = {"ok": 0, "info": 1, "warning": 2, "error": 3}

# Every code diagnose or logs analyze may report: code -> (hop, what to do).  The fix here is the
# default; a check may word a sharper one from what it saw (e.g. the nearest template name).
CODES: dict[str, tuple[Hop, str]] = {
    "CA_DNS": ("ca", "Check the CA host name in ca_url (a typo?) and this machine's DNS servers."),
    "CA_CONNECT": ("ca", "Start the CA web server, check its port in ca_url, and open the firewall between RA and CA."),
    "CA_TLS": ("ca", "Check the CA web server's TLS configuration (TLS 1.2 or later, a certificate and key)."),
    "CA_TLS_UNTRUSTED": ("ca", "Add the named issuer (and its root) to the RA's trust store."),
    "CA_TLS_SELF_SIGNED": ("ca", "Give the CA web server a certificate issued by a CA; a self-signed web "
                                 "certificate is not supported even in the trust store."),
    "CA_TLS_NAME_MISMATCH": ("ca", "Put a name the certificate holds in ca_url, or reissue the web certificate "
                                   "with the URL's host in its subjectAltName."),
    "CA_TLS_NOT_YET_VALID": ("ca", "Fix the clock (NTP) of the RA and of the CA; the certificate becomes valid later."),
    "CA_TLS_EXPIRED": ("ca", "Renew the CA web server's certificate (or fix this machine's clock if it runs ahead)."),
    "CA_AUTH": ("ca", "Correct ca_user / ca_password (or the client certificate) of [ra], as the CA knows the account."),
    "CA_TEMPLATE": ("ca", "Set [ra] template to a template the CA offers to this user (its name, not its display name)."),
    "CA_CHAIN": ("ca", "Make the CA serve its chain on certnew.p7b and put its root in the RA's trust store."),
    "CA_TIMEOUT": ("ca", "Find why the CA is slow (load, network, AD), or raise [ra] login_timeout / enroll_timeout."),
    "CA_HTTP": ("ca", "Read the CA's IIS log for that request: the web server answered with an HTTP error."),
    "CA_PROTOCOL": ("ca", "Point ca_url at an AD CS /certsrv web enrollment service."),
    "CA_DENIED": ("ca", "Read the CA's disposition message and the template's policy."),
    "CLOCK_SKEW": ("local", "Synchronise this machine and the CA with NTP; certificate dates fail when clocks disagree."),
    "RA_DNS": ("ra", "Check the RA host name in [capf] ra_url and this machine's DNS servers."),
    "RA_CONNECT": ("ra", "Start the RA ('onlineca ra serve'), check its port in [capf] ra_url, open the firewall."),
    "RA_TLS": ("ra", "Check the RA's TLS certificate and key (TLS 1.2 or later)."),
    "RA_TLS_UNTRUSTED": ("ra", "Put the RA certificate's issuer in [capf] ra_trust_store."),
    "RA_TLS_SELF_SIGNED": ("ra", "Give the RA a certificate issued by a CA in [capf] ra_trust_store."),
    "RA_TLS_NAME_MISMATCH": ("ra", "Use a name the RA certificate holds in [capf] ra_url, or reissue it."),
    "RA_TLS_NOT_YET_VALID": ("ra", "Fix the clocks (NTP) of CAPF and RA."),
    "RA_TLS_EXPIRED": ("ra", "Renew the RA's TLS certificate."),
    "RA_TIMEOUT": ("ra", "The RA did not answer in time: read its error.log; check its load and the CA behind it."),
    "RA_EST_AUTH": ("ra", "Correct [capf] ra_user / ra_password to what the RA accepts (with the passthrough "
                          "connector, the CA account)."),
    "RA_NOT_READY": ("ra", "Read the RA's error.log: its start-up checks against the CA failed (see the CA_* findings)."),
    "RA_CACERTS": ("ra", "The RA serves no valid CA chain on /cacerts: read its error.log for the CA chain retrieval."),
    "RA_NO_ANSWER": ("ra", "The error is on the RA side: read the RA's error.log at the same time for the cause."),
    "RA_EST_ERROR": ("ra", "Read the RA's error.log at the same time for the cause."),
    "RA_EST_HTTP_WRITE": ("ra", "Known defect CSCvf83629 of the original RA: the CA answered too late; check the CA's latency."),
    "CAPF_CERT_EXPIRING": ("capf", "Renew CAPF's certificate before it expires (devices stop trusting CAPF)."),
    "CAPF_CERT_EXPIRED": ("capf", "Renew CAPF's certificate now: devices cannot open a session with it."),
    "CAPF_CERT_UNREADABLE": ("capf", "Point the CAPF certificate path at a PEM or DER certificate file."),
    "CONFIG": ("local", "Fix the named key in the configuration file and run 'onlineca config check FILE'."),
    "UNKNOWN_ERROR": ("local", "An error line no signature knows: read it and the lines around it."),
}


@dataclass(frozen=True)
class Finding:
    """One finding.  ``evidence`` values are JSON scalars or lists of them."""

    code: str
    severity: Severity
    hop: Hop
    message: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def finding(code: str, message: str, *, severity: Severity = "error", fix: str | None = None,
            hop: Hop | None = None, **evidence: Any) -> Finding:
    """A Finding with the code's default hop and fix unless given; ``None`` evidence is dropped."""
    default_hop, default_fix = CODES.get(code, ("local", ""))
    return Finding(code=code, severity=severity, hop=hop or default_hop, message=message,
                   fix=fix or default_fix, evidence={k: v for k, v in evidence.items() if v is not None})


@dataclass(frozen=True)
class CheckResult:
    """One check that ran: its name (``ca.login``), hop, outcome and how long it took."""

    name: str
    hop: Hop
    status: Literal["ok", "failed", "skipped"]
    elapsed_ms: int = 0
    detail: str = ""


@dataclass
class Report:
    checks: list[CheckResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    generated: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @property
    def worst(self) -> Severity:
        ranks = [_RANK[f.severity] for f in self.findings]
        return next(k for k, v in _RANK.items() if v == max(ranks, default=0))

    @property
    def ok(self) -> bool:
        return self.worst != "error"

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": "onlineca.diagnose/1",
            "schema_version": SCHEMA_VERSION,
            "generated": self.generated,
            "ok": self.ok,
            "worst": self.worst,
            "checks": [asdict(c) for c in self.checks],
            "findings": [f.as_dict() for f in self.findings],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=False, default=str)

    def to_text(self) -> str:
        lines = []
        for c in self.checks:
            mark = {"ok": "ok  ", "failed": "FAIL", "skipped": "skip"}[c.status]
            lines.append(f"[{mark}] {c.hop:<4} {c.name:<22} {c.elapsed_ms:>6} ms  {c.detail}".rstrip())
        if self.findings:
            lines.append("")
        for f in self.findings:
            lines.append(f"{f.severity.upper():<7} {f.code} ({f.hop}): {f.message}")
            for key, value in f.evidence.items():
                lines.append(f"          {key}: {value}")
            lines.append(f"          fix: {f.fix}")
        verdict = "no problem found" if not self.findings else (
            f"{sum(f.severity == 'error' for f in self.findings)} error(s), "
            f"{sum(f.severity == 'warning' for f in self.findings)} warning(s)")
        lines.append("")
        lines.append(f"diagnose: {verdict}")
        return "\n".join(lines)


__all__ = ["CODES", "SCHEMA_VERSION", "CheckResult", "Finding", "Hop", "Report", "Severity", "finding"]
