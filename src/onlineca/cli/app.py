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
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

from onlineca.errors import ConfigError, ESTCodedError, OnlineCAError
from onlineca.proto.libest import rv_text

if TYPE_CHECKING:  # the config module loads pydantic: not needed for ``onlineca --help``
    from onlineca.config import Config, ConfigSource

EXIT_OK = 0
EXIT_FAILURE = 1  # a failure, or a finding of a reporting command
EXIT_USAGE = 2    # click's own status for a usage error


@dataclass
class AppContext:
    """The root command's options, resolved into one configuration (``ctx.obj`` of every command).

    The file is read when a command first asks for ``config`` (so ``--help``, ``manpage`` and
    ``config example`` work beside a broken file); ``source`` says which file is in force and why.
    """

    source: ConfigSource
    overrides: dict[str, Any] = field(default_factory=dict)
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            from onlineca.config import load_config

            cfg = load_config(self.source.path)  # a ConfigError is the command's error (exit 1)
            updates = dict(self.overrides)
            if "logging" in updates:  # --log-format / --log-target: only the keys given
                updates["logging"] = cfg.logging.model_copy(update=updates["logging"])
            self._config = cfg.model_copy(update=updates) if updates else cfg
        return self._config

    def reload_config(self) -> Config:
        """The configuration file read again with the same root options (SIGHUP); ConfigError if
        broken (the running server keeps the configuration it has)."""
        from onlineca.config import load_config

        cfg = load_config(self.source.path)
        updates = dict(self.overrides)
        if "logging" in updates:
            updates["logging"] = cfg.logging.model_copy(update=updates["logging"])
        return cfg.model_copy(update=updates) if updates else cfg

    @property
    def config_path(self) -> Path | None:
        return self.source.path

    @property
    def log_format(self) -> str:
        return self.config.logging.format

    @property
    def data_dir(self) -> Path:
        return self.config.data_path

    @property
    def log_dir(self) -> Path:
        return self.config.log_path


# --------------------------------------------------------------------------- read-only commands


def read_only_config(config: Config) -> Config:
    """The configuration a read-only command opens its databases with: a SQLite database that
    does not exist yet is an empty one, so it is opened in memory instead of being created (a
    listing on a new data dir makes no folder and no file)."""
    from pydantic import SecretStr
    from sqlalchemy.engine import make_url

    def absent(url: str) -> bool:
        if not url.startswith("sqlite"):
            return False
        path = make_url(url).database
        return path is not None and path not in ("", ":memory:") and not Path(path).exists()

    updates: dict[str, Any] = {}
    if absent(config.database_url):
        updates["database"] = config.database.model_copy(update={"url": SecretStr("sqlite://")})
    ca_url = config.admin.ca_database_url.get_secret_value()
    if ca_url and absent(ca_url):
        updates["admin"] = config.admin.model_copy(update={"ca_database_url": SecretStr("")})
    return config.model_copy(update=updates) if updates else config


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


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set when SIGINT or SIGTERM arrives, its handlers in place from the start of the
    ``with`` (so a server announces readiness only once a stop request can no longer kill it)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on this platform
            loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


async def until_signal() -> None:
    """Return when SIGINT or SIGTERM arrives."""
    with stop_on_signals() as stop:
        await stop.wait()


class Closable(Protocol):
    """What ``serve_until_signal`` needs of a started server."""

    async def close(self) -> None: ...


R = TypeVar("R", bound=Closable)


def reopen_logs() -> int:
    """SIGHUP's log part: every log file of this process closed and opened again (logrotate's
    ``postrotate`` sends SIGHUP; a rename alone is noticed by the files themselves)."""
    from onlineca.logs import reopen_log_files

    return reopen_log_files()


ReloadHook = Callable[[], Coroutine[Any, Any, None]]


def on_sighup(role: str = "server", reload: ReloadHook | None = None) -> None:
    """What SIGHUP (``systemctl reload``, logrotate's ``postrotate``) does to a running server:
    reopen the log files, then reload its configuration (``reload``, one at a time).  Any failure
    is logged and the server keeps serving as it was."""
    log = logging.getLogger(f"onlineca.{role}")
    try:
        count = reopen_logs()
        log.info("SIGHUP: %d log file(s) reopened", count)
    except Exception as exc:  # a full disk must not stop the server
        log.warning("SIGHUP: reopening the log files failed: %s", exc)
    if reload is not None and not any(not t.done() for t in _reloads):
        task = asyncio.ensure_future(reload())
        _reloads.add(task)  # a task nobody references may be collected before it ends
        task.add_done_callback(_reloads.discard)


_reloads: set[asyncio.Future[None]] = set()


def _reloader(running: object, reload_config: Callable[[], Config] | None) -> ReloadHook:
    """The configuration part of SIGHUP: ``reload_config()`` reads the file again and the running
    server's ``reload(config)`` checks and applies it; a broken configuration is refused with its
    reason (on stderr and in the server's log) and the running one keeps serving."""

    async def reload() -> None:
        hook = getattr(running, "reload", None)
        if hook is None or reload_config is None:
            click.echo("reload (SIGHUP) is not supported by this server: restart it to change its "
                       "configuration (its log files were reopened)", err=True)
            return
        try:
            changes = await hook(reload_config())
        except OnlineCAError as exc:
            click.echo(f"reload refused, still serving the previous configuration: {exc}", err=True)
            logging.getLogger("onlineca").error("reload refused, still serving the previous configuration: %s", exc)
            return
        except Exception as exc:  # a defect: keep serving what works
            click.echo(f"reload failed ({type(exc).__name__}: {exc}); still serving the previous "
                       "configuration", err=True)
            return
        click.echo(f"reloaded: {', '.join(changes) if changes else 'nothing changed'}", err=True)

    return reload


LOCKED_ROLES = frozenset({"ca", "ra", "capf", "admin"})
WORKER_ROLES = frozenset({"ca", "ra", "capf"})  # the tiers with --workers


def _role(ctx: click.Context) -> str:
    """``ca`` for ``onlineca ca serve``: the group the serve command belongs to."""
    return (ctx.parent.info_name if ctx.parent is not None else None) or ctx.info_name or "server"


WORKERS_KEY = "onlineca.workers"


def workers_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--workers N`` for a tier's ``serve``: kept in the context for
    ``serve_until_signal``, so the command's own signature does not change."""

    def keep(ctx: click.Context, _param: click.Parameter, value: int | None) -> None:
        ctx.meta[WORKERS_KEY] = value

    return click.option("--workers", type=click.IntRange(min=1), default=None, expose_value=False,
                        callback=keep, help="Server processes on the one port (SO_REUSEPORT) under a "
                        "supervisor; default: the number of cores.")(f)


def _worker_argv() -> list[str] | None:
    """This command line as a worker runs it, or None when it cannot be repeated (not started as
    the ``onlineca`` program, e.g. in-process from a test runner)."""
    prog = Path(sys.argv[0]).name if sys.argv else ""
    if prog not in ("onlineca", "__main__.py"):
        return None
    return [sys.executable, "-m", "onlineca", *sys.argv[1:]]


def _supervise(ctx: click.Context, app: AppContext, role: str, count: int) -> None:
    """The supervisor of ``count`` workers of this serve command (``infra.workers``), holding
    the role's lock; the workers bind the port the supervisor reserved."""
    from onlineca.infra import workers
    from onlineca.infra.daemon import ServerLock, cannot_listen, notify

    argv = _worker_argv()
    assert argv is not None
    section = getattr(app.config, role)
    host = ctx.params.get("host") or section.host
    port = ctx.params.get("port")
    port = section.port if port is None else port

    lock = ServerLock(app.data_dir, role).acquire()
    try:
        reserved, port = workers.reserve_port(host, port)
    except OSError as exc:
        lock.release()
        raise cannot_listen(host, port, exc) from None
    try:
        def ready(line: str) -> None:
            line = f"{line} [{count} workers, supervisor pid {os.getpid()}]"
            click.echo(line, err=True)
            notify(f"READY=1\nSTATUS={line}\nMAINPID={os.getpid()}")

        try:
            status = workers.run_supervisor([*argv, "--port", str(port)], count, on_ready=ready,
                                            on_stop=lambda: notify("STOPPING=1"))
        except RuntimeError as exc:  # the worker's own error line (its hint included), as without workers
            raise ConfigError(str(exc), hint="") from None
    finally:
        reserved.close()
        lock.release()
    if status:
        ctx.exit(status)


def serve_until_signal(start: Callable[[], Awaitable[R]], describe: Callable[[R], str],
                       reload_config: Callable[[], Config] | None = None) -> None:
    """Start a server in a new event loop, print ``describe(running)`` to stderr (the readiness
    line scripts wait for), serve until SIGINT or SIGTERM, then close it.  An error raised by
    ``start`` propagates (an ``OnlineCAError`` becomes the command's ``error:`` line).

    Around it, as a service needs: the log target of the configuration is set before the server
    opens its logs; ``<data>/<role>.lock`` is held for the life of the server (a second one on the
    same data dir exits 1 naming the first); the configuration file in force is logged once;
    systemd hears READY=1 once the server listens and STOPPING=1 when it stops; SIGHUP reopens
    the log files and reloads the configuration through the running server's ``reload(config)``
    (``on_sighup``)."""
    from onlineca import logs
    from onlineca.infra import workers
    from onlineca.infra.daemon import ServerLock, notify

    ctx = click.get_current_context()
    app = ctx.find_object(AppContext)
    role = _role(ctx)
    count = ctx.meta.get(WORKERS_KEY)
    if count is None:
        count = workers.default_workers() if WORKERS_KEY in ctx.meta else 1
    if (app is not None and count > 1 and workers.worker_index() is None and role in WORKER_ROLES
            and _worker_argv() is not None):
        _supervise(ctx, app, role, count)
        return
    if app is not None:
        logs.set_target(app.config.logging.target)
        logs.set_buffered(app.config.logging.buffered)
    # one server per data dir for the tiers' servers ('est serve', a test tool, may run many); a
    # worker's supervisor holds it for all its workers
    lock = (ServerLock(app.data_dir, role).acquire()
            if app is not None and role in LOCKED_ROLES and workers.worker_index() is None else None)

    async def main() -> None:
        stack = contextlib.ExitStack()
        running = await start()
        loop = asyncio.get_running_loop()
        # SIGHUP: log files reopened, configuration reloaded (the one place it is registered).
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, on_sighup, role, _reloader(running, reload_config))
        try:
            stopping = stack.enter_context(stop_on_signals())
            line = describe(running)
            # first: the readiness line scripts wait for (a worker marks it for its supervisor)
            click.echo(f"{workers.READY_MARK}{line}" if workers.worker_index() is not None else line, err=True)
            if app is not None:
                source = app.source.describe()
                logging.getLogger(f"onlineca.{role}").info("%s; %s", line, source)
                if not workers.worker_index():  # on its own, or worker 0: said once, not per worker
                    click.echo(source, err=True)
            notify(f"READY=1\nSTATUS={line}\nMAINPID={os.getpid()}")
            await stopping.wait()
        finally:
            stack.close()
            for task in list(_reloads):
                task.cancel()
            notify("STOPPING=1")
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signal.SIGHUP)
            await running.close()

    workers.install_event_loop()  # uvloop when importable (onlineca[speed]); ONLINECA_EVENT_LOOP=asyncio: not
    try:
        asyncio.run(main())
    finally:
        if lock is not None:
            lock.release()


__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "AppContext", "Closable", "error_line", "exit_on_finding",
           "on_sighup", "read_only_config", "reopen_logs", "report_error", "serve_until_signal", "until_signal"]
