"""CAPF's notifications without Prometheus (``capf.alerts``) against real receivers on 127.0.0.1: a
webhook (aiohttp), an SMTP server (aiosmtpd) and a command (a script that appends its stdin to a
file).  One notification per condition and subject until it clears, again after ``resend_hours``,
a resolved one when it clears, none from a second CAPF node for what the first already sent, and
a target that fails gets the notification again on the next pass.  On SQLite and PostgreSQL (the
deduplication state is in the database)."""

from __future__ import annotations

import datetime as dt
import email.policy
import json
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from tests.conftest import free_port

from onlineca.capf.alerts import Alerter, Inputs, evaluate
from onlineca.config import AlertsConfig
from onlineca.store import Database
from onlineca.store.fleet_stats import FleetSnapshot

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

NOW = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC)


@dataclass
class Receivers:
    webhook_url: str
    smtp_port: int
    command_file: Path
    posts: list[dict[str, Any]] = field(default_factory=list)
    mails: list[Any] = field(default_factory=list)
    fail_webhook: int = 0  # answer 500 to this many posts

    def commands(self) -> list[dict[str, Any]]:
        if not self.command_file.exists():
            return []
        return [json.loads(line) for line in self.command_file.read_text().splitlines() if line.strip()]


class _Mailbox:
    def __init__(self, receivers: Receivers) -> None:
        self.receivers = receivers

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.receivers.mails.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=email.policy.default)))
        return "250 OK"


@pytest.fixture
async def receivers(tmp_path: Path) -> AsyncIterator[Receivers]:
    script = tmp_path / "notify.sh"
    script.write_text('#!/bin/sh\ncat >> "$1"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    holder: dict[str, Receivers] = {}

    async def hook(request: web.Request) -> web.Response:
        r = holder["r"]
        if r.fail_webhook > 0:
            r.fail_webhook -= 1
            return web.Response(status=500)
        r.posts.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    smtp_port = free_port()
    r = holder["r"] = Receivers(f"http://127.0.0.1:{port}/hook", smtp_port, tmp_path / "notifications.jsonl")
    controller = aiosmtpd_controller.Controller(_Mailbox(r), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    yield r
    controller.stop()
    await runner.cleanup()


def _cfg(r: Receivers, script: Path) -> AlertsConfig:
    return AlertsConfig(webhook_urls=[r.webhook_url], smtp_host="127.0.0.1", smtp_port=r.smtp_port,
                        mail_to=["pki-ops@example.test"], mail_from="capf@example.test",
                        command=[str(script), str(r.command_file)], resend_hours=24)


def _inputs(*, unscheduled: bool = True) -> Inputs:
    snap = FleetSnapshot(at=NOW, unscheduled_devices=[("SEP0000000B0001", NOW + dt.timedelta(days=3))]
                         if unscheduled else [], failing_devices=[("SEP0000000B0002", 3, "CA Communication Failure")])
    return Inputs(snap, node="capf-1", sessions=10, failed=0)


@pytest.fixture
def db(db_url: str) -> Any:
    database = Database(db_url)
    database.migrate()
    yield database
    database.dispose()


async def test_one_notification_per_condition_and_subject_until_it_clears(receivers: Receivers, db: Database,
                                                                           tmp_path: Path) -> None:
    cfg = _cfg(receivers, tmp_path / "notify.sh")
    alerter = Alerter(cfg, db, "capf-1")
    sent = await alerter.run(_inputs(), NOW)
    assert sorted((m.condition, m.status) for m in sent) == [("lsc_expiring_unscheduled", "firing"),
                                                             ("renewal_failing", "firing")]
    # Each target got both: JSON to the webhook and the command, a mail each.
    assert sorted(p["condition"] for p in receivers.posts) == ["lsc_expiring_unscheduled", "renewal_failing"]
    assert [c["subjects"][0]["subject"] for c in receivers.commands()] == ["SEP0000000B0001", "SEP0000000B0002"]
    assert len(receivers.mails) == 2
    rcpts, mail = receivers.mails[0]
    assert rcpts == ["pki-ops@example.test"] and str(mail["Subject"]).strip().startswith("[onlineca firing]")
    assert "SEP0000000B0001" in mail.get_content()

    # The same conditions a minute later, and from another CAPF node: nothing new.
    assert await alerter.run(_inputs(), NOW + dt.timedelta(minutes=1)) == []
    assert await Alerter(cfg, db, "capf-2").run(_inputs(), NOW + dt.timedelta(minutes=2)) == []
    assert len(receivers.posts) == 2

    # Still firing after resend_hours: sent again.
    again = await alerter.run(_inputs(), NOW + dt.timedelta(hours=25))
    assert len(again) == 2 and len(receivers.posts) == 4

    # The LSC renewed: its condition clears (one resolved notification); the other keeps quiet.
    cleared = await alerter.run(_inputs(unscheduled=False), NOW + dt.timedelta(hours=26))
    assert [(m.condition, m.status) for m in cleared] == [("lsc_expiring_unscheduled", "resolved")]
    assert receivers.posts[-1]["status"] == "resolved"
    # ... and when it comes back it is news again.
    back = await alerter.run(_inputs(), NOW + dt.timedelta(hours=27))
    assert [(m.condition, m.status) for m in back] == [("lsc_expiring_unscheduled", "firing")]


async def test_a_target_that_fails_gets_the_notification_on_the_next_pass(receivers: Receivers, db: Database,
                                                                         tmp_path: Path) -> None:
    cfg = _cfg(receivers, tmp_path / "notify.sh").model_copy(update={"smtp_host": "", "command": []})
    alerter = Alerter(cfg, db, "capf-1")
    receivers.fail_webhook = 2
    await alerter.run(_inputs(), NOW)
    assert receivers.posts == [] and alerter.failures == {"webhook": 2}
    await alerter.run(_inputs(), NOW + dt.timedelta(minutes=1))
    assert sorted(p["condition"] for p in receivers.posts) == ["lsc_expiring_unscheduled", "renewal_failing"]


def test_the_conditions_and_their_thresholds() -> None:
    from cryptography import x509  # noqa: F401  (the certificates below)

    from onlineca import pki
    key = pki.generate_key("ec", 256)
    soon = pki.build_certificate(subject="CN=Issuing CA", public_key=key.public_key(), issuer_key=key, is_ca=True,
                                 not_before=NOW - dt.timedelta(days=300), validity_days=330)
    capf = pki.build_certificate(subject="CN=CAPF-host", public_key=key.public_key(), issuer_key=key,
                                 not_before=NOW - dt.timedelta(days=300), validity_days=310)
    later = pki.build_certificate(subject="CN=Root CA", public_key=key.public_key(), issuer_key=key, is_ca=True,
                                  not_before=NOW - dt.timedelta(days=300), validity_days=3000)
    snap = FleetSnapshot(at=NOW, manual_revocations=[("1a2b", "SEP0000000B0003", "CN=AD CS Issuing")])
    fired = evaluate(AlertsConfig(), Inputs(snap, ca_certificates=[soon, later], capf_certificates=[("capf_tls", capf), ("capf_ca", soon)],
                                            ra_ready=(False, "CA_AUTH: login refused"), sessions=40, failed=12,
                                            node="capf-1", ra_url="https://ra:8084/.well-known/est"), NOW)
    assert {(f.condition, f.subject) for f in fired} == {
        ("ca_certificate_expiring", "/CN=Issuing CA"), ("capf_certificate_expiring", "capf_tls"),
        ("ra_not_ready", "https://ra:8084/.well-known/est"), ("enrollment_error_rate", "capf-1"),
        ("lsc_revocation_manual", "1a2b")}
    quiet = evaluate(AlertsConfig(), Inputs(FleetSnapshot(at=NOW), sessions=5, failed=5, ra_ready=(True, "ready")), NOW)
    assert quiet == []  # 5 failed sessions are below error_rate_min_sessions
