"""``onlineca config check | example``: validate a configuration file, or print one with the defaults.

``check`` prints ``FILE: OK``, or fails with one line naming the bad key (never a pydantic dump,
never a secret's value).
"""

from __future__ import annotations

from pathlib import Path

import click

from onlineca.config import EXAMPLE, load_config
from onlineca.errors import ConfigError


@click.group("config")
def config() -> None:
    """Check or print a configuration file."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE; print one clear message naming the bad key, exit 1 if it is wrong."""
    try:
        load_config(file)
    except ConfigError as exc:
        # Without its hint, which says to run this very command.
        raise ConfigError(exc.message, hint="") from None
    click.echo(f"{file}: OK")


@config.command("example")
def config_example() -> None:
    """Print an example configuration with the defaults."""
    click.echo(EXAMPLE, nl=False)
