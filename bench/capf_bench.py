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
interpreter of their own.  ``--tiers-process`` runs every tier as its own server process (``onlineca
ca serve``, ``ra serve``, ``capf serve``, each with ``--workers N``) and reports the CPU per
enrollment of each tier (summed over its supervisor and workers, from /proc).  ``--flow`` picks the
phones: ``extended`` (the default: they sign their own request), ``public`` (exactly the public
flow: CAPF vouches for each key at the RA) or ``mix``.

``--rate R`` runs the fleet as an open loop (``phone fleet --rate``: R arrivals a second, Poisson
or fixed, seeded, whatever the servers answer) and reports p50/p90/p99/max latency from each
phone's scheduled arrival, the rate reached and the load client's lag behind its schedule.
``--then-open-loop 0.5`` follows the closed loop, on the same servers, with an open loop over as
many devices again at half the rate the closed loop reached (issue 14's "open loop at half of the
maximum rate").  ``--rss-at 1000,5000,10000`` (with ``--tiers-process``) enrolls the devices in batches up to each
count and records every server's resident memory (sum over its workers) after each.

    python bench/capf_bench.py --devices 256 --concurrency 64 --key rsa:2048 [--capf-process | --tiers-process] [--flow public]
    python bench/capf_bench.py --tiers-process --devices 512 --rate 10 [--arrival fixed] [--seed 1]
    python bench/capf_bench.py --tiers-process --devices 512 --then-open-loop 0.5
    python bench/capf_bench.py --tiers-process --devices 10000 --key ec:256 --rss-at 1000,5000,10000
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

from _tiers import ServerProcess, start_server, tree_cpu, wait_ready
from onlineca.lab import LAB_CONFIG, Servers, make_lab, prepare_folder, start_servers
from onlineca.phone.fleet import device_names

FIRST = 0x74A02FC00000  # the fleet's first name (phone fleet --first's default)


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


def start_tiers(config, root: Path, workers: int) -> dict[str, ServerProcess]:  # type: ignore[no-untyped-def]
    """``onlineca ca serve``, ``ra serve`` (once the CA answers) and ``capf serve`` (once the RA is
    ready), each on a free port with ``--workers N``, from the lab's configuration file (written by
    ``start_servers``, whose in-process servers are closed by now: CAPF's certificate is enrolled)."""
    cli = ["--config", str(root / LAB_CONFIG)]
    serve = ["--port", "0", "--workers", str(workers)]
    env = {**os.environ, "ONLINECA_LOGGING_BUFFERED": "true" if config.logging.buffered else "false"}
    tiers: dict[str, ServerProcess] = {}
    try:
        tiers["ca"] = start_server("ca", cli, serve, env, root / "ca-serve.err")
        ca_url = tiers["ca"].wait_line()
        tiers["ra"] = start_server("ra", cli, serve, {**env, "ONLINECA_RA_CA_URL": ca_url}, root / "ra-serve.err")
        tiers["ra"].wait_line()
        wait_ready(f"{tiers['ra'].origin}/readyz", root / "ca" / "root.pem", tiers["ra"])
        capf_env = {**env, "ONLINECA_CAPF_RA_URL": tiers["ra"].address,
                    "ONLINECA_CAPF_CA_REVOKE_URL": f"{ca_url}/onlineca/revoke",
                    "ONLINECA_CAPF_MAX_CONCURRENT_ENROLLMENTS": str(config.capf.max_concurrent_enrollments)}
        tiers["capf"] = start_server("capf", cli, [*serve, "--no-scheduler"], capf_env, root / "capf-serve.err")
        tiers["capf"].wait_line()
    except BaseException:
        for tier in reversed(tiers.values()):
            tier.stop()
        raise
    return tiers


class CpuSampler:
    """Samples the servers' CPU every 0.1 s in a thread (``here``: this process, where the in-process
    tiers run; each named server process with its workers), so the CPU of the fleet's session phase
    alone can be cut out afterwards."""

    def __init__(self, pids: dict[str, int], here: bool) -> None:
        self.pids, self.here = pids, here
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        cpu = {name: tree_cpu(pid) for name, pid in self.pids.items()}
        if self.here:
            cpu["here"] = time.process_time()
        self.samples.append((time.monotonic(), cpu))

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

    def between(self, start: float, end: float) -> dict[str, float]:
        """Each one's CPU seconds between two monotonic times (nearest samples)."""
        first = min(self.samples, key=lambda s: abs(s[0] - start))
        last = min(self.samples, key=lambda s: abs(s[0] - end))
        return {name: last[1][name] - first[1][name] for name in last[1]}


def _loop_name() -> str:
    return type(asyncio.get_event_loop_policy()).__module__.split(".")[0]


def _checkpoints(args: argparse.Namespace) -> list[int]:
    """The cumulative device counts the fleet stops at (the memory samples), the last = --devices."""
    marks = sorted({int(c) for c in args.rss_at.split(",") if c.strip()} | {args.devices}) if args.rss_at else []
    return [m for m in marks if 0 < m <= args.devices] or [args.devices]


async def _fleet(args: argparse.Namespace, root: Path, capf_at: str, count: int, first: int,
                 rate: float | None) -> tuple[dict, float]:
    """One ``onlineca phone fleet`` process over ``count`` devices from name number ``first`` (an open
    loop at ``rate`` a second, or closed at --concurrency): its JSON summary and when it ended."""
    key_type, bits = args.key.split(":")
    cmd = [sys.executable, "-m", "onlineca", "--data-dir", str(root), "phone", "fleet",
           "--count", str(count), "--first", f"{first:012X}", "--concurrency", str(args.concurrency),
           "--capf", capf_at, "--cafile", str(root / "ca" / "root.pem"),
           "--auth", "null", "--retries", "3", "--max-retry-delay", "1", "--flow", args.flow,
           "--pregenerate", f"{key_type}:{bits}={count}", "--json"]
    if rate:
        cmd += ["--rate", str(rate), "--arrival", args.arrival, "--seed", str(args.seed)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), args.timeout)
    ended = time.monotonic()
    try:
        fleet = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SystemExit(f"fleet failed (exit {proc.returncode}): {err.decode()[-2000:]}") from None
    fleet.pop("failures", None)
    return fleet, ended


async def bench(args: argparse.Namespace) -> dict:
    key_type, bits = args.key.split(":")
    key = (key_type, int(bits))
    marks = _checkpoints(args)
    memory: list[dict] = []
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
        tiers: dict[str, ServerProcess] = {}
        try:
            await start_servers(config, root, servers, default_ports=False)
            capf_at = f"{servers.capf.host}:{servers.capf.port}"
            if args.tiers_process:
                await servers.close()  # they enrolled CAPF's certificate; the processes serve from here
                tiers = await asyncio.to_thread(start_tiers, config, root, args.workers)
                capf_at = tiers["capf"].address
            elif args.capf_process:
                await servers.capf.close()  # it enrolled CAPF's certificate; the process serves it
                capf_proc, capf_at = await start_capf_process(config, root, servers.ra.url, args.workers)
            await asyncio.to_thread(register, config, args.devices * (2 if args.then_open_loop else 1), key)
            pids = {name: tier.proc.pid for name, tier in tiers.items()}
            if capf_proc is not None:
                pids["capf"] = capf_proc.pid
            sampler = CpuSampler(pids, here=not args.tiers_process)
            sampler.start()
            started = time.monotonic()
            done, session_seconds, batches = 0, 0.0, []
            for mark in marks:
                fleet, ended = await _fleet(args, root, capf_at, mark - done, FIRST + done, args.rate)
                batches.append((fleet, ended))
                session_seconds += fleet["seconds"]
                done = mark
                if tiers:
                    memory.append({"enrollments": done, "ok_so_far": sum(b[0]["ok"] for b in batches),
                                   **{name: tier.rss() for name, tier in tiers.items()}})
            if args.then_open_loop:
                # The same servers, the next --devices devices, at a share of the rate just measured.
                closed_seconds = sum(b[0]["seconds"] for b in batches)
                closed_rate = round(sum(b[0]["ok"] for b in batches) / closed_seconds, 2) if closed_seconds else 0.0
                rate = round(max(closed_rate * args.then_open_loop, 0.1), 2)
                open_run, open_ended = await _fleet(args, root, capf_at, args.devices, FIRST + done, rate)
                open_run["closed_loop_rate"] = closed_rate
                open_cpu = sampler.between(open_ended - open_run["seconds"], open_ended)
                open_run["server_cpu_ms_per_enrollment"] = round(
                    sum(open_cpu.values()) * 1000 / max(1, open_run["ok"]), 2)
            wall = time.monotonic() - started
            sampler.stop()
        finally:
            for tier in reversed(tiers.values()):
                await asyncio.to_thread(tier.stop)
            if capf_proc is not None and capf_proc.returncode is None:
                capf_proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(capf_proc.wait(), 30)
            await servers.close()
    # The fleets' session phases are their last ``seconds`` before each exited (keys are made before).
    spent: dict[str, float] = {}
    for fleet, ended in batches:
        for name, cpu in sampler.between(ended - fleet["seconds"], ended).items():
            spent[name] = spent.get(name, 0.0) + cpu
    fleet = batches[-1][0] if len(batches) == 1 else _merge(batches)
    ok = max(1, fleet["ok"])
    cpu = {"servers_ms_per_enrollment": round(sum(spent.values()) * 1000 / ok, 2)}
    if args.tiers_process:
        cpu.update({f"{name}_ms": round(spent[name] * 1000 / ok, 2) for name in ("capf", "ra", "ca")})
    elif args.capf_process:
        cpu.update(capf_ms=round(spent["capf"] * 1000 / ok, 2), ra_and_ca_ms=round(spent["here"] * 1000 / ok, 2))
    client_cpu = fleet.get("client_cpu_seconds", 0.0)
    fleet["server_cpu"] = cpu
    # The load client's ceiling: the devices/s it could drive with a whole core to itself.  Its
    # busy share of one core below ~0.9 means it was not what limited the run.
    fleet["client_ceiling_per_second"] = round(ok / client_cpu, 1) if client_cpu else None
    fleet["client_core_share"] = round(client_cpu / session_seconds, 3) if session_seconds else None
    result = {"bench": "capf end-to-end (phone -> CAPF -> RA -> CA)", "key": args.key, "cpus": os.cpu_count(),
              "ra_concurrency": args.ra_concurrency, "capf_process": args.capf_process,
              "tiers_process": args.tiers_process, "buffered_logs": not args.unbuffered_logs,
              "workers": args.workers if args.capf_process or args.tiers_process else None,
              "loop": _loop_name(), "flow": args.flow, "fleet_process_wall_seconds": round(wall, 2), **fleet}
    if memory:
        result["memory"] = memory
    if args.then_open_loop:
        result["open_loop_run"] = open_run
    return result


def _merge(batches: list[tuple[dict, float]]) -> dict:
    """One summary of several fleet runs: counts and seconds added, rates over the whole; each
    latency percentile is the largest of the batches' (an upper bound of the whole run's: at least
    that share of every batch, hence of all, lies at or below it); each batch's in ``batches``."""
    runs = [b[0] for b in batches]
    ok, seconds = sum(r["ok"] for r in runs), sum(r["seconds"] for r in runs)
    outcomes: dict[str, int] = {}
    for r in runs:
        for name, n in r["outcomes"].items():
            outcomes[name] = outcomes.get(name, 0) + n
    return {"devices": sum(r["devices"] for r in runs), "ok": ok, "failed": sum(r["failed"] for r in runs),
            "outcomes": outcomes, "concurrency": runs[0]["concurrency"], "seconds": round(seconds, 3),
            "devices_per_second": round(ok / seconds, 2) if seconds else 0.0,
            **{k: max(r[k] for r in runs) for k in ("latency_p50", "latency_p90", "latency_p99", "latency_max")},
            "batches": [{k: r[k] for k in ("devices", "ok", "devices_per_second", "latency_p50", "latency_p99")}
                        for r in runs],
            "client_cpu_seconds": round(sum(r["client_cpu_seconds"] for r in runs), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--key", default="rsa:2048", choices=["rsa:2048", "ec:256", "rsa:3072", "ec:384"])
    parser.add_argument("--ra-concurrency", type=int, default=16, help="CAPF's max_concurrent_enrollments.")
    parser.add_argument("--capf-process", action="store_true",
                        help="Run CAPF as its own 'onlineca capf serve' process (the RA and CA stay here).")
    parser.add_argument("--tiers-process", action="store_true",
                        help="Run the CA, the RA and CAPF each as its own 'serve' process (--workers N each).")
    parser.add_argument("--rate", type=float, default=None,
                        help="Open loop: RATE phones start each second, whatever the servers answer.")
    parser.add_argument("--arrival", choices=["poisson", "fixed"], default="poisson", help="With --rate.")
    parser.add_argument("--seed", type=int, default=0, help="With --rate: the Poisson arrivals' seed.")
    parser.add_argument("--then-open-loop", type=float, default=None, metavar="SHARE",
                        help="After the closed loop, on the same servers: an open loop over --devices more devices "
                             "at SHARE (e.g. 0.5) of the rate the closed loop reached ('open_loop_run').")
    parser.add_argument("--rss-at", default="",
                        help="With --tiers-process: device counts (e.g. 1000,5000,10000) after which each "
                             "server's resident memory is recorded.")
    parser.add_argument("--flow", choices=["extended", "public", "mix"], default="extended",
                        help="The phones: extended (sign their request), public (the public flow exactly), or mix.")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="With --capf-process or --tiers-process: 'serve --workers N' (default: the number "
                             "of cores).")
    parser.add_argument("--unbuffered-logs", action="store_true",
                        help="Write each log line on the event loop as it comes ([logging] buffered = false).")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if args.capf_process and args.tiers_process:
        parser.error("--capf-process and --tiers-process exclude each other")
    if args.then_open_loop and args.rate:
        parser.error("--then-open-loop follows a closed loop (no --rate)")
    if args.rss_at and not args.tiers_process:
        parser.error("--rss-at needs --tiers-process (the memory of the servers' own processes)")
    if args.flow != "extended" and not args.key.startswith("rsa"):
        parser.error("public-flow phones make RSA keys only (they announce no EC)")
    from onlineca.infra.workers import install_event_loop

    install_event_loop()  # as the servers' commands do (uvloop when importable; ONLINECA_EVENT_LOOP=asyncio: not)
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
