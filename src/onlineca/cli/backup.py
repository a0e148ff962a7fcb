"""``onlineca backup create | verify | restore``: the data dir, its database and the configuration
in one tar with a SHA-256 manifest (``store.backup`` says what goes in, and what never does).

``create`` works while the servers run (SQLite's online backup, ``pg_dump``); ``verify`` exits 1
when any member does not match; ``restore`` writes into a new data dir and says what is left to
do.  Every path printed is absolute; no secret is printed.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from onlineca.cli.app import AppContext, exit_on_finding


@click.group("backup")
def backup() -> None:
    """Create, verify or restore a backup of the data dir, the database and the configuration."""


@backup.command("create")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The backup file (default ./onlineca-backup-<UTC time>.tar.gz).")
@click.option("--with-logs", is_flag=True, help="Include the data dir's logs/ too.")
@click.pass_obj
def create_cmd(app: AppContext, out: Path | None, with_logs: bool) -> None:
    """Snapshot the database, the data dir's keys and certificates, and the configuration."""
    from onlineca.store import backup as store

    out = (out or Path(f"onlineca-backup-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.tar.gz")).absolute()
    manifest = store.create(app.config, app.config_path, out, with_logs=with_logs)
    click.echo(f"backup {out} (mode 0600): {len(manifest.files)} file(s), database {manifest.database['kind']}, "
               f"data dir {manifest.data_dir}")


@backup.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def verify_cmd(file: Path, as_json: bool) -> None:
    """Check every member of FILE against its manifest; exit 1 if any differs or is missing."""
    from onlineca.store import backup as store

    report = store.verify(file)
    if as_json:
        click.echo(json.dumps({"file": str(report.path), "ok": report.ok, "problems": report.problems,
                               "created": report.manifest.created, "files": len(report.manifest.files)}, indent=2))
    else:
        for problem in report.problems:
            click.echo(f"{report.path}: {problem}")
        click.echo(f"{report.path}: {'OK' if report.ok else 'DAMAGED'} ({len(report.manifest.files)} file(s), "
                   f"made {report.manifest.created} from {report.manifest.data_dir})")
    exit_on_finding(not report.ok)


@backup.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--to", "target", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The new data dir (must not exist, or be empty).")
@click.option("--database-url", envvar="ONLINECA_RESTORE_DATABASE_URL", default=None,
              help="For a PostgreSQL backup: the empty database to restore into (or $ONLINECA_RESTORE_DATABASE_URL).")
def restore_cmd(file: Path, target: Path, database_url: str | None) -> None:
    """Verify FILE, then restore it into a new data dir."""
    from onlineca.store import backup as store

    manifest = store.restore(file, target, database_url=database_url)
    target = target.absolute()
    click.echo(f"restored {len(manifest.files)} file(s) from {file.absolute()} into {target}")
    if manifest.config:
        click.echo(f"the configuration (was {manifest.config}) is in {target / 'config' / 'onlineca.toml'}: "
                   f"its paths may name the old data dir {manifest.data_dir}; point them at {target}")
    click.echo("passphrase and PIN files are never in a backup: put them in place before starting the servers")
