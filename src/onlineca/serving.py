"""What the onlineca servers share to run: the serve-until-SIGINT/SIGTERM loop of their ``serve``
commands.

A component's start function builds its server and returns a running value with ``close()``;
this module only runs such a value until the administrator stops it.  It never decides what a
server does, never exits the process itself (errors go back to the command, which reports them)
and never prints or logs anything but the one line the command gives it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import click


class Closable(Protocol):
    """What ``run_until_signal`` needs of a started server."""

    async def close(self) -> None: ...


R = TypeVar("R", bound=Closable)


def run_until_signal(start: Callable[[], Awaitable[R]], describe: Callable[[R], str]) -> None:
    """Start a server in a new event loop, print ``describe(running)`` to stderr (the readiness
    line scripts wait for), serve until SIGINT or SIGTERM, then close it.  An error raised by
    ``start`` propagates to the caller (an ``OnlineCAError`` becomes the command's ``error:`` line)."""

    async def main() -> None:
        running = await start()
        try:
            click.echo(describe(running), err=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            await running.close()

    asyncio.run(main())


__all__ = ["Closable", "run_until_signal"]
