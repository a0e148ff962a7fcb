"""CAPF's Prometheus metrics and its small HTTP server: ``/metrics``, ``/healthz`` and
CAPF's own CA's CRL (``/capf-ca.crl``) over plain HTTP on ``[capf] metrics_host:metrics_port``
(127.0.0.1 by default: put a reverse proxy or a firewall in front before binding elsewhere, the
metrics name devices' counts, not devices).

Counted as they happen: session durations, EST enrollments by result and libEST code with their
latency, scheduler and revocation passes, notifications sent.  Read at scrape time: sessions and
outcomes by CAPF status (``CAPFServer.stats``), the fleet snapshot (devices by status and
operation, installed LSCs by days to expiry as a histogram, LSCs expiring within 7/14/30 days
without a renewal scheduled, the scheduler's backlog, the revocation queue), certificates' seconds
to notAfter (CAPF's TLS certificate, its own CA, the RA's CA chain), the RA's readiness as CAPF
last saw it.  The snapshot is refreshed by each maintenance pass and by a scrape that finds it
older than ``SNAPSHOT_MAX_AGE``.  No label takes a device name or anything a phone sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from onlineca.infra import workers
from onlineca.infra.metrics import certificate_expiry_family
from onlineca.infra.serving import listen
from onlineca.store.fleet_stats import EXPIRY_WINDOWS, FleetSnapshot

log = logging.getLogger("onlineca.capf.metrics")

SNAPSHOT_MAX_AGE = dt.timedelta(seconds=30)
SESSION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
ENROLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class ScrapeSources:
    """Where the scrape-time metrics come from (set by ``capf.ops``)."""

    stats: Callable[[], Any]                                  # CAPFServer.stats
    snapshot: Callable[[], FleetSnapshot | None]
    certificates: Callable[[], list[tuple[str, x509.Certificate]]]
    ra_ready: Callable[[], bool | None]
    revocation_pending_attempts: Callable[[], int] = lambda: 0
    extra: list[Callable[[], Iterator[Metric]]] = field(default_factory=list)


class _Collector(Collector):
    def __init__(self, sources: ScrapeSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        now = dt.datetime.now(dt.UTC)
        stats = self.sources.stats()
        yield CounterMetricFamily("onlineca_capf_sessions", "Device-protocol sessions", value=stats.sessions)
        yield GaugeMetricFamily("onlineca_capf_sessions_active", "Sessions open now", value=stats.active)
        yield CounterMetricFamily("onlineca_capf_sessions_failed", "Sessions whose operation failed",
                                  value=stats.failed)
        yield CounterMetricFamily("onlineca_capf_retry_later", "Sessions told RETRY_LATER", value=stats.retry_later)
        yield CounterMetricFamily("onlineca_capf_lsc_delivered", "LSCs issued through the CA and delivered",
                                  value=stats.enrolled)
        outcomes = CounterMetricFamily("onlineca_capf_operation_outcomes",
                                       "Operation outcomes by CAPF status (CERT_STATUS_...)", labels=["status"])
        for status, n in sorted(dict(stats.by_status).items()):
            outcomes.add_metric([status], n)
        yield outcomes
        snap = self.sources.snapshot()
        if snap is not None:
            yield from _snapshot_families(snap, now)
        try:
            yield certificate_expiry_family(self.sources.certificates(), now)
        except Exception as exc:  # an unreadable certificate file must not fail the scrape
            log.warning("metrics: cannot read CAPF's certificates: %s", exc)
        ready = self.sources.ra_ready()
        if ready is not None:
            yield GaugeMetricFamily("onlineca_capf_ra_ready", "1 when the RA's /readyz said ready at the last "
                                    "maintenance pass", value=1 if ready else 0)
        for extra in self.sources.extra:
            yield from extra()


def _snapshot_families(snap: FleetSnapshot, now: dt.datetime) -> Iterator[Metric]:
    devices = GaugeMetricFamily("onlineca_capf_devices", "Devices by CAPF status", labels=["status"])
    for status, n in sorted(snap.by_status.items()):
        devices.add_metric([status], n)
    yield devices
    ops = GaugeMetricFamily("onlineca_capf_devices_operation", "Devices by pending operation", labels=["operation"])
    for op, n in sorted(snap.by_operation.items()):
        ops.add_metric([op], n)
    yield ops
    yield GaugeHistogramMetricFamily(
        "onlineca_capf_lsc_expiry_days", "Installed LSCs by days to notAfter (le: at most that many days)",
        buckets=[("+Inf" if le == float("inf") else f"{le:g}", n) for le, n in snap.expiry_buckets],
        gsum_value=snap.expiry_days_sum)
    unscheduled = GaugeMetricFamily("onlineca_capf_lsc_expiring_unscheduled",
                                    "Installed LSCs expiring within N days with no renewal scheduled",
                                    labels=["within_days"])
    for days in EXPIRY_WINDOWS:
        unscheduled.add_metric([str(days)], snap.expiring_unscheduled.get(days, 0))
    yield unscheduled
    yield GaugeMetricFamily("onlineca_capf_scheduler_backlog", "Devices whose renewal window is open and no "
                            "renewal is scheduled yet", value=snap.renewal_backlog)
    yield GaugeMetricFamily("onlineca_capf_renewals_in_progress", "Renewals scheduled and not yet done",
                            value=snap.renewals_in_progress)
    yield GaugeMetricFamily("onlineca_capf_renewals_failing", "Devices whose last renewal attempt failed",
                            value=snap.renewals_failing)
    revocations = GaugeMetricFamily("onlineca_capf_lsc_revocations", "LSCs in the revocation queue by state",
                                    labels=["state"])
    for state, n in sorted(snap.revocations.items()):
        revocations.add_metric([state], n)
    yield revocations
    yield GaugeMetricFamily("onlineca_capf_snapshot_age_seconds", "Age of the fleet snapshot behind these numbers",
                            value=(now - snap.at).total_seconds())


class CAPFMetrics:
    """CAPF's registry and its counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.session_seconds = Histogram("onlineca_capf_session_duration_seconds", "Duration of each session",
                                         registry=r, buckets=SESSION_BUCKETS)
        self.enrollments = Counter("onlineca_capf_enrollments", "EST enrollments at the RA by result and libEST code",
                                   ["result", "code"], registry=r)
        self.enroll_seconds = Histogram("onlineca_capf_enrollment_duration_seconds",
                                        "Time of each EST enrollment at the RA", registry=r, buckets=ENROLL_BUCKETS)
        self.scheduler_runs = Counter("onlineca_capf_scheduler_runs", "Renewal scheduler passes", registry=r)
        self.scheduler_last = Gauge("onlineca_capf_scheduler_last_run_timestamp_seconds",
                                    "When the last renewal scheduler pass ended", registry=r)
        self.scheduled = Counter("onlineca_capf_renewals_scheduled", "Renewals the scheduler scheduled", registry=r)
        self.timed_out = Counter("onlineca_capf_renewals_timed_out",
                                 "Renewals the scheduler ended: the device did not renew in time", registry=r)
        self.revocations = Counter("onlineca_capf_revocation_attempts",
                                   "LSC revocations by outcome (revoked, manual, failed)", ["outcome"], registry=r)
        self.notifications = Counter("onlineca_capf_alert_notifications",
                                     "Alert notifications by condition and status", ["condition", "status"], registry=r)

    def observe_enrollment(self, result: str, code: str, seconds: float) -> None:
        self.enrollments.labels(result=result, code=code).inc()
        self.enroll_seconds.observe(seconds)

    def read_with(self, sources: ScrapeSources) -> None:
        self.registry.register(_Collector(sources))

    def timed(self, handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
              ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        """``handle`` (one session) with its duration observed."""
        async def timed_handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            started = time.perf_counter()
            try:
                await handle(reader, writer)
            finally:
                self.session_seconds.observe(time.perf_counter() - started)
        return timed_handle


@dataclass
class MetricsServer:
    """The running HTTP server: ``port`` bound, ``close()``."""

    host: str
    port: int
    runner: web.AppRunner

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_metrics_server(metrics: CAPFMetrics, host: str, port: int, *,
                               refresh: Callable[[], Awaitable[None]],
                               health: Callable[[], dict[str, Any]],
                               capf_crl: Path | None = None) -> MetricsServer:
    """Serve /metrics, /healthz (and /capf-ca.crl) on ``host:port`` (0: any free port)."""

    async def metrics_view(_request: web.Request) -> web.Response:
        try:
            await refresh()
        except Exception as exc:  # a busy database: scrape the last snapshot
            log.warning("metrics: snapshot refresh failed: %s", exc)
        body = await asyncio.to_thread(generate_latest, metrics.registry)
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(health()), content_type="application/json")

    async def crl(_request: web.Request) -> web.Response:
        if capf_crl is None or not capf_crl.exists():
            raise web.HTTPNotFound()
        return web.Response(body=await asyncio.to_thread(capf_crl.read_bytes), content_type="application/pkix-crl")

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/capf-ca.crl", crl)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True,
                       reuse_port=workers.reuse_port() or None)
    try:
        await listen(site.start, host, port)
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    log.info("CAPF metrics on http://%s:%d/metrics", host, bound)
    return MetricsServer(host, bound, runner)


__all__ = ["CAPFMetrics", "MetricsServer", "ScrapeSources", "start_metrics_server"]
