"""``onlineca service install``: the systemd units of the servers and the logrotate snippet.

It writes ``onlineca-ca.service``, ``-ra``, ``-capf`` and ``-admin`` (``infra.systemd``: Type=notify,
hardened, a dedicated user, the state in /var/lib/onlineca) into ``--dir`` (/etc/systemd/system by
default) and ``onlineca`` into ``--logrotate-dir`` (/etc/logrotate.d), then prints what is left to
do (make the user, reload systemd, start).  It starts nothing and changes no user; with ``--dir``
somewhere else it is its own dry run (the tests and docs/operations.md use it so).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from onlineca.cli.app import AppContext

SYSTEMD_DIR = Path("/etc/systemd/system")
LOGROTATE_DIR = Path("/etc/logrotate.d")


def onlineca_command() -> tuple[str, ...]:
    """How systemd should run this very onlineca: the console script beside this Python (a
    virtual environment's bin/), else the one on PATH, else ``python -m onlineca``."""
    beside = Path(sys.executable).with_name("onlineca")
    if beside.is_file():
        return (str(beside.absolute()),)
    found = shutil.which("onlineca")
    if found:
        return (str(Path(found).absolute()),)
    return (str(Path(sys.executable).absolute()), "-m", "onlineca")


@click.group("service")
def service() -> None:
    """Run the servers under systemd: units, logrotate."""


@service.command("install")
@click.option("--dir", "unit_dir", type=click.Path(file_okay=False, path_type=Path), default=SYSTEMD_DIR,
              show_default=True, envvar="ONLINECA_SYSTEMD_DIR",
              help="Where the unit files go (or $ONLINECA_SYSTEMD_DIR: a package's staging root).")
@click.option("--logrotate-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="ONLINECA_LOGROTATE_DIR",
              help=f"Where the logrotate snippet goes (default {LOGROTATE_DIR}, or --dir when --dir is given).")
@click.option("--user", default="onlineca", show_default=True, help="The system user the servers run as.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("/etc/onlineca/onlineca.toml"), show_default=True,
              help="The configuration file the servers read.")
@click.option("--log-target", type=click.Choice(["file", "journald"]), default="file", show_default=True,
              help="file: /var/log/onlineca/*.log, rotated by logrotate; journald: the journal only.")
@click.option("--role", "roles", type=click.Choice(["ca", "ra", "capf", "admin"]), multiple=True,
              help="Only these units (default: all four).")
@click.pass_obj
def install(app: AppContext, unit_dir: Path, logrotate_dir: Path | None, user: str, config_file: Path,
            log_target: str, roles: tuple[str, ...]) -> None:
    """Write the systemd units (and the logrotate snippet) for the servers."""
    from onlineca.infra import files, systemd

    cfg = app.config
    privileged = any(0 < p < 1024 for p in (cfg.ca.port, cfg.ra.port, cfg.capf.port, cfg.admin.port))
    settings = systemd.UnitSettings(command=onlineca_command(), user=user, config=config_file.absolute(),
                                    log_target=log_target, bind_privileged=privileged)
    if logrotate_dir is None:
        logrotate_dir = LOGROTATE_DIR if unit_dir == SYSTEMD_DIR else unit_dir
    written = []
    for role in roles or tuple(systemd.ROLES):
        path = unit_dir.absolute() / systemd.unit_name(role)
        files.write_file(path, systemd.unit_text(role, settings).encode(), mode=0o644)
        written.append(path)
    if log_target == "file":
        path = logrotate_dir.absolute() / "onlineca"
        files.write_file(path, systemd.logrotate_text(user).encode(), mode=0o644)
        written.append(path)
    for path in written:
        click.echo(f"wrote {path}")
    units = " ".join(systemd.unit_name(r) for r in roles or systemd.ROLES)
    click.echo("next (as root):\n"
               f"  useradd --system --home-dir {systemd.STATE_DIR} --shell /usr/sbin/nologin {user}\n"
               f"  install -d -m 0750 -o root -g {user} /etc/onlineca   # then {config_file} (0640) and "
               f"{systemd.ENV_FILE} (0600, the secrets)\n"
               "  systemctl daemon-reload\n"
               f"  systemctl enable --now {units}")
