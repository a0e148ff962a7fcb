"""The ``onlineca`` command.

Each component owns its command group in its own package (``onlineca.ca.cli:ca``,
``onlineca.est.cli:est``...); this module only holds the global options and loads those groups
lazily, so ``onlineca --help`` stays fast and a broken component cannot break the others.
Exit status: 0 success, 1 a finding or failure, 2 bad usage (click's own).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from onlineca import __version__
from onlineca.config import Config, load_config
from onlineca.errors import OnlineCAError

# command name -> "module:attribute" of its click group or command
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "ca": ("onlineca.cli.ca:ca", "the CA (AD CS web enrollment): init, serve, requests, users"),
    "est": ("onlineca.cli.est:est", "a command-line EST client for any EST server"),
    "ra": ("onlineca.cli.ra:ra", "the RA: an EST server that enrolls at the CA"),
    "capf": ("onlineca.cli.capf:capf", "the CAPF service and its device inventory"),
    "phone": ("onlineca.cli.phone:phone", "the device simulator"),
    "diagnose": ("onlineca.cli.diagnose:diagnose", "preflight checks of every hop"),
    "logs": ("onlineca.cli.diagnose:logs", "collect, trace and analyze logs"),
    "demo": ("onlineca.cli.demo:demo", "the whole system on 127.0.0.1 with a simulated fleet"),
}


@dataclass
class AppContext:
    config: Config
    config_path: Path | None
    log_format: str

    @property
    def data_dir(self) -> Path:
        return self.config.data_path

    @property
    def log_dir(self) -> Path:
        return self.config.log_path


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        for name, (target, _help) in SUBCOMMANDS.items():
            module = target.split(":")[0]
            if importlib.util.find_spec(module) is not None:
                names.add(name)
        return sorted(names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in SUBCOMMANDS:
            return cmd
        module_name, attr = SUBCOMMANDS[name][0].split(":")
        if importlib.util.find_spec(module_name) is None:
            return None
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in SUBCOMMANDS:
                rows.append((name, SUBCOMMANDS[name][1]))
            else:
                cmd = super().get_command(ctx, name)
                rows.append((name, cmd.get_short_help_str() if cmd else ""))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="ONLINECA_CONFIG", help="TOML configuration file (default: embedded defaults).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="ONLINECA_DATA_DIR",
              help="Where keys, certificates and the database live (default ./onlineca-data).")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where each component writes its log (default <data dir>/logs).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log format (default from config: text).")
@click.version_option(__version__, prog_name="onlineca")
@click.pass_context
def main_group(ctx: click.Context, config_path: Path | None, data_dir: Path | None,
               log_dir: Path | None, log_format: str | None) -> None:
    """onlineca: device certificates enrolled and renewed through CAPF, an EST RA and a /certsrv CA."""
    try:
        cfg = load_config(config_path)
    except OnlineCAError as exc:
        raise click.UsageError(str(exc)) from None
    updates: dict = {}
    if data_dir is not None:
        updates["data_dir"] = str(data_dir)
    if log_dir is not None:
        updates["log_dir"] = str(log_dir)
    if log_format is not None:
        updates["logging"] = cfg.logging.model_copy(update={"format": log_format})
    if updates:
        cfg = cfg.model_copy(update=updates)
    ctx.obj = AppContext(config=cfg, config_path=config_path, log_format=cfg.logging.format)


@main_group.group("config")
def config_group() -> None:
    """Check or print a configuration file."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE; print one clear message naming the bad key, exit 1 if it is wrong."""
    try:
        load_config(file)
    except OnlineCAError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    click.echo(f"{file}: OK")


@config_group.command("example")
def config_example() -> None:
    """Print an example configuration with the defaults."""
    from onlineca.config import EXAMPLE
    click.echo(EXAMPLE, nl=False)


def main() -> None:
    try:
        main_group(standalone_mode=True)
    except OnlineCAError as exc:  # pragma: no cover - commands catch their own
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def fail(exc: OnlineCAError | str) -> click.exceptions.Exit:
    """Print an error for the administrator and exit 1 (used by every command group)."""
    click.echo(f"error: {exc}", err=True)
    raise SystemExit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
