"""The chain's health: ``diagnose`` run on demand (its last report kept for the dashboard), the
online-CA connection test with settings not yet saved, and each tier's own certificates.

The connection test is the RA's start-up checks as ``diagnose`` runs them on the CA hop (log in,
fetch and validate the CA chain against the RA's trust store, find the template; plus the
clocks), with the [ra] settings the administrator typed, so a typo shows before it is saved.
A password left empty keeps the configured one.  Nothing here enrolls, and no credential is
returned or logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from onlineca import pki
from onlineca.config import Config
from onlineca.diagnose.checks import run_diagnose
from onlineca.errors import ConfigError, ParseError
from onlineca.infra import files
from onlineca.service.core import Actor, Services

ONLINE_CA_FIELDS = ("connector", "ca_url", "ca_auth", "ca_user", "ca_password", "template", "trust_store",
                    "connect_timeout", "login_timeout", "enroll_timeout")


@dataclass
class HealthState:
    """The last diagnose report of this process (the dashboard shows it with its age)."""

    report: dict[str, Any] | None = None
    ran_at: dt.datetime | None = None
    ran_by: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    findings = report.get("findings", [])
    return {**report, "errors": sum(f["severity"] == "error" for f in findings),
            "warnings": sum(f["severity"] == "warning" for f in findings)}


async def diagnose(svc: Services, actor: Actor, state: HealthState | None = None,
                   hops: set[str] | None = None, config: Config | None = None) -> dict[str, Any]:
    """Run diagnose (every hop, or ``hops``) and keep the report in ``state``."""
    actor.require("diagnose.run", "run diagnose")
    report = (await run_diagnose(config or svc.config, hops=hops)).as_dict()
    out = _summary(report)
    if state is not None and hops is None:
        state.report, state.ran_at, state.ran_by = out, dt.datetime.now(dt.UTC), actor.name
    return out


def last_diagnose(actor: Actor, state: HealthState) -> dict[str, Any] | None:
    actor.require("read", "read diagnose reports")
    if state.report is None:
        return None
    return {**state.report, "ran_at": state.ran_at.isoformat() if state.ran_at else None, "ran_by": state.ran_by}


def online_ca_settings(svc: Services, actor: Actor, config: Config | None = None) -> dict[str, Any]:
    """The [ra] settings of the online CA, the password only as whether one is set."""
    actor.require("read", "read the online-CA settings")
    ra = (config or svc.config).ra
    out: dict[str, Any] = {k: getattr(ra, k) for k in ONLINE_CA_FIELDS if k != "ca_password"}
    out["ca_password_set"] = bool(ra.ca_password.get_secret_value())
    return out


def candidate_config(config: Config, changes: dict[str, Any]) -> Config:
    """``config`` with the [ra] changes applied and validated (an empty password keeps the old one)."""
    unknown = set(changes) - set(ONLINE_CA_FIELDS)
    if unknown:
        raise ConfigError(f"ra.{sorted(unknown)[0]}: not an online-CA setting")
    values = {k: v for k, v in changes.items() if not (k == "ca_password" and not v)}
    try:
        ra = type(config.ra).model_validate({**config.ra.model_dump(), **values})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"ra.{where}: {first['msg']}") from None
    return config.model_copy(update={"ra": ra})


async def test_online_ca(svc: Services, actor: Actor, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The RA's start-up checks against the CA with the given (unsaved) [ra] settings: each check
    with its outcome, each finding with its fix."""
    actor.require("diagnose.run", "test the CA connection")
    cfg = candidate_config(svc.config, changes or {})
    report = (await run_diagnose(cfg, hops={"ca"})).as_dict()
    return _summary(report)


def _cert_row(tier: str, what: str, path: Path | None, now: dt.datetime) -> dict[str, Any]:
    row: dict[str, Any] = {"tier": tier, "certificate": what, "path": str(path) if path else None, "subject": None,
                           "not_after": None, "days_left": None, "status": "missing"}
    if path is None or not path.exists():
        return row
    try:
        cert = files.load_cert_file(path)[0]
    except (OSError, ParseError, IndexError):
        row["status"] = "unreadable"
        return row
    left = cert.not_valid_after_utc - now
    row.update(subject=pki.name_to_slash(cert.subject), not_after=cert.not_valid_after_utc.isoformat(),
               days_left=left.days,
               status="expired" if left.total_seconds() <= 0 else "expiring" if left.days < 30 else "ok")
    return row


def tier_certificates(svc: Services, actor: Actor, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Each tier's own certificates from this machine's files: the CA's root, issuing CA and web
    certificate, the RA's TLS certificate, CAPF's TLS certificate, the console's."""
    actor.require("read", "read certificates")
    now = now or dt.datetime.now(dt.UTC)
    cfg = svc.config
    ca = cfg.paths.ca

    def opt(value: str) -> Path | None:
        return Path(value) if value else None

    return [
        _cert_row("CA", "root CA", ca.root_cert, now),
        _cert_row("CA", "issuing CA", ca.issuing_cert, now),
        _cert_row("CA", "web server", opt(cfg.ca.tls_cert) or ca.web_cert, now),
        _cert_row("RA", "TLS server", opt(cfg.ra.tls_cert) or (opt(cfg.ra.local_cert) if cfg.ra.connector == "local"
                                                              else None), now),
        _cert_row("CAPF", "TLS server", opt(cfg.capf.tls_cert) or cfg.paths.capf.capf_cert, now),
        _cert_row("Console", "TLS server", opt(cfg.admin.tls_cert) or cfg.paths.admin / "admin.pem", now),
    ]


__all__ = ["ONLINE_CA_FIELDS", "HealthState", "candidate_config", "diagnose", "last_diagnose", "online_ca_settings",
           "test_online_ca", "tier_certificates"]
