"""Notifications without Prometheus: CAPF's maintenance pass evaluates the alert
rules' conditions and sends ``[alerts]`` notifications (webhook JSON POST, mail through SMTP, a
command that reads JSON on stdin).

Conditions (the same as ``deploy/prometheus/onlineca-alerts.yml``, same thresholds):
``lsc_expiring_unscheduled`` (an installed LSC expires within ``lsc_expiry_days`` and no renewal
or other operation is scheduled), ``renewal_failing`` (``renewal_failures`` attempts in a row),
``ca_certificate_expiring`` (a certificate of the RA's CA chain within ``ca_cert_days``),
``capf_certificate_expiring`` (CAPF's TLS certificate or its own CA within ``capf_cert_days``),
``ra_not_ready`` (the RA's /readyz says no, or does not answer), ``enrollment_error_rate``
(sessions failing above ``error_rate`` since the last pass, once ``error_rate_min_sessions`` ran),
``lsc_revocation_manual`` (an LSC an administrator must revoke at the CA).  Each (condition,
subject) is notified once, again after ``resend_hours`` while it fires, and once as resolved
(``send_resolved``); the state is in the database (``store.alert_state``), so several CAPF nodes
and restarts do not repeat it.  One message per condition and pass lists its subjects.  A target
that fails is logged (``ALERT_DELIVERY``) and its notifications are tried again next pass.
Secrets (the SMTP password) are never logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import smtplib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

import aiohttp
from cryptography import x509

from onlineca import pki
from onlineca.config import AlertsConfig
from onlineca.errors import ConfigError
from onlineca.infra import files, tls
from onlineca.store import alert_state
from onlineca.store.db import Database
from onlineca.store.fleet_stats import FleetSnapshot

log = logging.getLogger("onlineca.capf.alerts")

Severity = Literal["warning", "critical"]
CONDITIONS: dict[str, tuple[Severity, str]] = {
    "lsc_expiring_unscheduled": ("warning", "LSCs expire within {days} days and no renewal is scheduled"),
    "renewal_failing": ("warning", "LSC renewals keep failing"),
    "ca_certificate_expiring": ("critical", "a CA certificate expires within {ca_days} days"),
    "capf_certificate_expiring": ("critical", "CAPF's certificate expires within {capf_days} days"),
    "ra_not_ready": ("critical", "the RA is not ready"),
    "enrollment_error_rate": ("warning", "CAPF sessions fail above the error rate"),
    "lsc_revocation_manual": ("warning", "LSCs must be revoked at the CA by an administrator"),
}
MAX_SUBJECTS_PER_MESSAGE = 200


@dataclass(frozen=True)
class Firing:
    condition: str
    subject: str
    detail: str


@dataclass
class Notification:
    """One message: a condition firing (or resolved) for these subjects."""

    condition: str
    status: Literal["firing", "resolved", "test"]
    severity: Severity
    summary: str
    subjects: list[dict[str, str]]
    node: str
    at: str
    source: str = "onlineca-capf"
    more: int = 0

    def text(self) -> str:
        lines = [f"[{self.status.upper()}] {self.summary} ({self.condition}, {self.severity}, node {self.node}, "
                 f"{self.at})", ""]
        lines += [f"- {s['subject']}: {s['detail']}" if s.get("detail") else f"- {s['subject']}" for s in self.subjects]
        if self.more:
            lines.append(f"... and {self.more} more")
        return "\n".join(lines) + "\n"


@dataclass
class Inputs:
    """What the conditions are evaluated on, gathered by the maintenance pass."""

    snapshot: FleetSnapshot
    ca_certificates: Sequence[x509.Certificate] = ()
    capf_certificates: Sequence[tuple[str, x509.Certificate]] = ()
    ra_ready: tuple[bool, str] | None = None   # (ready, reason) from the RA's /readyz; None: not asked
    sessions: int = 0                          # CAPF sessions since the last pass, and how many failed
    failed: int = 0
    node: str = ""
    ra_url: str = ""


def evaluate(cfg: AlertsConfig, inputs: Inputs, now: dt.datetime) -> list[Firing]:
    """Every (condition, subject) firing now."""
    out: list[Firing] = []
    snap = inputs.snapshot
    for name, not_after in snap.unscheduled_devices:
        days = (not_after - now).total_seconds() / 86400
        out.append(Firing("lsc_expiring_unscheduled", name,
                          f"LSC expires {not_after:%Y-%m-%d %H:%M} UTC ({days:.1f} days), no renewal scheduled"))
    for name, attempts, error in snap.failing_devices:
        out.append(Firing("renewal_failing", name, f"{attempts} failed renewal attempts; last: {error}"))
    for cert in inputs.ca_certificates:
        left = cert.not_valid_after_utc - now
        if left <= dt.timedelta(days=cfg.ca_cert_days):
            out.append(Firing("ca_certificate_expiring", pki.name_to_slash(cert.subject),
                              f"expires {cert.not_valid_after_utc:%Y-%m-%d} ({left.days} days), serial "
                              f"{cert.serial_number:x}"))
    for role, cert in inputs.capf_certificates:
        left = cert.not_valid_after_utc - now
        if left <= dt.timedelta(days=cfg.capf_cert_days):
            out.append(Firing("capf_certificate_expiring", role,
                              f"{pki.name_to_slash(cert.subject)} expires {cert.not_valid_after_utc:%Y-%m-%d} "
                              f"({left.days} days)"))
    if inputs.ra_ready is not None and not inputs.ra_ready[0]:
        out.append(Firing("ra_not_ready", inputs.ra_url, inputs.ra_ready[1]))
    if inputs.sessions >= cfg.error_rate_min_sessions and inputs.failed / inputs.sessions > cfg.error_rate:
        out.append(Firing("enrollment_error_rate", inputs.node,
                          f"{inputs.failed} of {inputs.sessions} sessions failed since the last pass "
                          f"(> {cfg.error_rate:.0%})"))
    for serial, device, issuer in snap.manual_revocations:
        out.append(Firing("lsc_revocation_manual", serial, f"{device}'s LSC of {issuer}: certutil -revoke {serial}"))
    return out


def _summary(cfg: AlertsConfig, condition: str) -> tuple[Severity, str]:
    severity, text = CONDITIONS[condition]
    return severity, text.format(days=cfg.lsc_expiry_days, ca_days=cfg.ca_cert_days, capf_days=cfg.capf_cert_days)


def enabled(cfg: AlertsConfig) -> bool:
    return bool(cfg.webhook_urls or (cfg.smtp_host and cfg.mail_to) or cfg.command)


@dataclass
class Alerter:
    """Evaluates, deduplicates and sends; one per CAPF process."""

    cfg: AlertsConfig
    db: Database
    node: str
    sent: list[Notification] = field(default_factory=list)   # the last pass's (tests read it)
    delivered: dict[str, int] = field(default_factory=dict)  # target kind -> notifications sent
    failures: dict[str, int] = field(default_factory=dict)   # target kind -> failures

    async def run(self, inputs: Inputs, now: dt.datetime | None = None) -> list[Notification]:
        """Evaluate and notify; the notifications sent (none when no target is configured)."""
        now = now or dt.datetime.now(dt.UTC)
        if not enabled(self.cfg):
            return []
        firing = {(f.condition, f.subject): f.detail for f in evaluate(self.cfg, inputs, now)}

        def claim() -> tuple[list[alert_state.Key], list[alert_state.Key]]:
            with self.db.session() as s:
                return alert_state.claim_notifications(s, firing, now=now, resend=dt.timedelta(
                    hours=self.cfg.resend_hours), conditions=set(CONDITIONS))

        notify, resolved = await asyncio.to_thread(claim)
        messages = self._messages(notify, firing, "firing", now)
        if self.cfg.send_resolved:
            messages += self._messages(resolved, {}, "resolved", now)
        failed_keys: list[alert_state.Key] = []
        for message in messages:
            if not await self.send(message):
                failed_keys += [(message.condition, s["subject"]) for s in message.subjects
                                if message.status == "firing"]
        if failed_keys:
            def unclaim() -> None:
                with self.db.session() as s:
                    alert_state.unclaim(s, failed_keys, before=now)
            await asyncio.to_thread(unclaim)
        self.sent = messages
        return messages

    def _messages(self, keys: list[alert_state.Key], details: dict[alert_state.Key, str],
                  status: Literal["firing", "resolved"], now: dt.datetime) -> list[Notification]:
        by_condition: dict[str, list[dict[str, str]]] = {}
        for condition, subject in sorted(keys):
            by_condition.setdefault(condition, []).append({"subject": subject,
                                                           "detail": details.get((condition, subject), "")})
        out = []
        for condition, subjects in by_condition.items():
            severity, summary = _summary(self.cfg, condition)
            if status == "resolved":
                summary = f"resolved: {summary}"
            out.append(Notification(condition, status, severity, summary, subjects[:MAX_SUBJECTS_PER_MESSAGE],
                                    self.node, now.isoformat(), more=max(0, len(subjects) - MAX_SUBJECTS_PER_MESSAGE)))
        return out

    # ---- targets -------------------------------------------------------------------------------

    async def send(self, message: Notification) -> bool:
        """To every configured target; True when every one took it."""
        ok = True
        for kind, target in (("webhook", self._webhooks), ("smtp", self._smtp), ("command", self._command)):
            try:
                if await target(message):
                    self.delivered[kind] = self.delivered.get(kind, 0) + 1
            except Exception as exc:  # a target down must not stop the others, nor the pass
                ok = False
                self.failures[kind] = self.failures.get(kind, 0) + 1
                log.error("ALERT_DELIVERY: the %s target did not take the %s notification: %s -- fix: %s", kind,
                          message.condition, exc, ConfigError("", code="ALERT_DELIVERY").hint)
        return ok

    async def _webhooks(self, message: Notification) -> bool:
        if not self.cfg.webhook_urls:
            return False
        anchors = files.load_trust_store(self.cfg.webhook_trust_store).certs if self.cfg.webhook_trust_store else None
        ctx = tls.client_context(list(anchors) if anchors is not None else None)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
                                         connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            for url in self.cfg.webhook_urls:
                async with session.post(url, json=asdict(message)) as resp:
                    if resp.status >= 300:
                        raise ConfigError(f"webhook {url} answered HTTP {resp.status}", code="ALERT_DELIVERY")
        return True

    async def _smtp(self, message: Notification) -> bool:
        if not (self.cfg.smtp_host and self.cfg.mail_to):
            return False
        mail = EmailMessage()
        mail["From"], mail["To"] = self.cfg.mail_from, ", ".join(self.cfg.mail_to)
        mail["Subject"] = f"[onlineca {message.status}] {message.summary}"
        mail.set_content(message.text())
        await asyncio.to_thread(self._smtp_send, mail)
        return True

    def _smtp_send(self, mail: EmailMessage) -> None:
        with smtplib.SMTP(self.cfg.smtp_host, self.cfg.smtp_port, timeout=self.cfg.timeout) as smtp:
            if self.cfg.smtp_starttls:
                smtp.starttls(context=tls.client_context(None))
            if self.cfg.smtp_user:
                smtp.login(self.cfg.smtp_user, self.cfg.smtp_password.get_secret_value())
            smtp.send_message(mail)

    async def _command(self, message: Notification) -> bool:
        if not self.cfg.command:
            return False
        proc = await asyncio.create_subprocess_exec(*self.cfg.command, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(self.cfg.timeout):
                _out, err = await proc.communicate(json.dumps(asdict(message)).encode() + b"\n")
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ConfigError(f"{self.cfg.command[0]} did not finish within {self.cfg.timeout} s",
                              code="ALERT_DELIVERY") from None
        if proc.returncode != 0:
            raise ConfigError(f"{self.cfg.command[0]} exited {proc.returncode}: {err.decode(errors='replace')[:200]}",
                              code="ALERT_DELIVERY")
        return True


def probe_notification(node: str) -> Notification:
    """What ``capf alerts test`` sends."""
    return Notification("test", "test", "warning", "onlineca test notification: the [alerts] targets work",
                        [{"subject": node, "detail": "sent by 'onlineca capf alerts test'"}], node,
                        dt.datetime.now(dt.UTC).isoformat())


def as_json(message: Notification) -> dict[str, Any]:
    return asdict(message)


__all__ = ["CONDITIONS", "Alerter", "Firing", "Inputs", "Notification", "as_json", "enabled", "evaluate",
           "probe_notification"]
