"""Issue 11 item 4: kill -9 of a real CAPF process at random points of a fleet enrollment.

``bench/crash_fleet.py`` (the 600-device run with every tier killed is its default) runs here
small: CA, RA and CAPF as real processes, 48 phones, CAPF killed three times at random points
and started again at once.  Afterwards, and after ``onlineca capf reconcile``: no device lost,
no device with two valid certificates, every certificate the CA issued either recorded by CAPF
or recorded for revocation, no device still leased to a dead process, and each kill recovered
(an install after it) within a minute.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "crash_fleet.py"


@pytest.mark.timeout(600)
def test_kill9_of_capf_during_a_fleet_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = secrets.randbelow(2**31)
    run = subprocess.run(
        [sys.executable, str(BENCH), "--devices", "48", "--kills", "3", "--tiers", "capf", "--concurrency", "6",
         "--seed", str(seed), "--dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=540, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert run.returncode == 0, f"seed {seed}: {run.stderr[-3000:]}"
    result = json.loads(run.stdout.strip().splitlines()[-1])
    why = f"seed {seed}: {json.dumps(result)}"
    assert result["lost"] == 0, why
    assert result["duplicates"] == 0, why
    assert result["orphans_left_after_reconcile"] == 0, why
    assert len(result["kills"]) == 3 and all(k["stuck_leases"] == 0 for k in result["kills"]), why
    assert all(k["recovered_s"] is None or k["recovered_s"] < 60 for k in result["kills"]), why
    assert sum(k["recovered_s"] is not None for k in result["kills"]) >= 1, why


def test_reconcile_without_a_ca_database_lists_the_enrollments_never_answered(tmp_path: Path) -> None:
    """A real AD CS has no request table CAPF may read: the open intents are the record."""
    import datetime as dt

    from onlineca.store import Database, devices as inv, lsc_intents

    data = tmp_path / "data"
    db = Database(f"sqlite:///{data / 'onlineca.db'}")
    try:
        db.migrate()
        with db.session() as s:
            inv.add_device(s, "SEPUNANSWERED", actor="test", operation="OPERATION_UPGRADE")
            intent = lsc_intents.intent_sent(s, "SEPUNANSWERED", key="ab" * 32, request_der=b"0", request_id="rid-1",
                                             vouched=False, node="n1", now=dt.datetime.now(dt.UTC))
            lsc_intents.resolve(s, intent, lsc_intents.UNANSWERED)
    finally:
        db.dispose()
    cmd = [sys.executable, "-m", "onlineca", "--data-dir", str(data), "capf", "reconcile"]
    run = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert not report["ca_checked"] and [u["request_id"] for u in report["unresolved"]] == ["rid-1"]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    assert "unresolved SEPUNANSWERED request rid-1" in text
