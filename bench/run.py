"""Every bench in one run, one JSON summary: the ratios of issue 14 measured side by side.

Runs, one after the other on this machine: the crypto floor (``floor_bench``: one RSA-2048 CA
signature, three TLS 1.3 handshakes, three CSR verifies), the end-to-end enrollment bench
(``capf_bench``) in one process, with ``--capf-process`` and with every tier its own process
(``--tiers-process``: CPU per enrollment per tier), followed on the same servers by an open loop at
half the rate that closed loop reached (``--then-open-loop 0.5``: p50/p90/p99/max latency from each
phone's scheduled arrival, the rate reached, the load client's lag behind its schedule), the RA (``ra_bench``: certsrv connector
and local signer), the CA alone (``ca_bench``), the scheduler (``scheduler_bench``) and the inventory's
bulk paths (``bulk_bench``: import, list, report).  Each end-to-end number is also given as a ratio
to the floor of the same run, since absolute numbers drift with whatever else the machine does.
The load client's own CPU and ceiling are reported next to each end-to-end number (proof that it
is not the bottleneck).  Issue 14's RA baseline is Cisco's libEST example server: it is measured
only where an ``estserver`` binary is on PATH; otherwise its field says so.

Last, ``memory``: 10,000 enrollments (``--memory-devices N``) through the process-per-tier chain,
each server's resident memory (sum over its supervisor and workers) after a tenth, half and all of
them.  ``--quick`` runs no such run unless ``--memory-devices`` is given: its ``memory`` section
is read from the process-per-tier run's own batches (same keys, token numbers).

``--quick`` runs each bench at a token size (a CI smoke: the test checks the keys, never timings).

    python bench/run.py [--quick] [--pg-url URL] [--skip NAME ...] [--memory-devices N] [--out FILE]
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

# (command line, wall seconds) of every bench run: where a run's time went ("bench_seconds")
TIMINGS: list[tuple[str, float]] = []
BENCHES = ("floor", "capf", "capf_process", "tiers_process", "ra", "ca", "scheduler", "bulk", "memory")


def _run(script: str, *args: str, timeout: float = 1800) -> Any:
    """``python bench/<script> args`` with this environment; its stdout's JSON (the last JSON document)."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
    TIMINGS.append((" ".join([script, *args]), round(time.monotonic() - started, 1)))
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


def _marks(devices: int) -> str:
    """The memory checkpoints: after a tenth, half and all of the devices."""
    return ",".join(map(str, sorted({max(1, devices // 10), max(1, devices // 2), devices})))


def _open_loop(run: dict[str, Any]) -> dict[str, Any]:
    """The open loop that followed a closed loop (``capf_bench --then-open-loop``), in milliseconds."""
    loop = run.get("open_loop", {})
    ms = {f"{p}_ms": round(run.get(f"latency_{p}", 0) * 1000, 1) for p in ("p50", "p90", "p99", "max")}
    return {"closed_loop_rate": run.get("closed_loop_rate"), "rate": loop.get("rate"),
            "arrival": loop.get("arrival"), "seed": loop.get("seed"), "achieved_rate": loop.get("achieved_rate"),
            "devices_per_second": run.get("devices_per_second"), **ms, "ok": run.get("ok"),
            "failed": run.get("failed"), "peak_in_flight": run.get("concurrency"),
            "server_cpu_ms_per_enrollment": run.get("server_cpu_ms_per_enrollment"),
            "load_client": {"lag_p50_ms": loop.get("lag_p50_ms"), "lag_p99_ms": loop.get("lag_p99_ms"),
                            "lag_max_ms": loop.get("lag_max_ms"), "cpu_seconds": run.get("client_cpu_seconds"),
                            "core_share": round(run.get("client_cpu_seconds", 0) / run["seconds"], 3)
                            if run.get("seconds") else None}}


def _memory(result: dict[str, Any]) -> dict[str, Any]:
    """RSS (MB) of each server after each checkpoint, and how much it grew from the first."""
    if "error" in result:
        return result
    points = [{"enrollments": m["enrollments"], **{t: m[t] for t in ("ca", "ra", "capf")}}
              for m in result.get("memory", [])]
    growth = ({t: round(points[-1][t]["total_mb"] - points[0][t]["total_mb"], 1) for t in ("ca", "ra", "capf")}
              if points else {})
    return {"devices": result.get("devices"), "ok": result.get("ok"), "failed": result.get("failed"),
            "key": result.get("key"), "workers": result.get("workers"), "checkpoints": points,
            "growth_mb": growth, "devices_per_second": result.get("devices_per_second")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="token sizes: a smoke run whose numbers mean nothing")
    ap.add_argument("--pg-url", default=os.environ.get("ONLINECA_TEST_PG_URL"),
                    help="PostgreSQL for the scheduler and bulk benches (default $ONLINECA_TEST_PG_URL)")
    ap.add_argument("--skip", nargs="*", default=[], choices=BENCHES)
    ap.add_argument("--devices", type=int, default=None, help="end-to-end devices (default 512, quick 12)")
    ap.add_argument("--bulk-devices", type=int, default=None, help="bulk bench rows (default 100000, quick 300)")
    ap.add_argument("--memory-devices", type=int, default=None,
                    help="enrollments of the memory bench (default 10000; --quick: none unless given)")
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
    if "tiers_process" not in args.skip:
        # Quick: one worker each (three interpreters instead of nine to start); the keys are the same.
        # Quick: one worker each (three interpreters to start instead of nine), and the memory
        # section's keys come from this run's batches (a tenth, half, all) instead of a run of its own.
        tiers = _run("capf_bench.py", *e2e, "--tiers-process", "--then-open-loop", "0.5",
                     *(["--workers", "1", "--rss-at", _marks(devices)] if q else []))
        summary["end_to_end_tiers_process"] = _end_to_end(tiers, floor_rate)
        summary["open_loop"] = tiers if "error" in tiers else _open_loop(tiers["open_loop_run"])
        if q and args.memory_devices is None:
            summary["memory"] = {**_memory(tiers), "source": "the end_to_end_tiers_process run (--quick)"}
    memory_devices = args.memory_devices if args.memory_devices is not None else (0 if q else 10_000)
    if "ra" not in args.skip:
        ra = _run("ra_bench.py", "--requests", str(10 if q else 400), "--concurrency", str(4 if q else 64), "--json")
        ra["libest_baseline"] = ("measured" if shutil.which("estserver") else
                                 "not measured: no libEST estserver on this machine (issue 14's ratios are "
                                 "relative to it; apt has no libest package and PyPI's 'libest' is an unrelated "
                                 "exercise-submission client)")
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
    if "memory" not in args.skip and memory_devices > 0:
        # EC keys: 10,000 RSA keys would cost the load client minutes before the first session, and
        # the servers' path is the same (the CA signs with its RSA key either way).
        summary["memory"] = _memory(_run("capf_bench.py", "--tiers-process", "--devices", str(memory_devices),
                                         "--concurrency", str(4 if q else 64), "--key", "ec:256",
                                         "--rss-at", _marks(memory_devices), *(["--workers", "1"] if q else []),
                                         timeout=7200))
    summary["bench_seconds"] = dict(TIMINGS)
    text = json.dumps(summary, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
