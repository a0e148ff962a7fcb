"""The ``onlineca`` command: the root group, its global options, and the one error path.

``cli/`` is the only package that talks to a terminal.  Each command group lives in its own module
(``cli/ca.py``, ``cli/capf.py``...), listed in ``COMMANDS`` and imported only when it is run, so
``onlineca --help`` loads none of them (nor the configuration's pydantic models).

The root group's ``invoke`` is the one place an error becomes a message and an exit status: an
``OnlineCAError`` from a command (or from loading the configuration) prints ``error: ...`` on
stderr and exits 1; a click usage error exits 2 with click's usage message, plus a hint when a
global option such as ``--config`` was given after the command.  Findings exit 1 from their
command (``app.exit_on_finding``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from onlineca import __version__
from onlineca.cli.app import AppContext, report_error
from onlineca.errors import ConfigError, OnlineCAError, StoreError

# command name -> (module under onlineca.cli, attribute: its click group or command, help line)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "ca": ("ca", "ca", "the CA (AD CS web enrollment): init, serve, requests, users"),
    "ra": ("ra", "ra", "the RA: an EST server that enrolls at the CA"),
    "capf": ("capf", "capf", "the CAPF service and its device inventory"),
    "est": ("est", "est", "a command-line EST client for any EST server"),
    "phone": ("phone", "phone", "the device simulator"),
    "diagnose": ("diagnose", "diagnose", "preflight checks of every hop"),
    "logs": ("logs", "logs", "collect, trace and analyze logs"),
    "config": ("config", "config", "check or print a configuration file"),
    "demo": ("demo", "demo", "the whole system on 127.0.0.1 with a simulated fleet"),
    "admin": ("admin", "admin", "the administration console: pages, REST API, accounts"),
    # branch ops: running as a service, keys at rest, backups, the man page
    "service": ("service", "service", "install the systemd units and the logrotate snippet"),
    "keys": ("keys", "keys", "encrypt or decrypt the CA's and CAPF's private keys"),
    "backup": ("backup", "backup", "create, verify or restore a backup of the data dir"),
    "manpage": ("manpage", "manpage", "print the man page onlineca(1), generated from the commands"),
}

# the root's options, with the metavar the hint shows them with
GLOBAL_OPTIONS = {"--config": "FILE", "--data-dir": "DIR", "--log-dir": "DIR", "--log-format": "text|json",
                  "--log-target": "file|journald|stdout"}


def _global_option_hint(exc: click.NoSuchOption) -> click.UsageError | None:
    """A root option given after a subcommand (``onlineca ca serve --config x``): the same usage
    error, saying where the option goes.  None for any other unknown option."""
    metavar = GLOBAL_OPTIONS.get(exc.option_name)
    if metavar is None or exc.ctx is None or exc.ctx.parent is None:
        return None
    names = []
    ctx: click.Context | None = exc.ctx
    while ctx is not None and ctx.parent is not None:  # the subcommand path, without the root's name
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    example = " ".join(["onlineca", exc.option_name, metavar, *reversed(names)])
    # click's "Did you mean ...?" is left out: the hint is the answer.
    return click.UsageError(f"{exc.message.rstrip('.')} (global options such as {exc.option_name} go before "
                            f"the command: {example})", ctx=exc.ctx)


def _database_error(exc: Exception) -> OnlineCAError | None:
    """The database's own error (locked by another process past [database]
    busy_timeout, unreachable, refused) as one line, instead of SQLAlchemy's traceback."""
    if type(exc).__module__.split(".")[0] != "sqlalchemy":
        return None
    orig = getattr(exc, "orig", None)
    detail = str(orig if orig is not None else exc).strip().splitlines()[0][:300]
    if "locked" in detail.lower() or "lock timeout" in detail.lower():
        return StoreError(f"the database is locked by another process: {detail}",
                          hint="Try again once the other process (an import, a server's migration) is done, "
                               "or raise [database] busy_timeout.")
    return StoreError(f"the database answered: {detail}")


class RootGroup(click.Group):
    """Every command is in ``COMMANDS``, its module imported when the command is run; ``invoke``
    is the one error path."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _help = COMMANDS[name]
        command: click.Command = getattr(importlib.import_module(f"onlineca.cli.{module}"), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):  # from the table: listing imports no command module
            formatter.write_dl([(name, COMMANDS[name][2]) for name in self.list_commands(ctx)])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OnlineCAError as exc:
            raise report_error(exc) from None
        except click.NoSuchOption as exc:
            hinted = _global_option_hint(exc)
            if hinted is None:
                raise
            raise hinted from None
        except OSError as exc:  # a folder or file this user may not use (exit 1, one line)
            raise report_error(ConfigError(
                f"{exc.filename or 'a file'}: {exc.strerror or exc}",
                hint="Check that this user may read and write the data and log folders (--data-dir, --log-dir) "
                     "and the files named.")) from None
        except OverflowError as exc:  # a number from the command line too large to store
            raise click.UsageError(f"a number is out of range ({exc})", ctx=ctx) from None
        except ValueError as exc:
            if "null byte" not in str(exc):
                raise
            raise click.UsageError("a file name holds a NUL character", ctx=ctx) from None
        except Exception as exc:
            database = _database_error(exc)
            if database is None:
                raise
            raise report_error(database) from None


@click.group("onlineca", cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML configuration file (default: $ONLINECA_CONFIG, else the first of ./onlineca.toml, "
                   "~/.config/onlineca/onlineca.toml, /etc/onlineca/onlineca.toml; else the embedded defaults).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="ONLINECA_DATA_DIR",
              help="Where keys, certificates and the database live (default ./onlineca-data).")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where each component writes its log (default <data dir>/logs).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log format (default from config: text).")
@click.option("--log-target", type=click.Choice(["file", "journald", "stdout"]), default=None,
              envvar="ONLINECA_LOG_TARGET",
              help="Where servers log: files in the log dir (default), journald (stderr, no timestamp), stdout.")
@click.version_option(__version__, prog_name="onlineca")
@click.pass_context
def main_group(ctx: click.Context, config_path: Path | None, data_dir: Path | None,
               log_dir: Path | None, log_format: str | None, log_target: str | None) -> None:
    """onlineca: device certificates enrolled and renewed through CAPF, an EST RA and a /certsrv CA."""
    from onlineca.config import find_config
    from onlineca.infra.files import private_umask

    private_umask()  # every file any command makes is 0600, every folder 0700

    updates: dict[str, Any] = {}
    if data_dir is not None:
        updates["data_dir"] = str(data_dir.absolute())
    if log_dir is not None:
        updates["log_dir"] = str(log_dir.absolute())
    logging_updates = {k: v for k, v in (("format", log_format), ("target", log_target)) if v is not None}
    if logging_updates:
        updates["logging"] = logging_updates
    ctx.obj = AppContext(source=find_config(config_path), overrides=updates)
    ctx.obj.config  # noqa: B018  (read now: a bad configuration file fails every command, exit 1)


def main() -> None:
    """The ``onlineca`` console script and ``python -m onlineca`` (named onlineca either way, so
    usage lines read the same and shell completion is ``_ONLINECA_COMPLETE``)."""
    main_group(prog_name="onlineca")


__all__ = ["COMMANDS", "main", "main_group"]
