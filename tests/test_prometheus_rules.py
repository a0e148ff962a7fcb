"""The shipped alert rules (deploy/prometheus/onlineca-alerts.yml) pass ``promtool check rules``
and their unit tests (``promtool test rules deploy/prometheus/tests/*.yml``), with Debian's
promtool (the ``prometheus`` package, which .ci/run installs).  Under CI a missing promtool fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing under CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


def test_the_alert_rules_are_valid_and_their_unit_tests_pass() -> None:
    promtool = _promtool()
    check = subprocess.run([promtool, "check", "rules", str(DEPLOY / "onlineca-alerts.yml")],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = sorted(str(p) for p in (DEPLOY / "tests").glob("*.yml"))
    assert tests, "no promtool unit tests in deploy/prometheus/tests"
    run = subprocess.run([promtool, "test", "rules", *tests], capture_output=True, text=True, timeout=300)
    print(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr
