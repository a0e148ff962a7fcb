"""Every bench in one run, one JSON summary: the ratios of issue 14 measured side by side.

Runs, one after the other on this machine: the crypto floor (``floor_bench``: one RSA-2048 CA
signature, three TLS 1.3 handshakes, three CSR verifies), the end-to-end enrollment bench
(``capf_bench``) in one process and with ``--capf-process``, the RA (``ra_bench``: certsrv connector
and local signer), the CA alone (``ca_bench``), the scheduler (``scheduler_bench``) and the inventory's
bulk paths (``bulk_bench``: import, list, report).  Each end-to-end number is also given as a ratio
to the floor of the same run, since absolute numbers drift with whatever else the machine does.
The load client's own CPU and ceiling are reported next to each end-to-end number (proof that it
is not the bottleneck).  Issue 14's RA baseline is Cisco's libEST example server: it is measured
only where an ``estserver`` binary is on PATH; otherwise its field says so.

``--quick`` runs each bench at a token size (a CI smoke: the test checks the keys, never timings).

    python bench/run.py [--quick] [--pg-url URL] [--skip NAME ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BENCHES = ("floor", "capf", "capf_process", "ra", "ca", "scheduler", "bulk")


def _run(script: str, *args: str, timeout: float = 1800) -> Any:
    """``python bench/<script> args`` with this environment; its stdout's JSON (the last JSON document)."""
    proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
    out = proc.stdout.strip()
    start = out.find("{") if out.startswith("{") else out.rfind("\n{") + 1
    try:
        return json.loads(out[start:])
    except ValueError:
        return {"error": f"no JSON in output: {out[-500:]}"}


def _ratio(rate: Any, floor: float | None) -> float | None:
    return round(rate / floor, 3) if isinstance(rate, (int, float)) and floor else None


def _end_to_end(result: dict[str, Any], floor: float | None) -> dict[str, Any]:
    if "error" in result:
        return result
    return {"devices_per_second": result.get("devices_per_second"),
            "ratio_to_floor": _ratio(result.get("devices_per_second"), floor),
            "p50_ms": round(result.get("latency_p50", 0) * 1000, 1),
            "p99_ms": round(result.get("latency_p99", 0) * 1000, 1),
            "ok": result.get("ok"), "failed": result.get("failed"),
            "server_cpu_ms_per_enrollment": result.get("server_cpu"),
            "load_client": {"cpu_seconds": result.get("client_cpu_seconds"),
                            "core_share": result.get("client_core_share"),
                            "ceiling_devices_per_second": result.get("client_ceiling_per_second")},
            "workers": result.get("workers"), "loop": result.get("loop")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="token sizes: a smoke run whose numbers mean nothing")
    ap.add_argument("--pg-url", default=os.environ.get("ONLINECA_TEST_PG_URL"),
                    help="PostgreSQL for the scheduler and bulk benches (default $ONLINECA_TEST_PG_URL)")
    ap.add_argument("--skip", nargs="*", default=[], choices=BENCHES)
    ap.add_argument("--devices", type=int, default=None, help="end-to-end devices (default 512, quick 12)")
    ap.add_argument("--bulk-devices", type=int, default=None, help="bulk bench rows (default 100000, quick 300)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    q = args.quick
    devices = args.devices or (12 if q else 512)
    pg = ["--pg-url", args.pg_url] if args.pg_url else []
    summary: dict[str, Any] = {"quick": q, "cores": os.cpu_count(), "python": sys.version.split()[0],
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    floor_rate: float | None = None
    if "floor" not in args.skip:
        import floor_bench

        summary["floor"] = floor_bench.measure(10 if q else 300)
        floor_rate = summary["floor"]["floor_per_second"]
    e2e = ["--devices", str(devices), "--concurrency", str(4 if q else 64)]
    if "capf" not in args.skip:
        summary["end_to_end_in_process"] = _end_to_end(_run("capf_bench.py", *e2e), floor_rate)
    if "capf_process" not in args.skip:
        summary["end_to_end_capf_process"] = _end_to_end(_run("capf_bench.py", *e2e, "--capf-process"), floor_rate)
    if "ra" not in args.skip:
        ra = _run("ra_bench.py", "--requests", str(10 if q else 400), "--concurrency", str(4 if q else 64), "--json")
        ra["libest_baseline"] = ("measured" if shutil.which("estserver") else
                                 "not measured: no libEST estserver on this machine (issue 14's ratios are "
                                 "relative to it)")
        summary["ra"] = ra
    if "ca" not in args.skip:
        summary["ca"] = _run("ca_bench.py", "--certs", str(10 if q else 400), "--concurrency", str(4 if q else 8),
                             "--json")
    if "scheduler" not in args.skip:
        summary["scheduler"] = _run("scheduler_bench.py", "--devices", str(200 if q else 100_000), "--json",
                                    *(["--skip-sqlite"] if pg and not q else []), *pg)
    if "bulk" not in args.skip:
        summary["bulk"] = _run("bulk_bench.py", "--devices", str(args.bulk_devices or (300 if q else 100_000)),
                               "--json", *pg)
    text = json.dumps(summary, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
