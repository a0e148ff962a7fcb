"""CAPF's operations duties, wired into ``capf.service`` by a few lines: metrics and
their HTTP server, the revocation pass, and alert notifications.

``CAPFOps`` is made by ``start_capf``: it times each session, observes each EST enrollment, starts
the metrics server when ``[capf] metrics_port`` is set, and after each renewal scheduler run
(``maintenance``) revokes queued LSCs (``capf.revocation``), keeps CAPF's own CRL fresh, takes a
fleet snapshot (``store.fleet_stats``), asks the RA's ``/readyz`` and sends ``[alerts]``
notifications (``capf.alerts``).  Nothing here decides about devices; a failure of any duty is
logged and the others go on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509

from onlineca.capf.alerts import Alerter, Inputs
from onlineca.capf.metrics import CAPFMetrics, MetricsServer, ScrapeSources, start_metrics_server
from onlineca.capf.revocation import CAPF_CRL_NAME, LSCRevoker
from onlineca.config import Config, DataDir
from onlineca.infra import files, tls
from onlineca.store.db import Database
from onlineca.store.fleet_stats import FleetSnapshot, fleet_snapshot

log = logging.getLogger("onlineca.capf.ops")


class CAPFOps:
    def __init__(self, config: Config, data_dir: Path, db: Database, node_id: str) -> None:
        self.config, self.db, self.node_id = config, db, node_id
        self.paths = DataDir(Path(data_dir)).capf
        self.metrics = CAPFMetrics()
        self.revoker = LSCRevoker(config.capf, db, node_id, capf_ca_dir=self.paths.ca_dir)
        self.alerter = Alerter(config.alerts, db, node_id)
        self.snapshot: FleetSnapshot | None = None
        self.ra_ready: tuple[bool, str] | None = None
        self.server: MetricsServer | None = None
        self.last_maintenance: dt.datetime | None = None
        self._running: Any = None
        self._stats_seen = (0, 0)
        self._snapshot_lock = asyncio.Lock()

    # ---- wiring --------------------------------------------------------------------------------

    def attach(self, running: Any) -> None:
        """Read the running CAPF (its session stats, certificates, enroller) at scrape time."""
        self._running = running
        running.enroller.observe = self.metrics.observe_enrollment
        self.metrics.read_with(ScrapeSources(
            stats=lambda: running.capf.stats, snapshot=lambda: self.snapshot, certificates=self.certificates,
            ra_ready=lambda: self.ra_ready[0] if self.ra_ready is not None else None))

    async def start_server(self, host: str, port: int) -> MetricsServer:
        self.server = await start_metrics_server(
            self.metrics, host, port, refresh=lambda: self.refresh_snapshot(max_age=dt.timedelta(seconds=30)),
            health=self.health, capf_crl=self.paths.ca_dir / CAPF_CRL_NAME)
        return self.server

    def health(self) -> dict[str, Any]:
        running = self._running
        return {"status": "alive", "node": self.node_id,
                "listening": f"{running.host}:{running.port}" if running is not None else None,
                "last_maintenance": self.last_maintenance.isoformat() if self.last_maintenance else None}

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None
        await self.revoker.close()

    # ---- what is read ----------------------------------------------------------------------------

    def certificates(self) -> list[tuple[str, x509.Certificate]]:
        """CAPF's TLS certificate, its own CA, and the RA's CA chain as CAPF last fetched it."""
        out: list[tuple[str, x509.Certificate]] = []
        cfg = self.config.capf
        for role, path in (("capf_tls", Path(cfg.tls_cert) if cfg.tls_cert else self.paths.capf_cert),
                           ("capf_ca", self.paths.ca_cert)):
            try:
                out.append((role, files.load_cert_file(path)[0]))
            except Exception:  # not there (yet): nothing to say about it
                continue
        trust = getattr(self._running.enroller, "_lsc_trust", None) if self._running is not None else None
        for cert in (trust.certs if trust is not None else ()):
            out.append(("ca_chain", cert))
        return out

    async def refresh_snapshot(self, max_age: dt.timedelta | None = None, now: dt.datetime | None = None) -> None:
        async with self._snapshot_lock:
            current = dt.datetime.now(dt.UTC)
            if max_age is not None and self.snapshot is not None and current - self.snapshot.at < max_age:
                return
            alerts = self.config.alerts

            def take() -> FleetSnapshot:
                with self.db.session() as s:
                    return fleet_snapshot(s, now, lsc_expiry_days=alerts.lsc_expiry_days,
                                          renewal_failures=alerts.renewal_failures)
            self.snapshot = await asyncio.to_thread(take)

    async def probe_ra(self) -> tuple[bool, str]:
        """The RA's /readyz: (ready, reason)."""
        cfg = self.config.capf
        url = urlsplit(cfg.ra_url)
        readyz = f"{url.scheme}://{url.netloc}/readyz"
        try:
            anchors = files.load_trust_store(cfg.ra_trust_store).certs if cfg.ra_trust_store else None
            ctx = tls.client_context(list(anchors) if anchors is not None else None)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=min(10.0, cfg.enroll_timeout)),
                                             connector=aiohttp.TCPConnector(ssl=ctx)) as session, \
                    session.get(readyz) as resp:
                body = await resp.json(content_type=None)
                ready = resp.status == 200 and bool(body.get("ready"))
                return ready, str(body.get("reason", "")) or f"HTTP {resp.status}"
        except Exception as exc:  # unreachable, TLS, not JSON: not ready, and why
            return False, f"{readyz}: {type(exc).__name__}: {exc}"

    # ---- the maintenance pass --------------------------------------------------------------------

    def scheduler_ran(self, scheduled: int, timed_out: int) -> None:
        self.metrics.scheduler_runs.inc()
        self.metrics.scheduler_last.set_to_current_time()
        self.metrics.scheduled.inc(scheduled)
        self.metrics.timed_out.inc(timed_out)

    async def maintenance(self, now: dt.datetime | None = None) -> None:
        """After the scheduler: revocations, CAPF's CRL, the snapshot, the RA's readiness, alerts."""
        try:
            result = await self.revoker.run_once(now)
            for outcome in ("revoked", "manual", "failed"):
                n = len(getattr(result, outcome))
                if n:
                    self.metrics.revocations.labels(outcome=outcome).inc(n)
            if self.revoker.capf_crl_due(now):
                await asyncio.to_thread(self.revoker.publish_capf_crl, now)
        except Exception as exc:  # the database or the CA: the next pass
            log.warning("revocation pass failed: %s", exc)
        try:
            await self.refresh_snapshot(now=now)
        except Exception as exc:
            log.warning("fleet snapshot failed: %s", exc)
        self.ra_ready = await self.probe_ra()
        if self.snapshot is not None and self._running is not None:
            stats = self._running.capf.stats
            sessions, failed = stats.sessions - self._stats_seen[0], stats.failed - self._stats_seen[1]
            self._stats_seen = (stats.sessions, stats.failed)
            trust = getattr(self._running.enroller, "_lsc_trust", None)
            inputs = Inputs(self.snapshot, ca_certificates=list(trust.certs) if trust is not None else [],
                            capf_certificates=[c for c in self.certificates() if c[0] != "ca_chain"],
                            ra_ready=self.ra_ready, sessions=sessions, failed=failed, node=self.node_id,
                            ra_url=self.config.capf.ra_url)
            try:
                for message in await self.alerter.run(inputs, now):
                    self.metrics.notifications.labels(condition=message.condition, status=message.status).inc()
            except Exception as exc:
                log.warning("alert evaluation failed: %s", exc)
        self.last_maintenance = dt.datetime.now(dt.UTC)


__all__ = ["CAPFOps"]
