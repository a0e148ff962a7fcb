"""What ``onlineca diagnose`` reports: findings with a stable code, and the report's JSON schema.

A ``Finding`` is one problem (or one observation) on one hop: its ``code`` never changes once
published (runbooks and monitoring match on it), ``evidence`` holds the facts that prove it
(names, dates, latencies, curl's wording) and ``fix`` is one sentence saying what to do.  A
``Report`` is the ordered list of checks run and the findings they made.  This module only holds
values and their JSON form (codes, hops and fix sentences are ``errors.CODES``); it never does I/O and never holds a secret (evidence carries no
credential).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from onlineca.errors import CODES, Hop, fix_for

Severity = Literal["error", "warning", "info", "ok"]

SCHEMA_VERSION = 1
_RANK: dict[Severity, int] = {"ok": 0, "info": 1, "warning": 2, "error": 3}
_SEVERITIES: list[tuple[Severity, int]] = list(_RANK.items())

# What an EST client's failure (libEST's name) says about the hop CAPF -> RA: one table for
# diagnose's own probes and for CAPF's logs (``Enrollment rv = N``) and outcomes.
EST_FAILURE_CODES = {
    "EST_ERR_IP_GETADDR": "RA_DNS", "EST_ERR_IP_CONNECT": "RA_CONNECT", "EST_ERR_FQDN_MISMATCH": "RA_TLS_NAME_MISMATCH",
    "EST_ERR_CACERT_VERIFICATION": "RA_TLS_UNTRUSTED", "EST_ERR_SSL_CONNECT": "RA_TLS", "EST_ERR_SSL_READ": "RA_TIMEOUT",
    "EST_ERR_AUTH_FAIL": "RA_EST_AUTH", "EST_ERR_LOAD_TRUST_CERTS": "CONFIG",
    "EST_ERR_CA_ENROLL_RETRY": "CAPF_CA_COMM_FAILURE", "EST_ERR_CA_ENROLL_FAIL": "CAPF_CA_REJECTED",
}


def est_failure_code(est_code: str, message: str = "") -> str:
    """The finding code of an EST failure; a verification failure is told apart by its wording."""
    code = EST_FAILURE_CODES.get(est_code, "RA_EST_ERROR")
    if code == "RA_TLS_UNTRUSTED":
        low = message.lower()
        if "not yet valid" in low:
            return "RA_TLS_NOT_YET_VALID"
        if "expired" in low:
            return "RA_TLS_EXPIRED"
        if "self-signed certificate" in low and "in certificate chain" not in low:
            return "RA_TLS_SELF_SIGNED"
    return code


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
    known = CODES.get(code)
    return Finding(code=code, severity=severity, hop=hop or (known.hop if known else "local"), message=message,
                   fix=fix or fix_for(code), evidence={k: v for k, v in evidence.items() if v is not None})


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
        best = max(ranks, default=0)
        return next(k for k, v in _SEVERITIES if v == best)

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


__all__ = ["EST_FAILURE_CODES", "SCHEMA_VERSION", "CheckResult", "Finding", "Hop", "Report", "Severity",
           "est_failure_code", "finding"]
