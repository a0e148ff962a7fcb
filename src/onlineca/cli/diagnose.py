"""``onlineca diagnose`` and ``onlineca logs collect | trace | analyze``.

Thin click commands over ``checks``, ``collect``, ``trace`` and ``analyze``: they read the
configuration from the root command's context, print text or ``--json``, and exit 1 when
something is wrong (0 otherwise, 2 on bad usage).  Nothing here needs root or writes outside the
file asked for; nothing here prints a secret.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from onlineca.cli import AppContext
from onlineca.config import Config


def _config(ctx: click.Context) -> tuple[Config, Path | None]:
    app = ctx.obj
    # Duck-typed: under "python -m onlineca.cli" the root's AppContext is __main__'s class.
    if isinstance(app, AppContext) or hasattr(app, "config"):
        return app.config, getattr(app, "config_path", None)
    from onlineca.config import load_config
    return load_config(None), None


@click.command("diagnose")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Configuration file (default: the one given to 'onlineca --config').")
@click.option("--capf-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CAPF's own certificate (default: found in the data dir).")
@click.option("--only", type=click.Choice(["capf", "ra", "ca"]), multiple=True, help="Check only these hops.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema in docs/troubleshooting.md).")
@click.pass_context
def diagnose(ctx: click.Context, config_file: Path | None, capf_cert: Path | None, only: tuple[str, ...],
             as_json: bool) -> None:
    """Check every hop in order (CAPF -> RA -> CA); exit 1 when anything is an error."""
    from onlineca.diagnose.checks import run_diagnose
    from onlineca.errors import ConfigError
    cfg, _path = _config(ctx)
    if config_file is not None:
        from onlineca.config import load_config
        try:
            cfg = load_config(config_file)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
    report = asyncio.run(run_diagnose(cfg, capf_cert=capf_cert, hops=set(only) or None))
    click.echo(report.to_json() if as_json else report.to_text())
    sys.exit(0 if report.ok else 1)


@click.group("logs")
def logs() -> None:
    """Collect, trace and analyze the logs of every component."""


@logs.command("analyze")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the causes and hits as JSON.")
def analyze(paths: tuple[Path, ...], as_json: bool) -> None:
    """Find the failure signatures in log files (ours, or the original CAPF / NGINX / IIS logs)."""
    from onlineca.diagnose.analyze import analyze_paths
    result = analyze_paths(paths)
    click.echo(json.dumps(result.as_dict(), indent=2, default=str) if as_json else result.to_text())
    sys.exit(0 if result.ok and not result.unreadable else 1)


@logs.command("trace")
@click.argument("device")
@click.option("--log-dir", "log_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Where to read logs (default: the configured log dir); files or folders, repeatable.")
@click.option("--date", "day", default=None, help="Day of CAPF trace lines without a date (YYYY-MM-DD).")
@click.option("--utc-offset", default=None,
              help="Offset of the local-time logs (CAPF, RA error.log) from UTC, e.g. -05:00 "
                   "(default: this machine's).")
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as JSON.")
@click.pass_context
def trace(ctx: click.Context, device: str, log_dirs: tuple[Path, ...], day: str | None, utc_offset: str | None,
          as_json: bool) -> None:
    """Follow DEVICE through the CAPF log, the RA's error.log and access log, and the CA's IIS log."""
    from onlineca.diagnose.trace import build_timeline
    from onlineca.errors import TraceError
    cfg, _ = _config(ctx)
    try:
        timeline = build_timeline(device, list(log_dirs) or [cfg.log_path], day=day, utc_offset=utc_offset)
    except TraceError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(json.dumps(timeline.as_dict(), indent=2, default=str) if as_json else timeline.to_text())
    sys.exit(0 if timeline.events else 1)


@logs.command("collect")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bundle to write (.tar.gz).")
@click.option("--no-diagnose", is_flag=True, help="Do not run the diagnose checks into the bundle.")
@click.pass_context
def collect(ctx: click.Context, out: Path, no_diagnose: bool) -> None:
    """Bundle every component's logs, the redacted configuration, the diagnose report and versions."""
    from onlineca.diagnose.collect import collect_bundle
    cfg, path = _config(ctx)
    summary = collect_bundle(cfg, out, config_path=path, run_diagnose=not no_diagnose)
    click.echo(f"wrote {out}: {len(summary.logs)} log file(s), configuration, "
               f"{'diagnose report, ' if summary.diagnosed else ''}versions")
    for name in summary.logs:
        click.echo(f"  {name}")
