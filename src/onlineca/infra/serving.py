"""What the onlineca servers share to listen: binding (or one clear ``ConfigError`` when the port
cannot be had), the connection guard, and the running value their start functions return.  A
component's start function builds its application, listens with ``start_https`` (aiohttp) or
``listen`` (any other server, e.g. CAPF's ``asyncio.start_server``) and returns a value with
``close()`` (``RunningServer`` for the aiohttp ones).  Running such a value until the
administrator stops it is the command line's job (``cli.app.serve_until_signal``).

``start_https`` does the TLS itself (``GuardedTLSProtocol``, asyncio's own TLS protocol with a
few hooks) so that each connection is bounded (``ConnectionLimits``): a total and a
per-address connection limit, a handshake timeout, a deadline for the request headers, an idle
keep-alive timeout; every failed TLS handshake is logged with the client's address and the
reason (asyncio itself keeps them silent); and running out of file descriptors at ``accept()``
gives one rate-limited log line (``quiet_accept_errors``) while asyncio backs off, instead of a
traceback per attempt.  CAPF's server can take the same guard with ``guarded_factory``.  This
module never decides what a server does, never exits the process and prints nothing.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from asyncio import sslproto
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, cast

from aiohttp import web

from onlineca.errors import ConfigError
from onlineca.infra import workers
from onlineca.infra.daemon import cannot_listen

T = TypeVar("T")


@dataclass(frozen=True)
class ConnectionLimits:
    """How long and how many: every bound a server puts on its connections (``[connections]``)."""

    max_connections: int = 1024       # open connections in all
    max_per_address: int = 256        # open connections from one client address
    handshake_timeout: float = 10.0   # the TLS handshake
    header_timeout: float = 15.0      # from the handshake (or the previous answer) to complete request headers
    idle_timeout: float = 60.0        # a kept-alive connection with no request
    body_timeout: float = 30.0        # reading a request body (each server applies it where it reads)


class RateLimitedLog:
    """One log line per ``every`` seconds per kind; the lines held back are counted in the next."""

    def __init__(self, logger: logging.Logger, every: float = 60.0) -> None:
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, level: int, message: str, *args: object, **extra: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -1e18) < self.every:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        if held:
            message += f" ({held} more like this in the last {self.every:g} s)"
        self.logger.log(level, message, *args, extra=extra)


class ConnectionGuard:
    """The connections of one listening server: counts per address and in all, and where to log."""

    def __init__(self, limits: ConnectionLimits, logger: logging.Logger, server_name: str = "",
                 tls_hint: str = "") -> None:
        self.limits = limits
        self.log = logger
        self.limited = RateLimitedLog(logger)
        self.server_name = server_name
        self.tls_hint = tls_hint
        self.total = 0
        self.by_address: dict[str, int] = {}
        self.handshake_failures = 0
        self.refused = 0

    def admit(self, address: str) -> bool:
        lim = self.limits
        if self.total >= lim.max_connections:
            self.refused += 1
            self.limited("total", logging.WARNING, "connection from %s refused: %d connections open "
                         "(max_connections = %d)", address, self.total, lim.max_connections,
                         func="ngx_event_accept", fix="Raise [connections] max_connections, or find who holds "
                         "so many connections open.")
            return False
        if self.by_address.get(address, 0) >= lim.max_per_address:
            self.refused += 1
            self.limited("address:" + address, logging.WARNING, "connection from %s refused: %d connections open "
                         "from that address (max_per_address = %d)", address, self.by_address[address],
                         lim.max_per_address, func="ngx_event_accept",
                         fix="Raise [connections] max_per_address if that client is a proxy or a busy RA; "
                         "otherwise it holds connections it does not use.")
            return False
        self.total += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        return True

    def release(self, address: str) -> None:
        self.total -= 1
        left = self.by_address.get(address, 1) - 1
        if left:
            self.by_address[address] = left
        else:
            self.by_address.pop(address, None)

    def handshake_failed(self, address: str, reason: str) -> None:
        self.handshake_failures += 1
        # NGINX's words for the same event, so the document's method reads this log too.
        self.limited("tls:" + address + reason, logging.WARNING,
                     "SSL_do_handshake() failed (%s) while SSL handshaking, client: %s, server: %s",
                     reason, address, self.server_name, func="ngx_ssl_handshake",
                     fix=_tls_fix(reason, self.tls_hint))


def _tls_fix(reason: str, tls_hint: str) -> str:
    low = reason.lower()
    if "certificate" in low or "verify" in low or "unknown ca" in low:
        return tls_hint or "The client's certificate does not chain to this server's client trust store."
    if "version" in low or "protocol" in low or "cipher" in low or "no shared" in low:
        return "The client offers no TLS version or cipher this server accepts (TLS 1.2 or later)."
    if "taking longer" in low or "timed out" in low:
        return "The client did not finish the TLS handshake in time ([connections] handshake_timeout)."
    return "Read the client's log for the same moment: it aborted the TLS handshake."


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "the client closed the connection during the handshake"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"client SSL certificate verify error: ({exc.verify_code}:{exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"SSL: {exc.reason or exc}" if exc.reason else str(exc)
    return str(exc) or type(exc).__name__


class GuardedTLSProtocol(sslproto.SSLProtocol):
    """asyncio's server-side TLS protocol with the guard's hooks: admission by the limits, a
    logged handshake failure, and a deadline for the request headers after the handshake and
    after each answer (``request_started``/``request_done``, called by the guard's middleware)."""

    def __init__(self, guard: ConnectionGuard, app_protocol: asyncio.BaseProtocol, ctx: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(loop, app_protocol, ctx, None, server_side=True,  # type: ignore[arg-type]
                         ssl_handshake_timeout=guard.limits.handshake_timeout)  # type: ignore[arg-type]
        self.guard = guard
        self.address = ""
        self.admitted = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "-"
        if not self.guard.admit(self.address):
            cast(asyncio.Transport, transport).abort()
            return
        self.admitted = True
        super().connection_made(transport)

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            self.guard.handshake_failed(self.address, _reason(handshake_exc))
        else:
            self._arm(self.guard.limits.header_timeout)
        super()._on_handshake_complete(handshake_exc)

    def _check_handshake_timeout(self) -> None:
        if self._handshaking():
            self.guard.handshake_failed(self.address, f"SSL handshake is taking longer than "
                                                      f"{self.guard.limits.handshake_timeout:g} seconds")
        super()._check_handshake_timeout()

    def _handshaking(self) -> bool:
        return getattr(self, "_state", None) == sslproto.SSLProtocolState.DO_HANDSHAKE

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._no_request)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _no_request(self) -> None:
        self._deadline = None
        self.guard.limited("slow:" + self.address, logging.INFO,
                           "closing the connection from %s: no complete request within header_timeout = %g s "
                           "(idle_timeout = %g s)", self.address, self.guard.limits.header_timeout,
                           self.guard.limits.idle_timeout, func="ngx_http_read_request_header")
        if self._transport is not None:
            cast(asyncio.Transport, self._transport).abort()

    def request_started(self) -> None:
        self._disarm()

    def request_done(self) -> None:
        lim = self.guard.limits
        self._arm(lim.idle_timeout + lim.header_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self.admitted:
            self.admitted = False
            if self._handshaking() and exc is None:
                self.guard.handshake_failed(self.address, _reason(None))
            self.guard.release(self.address)
        super().connection_lost(exc)


def own_timeouts(transport: asyncio.BaseTransport) -> None:
    """A server whose protocol is not HTTP (CAPF's device protocol, where the server
    speaks first and a phone may think for minutes) bounds its connections with its own read and
    session timeouts once the handshake is done: the guard's header deadline is lifted."""
    proto = getattr(transport, "_ssl_protocol", None)
    if isinstance(proto, GuardedTLSProtocol):
        proto.request_started()


def guarded_factory(guard: ConnectionGuard, ctx: ssl.SSLContext,
                    app_factory: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.BaseProtocol]:
    """A protocol factory for ``loop.create_server`` (no ``ssl=``: the guard does the TLS)."""
    return lambda: GuardedTLSProtocol(guard, app_factory(), ctx)


@web.middleware
async def _guard_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
    proto = getattr(request.transport, "_ssl_protocol", None)
    if not isinstance(proto, GuardedTLSProtocol):
        return await handler(request)
    proto.request_started()
    try:
        return await handler(request)
    finally:
        proto.request_done()


_ACCEPT_FILTERED: set[int] = set()


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, logger: logging.Logger) -> None:
    """Out of file descriptors at ``accept()``, asyncio stops accepting for a second and retries
    (back-pressure: new clients wait in the listen backlog); log that as one line a minute
    instead of a traceback each time."""
    if id(loop) in _ACCEPT_FILTERED:
        return
    _ACCEPT_FILTERED.add(id(loop))
    previous = loop.get_exception_handler()
    limited = RateLimitedLog(logger)

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            exc = context.get("exception")
            limited("accept", logging.ERROR, "accept() failed (%s): out of file descriptors; not accepting new "
                    "connections for a second", getattr(exc, "strerror", None) or exc, func="ngx_event_accept",
                    fix="Raise the open-files limit (ulimit -n, LimitNOFILE) or lower [connections] "
                    "max_connections below it.")
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)


class GuardedTLSSite(web.BaseSite):
    """An aiohttp site whose connections go through a ``ConnectionGuard``."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, ssl_context: ssl.SSLContext,
                 guard: ConnectionGuard, *, backlog: int = 256, reuse_address: bool | None = None) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self.ssl_context, self.guard = host, port, ssl_context, guard
        self._reuse_address = reuse_address

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        quiet_accept_errors(loop, self.guard.log)
        # The context is read per connection: a reload swaps it (new certificates, trust stores).
        self._server = await loop.create_server(lambda: GuardedTLSProtocol(self.guard, server(), self.ssl_context),
                                                self._host,
                                                self._port, backlog=self._backlog,
                                                reuse_address=self._reuse_address,
                                                reuse_port=workers.reuse_port() or None)


async def listen(start: Callable[[], Awaitable[T]], host: str, port: int) -> T:
    """Await ``start()`` (e.g. ``asyncio.start_server``), turning a failure to bind into ``cannot_listen``."""
    try:
        return await start()
    except OSError as exc:
        raise cannot_listen(host, port, exc) from None


async def start_https(app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext, *,
                      reuse_address: bool | None = None, limits: ConnectionLimits | None = None,
                      logger: logging.Logger | None = None, tls_hint: str = "",
                      **runner_options: Any) -> tuple[web.AppRunner, int]:
    """Serve ``app`` over TLS on ``host:port`` (0: any free port); returns the runner and the bound
    port once it accepts connections.  Connections are bounded by ``limits`` and failures logged
    to ``logger`` (``tls_hint``: the fix for a client certificate the server refused).
    ``runner_options`` go to ``web.AppRunner`` (access log).  If it cannot listen, the application
    is cleaned up (its logs detached) and ``ConfigError`` raised."""
    limits = limits or ConnectionLimits()
    app.middlewares.append(_guard_middleware)
    guard = ConnectionGuard(limits, logger or logging.getLogger("onlineca.serving"), f"{host}:{port}", tls_hint)
    app[GUARD] = guard
    runner = web.AppRunner(app, handler_cancellation=True, keepalive_timeout=limits.idle_timeout, **runner_options)
    await runner.setup()
    site = GuardedTLSSite(runner, host, port, ssl_context, guard, backlog=256, reuse_address=reuse_address)
    try:
        await listen(site.start, host, port)
    except ConfigError:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    guard.server_name = f"{host}:{bound}"
    return runner, bound


GUARD = web.AppKey("connection_guard", ConnectionGuard)


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

    def _guarded_site(self) -> GuardedTLSSite | None:
        return next((site for site in self.runner.sites if isinstance(site, GuardedTLSSite)), None)

    def set_ssl_context(self, ctx: ssl.SSLContext) -> None:
        """New connections get ``ctx`` (a reload's certificates and trust stores); open ones keep theirs."""
        self.ssl_context = ctx
        site = self._guarded_site()
        if site is not None:
            site.ssl_context = ctx

    def set_limits(self, limits: ConnectionLimits) -> None:
        site = self._guarded_site()
        if site is not None:
            site.guard.limits = limits

    async def close(self) -> None:
        await self.runner.cleanup()


__all__ = ["GUARD", "ConnectionGuard", "ConnectionLimits", "GuardedTLSProtocol", "GuardedTLSSite", "RateLimitedLog",
           "RunningServer", "cannot_listen", "guarded_factory", "listen", "own_timeouts", "quiet_accept_errors",
           "start_https"]
