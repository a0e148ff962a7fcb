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
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

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


async def until_signal() -> None:
    """Return when SIGINT or SIGTERM arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on this platform
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


class Closable(Protocol):
    """What ``serve_until_signal`` needs of a started server."""

    async def close(self) -> None: ...


R = TypeVar("R", bound=Closable)


def serve_until_signal(start: Callable[[], Awaitable[R]], describe: Callable[[R], str]) -> None:
    """Start a server in a new event loop, print ``describe(running)`` to stderr (the readiness
    line scripts wait for), serve until SIGINT or SIGTERM, then close it.  An error raised by
    ``start`` propagates (an ``OnlineCAError`` becomes the command's ``error:`` line)."""

    async def main() -> None:
        running = await start()
        try:
            click.echo(describe(running), err=True)
            await until_signal()
        finally:
            await running.close()

    asyncio.run(main())


__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "AppContext", "Closable", "error_line", "exit_on_finding",
           "report_error", "serve_until_signal", "until_signal"]
