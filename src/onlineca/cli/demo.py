"""``onlineca demo``: the whole system on 127.0.0.1 with a simulated fleet, from nothing, in under a minute.

The lab itself (PKI, servers, fleet, enrollment and renewal) is ``onlineca.lab``; this command
chooses its folder, draws the progress bar, prints the summary (or one JSON object with
``--json``) and, with ``--keep-running``, serves until Ctrl-C.  Renewal is honest about time: the
renewal scheduler runs with its clock advanced past the LSCs' renewal window and the summary says
so.  Exit 0 only when every device enrolled and renewed.  With ``--keep-running`` the administration
console runs too (``onlineca.admin``, on 127.0.0.1:8080 or a free port), and the demo prints its
URL and the one-time password of its ``admin`` account: the only password it ever prints.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from onlineca.cli.app import AppContext, exit_on_finding, until_signal
from onlineca.lab import LabOptions, run_lab


class ProgressBar:
    """``lab.Progress`` as a rich progress bar on stderr, drawn from the first thing it shows (a lab
    that fails before, e.g. in a folder it did not make, leaves only its ``error:`` line)."""

    def __init__(self) -> None:
        self._bar = Progress(SpinnerColumn(), TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[note]}"), TimeElapsedColumn(),
                             console=Console(stderr=True), transient=False)
        self._live = False
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live:
            self._bar.__exit__(exc_type, exc, tb)

    def _show(self) -> Progress:
        if not self._live:
            self._bar.__enter__()
            self._live = True
        return self._bar

    def stage(self, description: str, total: int) -> None:
        self._task = self._show().add_task(description, total=total, note="")

    def advance(self, note: str) -> None:
        if self._task is not None:
            self._bar.update(self._task, advance=1, note=note)

    def log(self, text: str) -> None:
        self._show().console.print(text)


@dataclass
class DemoConsole:
    """The console started beside the lab, and the one-time password of its admin account."""

    url: str
    password: str
    running: Any
    services: Any

    async def close(self) -> None:
        await self.running.close()
        self.services.close()


async def _start_console(config_path: Path) -> DemoConsole:
    """The administration console over the lab (its configuration file, so the online-CA page and
    the CA's requests are the lab's): on 127.0.0.1:8080, or a free port when that is taken."""
    from onlineca.admin.server import start_admin
    from onlineca.config import load_config
    from onlineca.errors import ConfigError
    from onlineca.service import accounts
    from onlineca.service.core import Services, cli_actor

    svc = Services(load_config(config_path), config_path)
    await asyncio.to_thread(svc.migrate)
    password = await asyncio.to_thread(accounts.ensure_admin, svc, cli_actor())
    if password is None:  # a demo folder is new at each run; should it not be, give admin a new password
        password = await asyncio.to_thread(accounts.reset_password, svc, cli_actor(), "admin")
    try:
        running = await start_admin(svc, host="127.0.0.1", port=8080)
    except ConfigError:
        running = await start_admin(svc, host="127.0.0.1", port=0)
    return DemoConsole(running.url, password, running, svc)


def print_summary(report: dict[str, Any]) -> None:
    console = Console()
    table = Table(title=f"onlineca demo: {report['devices']} phones in {report['seconds']:.1f} s")
    for col in ("flow", "auth mode / key", "devices", "enrolled", "renewed", "failed"):
        table.add_column(col, justify="left" if col in ("flow", "auth mode / key") else "right")
    for g in sorted(report["groups"], key=lambda g: (g["flow"], g["group"])):
        table.add_row(g["flow"], g["group"], str(g["devices"]), str(g["enrolled"]), str(g["renewed"]),
                      f"[red]{g['failed']}[/red]" if g["failed"] else "0")
    for flow, t in report["flows"].items():
        table.add_row(f"[b]{flow}[/b]", "[b]all[/b]", str(t["devices"]), str(t["enrolled"]), str(t["renewed"]),
                      str(t["failed"]))
    table.add_row("[b]total[/b]", "", str(report["devices"]), str(report["enrolled"]), str(report["renewed"]),
                  str(report["failed"]))
    console.print(table)
    r = report["renewal"]
    when = f"simulated ({r['days_ahead']} days ahead)" if r["clock"] == "simulated" else r["clock"]
    console.print(f"Renewal clock: {when} - {r['why']}")
    if "revocations" in report:
        rv = report["revocations"]
        console.print(f"Replaced LSCs: {rv['revoked']} revoked at the CA (CRL at {rv['crl']}), "
                      f"{rv['manual']} left to an administrator, {rv['failed']} failed")
    for f in report["failures"]:
        console.print(f"[red]failed[/red] {f['device']} ({f['phase']}): {f['outcome']} {f['reason'] or ''} "
                      f"{f['error'] or ''}")
    console.print(f"Data: {report['data_dir']}")
    console.print("Logs:")
    for name, path in report["logs"].items():
        console.print(f"  {name:<24} {path}")


async def _main(opts: LabOptions, as_json: bool) -> dict[str, Any]:
    if as_json:  # one JSON object on stdout, nothing else
        run = await run_lab(opts)
    else:
        with ProgressBar() as bar:
            run = await run_lab(opts, bar)
    report = run.report
    if as_json:
        click.echo(json.dumps(report))
    else:
        print_summary(report)
    if run.servers is not None:
        console = await _start_console(Path(report["config"]))
        if not as_json:
            click.echo(f"Servers keep running (CAPF {report['servers']['capf']}); Ctrl-C stops them.\n"
                       f"Check every hop: onlineca --config {report['config']} diagnose")
            click.echo(f"Console: {console.url}  (log in as admin, password {console.password}: shown once)")
        else:
            click.echo(json.dumps({"console": {"url": console.url, "user": "admin", "password": console.password}}))
        sys.stdout.flush()
        try:
            await until_signal()
        finally:
            await console.close()
            await run.servers.close()
    return report


@click.command("demo")
@click.option("--devices", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="Simulated phones to enroll and renew.")
@click.option("--concurrency", type=click.IntRange(1, 512), default=8, show_default=True)
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="Demo folder (default <data dir>/demo; emptied at each run).")
@click.option("--temp", is_flag=True, help="Use a temporary folder, removed at the end (logs included).")
@click.option("--free-ports", is_flag=True, help="Do not try the default ports first.")
@click.option("--keep-running", is_flag=True,
              help="Keep CA, RA and CAPF running after the summary, with the administration console (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (enrolled, renewed, failed, seconds, ...).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Run CA, RA and CAPF as 'onlineca <tier> serve --workers N' processes, as deployed "
                   "(N per server; 0: all three in the demo's own process).")
@click.pass_obj
def demo(app: AppContext, devices: int, concurrency: int, folder: Path | None, temp: bool, free_ports: bool,
         keep_running: bool, as_json: bool, workers: int) -> None:
    """Start CA, RA and CAPF on 127.0.0.1, enroll and renew a simulated fleet, print a summary."""
    tmp = tempfile.mkdtemp(prefix="onlineca-demo-") if temp else None
    root = Path(tmp) if tmp else (folder or app.data_dir / "demo")
    opts = LabOptions(root.absolute(), devices, concurrency, keep_running, default_ports=not free_ports,
                      workers=workers)
    try:
        report = asyncio.run(_main(opts, as_json))
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # the shell's status for an interrupted command, quietly
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    exit_on_finding(bool(report["failed"]))


__all__ = ["demo"]
