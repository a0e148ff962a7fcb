"""Devices per second that the CAPF renewal scheduler (``capf.scheduler.run_once``) schedules.

For each database (SQLite in a temporary file; PostgreSQL in a fresh database created next to
``ONLINECA_TEST_PG_URL`` or ``--pg-url`` and dropped afterwards) it migrates the schema, bulk-inserts
N devices whose LSCs (issued together, 300 days) are all inside their renewal window, then times
``run_once`` until nothing is due ("schedule"), and, with the clock moved past every "Operation
Completes By", until nothing is late any more ("time out").  The devices are inserted with one
Core INSERT per 5,000 rows, not through the inventory API: the bench measures the scheduler.
On a 2-core machine the database server shares the cores with this process.

    python bench/scheduler_bench.py [--devices 10000] [--batch-size 200] [--pg-url URL] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from onlineca.capf.scheduler import SchedulerSettings, run_once
from onlineca.policy.capf import RenewalPolicy
from onlineca.store import Database, Device

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LIFE = dt.timedelta(days=300)


def populate(db: Database, count: int) -> None:
    policy = RenewalPolicy()
    rows = []
    for i in range(count):
        name, serial = f"SEP{i:012X}", f"{i + 1:x}"
        rows.append({"name": name, "model": "CP-8845", "description": "", "operation": "OPERATION_NONE",
                     "status": "CERT_STATUS_UPGRADE_SUCCESS", "status_at": T0, "renewal_attempts": 0,
                     "renewal_last_error": "", "failed_auth_count": 0, "lsc_serial": serial,
                     "lsc_issuer": "CN=Bench Issuing CA", "lsc_not_before": T0, "lsc_not_after": T0 + LIFE,
                     "renewal_due_at": policy.window_opens(name, serial, T0, T0 + LIFE),
                     "created_at": T0, "updated_at": T0})
    with db.engine.begin() as conn:
        for start in range(0, count, 5000):
            conn.execute(insert(Device), rows[start:start + 5000])


def drain(db: Database, settings: SchedulerSettings, now: dt.datetime, what: str) -> tuple[int, float]:
    """Call ``run_once`` until it finds nothing; how many devices and how long."""
    total, started = 0, time.perf_counter()
    while True:
        result = run_once(db, settings, now)
        got = len(result.scheduled if what == "scheduled" else result.timed_out)
        if not got:
            return total, time.perf_counter() - started
        total += got


def measure(url: str, count: int, batch_size: int) -> dict:
    db = Database(url)
    try:
        db.migrate()
        populate(db, count)
        settings = SchedulerSettings(node_id="bench", batch_size=batch_size)
        now = T0 + LIFE * 0.9  # every window open, the LSCs still valid
        scheduled, t_schedule = drain(db, settings, now, "scheduled")
        timed_out, t_timeout = drain(db, settings, now + dt.timedelta(days=11), "timed_out")
    finally:
        db.dispose()
    return {"devices": count, "batch_size": batch_size,
            "scheduled": scheduled, "schedule_seconds": round(t_schedule, 3),
            "scheduled_per_second": round(scheduled / t_schedule) if t_schedule else None,
            "timed_out": timed_out, "timeout_seconds": round(t_timeout, 3),
            "timed_out_per_second": round(timed_out / t_timeout) if t_timeout else None}


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="sched-bench-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'bench.db'}"


@contextmanager
def postgres_url(base: str) -> Iterator[str]:
    """A fresh database beside ``base``'s, dropped afterwards."""
    name = "sched_bench_" + uuid.uuid4().hex[:8]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=SchedulerSettings(node_id="x").batch_size)
    parser.add_argument("--pg-url", default=os.environ.get("ONLINECA_TEST_PG_URL"),
                        help="PostgreSQL server to create a scratch database on (default $ONLINECA_TEST_PG_URL)")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    args = parser.parse_args()
    # The scheduler's records are made and dropped (a service writes them to its log file), not
    # printed: 10,000 lines on the terminal would measure the terminal.
    logging.getLogger("onlineca").addHandler(logging.NullHandler())
    results: dict[str, dict] = {}
    if not args.skip_sqlite:
        with sqlite_url() as url:
            results["sqlite"] = measure(url, args.devices, args.batch_size)
    if args.pg_url:
        with postgres_url(args.pg_url) as url:
            results["postgresql"] = measure(url, args.devices, args.batch_size)
    if args.json:
        print(json.dumps(results))
        return
    for name, r in results.items():
        print(f"{name:10} schedule {r['scheduled']} devices in {r['schedule_seconds']:.2f} s "
              f"= {r['scheduled_per_second']} devices/s; time out {r['timed_out']} in {r['timeout_seconds']:.2f} s "
              f"= {r['timed_out_per_second']} devices/s (batch {r['batch_size']})")
    if not args.pg_url:
        print("postgresql skipped: set ONLINECA_TEST_PG_URL or --pg-url")


if __name__ == "__main__":
    main()
