"""``onlineca logs collect | trace | analyze``: every component's logs, one device's timeline
through them, and the failure signatures found in them.

Thin click commands over ``diagnose.collect``, ``trace`` and ``analyze``: they read the
configuration from the root command, print text or ``--json``, and exit 1 when something is wrong
(0 otherwise, 2 on bad usage).  Nothing here needs root or writes outside the file asked for;
nothing here prints a secret.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from onlineca.cli.app import AppContext, exit_on_finding


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
    exit_on_finding(not result.ok or bool(result.unreadable))


@logs.command("trace")
@click.argument("device")
@click.option("--log-dir", "log_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Where to read logs (default: the configured log dir); files or folders, repeatable.")
@click.option("--date", "day", default=None, help="Day of CAPF trace lines without a date (YYYY-MM-DD).")
@click.option("--utc-offset", default=None,
              help="Offset of the local-time logs (CAPF, RA error.log) from UTC, e.g. -05:00 "
                   "(default: this machine's).")
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as JSON.")
@click.pass_obj
def trace(app: AppContext, device: str, log_dirs: tuple[Path, ...], day: str | None, utc_offset: str | None,
          as_json: bool) -> None:
    """Follow DEVICE through the CAPF log, the RA's error.log and access log, and the CA's IIS log."""
    from onlineca.diagnose.trace import build_timeline
    from onlineca.errors import TraceError
    try:
        timeline = build_timeline(device, list(log_dirs) or [app.config.log_path], day=day, utc_offset=utc_offset)
    except TraceError as exc:
        # Every TraceError is about an argument (device name, date, offset, a path that is not there).
        raise click.UsageError(str(exc)) from None
    click.echo(json.dumps(timeline.as_dict(), indent=2, default=str) if as_json else timeline.to_text())
    exit_on_finding(not timeline.events)


@logs.command("collect")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bundle to write (.tar.gz).")
@click.option("--no-diagnose", is_flag=True, help="Do not run the diagnose checks into the bundle.")
@click.pass_obj
def collect(app: AppContext, out: Path, no_diagnose: bool) -> None:
    """Bundle every component's logs, the redacted configuration, the diagnose report and versions."""
    from onlineca.diagnose.collect import collect_bundle
    summary = collect_bundle(app.config, out, config_path=app.config_path, run_diagnose=not no_diagnose)
    click.echo(f"wrote {out}: {len(summary.logs)} log file(s), configuration, "
               f"{'diagnose report, ' if summary.diagnosed else ''}versions")
    for name in summary.logs:
        click.echo(f"  {name}")
