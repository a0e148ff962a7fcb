"""Prometheus pieces every tier shares: the one name and shape of a certificate's time to expiry,
so that one alert rule covers the CA's, the RA's and CAPF's certificates alike.

Builds metric families only; serving and scraping are each tier's business.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from cryptography import x509
from prometheus_client.core import GaugeMetricFamily

from onlineca import pki


def certificate_expiry_family(certs: Iterable[tuple[str, x509.Certificate]], now: dt.datetime) -> GaugeMetricFamily:
    """``onlineca_certificate_expiry_seconds{role, subject, serial}``: seconds to each certificate's
    notAfter (negative once expired); the same name in every tier."""
    fam = GaugeMetricFamily("onlineca_certificate_expiry_seconds",
                            "Seconds until the certificate's notAfter (negative: expired)",
                            labels=["role", "subject", "serial"])
    for role, cert in certs:
        fam.add_metric([role, pki.name_to_slash(cert.subject), format(cert.serial_number, "x")],
                       (cert.not_valid_after_utc - now).total_seconds())
    return fam


__all__ = ["certificate_expiry_family"]
