"""What every ``onlineca`` command module shares: the context the root command builds, the one
error -> message -> exit status path, and the serve-until-signal loop of the ``serve`` commands.

Exit status (DESIGN.md): 0 success, 1 a finding or a failure, 2 bad usage.  A command reports a
failure by raising ``OnlineCAError`` (bad usage: a click ``UsageError``); the root group turns it
into one ``error: ...`` line on stderr and exit status 1 with ``error_line``.  A reporting command
that found something wrong exits 1 with ``exit_on_finding``.  No command prints an error and exits
by itself, and nothing here prints a secret: an error's message and hint are written for an
administrator and never carry one.

Command modules import from here, never from ``onlineca.cli`` (the root group imports them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

from onlineca.errors import ESTCodedError, OnlineCAError
from onlineca.proto.libest import rv_text

if TYPE_CHECKING:  # the config module loads pydantic: not needed for ``onlineca --help``
    from onlineca.config import Config

EXIT_OK = 0
EXIT_FAILURE = 1  # a failure, or a finding of a reporting command
EXIT_USAGE = 2    # click's own status for a usage error


@dataclass
class AppContext:
    """The root command's options, resolved into one configuration (``ctx.obj`` of every command)."""

    config: Config
    config_path: Path | None
    log_format: str
    # The root options that override the file (--data-dir, --log-dir, --log-format), for a reload.
    overrides: dict[str, object] = field(default_factory=dict)

    def reload_config(self) -> Config:
        """The configuration file read again with the same root options (SIGHUP); ConfigError if broken."""
        from onlineca.config import load_config

        cfg = load_config(self.config_path)
        updates = dict(self.overrides)
        if "log_format" in updates:
            updates["logging"] = cfg.logging.model_copy(update={"format": updates.pop("log_format")})
        return cfg.model_copy(update=updates) if updates else cfg

    @property
    def data_dir(self) -> Path:
        return self.config.data_path

    @property
    def log_dir(self) -> Path:
        return self.config.log_path


# --------------------------------------------------------------------------- the error path


def error_line(exc: OnlineCAError) -> str:
    """The one line an administrator reads: ``error: message (hint)``; an EST failure keeps the
    libEST number and name CAPF logs (``error: rv = 22 (EST_ERR_AUTH_FAIL): message (hint)``)."""
    if isinstance(exc, ESTCodedError):
        return f"error: rv = {rv_text(exc.code)}: {exc}"
    return f"error: {exc}"


def report_error(exc: OnlineCAError) -> click.exceptions.Exit:
    """Print ``error_line(exc)`` on stderr; returns the exit (status 1) for the caller to raise."""
    click.echo(error_line(exc), err=True)
    return click.exceptions.Exit(EXIT_FAILURE)


def exit_on_finding(found: bool) -> None:
    """A reporting command's end: exit 1 when it found something wrong (its report says what)."""
    if found:
        raise click.exceptions.Exit(EXIT_FAILURE)


# --------------------------------------------------------------------------- serving


async def until_signal(on_reload: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
    """Return when SIGINT or SIGTERM arrives; SIGHUP (``systemctl reload``) runs ``on_reload``
    (one at a time) and keeps serving."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloading: list[asyncio.Task[None]] = []

    def hup() -> None:
        if on_reload is not None and not any(not t.done() for t in reloading):
            reloading.append(loop.create_task(on_reload()))

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on this platform
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, hup)
    try:
        await stop.wait()
    finally:
        for sig in handled:
            with contextlib.suppress(NotImplementedError, AttributeError):
                loop.remove_signal_handler(sig)
        for task in reloading:
            task.cancel()


class Closable(Protocol):
    """What ``serve_until_signal`` needs of a started server (``reload(config)`` is optional)."""

    async def close(self) -> None: ...


R = TypeVar("R", bound=Closable)


def serve_until_signal(start: Callable[[], Awaitable[R]], describe: Callable[[R], str],
                       reload_config: Callable[[], Config] | None = None) -> None:
    """Start a server in a new event loop, print ``describe(running)`` to stderr (the readiness
    line scripts wait for), serve until SIGINT or SIGTERM, then close it.  An error raised by
    ``start`` propagates (an ``OnlineCAError`` becomes the command's ``error:`` line).

    SIGHUP reloads: ``reload_config()`` reads the configuration again and the running server's
    ``reload(config)`` checks and applies it.  A broken configuration is refused with its reason
    (on stderr, and in the server's log) and the running one keeps serving."""

    async def main() -> None:
        running = await start()

        async def on_reload() -> None:
            hook = getattr(running, "reload", None)
            if hook is None or reload_config is None:
                click.echo("reload (SIGHUP) is not supported by this server: restart it to change its "
                           "configuration", err=True)
                return
            try:
                changes = await hook(reload_config())
            except OnlineCAError as exc:
                click.echo(f"reload refused, still serving the previous configuration: {exc}", err=True)
                logging.getLogger("onlineca").error("reload refused, still serving the previous configuration: %s",
                                                    exc)
                return
            except Exception as exc:  # a defect: keep serving what works
                click.echo(f"reload failed ({type(exc).__name__}: {exc}); still serving the previous "
                           "configuration", err=True)
                return
            click.echo(f"reloaded: {', '.join(changes) if changes else 'nothing changed'}", err=True)

        try:
            click.echo(describe(running), err=True)
            await until_signal(on_reload)
        finally:
            await running.close()

    asyncio.run(main())


__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "AppContext", "Closable", "error_line", "exit_on_finding",
           "report_error", "serve_until_signal", "until_signal"]
