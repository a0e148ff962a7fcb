"""Start and stop the CAPF service in-process: the session server on 3804, its TLS certificate,
and the maintenance loop (renewal scheduler runs, CAPF's own certificate renewal).

``start_capf(config, data_dir, log_dir)`` migrates the database, writes the start-up lines of the
CAPF trace, sets up the EST client towards the RA, enrolls CAPF's TLS certificate through the RA
if it has none (``<data>/capf/capf.pem``, key 0600), makes CAPF's own CA if it has none (the
``capf`` issuer, ``<data>/capf/ca/``) and starts listening; it returns a
``RunningCAPF`` with ``host``, ``port`` and ``close()`` for the CLI, the demo and the tests.  Every
``scheduler_interval`` seconds the maintenance loop runs ``capf.scheduler.run_once`` and renews
CAPF's certificate once two thirds of its life have passed (new connections get the new one).
This module wires parts together; it decides nothing about devices and never logs a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onlineca import pki
from onlineca.capf.enroll import OnlineCAEnroller
from onlineca.capf.local_ca import CAPFAuthority
from onlineca.capf.ops import CAPFOps
from onlineca.capf.server import CAPFServer
from onlineca.config import Config, DataDir
from onlineca.errors import CAUnavailable, ConfigError, PKIError
from onlineca.infra import files, tls, workers
from onlineca.infra.serving import ConnectionGuard, ConnectionLimits, guarded_factory, listen, quiet_accept_errors
from onlineca.logs.capf_trace import attach_capf_trace, log as trace_log
from onlineca.store import devices as inv
from onlineca.store.db import Database

log = logging.getLogger("onlineca.capf.service")


@dataclass
class RunningCAPF:
    host: str
    port: int
    capf: CAPFServer
    enroller: OnlineCAEnroller
    db: Database
    ssl_context: ssl.SSLContext = field(repr=False)
    server: asyncio.base_events.Server = field(repr=False)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list, repr=False)
    guard: ConnectionGuard | None = field(default=None, repr=False)  # [connections] on the CAPF port
    _cleanup: list[Callable[[], Any]] = field(default_factory=list, repr=False)
    ops: CAPFOps | None = field(default=None, repr=False)  # metrics, revocation, alerts

    @property
    def stats(self) -> Any:
        return self.capf.stats

    async def reconcile_once(self) -> Any:
        """One reconciliation pass (``capf.reconcile``); its report."""
        return await _reconcile_once(self)

    async def maintenance_once(self) -> None:
        """One maintenance pass (the loop's body; tests call it directly instead of waiting)."""
        await _maintenance_once(self)

    async def reload(self, config: Config) -> list[str]:
        """SIGHUP (the serve loop's hook): a new EST client towards the RA from the new ``[capf]``
        RA settings (URL, credentials, trust store) and CAPF's TLS certificate read again; both
        checked before anything changes (a ``ConfigError`` leaves CAPF as it was).  Other keys
        need a restart.  Returns what changed, and logs it."""
        new, old = config.capf, self.capf.cfg
        enroller = OnlineCAEnroller(new, self.enroller.paths.root.parent)
        cert_file = new.tls_cert or str(self.enroller.paths.capf_cert)
        key_file = new.tls_key or str(self.enroller.paths.capf_key)
        try:
            self.ssl_context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            await enroller.close()
            raise ConfigError(f"cannot load CAPF's TLS certificate {cert_file} / {key_file}: {exc}") from None
        changes = [f"[capf] {k}" for k in type(new).model_fields if getattr(new, k) != getattr(old, k)]
        previous, self.enroller, self.capf.enroller = self.enroller, enroller, enroller
        enroller.observe = previous.observe
        await previous.close()
        trace_log.warning("debug configuration reloaded (SIGHUP): %s", ", ".join(changes) or "nothing changed")
        return changes

    async def close(self, grace: float = 2.0) -> None:
        """Stop listening, give open sessions ``grace`` seconds to finish, cancel the rest and the
        loop, close the EST client and the logs."""
        self.server.close()
        if self.capf.tasks:
            await asyncio.wait(set(self.capf.tasks), timeout=grace)
        for task in list(self._tasks) + list(self.capf.tasks):
            task.cancel()
        for task in list(self._tasks) + list(self.capf.tasks):
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5.0)
        await self.enroller.close()
        if self.ops is not None:
            await self.ops.close()
        self.capf.close()
        for fn in reversed(self._cleanup):
            fn()


def node_id(config: Config, data_dir: Path) -> str:
    """This node's id: ``[capf] node_id``, else the one kept in ``<data>/capf/node-id`` (made at
    first start: host name and a random suffix).  Stable across restarts, unlike a PID, so that a
    node that starts again knows the leases its earlier life held.  Under ``--workers`` (perf
    branch) each worker is a node of its own: the id gets ``-w<index>``, stable per index."""
    return _node_id_of_data(config, data_dir) + workers.worker_suffix()


def _node_id_of_data(config: Config, data_dir: Path) -> str:
    if config.capf.node_id:
        return config.capf.node_id
    path = DataDir(data_dir).capf.node_id_file
    try:
        kept = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        kept = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read CAPF's node id {path}: {exc}",
                          hint="Remove the file (a new id is made) or set [capf] node_id.") from None
    if kept:
        return kept[:80]
    made = f"{socket.gethostname().split('.')[0][:60] or 'capf'}-{secrets.token_hex(3)}"
    files.write_file(path, (made + "\n").encode())
    return made


async def _heartbeat_loop(running: RunningCAPF) -> None:
    """Renew the leases of this process's live sessions every third of their life."""
    capf = running.capf
    ttl = dt.timedelta(seconds=capf.cfg.lease_seconds)
    while True:
        await asyncio.sleep(capf.cfg.lease_seconds / 3)  # a period, not a synchronisation
        if not capf.stats.active:
            continue
        try:
            await capf.run_tx(inv.renew_leases, capf.lease_prefix, ttl)
        except Exception as exc:  # the database may be briefly unavailable: the next beat
            log.warning("lease heartbeat failed (sessions keep their devices for %g s more at most): %s",
                        capf.cfg.lease_seconds, exc)


async def _maintenance_once(running: RunningCAPF) -> None:
    from onlineca.capf import scheduler  # imported late: it is optional for a bare session server

    cfg = running.capf.cfg
    try:
        result = await asyncio.to_thread(scheduler.run_once, running.db,
                                         scheduler.SchedulerSettings(node_id=running.capf.node_id))
        if result.scheduled or result.timed_out:
            trace_log.info("debug renewal run: %d scheduled, %d timed out", len(result.scheduled),
                           len(result.timed_out))
        if running.ops is not None:
            running.ops.scheduler_ran(len(result.scheduled), len(result.timed_out))
    except Exception as exc:  # the database may be briefly unavailable: next pass
        log.warning("renewal run failed: %s", exc)
    if running.ops is not None:
        await running.ops.maintenance()  # revocations, snapshot, RA readiness, alerts
    if not cfg.tls_cert:
        try:
            if await running.enroller.ensure_capf_certificate(_tls_names(running)):
                paths = running.enroller.paths
                running.ssl_context.load_cert_chain(str(paths.capf_cert), str(paths.capf_key),
                                                    password=cfg.key_passphrase())
                trace_log.info("debug CAPF now serves its renewed certificate")
        except CAUnavailable as exc:
            trace_log.warning("debug CAPF certificate renewal postponed: %s", exc.message)


def ca_lookup(config: Config) -> tuple[Any, Callable[[], None]]:
    """Our CA's request table (``[capf] ca_database_url``) for reconciliation, and
    how to let it go; (None, a no-op) when CAPF may not read one (a real AD CS)."""
    from onlineca.store.ca_requests import CARequests

    url = config.capf.ca_database_url.get_secret_value()
    if not url:
        return None, lambda: None
    ca_db = Database(url, busy_timeout=config.database.busy_timeout)
    return CARequests(ca_db), ca_db.dispose


async def _reconcile_once(running: RunningCAPF) -> Any:
    from onlineca.capf.reconcile import reconcile

    cfg = running.capf.cfg
    report = await asyncio.to_thread(reconcile, running.db, running.capf.ca_lookup, node=running.capf.node_id,
                                     grace=cfg.reconcile_grace, window_days=cfg.reconcile_window_days)
    if report.unresolved:
        trace_log.warning("debug reconcile: %d enrollment(s) never answered and no CA database to ask "
                          "([capf] ca_database_url): see 'onlineca capf reconcile'", len(report.unresolved))
    return report


async def _reconcile_loop(running: RunningCAPF, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)  # a period, not a synchronisation
        try:
            await _reconcile_once(running)
        except Exception as exc:  # the database may be briefly unavailable: next pass
            log.warning("reconcile pass failed: %s", exc)


def _free_dead_leases(db: Database, node: str, live_prefix: str) -> int:
    with db.session() as s:
        return inv.free_dead_leases(s, node, live_prefix)


def _tls_names(running: RunningCAPF) -> list[str]:
    names = list(running.capf.cfg.tls_names)
    if running.host not in names and running.host not in ("0.0.0.0", "::"):
        names.append(running.host)
    return names


async def _maintenance_loop(running: RunningCAPF, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)  # a period, not a synchronisation
        await _maintenance_once(running)


async def start_capf(config: Config, data_dir: str | os.PathLike[str] | None = None,
                     log_dir: str | os.PathLike[str] | None = None, *, host: str | None = None,
                     port: int | None = None, db: Database | None = None, log_format: str | None = None,
                     maintenance: bool = True) -> RunningCAPF:
    """Start CAPF (port 0: any free port) and return once it accepts connections."""
    files.private_umask()  # the database (auth-string hashes), keys and logs: 0600
    cfg = config.capf
    data = Path(data_dir) if data_dir is not None else config.data_path
    logs = Path(log_dir) if log_dir is not None else config.log_path
    cleanup: list[Callable[[], Any]] = [attach_capf_trace(logs, log_format or config.logging.format,
                                                          config.logging.level)]
    own_db = db is None
    db = db or Database(config.database_url)
    enroller: OnlineCAEnroller | None = None
    try:
        await asyncio.to_thread(db.migrate)
        mic_trust = pki.TrustStore()
        if cfg.mic_trust_store:
            try:
                mic_trust = files.load_trust_store(cfg.mic_trust_store)
            except (OSError, PKIError) as exc:
                raise ConfigError(f"[capf] mic_trust_store {cfg.mic_trust_store}: {exc}") from None
        enroller = OnlineCAEnroller(cfg, data)
        try:
            await enroller.setup()
        except CAUnavailable as exc:
            # A CAPF that already has its certificate serves phones (and tells them to retry later)
            # while the RA is down; one without a certificate cannot start.
            trace_log.warning("debug EST set server details failed: %s", exc.message)
            if not cfg.tls_cert and not enroller.paths.capf_cert.exists():
                raise
        bind_host = host or cfg.host
        names = list(cfg.tls_names) + ([bind_host] if bind_host not in cfg.tls_names else [])
        if cfg.tls_cert:
            cert_file, key_file = cfg.tls_cert, cfg.tls_key
        else:
            await enroller.ensure_capf_certificate(names)
            cert_file, key_file = str(enroller.paths.capf_cert), str(enroller.paths.capf_key)
        try:
            ctx = tls.server_context(cert_file, key_file, password=cfg.key_passphrase())
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load CAPF's TLS certificate {cert_file} / {key_file}: {exc}",
                              hint="Set [capf] tls_cert and tls_key, or leave them empty to enroll one.") from None
        node = node_id(config, data)
        local_ca, made = await asyncio.to_thread(CAPFAuthority.ensure, enroller.paths.ca_dir)
        if made:
            trace_log.info("debug CAPF's own CA created at %s (%s): the issuer of profiles with issuer = capf",
                           enroller.paths.ca_cert, pki.name_to_slash(local_ca.cert.subject))
        lookup, release_lookup = ca_lookup(config)
        cleanup.append(release_lookup)
        capf = CAPFServer(cfg, db, enroller, node_id=node, mic_trust=mic_trust, local_ca=local_ca, ca_lookup=lookup)
        ops = CAPFOps(config, data, db, node)
        freed = await asyncio.to_thread(_free_dead_leases, db, node, capf.lease_prefix)
        if freed:
            trace_log.info("debug node %s started again: %d device lease(s) of its earlier life freed", node, freed)
        listen_port = cfg.port if port is None else port
        # The CA's and the RA's connection guard ([connections]): a total and a
        # per-address limit, the handshake timeout, failed handshakes logged, one line at EMFILE.
        loop = asyncio.get_running_loop()
        guard = ConnectionGuard(ConnectionLimits(**config.connections.model_dump()), log,
                                server_name=f"{bind_host}:{listen_port}",
                                tls_hint="A phone's TLS client refused CAPF's certificate or offered nothing CAPF accepts.")
        quiet_accept_errors(loop, log)
        handle = ops.metrics.timed(capf.handle)

        def session_protocol() -> asyncio.BaseProtocol:
            return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=2 ** 16, loop=loop), handle, loop=loop)

        server = await listen(lambda: loop.create_server(guarded_factory(guard, ctx, session_protocol), bind_host,
                                                         listen_port, backlog=512,
                                                         reuse_port=workers.reuse_port() or None),
                              bind_host, listen_port)
    except BaseException:
        if enroller is not None:
            await enroller.close()
        if own_db:
            db.dispose()
        for fn in cleanup:
            fn()
        raise
    if own_db:
        cleanup.append(db.dispose)
    bound = server.sockets[0].getsockname()[1]
    running = RunningCAPF(bind_host, bound, capf, enroller, db, ctx, server, _cleanup=cleanup, ops=ops, guard=guard)
    ops.attach(running)
    if cfg.metrics_port:
        try:
            await ops.start_server(cfg.metrics_host, cfg.metrics_port)
        except BaseException:
            await running.close()
            raise
    trace_log.info("debug CAPF listening on %s:%d (TLS 1.2+, node %s)", bind_host, bound, node)
    running._tasks.append(asyncio.get_running_loop().create_task(_heartbeat_loop(running)))
    if maintenance:
        running._tasks.append(asyncio.get_running_loop().create_task(
            _maintenance_loop(running, cfg.scheduler_interval)))
        running._tasks.append(asyncio.get_running_loop().create_task(
            _reconcile_loop(running, cfg.reconcile_interval)))
    return running


__all__ = ["RunningCAPF", "ca_lookup", "node_id", "start_capf"]
