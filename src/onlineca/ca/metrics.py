"""The CA's Prometheus metrics, in one registry per application.

Counted as they happen: submissions by template and disposition, failures by HRESULT, each
page's latency, revocations by reason, OCSP answers by status.  Read at scrape time: the CA's own
certificates' seconds to notAfter (root, issuing, web, OCSP responder), the published CRLs'
seconds to nextUpdate and entries, pending requests.  Label values come from fixed sets (pages,
dispositions, configured templates, reason names, HRESULTs the CA itself sets), never from what
a client sent, so a hostile client cannot grow the series.  Scrapes run in a worker thread
(they read the database).  Who may scrape is the web server's business (``[ca] metrics_allow``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from onlineca.proto.certsrv import hresults as hr

log = logging.getLogger("onlineca.ca")

PAGE_LABELS = ("home", "certrqxt", "certfnsh", "certnew_cer", "certnew_p7b", "certcarc", "certckpn", "revoke",
               "crl", "crt", "ocsp", "metrics", "other")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def page_label(path: str) -> str:
    """The page a request path names, from a fixed set."""
    p = path.lower().rstrip("/")
    if p in ("/certsrv", "/certsrv/default.asp"):
        return "home"
    if p.startswith("/certsrv/") and p.endswith((".asp", ".cer", ".p7b")):
        name = p.rsplit("/", 1)[1].replace(".asp", "").replace(".", "_")
        return name if name in PAGE_LABELS else "other"
    if p == "/certsrv/onlineca/revoke":
        return "revoke"
    if p.startswith("/certenroll/"):
        return "crt" if p.endswith(".crt") else "crl"
    if p == "/ocsp" or p.startswith("/ocsp/"):
        return "ocsp"
    if p == "/metrics":
        return "metrics"
    return "other"


class _ScrapeTime(Collector):
    """What is read when Prometheus scrapes: certificates, CRLs, pending requests."""

    def __init__(self, read: Callable[[dt.datetime], Iterator[GaugeMetricFamily]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            yield from self.read(dt.datetime.now(dt.UTC))
        except Exception as exc:  # the database may be busy: scrape what the counters hold
            log.warning("metrics: cannot read the CA's state: %s", exc)


class CAMetrics:
    """The CA's metrics; ``templates`` bounds the template label (others count as "other")."""

    def __init__(self, templates: Callable[[], Sequence[str]]) -> None:
        self.registry = CollectorRegistry()
        self._templates = templates
        self.requests = Counter("onlineca_ca_requests", "Submissions (certfnsh.asp newreq) by template and disposition",
                                ["template", "disposition"], registry=self.registry)
        self.failures = Counter("onlineca_ca_request_failures", "Denied or failed submissions by HRESULT",
                                ["code"], registry=self.registry)
        self.latency = Histogram("onlineca_ca_http_request_duration_seconds", "Time to answer each page",
                                 ["page"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self.revocations = Counter("onlineca_ca_revocations", "Certificates revoked, by reason", ["reason"],
                                   registry=self.registry)
        self.ocsp = Counter("onlineca_ca_ocsp_responses", "OCSP answers by status", ["status"], registry=self.registry)

    def observe_result(self, template: str, disposition: str, hresult: int) -> None:
        known = {t.lower(): t for t in self._templates()}
        self.requests.labels(template=known.get(template.lower(), "other"), disposition=disposition).inc()
        if disposition in ("denied", "failed"):
            self.failures.labels(code=hr.hresult_hex(hresult)).inc()

    def read_with(self, read: Callable[[dt.datetime], Iterator[GaugeMetricFamily]]) -> None:
        self.registry.register(_ScrapeTime(read))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["PAGE_LABELS", "CAMetrics", "page_label"]
