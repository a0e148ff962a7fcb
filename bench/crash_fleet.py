"""kill -9 of real CA, RA and CAPF processes in the middle of a fleet enrollment (issue 11 item 4).

Builds the demo's lab PKI in a folder, starts the CA, the RA and CAPF as three ``onlineca ...
serve`` processes on fixed free ports of 127.0.0.1 (each with its own SQLite database; CAPF reads
the CA's request table, ``[capf] ca_database_url``), registers N devices with Install/Upgrade
pending (the demo's groups: both flows, every auth mode), and runs the fleet from this process.
At random points of the fleet (after a random number of installs, plus a random fraction of a
second) it kills one tier with SIGKILL, in turn from ``--tiers``, and starts it again at once.
Phones retry as phones do; devices left over get further rounds.  At the end it runs
``onlineca capf reconcile`` and prints, as one JSON object with ``--json``:

- ``lost``: devices that never got their LSC installed;
- ``duplicates``: devices with more than one certificate the CA issued that is still valid and
  not recorded for revocation (before reconciliation too);
- ``orphans``: CA certificates CAPF never recorded, before reconciliation and those left after
  it (not recorded for revocation);
- per kill, ``recovered_s``: from the kill to the first install after the tier was back, and
  ``stuck_leases``: devices still leased to the killed CAPF's life once the new one serves.

    python bench/crash_fleet.py --devices 600 --kills 3 --tiers ca,ra,capf
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

from cryptography import x509
from pydantic import SecretStr

from onlineca import pki
from onlineca.config import Config
from onlineca.lab import make_lab, plan_fleet, prepare_folder, register_devices
from onlineca.phone.client import SessionResult, Target, phone_ssl_context
from onlineca.phone.device import KeyPool
from onlineca.phone.fleet import Member, run_fleet

READY = {"ca": "CA serving", "ra": "RA serving", "capf": "CAPF serving"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def write_config(path: Path, config: Config) -> Path:
    """The whole configuration as TOML (secrets in clear: the file is 0600 in the lab folder)."""
    data = _plain(config.model_dump())
    lines = [f"{k} = {_toml(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, values in data.items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # fails here rather than in the server
    path.write_text(text)
    path.chmod(0o600)
    return path


class Tier:
    """One ``onlineca <tier> serve`` process, started again after each kill."""

    def __init__(self, name: str, config: Path, port: int, extra: list[str]) -> None:
        self.name, self.config, self.port, self.extra = name, config, port, extra
        self.proc: asyncio.subprocess.Process | None = None
        self.tail: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 120) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.tail = []
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "onlineca", "--config", str(self.config), self.name, "serve",
            "--port", str(self.port), *self.extra, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env=env)
        assert self.proc.stderr is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stderr.readline()
                if not raw:
                    raise RuntimeError(f"{self.name} ended before it was ready (exit {await self.proc.wait()}): "
                                       f"{''.join(self.tail)[-3000:]}")
                line = raw.decode(errors="replace")
                self.tail = (self.tail + [line])[-50:]
                if line.startswith(READY[self.name]):
                    break
        self._drain = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while await self.proc.stderr.readline():
            pass

    async def _reap(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(BaseException):
                await self._drain
            self._drain = None

    async def kill9(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        await self._reap()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reap()


def _held_boots(capf_db: Path) -> set[str]:
    """The lives (``<node>#<boot>#``) holding device leases now."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    with contextlib.closing(sqlite3.connect(capf_db, timeout=30)) as conn:
        rows = conn.execute("SELECT lease_owner FROM device WHERE lease_owner IS NOT NULL AND lease_expires_at > ?",
                            (now,)).fetchall()
    return {owner.rsplit("#", 1)[0] for (owner,) in rows if owner.count("#") >= 2}


def _leases_of(capf_db: Path, boots: set[str]) -> int:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    with contextlib.closing(sqlite3.connect(capf_db, timeout=30)) as conn:
        rows = conn.execute("SELECT lease_owner FROM device WHERE lease_owner IS NOT NULL AND lease_expires_at > ?",
                            (now,)).fetchall()
    return sum(1 for (owner,) in rows if owner.rsplit("#", 1)[0] in boots)


def installed_names(capf_db: Path) -> set[str]:
    """The devices CAPF recorded as installed (a phone may have stored its LSC when CAPF died
    before it recorded that: it is not done until its next check-in)."""
    with contextlib.closing(sqlite3.connect(capf_db, timeout=30)) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM device WHERE status = 'CERT_STATUS_UPGRADE_SUCCESS'")}


def account(root: Path, names: set[str]) -> dict[str, Any]:
    """What the CA issued against what CAPF recorded, installed and recorded for revocation."""
    now = dt.datetime.now(dt.UTC)
    with contextlib.closing(sqlite3.connect(root / "ca.db", timeout=30)) as conn:
        issued = [bytes(r[0]) for r in conn.execute(
            "SELECT cert_der FROM ca_request WHERE disposition = 'issued' AND cert_der IS NOT NULL")]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        revoked_at_ca = {r[0] for r in conn.execute("SELECT serial FROM ca_revocation")} \
            if "ca_revocation" in tables else set()
    with contextlib.closing(sqlite3.connect(root / "capf.db", timeout=30)) as conn:
        recorded = {(r[0], r[1]) for r in conn.execute("SELECT issuer, serial FROM lsc")}
        marked = {(r[0], r[1]) for r in conn.execute("SELECT issuer, serial FROM lsc_revocation")}
        installed = {r[0]: r[1] for r in conn.execute(
            "SELECT name, lsc_serial FROM device WHERE status = 'CERT_STATUS_UPGRADE_SUCCESS'")}
        intents = dict(Counter(r[0] for r in conn.execute("SELECT state FROM lsc_intent")))
    valid: Counter[str] = Counter()
    valid_before: Counter[str] = Counter()
    orphans = orphans_left = 0
    for der in issued:
        cert = x509.load_der_x509_certificate(der)
        name = pki.common_name(cert.subject).upper()
        if name not in names or cert.not_valid_after_utc <= now:
            continue
        key = (cert.issuer.rfc4514_string(), format(cert.serial_number, "x"))
        valid_before[name] += 1
        if key not in recorded:
            orphans += 1
            if key not in marked:
                orphans_left += 1
        if key not in marked and key[1] not in revoked_at_ca:
            valid[name] += 1
    return {"installed": installed, "duplicates": sorted(n for n, c in valid.items() if c > 1),
            "multiple_issued": sum(1 for c in valid_before.values() if c > 1), "orphans": orphans,
            "orphans_left": orphans_left, "intents": intents, "recorded_for_revocation": len(marked)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    tiers = [t for t in args.tiers.split(",") if t]
    assert all(t in READY for t in tiers), tiers
    with contextlib.ExitStack() as stack:
        base = Path(args.dir) if args.dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crash-")))
        root = base / "lab"
        prepare_folder(root)
        pool = KeyPool()
        keys_ready = asyncio.ensure_future(asyncio.to_thread(pool.fill, {("rsa", 2048): args.devices,
                                                                          ("rsa", 1024): args.devices // 2,
                                                                          ("ec", 256): args.devices}))
        config, mic = await asyncio.to_thread(make_lab, root)
        ports = {t: free_port() for t in READY}
        db = {t: f"sqlite:///{root / (t + '.db')}" for t in READY}
        ca_url = f"https://127.0.0.1:{ports['ca']}/certsrv"
        ra_url = f"https://127.0.0.1:{ports['ra']}/.well-known/est"
        config = config.model_copy(update={
            "ra": config.ra.model_copy(update={"ca_url": ca_url}),
            "capf": config.capf.model_copy(update={
                "ra_url": ra_url, "ca_database_url": SecretStr(db["ca"]), "retry_delay": 2,
                "max_concurrent_enrollments": 8})})
        files = {t: write_config(root / f"{t}.toml", config.model_copy(update={
            "database": config.database.model_copy(update={"url": SecretStr(db[t])})})) for t in READY}
        servers = {t: Tier(t, files[t], ports[t], ["--no-scheduler"] if t == "capf" else []) for t in READY}
        capf_config = config.model_copy(update={"database": config.database.model_copy(update={"url": SecretStr(db["capf"])})})
        try:
            for t in ("ca", "ra", "capf"):
                await servers[t].start()
            devices = await asyncio.to_thread(plan_fleet, root, args.devices, mic, pool)
            await asyncio.to_thread(register_devices, capf_config, devices)
            await keys_ready
            target = Target("127.0.0.1", ports["capf"], phone_ssl_context(root / "ca" / "root.pem"),
                            read_timeout=60.0, keepalive=5.0)
            members = {d.name: d.member for d in devices}
            done: dict[str, float] = {}
            installs = 0
            low, high = max(1, args.devices // 10), max(2, args.devices * 8 // 10)
            thresholds = sorted(rng.sample(range(low, high), min(args.kills, high - low)))
            kills: list[dict[str, Any]] = []
            kill_tasks: list[asyncio.Task[None]] = []
            installed_after = asyncio.Event()
            one_at_a_time = asyncio.Lock()
            finished = False

            async def kill(i: int) -> None:
                tier = tiers[i % len(tiers)]
                await asyncio.sleep(rng.uniform(0, args.jitter))  # a random point, not a synchronisation
                async with one_at_a_time:  # a kill starts once the previous tier is back and serving
                    boots = await asyncio.to_thread(_held_boots, root / "capf.db") if tier == "capf" else set()
                    record: dict[str, Any] = {"tier": tier, "after_installs": installs}
                    started = time.monotonic()
                    await servers[tier].kill9()
                    await servers[tier].start()
                    record["restarted_s"] = round(time.monotonic() - started, 2)
                    if tier == "capf":
                        record["stuck_leases"] = await asyncio.to_thread(_leases_of, root / "capf.db", boots)
                    installed_after.clear()
                try:
                    await asyncio.wait_for(installed_after.wait(), args.recover_timeout)
                    record["recovered_s"] = None if finished else round(time.monotonic() - started, 2)
                except TimeoutError:  # not recovered: said as it is
                    record["recovered_s"] = None
                kills.append(record)

            def on_result(member: Member, result: SessionResult) -> None:
                nonlocal installs
                if result.outcome != "installed":
                    return
                installed_after.set()
                if member.phone.name not in done:
                    done[member.phone.name] = time.monotonic()
                    installs += 1
                    while len(kill_tasks) < len(thresholds) and installs >= thresholds[len(kill_tasks)]:
                        kill_tasks.append(asyncio.get_running_loop().create_task(kill(len(kill_tasks))))

            started = time.monotonic()
            rounds = 0
            while rounds < args.rounds:
                recorded = await asyncio.to_thread(installed_names, root / "capf.db")
                left = [m for n, m in members.items() if n not in recorded]
                if not left:
                    break
                rounds += 1
                await run_fleet(left, target, concurrency=args.concurrency, retries=8, comm_retry_delay=1.0,
                                max_retry_delay=2.0, on_result=on_result)
                await one_at_a_time.acquire()  # a kill under way ends (its tier serving) before the next round
                one_at_a_time.release()
            fleet_s = time.monotonic() - started
            finished = True
            installed_after.set()
            await asyncio.gather(*kill_tasks)
            reconcile = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "onlineca", "--config", str(files["capf"]), "capf", "reconcile", "--json",
                "--grace", "0", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await reconcile.communicate()
            try:
                report = json.loads(out)
            except ValueError:
                raise SystemExit(f"capf reconcile failed: {err.decode()[-2000:]}") from None
        finally:
            for t in ("capf", "ra", "ca"):
                await servers[t].stop()
        after = await asyncio.to_thread(account, root, set(members))
    lost = sorted(n for n in members if n not in after["installed"])
    return {
        "bench": "kill -9 during a fleet enrollment (CA, RA, CAPF processes on 127.0.0.1)",
        "devices": args.devices, "tiers": tiers, "rounds": rounds, "fleet_seconds": round(fleet_s, 1),
        "lost": len(lost), "lost_devices": lost[:20],
        "duplicates": len(after["duplicates"]), "duplicate_devices": after["duplicates"][:20],
        "devices_with_several_certificates_before_reconcile": after["multiple_issued"],
        "orphans": after["orphans"], "orphans_left_after_reconcile": after["orphans_left"],
        "reconcile": {k: (len(v) if isinstance(v, list) else v) for k, v in report.items()},
        "recorded_for_revocation": after["recorded_for_revocation"], "intents": after["intents"],
        "kills": kills, "max_recovered_s": max((k["recovered_s"] or 0.0 for k in kills), default=0.0),
        "not_recovered": sum(1 for k in kills if k["recovered_s"] is None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=600)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--tiers", default="ca,ra,capf", help="Tiers to kill, in turn (comma-separated).")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6, help="Fleet rounds at most for devices left over.")
    parser.add_argument("--jitter", type=float, default=0.5, help="Random extra seconds before each kill.")
    parser.add_argument("--recover-timeout", type=float, default=120.0,
                        help="Seconds to wait for the first install after a kill.")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", default=None, help="Keep the lab here (default: a temporary folder).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['devices']} devices, kills {', '.join(k['tier'] for k in result['kills'])}: "
          f"{result['lost']} lost, {result['duplicates']} duplicate valid certificates, "
          f"{result['orphans']} orphans ({result['orphans_left_after_reconcile']} left after reconcile), "
          f"recovered within {result['max_recovered_s']} s; fleet {result['fleet_seconds']} s in "
          f"{result['rounds']} round(s)")
    for k in result["kills"]:
        print(f"  kill -9 {k['tier']} after {k['after_installs']} installs: back in {k['restarted_s']} s, first "
              f"install {k['recovered_s']} s after the kill" + (f", {k['stuck_leases']} device(s) still leased to "
                                                                "the dead process" if "stuck_leases" in k else ""))


if __name__ == "__main__":
    main()
