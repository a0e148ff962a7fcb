"""The CAPF inventory's bulk paths at scale: ``capf devices import``, ``devices list`` and ``capf report``.

Writes a bulk CSV of N devices (By Null String, RSA-2048, Install/Upgrade), then runs each command
as its own ``onlineca`` process on a fresh database (PostgreSQL beside ``--pg-url`` /
``$ONLINECA_TEST_PG_URL``, else SQLite in a temporary folder) and records its wall time and peak
RSS (``os.wait4``'s ru_maxrss of that process alone).  For ``devices list`` (table and ``--json``)
it also records when the first row reached the pipe.  Numbers only: nothing here asserts a time.

    python bench/bulk_bench.py [--devices 100000] [--pg-url URL] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text


@contextmanager
def database(pg_url: str | None, tmp: Path) -> Iterator[str]:
    if not pg_url:
        yield f"sqlite:///{tmp / 'bulk.db'}"
        return
    name = "bulk_bench_" + uuid.uuid4().hex[:8]
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield pg_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def write_csv(path: Path, count: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["DEVICE NAME", "DESCRIPTION", "MODEL", "CERTIFICATE OPERATION", "AUTHENTICATION MODE",
                    "KEY ORDER", "RSA KEY SIZE (BITS)"])
        for i in range(count):
            w.writerow([f"SEP{i:012X}", f"bench phone {i}", "Cisco 8845", "Install/Upgrade", "By Null String",
                        "RSA Only", "2048"])


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall seconds, seconds to the first line of output, peak RSS (MB) and exit status of ``cmd``."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    first: float | None = None
    lines = 0
    for _ in proc.stdout:
        if first is None:
            first = time.monotonic() - start
        lines += 1
    err = proc.stderr.read().decode() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out: dict[str, Any] = {"seconds": round(time.monotonic() - start, 2),
                           "first_line_seconds": round(first, 3) if first is not None else None,
                           "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "lines": lines}
    if proc.returncode:
        out["error"] = err[-800:]
    return out


def measure(count: int, pg_url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bulk-bench-") as tmp_name:
        tmp = Path(tmp_name)
        write_csv(tmp / "devices.csv", count)
        with database(pg_url, tmp) as url:
            env = {**os.environ, "ONLINECA_DATABASE_URL": url}
            cli = [sys.executable, "-m", "onlineca", "--data-dir", str(tmp / "data")]
            result: dict[str, Any] = {"devices": count, "database": url.split(":", 1)[0]}
            result["import"] = timed([*cli, "capf", "devices", "import", str(tmp / "devices.csv")], env)
            result["list"] = timed([*cli, "capf", "devices", "list"], env)
            result["list_json"] = timed([*cli, "capf", "devices", "list", "--json"], env)
            result["list_limit_100"] = timed([*cli, "capf", "devices", "list", "--limit", "100"], env)
            result["report"] = timed([*cli, "capf", "report"], env)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--pg-url", default=os.environ.get("ONLINECA_TEST_PG_URL"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = measure(args.devices, args.pg_url)
    if args.json:
        print(json.dumps(result))
        return
    for key in ("import", "list", "list_json", "list_limit_100", "report"):
        r = result[key]
        print(f"{key:15} {r['seconds']:8.2f} s  first line {r['first_line_seconds']} s  "
              f"peak RSS {r['peak_rss_mb']} MB{'  ERROR ' + r['error'] if 'error' in r else ''}")


if __name__ == "__main__":
    main()
