"""What the onlineca servers share to listen: binding (or one clear ``ConfigError`` when the port
cannot be had) and the running value their start functions return.  A component's start function
builds its application, listens with ``start_https`` (aiohttp) or ``listen`` (any other server,
e.g. CAPF's ``asyncio.start_server``) and returns a value with ``close()`` (``RunningServer`` for
the aiohttp ones).  Running such a value until the administrator stops it is the command line's
job (``cli.app.serve_until_signal``).  This module never decides what a server does, never exits
the process and prints nothing.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

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


__all__ = ["RunningServer", "cannot_listen", "listen", "start_https"]
