"""``bench/run.py --quick`` runs every bench end to end and prints one JSON summary with the keys
docs/performance.md relies on.  A smoke test only: it checks keys and that every bench ran, never a
time or a rate (numbers on a shared CI machine mean nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# Nine benches, each starting its own servers: about 100 s on a loaded 2-core machine, over the
# suite's default 120 s limit whenever another suite runs beside it.
@pytest.mark.timeout(600)
def test_bench_run_quick_prints_every_section() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick"], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["quick"] is True
    assert {"ca_signature_ms", "tls13_handshake_server_ms", "csr_verify_ms", "floor_cpu_ms",
            "floor_per_second"} <= set(summary["floor"])
    for key in ("end_to_end_in_process", "end_to_end_capf_process", "end_to_end_tiers_process"):
        e2e = summary[key]
        assert "error" not in e2e, e2e
        assert {"devices_per_second", "ratio_to_floor", "p50_ms", "p99_ms", "server_cpu_ms_per_enrollment",
                "load_client"} <= set(e2e)
        assert e2e["failed"] == 0
        assert {"cpu_seconds", "core_share", "ceiling_devices_per_second"} <= set(e2e["load_client"])
    assert "servers_ms_per_enrollment" in summary["end_to_end_in_process"]["server_cpu_ms_per_enrollment"]
    assert {"capf_ms", "ra_and_ca_ms"} <= set(summary["end_to_end_capf_process"]["server_cpu_ms_per_enrollment"])
    assert {"capf_ms", "ra_ms", "ca_ms"} <= set(summary["end_to_end_tiers_process"]["server_cpu_ms_per_enrollment"])
    open_loop = summary["open_loop"]
    assert "error" not in open_loop, open_loop
    assert open_loop["failed"] == 0 and open_loop["rate"] > 0
    assert {"closed_loop_rate", "achieved_rate", "p50_ms", "p90_ms", "p99_ms", "max_ms"} <= set(open_loop)
    assert {"lag_p50_ms", "lag_p99_ms", "lag_max_ms", "core_share"} <= set(open_loop["load_client"])
    memory = summary["memory"]
    assert "error" not in memory, memory
    assert memory["failed"] == 0 and [p["enrollments"] for p in memory["checkpoints"]] == [1, 6, 12]
    for point in memory["checkpoints"]:
        assert all(point[tier]["total_mb"] > 0 for tier in ("ca", "ra", "capf")), point
    assert set(memory["growth_mb"]) == {"ca", "ra", "capf"}
    for key in ("ra", "ca", "scheduler", "bulk"):
        assert "error" not in summary[key], summary[key]
    assert {"certsrv", "local", "libest_baseline"} <= set(summary["ra"])
    assert "certs_per_second" in summary["ca"]
    for key in ("import", "list", "list_json", "list_limit_100", "report"):
        assert "error" not in summary["bulk"][key], summary["bulk"][key]
        assert summary["bulk"][key]["peak_rss_mb"] > 0
