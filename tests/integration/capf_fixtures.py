"""Helpers shared by the CAPF inventory and scheduler tests: a migrated database, LSCs with chosen dates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from onlineca import pki
from onlineca.store import Database, devices as inv

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DEVICE_KEY = pki.generate_key("ec", 256)  # one phone key for every LSC: tests measure the store, not keygen


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    database.migrate()
    yield database
    database.dispose()


def install_lsc(s, lab_pki, name: str, not_before: dt.datetime = T0, days: float = 300) -> str:  # type: ignore[no-untyped-def]
    """Issue an LSC for ``name`` valid from ``not_before`` for ``days`` and mark it installed; its serial."""
    _, cert = lab_pki.issue(f"CN={name}", key=DEVICE_KEY, not_before=not_before, validity_days=days)
    row = inv.record_lsc_issued(s, name, pki.cert_der(cert), now=not_before)
    inv.mark_lsc_installed(s, name, row.serial, now=not_before)
    return row.serial
