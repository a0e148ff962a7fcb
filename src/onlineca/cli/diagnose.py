"""``onlineca diagnose``: preflight checks of every hop, CAPF -> RA -> CA.

A thin click command over ``diagnose.checks``: it reads the configuration from the root command
(or ``--config``), prints text or ``--json``, and exits 1 when a finding is an error (0 otherwise,
2 on bad usage).  It enrolls nothing, writes nothing and prints no secret.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from onlineca.cli.app import AppContext, exit_on_finding


@click.command("diagnose")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Configuration file (default: the one given to 'onlineca --config').")
@click.option("--capf-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CAPF's own certificate (default: found in the data dir).")
@click.option("--only", type=click.Choice(["capf", "ra", "ca"]), multiple=True, help="Check only these hops.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema in docs/troubleshooting.md).")
@click.pass_obj
def diagnose(app: AppContext, config_file: Path | None, capf_cert: Path | None, only: tuple[str, ...],
             as_json: bool) -> None:
    """Check every hop in order (CAPF -> RA -> CA); exit 1 when anything is an error."""
    from onlineca.config import load_config
    from onlineca.diagnose.checks import run_diagnose

    cfg = app.config if config_file is None else load_config(config_file)
    report = asyncio.run(run_diagnose(cfg, capf_cert=capf_cert, hops=set(only) or None))
    click.echo(report.to_json() if as_json else report.to_text())
    exit_on_finding(not report.ok)
