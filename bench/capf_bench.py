"""End-to-end enrollment throughput: simulated phones -> CAPF -> RA (EST) -> CA (/certsrv).

Builds the demo's lab PKI in a temporary folder, starts CA, RA and CAPF on 127.0.0.1 (free ports,
in this process, as ``onlineca demo`` does), registers N devices with Install/Upgrade pending
(By Null String, the key type asked), then runs the fleet in a separate process
(``onlineca phone fleet``) so that the phones' protocol work does not share this process's
interpreter with the servers.  Phone keys are made before the first session (``--pregenerate``),
so the numbers measure our side: CAPF's sessions, CSR assembly, EST, the CA's signing and
the database writes.  Prints one JSON object: devices enrolled per second, p50/p99/max session
latency, outcomes.  ``--capf-process`` runs CAPF as its own ``onlineca capf serve`` process (as it
is deployed: CAPF, the RA and the CA are separate servers), so CAPF and the RA + CA each have an
interpreter of their own.  ``--flow`` picks the phones: ``extended`` (the default: they sign their
own request), ``public`` (exactly the public flow: CAPF vouches for each key at the RA) or ``mix``.

    python bench/capf_bench.py --devices 256 --concurrency 64 --key rsa:2048 [--capf-process] [--flow public]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from onlineca.lab import Servers, make_lab, prepare_folder, start_servers
from onlineca.phone.fleet import device_names


def register(config, count: int, key: tuple[str, int]) -> None:  # type: ignore[no-untyped-def]
    from onlineca.store import Database, devices as inventory

    order = "KEYORDER_RSA_ONLY" if key[0] == "rsa" else "KEYORDER_EC_ONLY"
    size = {"rsa_key_size": key[1]} if key[0] == "rsa" else {"ec_key_size": key[1]}
    db = Database(config.database_url)
    db.migrate()
    with db.session() as s:
        for name in device_names(count):
            inventory.add_device(s, name, actor="bench", operation="OPERATION_UPGRADE", auth_mode="AUTH_BY_NULL_STR",
                                 key_order=order, **size)
    db.dispose()


async def start_capf_process(config, root: Path, ra_url: str, workers: int) -> tuple[asyncio.subprocess.Process, str]:  # type: ignore[no-untyped-def]
    """``onlineca capf serve`` on a free port (CAPF's certificate is already in ``root``); its address."""
    cfg = config.capf
    env = {**os.environ, "ONLINECA_DATABASE_URL": config.database_url, "ONLINECA_CAPF_RA_URL": ra_url,
           "ONLINECA_CAPF_RA_USER": cfg.ra_user, "ONLINECA_CAPF_RA_PASSWORD": cfg.ra_password.get_secret_value(),
           "ONLINECA_CAPF_RA_TRUST_STORE": cfg.ra_trust_store,
           "ONLINECA_CAPF_MAX_CONCURRENT_ENROLLMENTS": str(cfg.max_concurrent_enrollments),
           "ONLINECA_LOGGING_BUFFERED": "true" if config.logging.buffered else "false"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "onlineca", "--data-dir", str(root), "capf", "serve", "--port", "0",
        "--no-scheduler", "--workers", str(workers), env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
    if not line.startswith("CAPF serving "):
        proc.kill()
        raise SystemExit(f"capf serve did not start: {line}{(await proc.stderr.read()).decode()[-2000:]}")
    return proc, line.split()[2]


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process and its live children (``--workers``) have used so
    far, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            total += sum(_proc_cpu(int(child)) for child in task.read_text().split())
    return total


class CpuSampler:
    """Samples the servers' CPU (this process = the in-process tiers; an optional CAPF process) every
    0.1 s in a thread, so the CPU of the fleet's session phase alone can be cut out afterwards."""

    def __init__(self, capf_pid: int | None) -> None:
        self.capf_pid = capf_pid
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        capf = _proc_cpu(self.capf_pid) if self.capf_pid else 0.0
        self.samples.append((time.monotonic(), time.process_time(), capf))

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def between(self, start: float, end: float) -> tuple[float, float]:
        """(this process's, CAPF process's) CPU seconds between two monotonic times (nearest samples)."""
        first = min(self.samples, key=lambda s: abs(s[0] - start))
        last = min(self.samples, key=lambda s: abs(s[0] - end))
        return last[1] - first[1], last[2] - first[2]


def _loop_name() -> str:
    return type(asyncio.get_event_loop_policy()).__module__.split(".")[0]


async def bench(args: argparse.Namespace) -> dict:
    key_type, bits = args.key.split(":")
    key = (key_type, int(bits))
    with tempfile.TemporaryDirectory(prefix="capf-bench-") as tmp:
        root = Path(tmp) / "lab"
        prepare_folder(root)
        config, _mic = make_lab(root)
        config = config.model_copy(update={"capf": config.capf.model_copy(
            update={"max_concurrent_enrollments": args.ra_concurrency}),
            "logging": config.logging.model_copy(update={"buffered": not args.unbuffered_logs})})
        from onlineca import logs

        logs.set_buffered(not args.unbuffered_logs)  # as 'serve' does from [logging] buffered
        servers = Servers()
        capf_proc = None
        try:
            await start_servers(config, root, servers, default_ports=False)
            capf_at = f"{servers.capf.host}:{servers.capf.port}"
            if args.capf_process:
                await servers.capf.close()  # it enrolled CAPF's certificate; the process serves it
                capf_proc, capf_at = await start_capf_process(config, root, servers.ra.url, args.workers)
            await asyncio.to_thread(register, config, args.devices, key)
            cmd = [sys.executable, "-m", "onlineca", "--data-dir", str(root), "phone", "fleet",
                   "--count", str(args.devices), "--concurrency", str(args.concurrency),
                   "--capf", capf_at, "--cafile", str(root / "ca" / "root.pem"),
                   "--auth", "null", "--retries", "3", "--max-retry-delay", "1", "--flow", args.flow,
                   "--pregenerate", f"{key_type}:{bits}={args.devices}", "--json"]
            sampler = CpuSampler(capf_proc.pid if capf_proc is not None else None)
            sampler.start()
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), args.timeout)
            ended = time.monotonic()
            wall = ended - started
            sampler.stop()
        finally:
            if capf_proc is not None and capf_proc.returncode is None:
                capf_proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(capf_proc.wait(), 30)
            await servers.close()
    try:
        fleet = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SystemExit(f"fleet failed (exit {proc.returncode}): {err.decode()[-2000:]}") from None
    fleet.pop("failures", None)
    # The fleet's session phase is its last ``seconds`` before it exited (keys are made before it).
    here, capf = sampler.between(ended - fleet["seconds"], ended)
    ok = max(1, fleet["ok"])
    cpu = {"servers_ms_per_enrollment": round((here + capf) * 1000 / ok, 2)}
    if args.capf_process:
        cpu.update(capf_ms=round(capf * 1000 / ok, 2), ra_and_ca_ms=round(here * 1000 / ok, 2))
    client_cpu = fleet.get("client_cpu_seconds", 0.0)
    fleet["server_cpu"] = cpu
    # The load client's ceiling: the devices/s it could drive with a whole core to itself.  Its
    # busy share of one core below ~0.9 means it was not what limited the run.
    fleet["client_ceiling_per_second"] = round(ok / client_cpu, 1) if client_cpu else None
    fleet["client_core_share"] = round(client_cpu / fleet["seconds"], 3) if fleet["seconds"] else None
    return {"bench": "capf end-to-end (phone -> CAPF -> RA -> CA)", "key": args.key, "cpus": os.cpu_count(),
            "ra_concurrency": args.ra_concurrency, "capf_process": args.capf_process,
            "buffered_logs": not args.unbuffered_logs, "workers": args.workers if args.capf_process else None,
            "loop": _loop_name(), "flow": args.flow,
            "fleet_process_wall_seconds": round(wall, 2), **fleet}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--key", default="rsa:2048", choices=["rsa:2048", "ec:256", "rsa:3072", "ec:384"])
    parser.add_argument("--ra-concurrency", type=int, default=16, help="CAPF's max_concurrent_enrollments.")
    parser.add_argument("--capf-process", action="store_true",
                        help="Run CAPF as its own 'onlineca capf serve' process (the RA and CA stay here).")
    parser.add_argument("--flow", choices=["extended", "public", "mix"], default="extended",
                        help="The phones: extended (sign their request), public (the public flow exactly), or mix.")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="With --capf-process: 'capf serve --workers N' (default: the number of cores).")
    parser.add_argument("--unbuffered-logs", action="store_true",
                        help="Write each log line on the event loop as it comes ([logging] buffered = false).")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if args.flow != "extended" and not args.key.startswith("rsa"):
        parser.error("public-flow phones make RSA keys only (they announce no EC)")
    from onlineca.infra.workers import install_event_loop

    install_event_loop()  # as the servers' commands do (uvloop when importable; ONLINECA_EVENT_LOOP=asyncio: not)
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
