"""``onlineca config check | example``: validate the configuration, or print one with every default.

``check`` says which file is in force and why (the search path), then checks what can be checked
without the network (``diagnose.config_check``): one line per check, absolute paths in each, and
exit 1 when any is an error.  A file that does not load fails with one line naming the bad key
(never a pydantic dump, never a secret's value).  ``example`` is generated from the configuration
model, so it lists every key with its default and what it is for.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from onlineca.cli.app import AppContext, exit_on_finding
from onlineca.config import ConfigSource, example_toml, load_config
from onlineca.errors import ConfigError


@click.group("config")
def config() -> None:
    """Check or print a configuration file."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the file in force and every check.")
@click.pass_obj
def config_check(app: AppContext, file: Path | None, as_json: bool) -> None:
    """Validate FILE (default: the file in force, from --config, $ONLINECA_CONFIG or the search
    path): keys, URLs, files, key/certificate pairs, certificate dates and chains, ports."""
    from onlineca.diagnose.config_check import check_config

    source = ConfigSource(file.absolute(), "the command line") if file is not None else app.source
    try:
        cfg = load_config(source.path) if file is not None else app.config
    except ConfigError as exc:
        # Without its hint, which says to run this very command.
        raise ConfigError(exc.message, hint="") from None
    if file is not None and app.overrides:
        cfg = cfg.model_copy(update={k: v for k, v in app.overrides.items() if k != "logging"})
    results = check_config(cfg, source)
    errors = [r for r in results if r.level == "error"]
    warnings = [r for r in results if r.level == "warning"]
    if as_json:
        click.echo(json.dumps({"config": str(source.path) if source.path else None, "origin": source.origin,
                               "ok": not errors, "checks": [r.__dict__ for r in results]}, indent=2))
    else:
        click.echo(source.describe())
        for r in results[1:]:
            click.echo(r.line())
        name = source.path or "embedded defaults"
        summary = f"{len(errors)} error(s), {len(warnings)} warning(s)"
        click.echo(f"{name}: OK ({summary})" if not errors else f"{name}: {summary}")
    exit_on_finding(bool(errors))


@config.command("example")
def config_example() -> None:
    """Print every key with its default and what it is for (generated from the configuration model)."""
    click.echo(example_toml(), nl=False)
