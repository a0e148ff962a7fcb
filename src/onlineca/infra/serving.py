"""What the onlineca servers share to run: listening (or one clear ``ConfigError`` when the port
cannot be had), the running value their start functions return, and the serve-until-SIGINT/SIGTERM
loop of their ``serve`` commands.  A component's start function builds its application, listens
with ``start_https`` (aiohttp) or ``listen`` (any other server) and returns a value with
``close()`` (``RunningServer`` for the aiohttp ones); ``run_until_signal`` runs such a value until
the administrator stops it.  This module never decides what a server does, never exits the
process itself (errors go back to the command, which reports them) and prints nothing but the one
line the command gives it.

For the CAPF server (not aiohttp: ``asyncio.start_server`` with the device protocol), the lead
wires it so: in ``capf.service.start_capf``, listen with
``server = await listen(lambda: asyncio.start_server(capf.handle, bind_host, port_, ...),
bind_host, port_)`` where ``port_`` is the port it really tries (``cfg.port`` when no port was
given, never None), so a taken port is the same ``ConfigError`` ("cannot listen on host:port",
hint to choose another --port) and start_capf's existing clean-up still runs; ``RunningCAPF``
keeps its own dataclass (it holds no aiohttp runner, so it does not extend ``RunningServer``) but
already offers ``host``, ``port`` and ``close()``, which is all ``Closable`` asks.  In
``capf/serve_cli.py`` replace the hand-written loop with
``run_until_signal(lambda: start_capf(...), describe)`` (``describe`` returns the
"CAPF serving host:port (...)" line) inside the existing ``try: ... except OnlineCAError``.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

import click
from aiohttp import web

from onlineca.errors import ConfigError

T = TypeVar("T")


def cannot_listen(host: str, port: int, exc: OSError) -> ConfigError:
    """The error a server that cannot bind ``host:port`` raises (the port it tried, never None)."""
    return ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                       hint="Choose another --port or stop what uses it.")


async def listen(start: Callable[[], Awaitable[T]], host: str, port: int) -> T:
    """Await ``start()`` (e.g. ``asyncio.start_server``), turning a failure to bind into ``cannot_listen``."""
    try:
        return await start()
    except OSError as exc:
        raise cannot_listen(host, port, exc) from None


async def start_https(app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext, *,
                      reuse_address: bool | None = None, **runner_options: Any) -> tuple[web.AppRunner, int]:
    """Serve ``app`` over TLS on ``host:port`` (0: any free port); returns the runner and the bound
    port once it accepts connections.  ``runner_options`` go to ``web.AppRunner`` (access log).  If
    it cannot listen, the application is cleaned up (its logs detached) and ``ConfigError`` raised."""
    runner = web.AppRunner(app, handler_cancellation=True, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=256, reuse_address=reuse_address)
    try:
        await listen(site.start, host, port)
    except ConfigError:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


@dataclass
class RunningServer:
    """A started aiohttp server: ``base`` is its ``https://host:port`` origin, ``url`` the base of
    its protocol (``url_path`` set by each server); ``close()`` stops it and cleans its app up."""

    url_path: ClassVar[str] = ""

    host: str
    port: int
    runner: web.AppRunner
    app: web.Application
    ssl_context: ssl.SSLContext = field(repr=False)

    @property
    def base(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base + self.url_path

    async def close(self) -> None:
        await self.runner.cleanup()


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


__all__ = ["Closable", "RunningServer", "cannot_listen", "listen", "run_until_signal", "start_https"]
