"""The RA: our EST server wired to a CA backend, with start-up checks, health, metrics and logs.

``make_ra_app`` builds the aiohttp application: EST under ``/.well-known/est/`` (from
``onlineca.est.server``, its ``CABackend`` the certsrv connector or the local signer of
``ra.connector``), ``/healthz`` (the process answers), ``/readyz`` (200 only once the start-up
checks passed: trust store loaded, CA login, CA chain fetched and validated, template offered)
and ``/metrics`` (Prometheus, one registry per app).  The checks run in a background task that
retries with exponential backoff and logs why at each attempt; until they pass, EST requests get
503 with Retry-After and the reason, and they run again when the CA becomes unreachable (found by
a client's request, or by the background check every ``ready_check_interval``).  After
``max_login_failures`` refused logins the RA stops logging in until ``RunningRA.reload`` (SIGHUP),
which also takes a new configuration, trust stores, users file and certificates.  Pending
requests live in the database (``ra.pending``).  How CA results become EST answers is the
backend's and the EST server's business; this module only wires, and never crashes on a CA
failure nor logs a credential.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import SecretStr

from onlineca import __version__, pki
from onlineca.config import Config
from onlineca.errors import CAAuthError, CertsrvFailure, ConfigError, OnlineCAError, ParseError, fix_for
from onlineca.est.backend import CABackend, PendingStore
from onlineca.est.server import (
    EST_HANDLER,
    EST_USER,
    ESTAccessLogger,
    ESTServerSettings,
    RunningESTServer,
    access_line,
    make_est_app,
    settings_from_config,
)
from onlineca.infra import files, tls
from onlineca.infra.serving import ConnectionLimits, start_https
from onlineca.logs.nginx import ConnectionNumbers
from onlineca.logs.ralog import ACCESS_LOGGER, attach_ra_logs
from onlineca.proto import est as m
from onlineca.proto.libest import est_number
from onlineca.proto.request_id import (
    CURRENT,
    PROBE_HEADER,
    REQUEST_ID_HEADER,
    RequestContext,
    clean_request_id,
    new_request_id,
)
from onlineca.ra.connector import UNREACHABLE, CertsrvConnector, local_signer
from onlineca.ra.pending import DatabasePendingStore
from onlineca.store.db import Database

log = logging.getLogger("onlineca.ra")
est_log = logging.getLogger("onlineca.est")

T = TypeVar("T")
ENROLL_OPERATIONS = ("simpleenroll", "simplereenroll", "serverkeygen")
_OPERATIONS = ("cacerts", "csrattrs", "fullcmc", *ENROLL_OPERATIONS)


class RAMetrics:
    """Prometheus metrics of one RA, in its own registry (several RAs may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("onlineca_ra_requests", "EST requests by operation and result",
                                ["operation", "result"], registry=self.registry)
        self.ca_latency = Histogram("onlineca_ra_ca_latency_seconds", "Time of each call to the CA",
                                    ["operation"], registry=self.registry,
                                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.ca_errors = Counter("onlineca_ra_ca_errors", "CA failures by kind (CA_* code)", ["kind"],
                                 registry=self.registry)
        self.ready = Gauge("onlineca_ra_ready", "1 once the start-up checks passed", registry=self.registry)
        self.startup_attempts = Counter("onlineca_ra_startup_attempts", "Start-up check attempts",
                                        registry=self.registry)
        # diag branch: when each CA failure kind and each EST result last happened, so that
        # diagnose can tell a fault of the last minutes from one of last week.
        self.ca_last_error = Gauge("onlineca_ra_ca_last_error_timestamp_seconds", "Last CA failure by kind",
                                   ["kind"], registry=self.registry)
        self.last_result = Gauge("onlineca_ra_last_result_timestamp_seconds", "Last EST answer by operation "
                                 "and result", ["operation", "result"], registry=self.registry)

    async def observe(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        except CertsrvFailure as exc:
            self.ca_errors.labels(kind=exc.code).inc()
            self.ca_last_error.labels(kind=exc.code).set_to_current_time()
            raise
        finally:
            self.ca_latency.labels(operation=operation).observe(time.perf_counter() - started)


@dataclass
class RAState:
    """What the RA knows: readiness (and why not), the CA chain, the pending requests."""

    config: Config
    connector: CABackend
    metrics: RAMetrics
    # the requests the RA must find again (pending at the CA, or issued after the client had gone)
    pending: PendingStore
    ready: bool = False
    reason: str = "start-up checks have not run yet"
    attempts: int = 0
    failures: int = 0  # start-up attempts that ended in a failure
    chain: list[x509.Certificate] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None
    monitor: asyncio.Task[None] | None = None
    trust: pki.TrustStore = field(default_factory=lambda: pki.TrustStore([]))
    # Consecutive logins the CA refused (401) with the RA's own account; at max_login_failures
    # the RA stops logging in (``locked``) until a reload or ``retry_login``, so a wrong password
    # does not lock the CA account.
    auth_failures: int = 0
    locked: bool = False

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_until(self, predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        """Wait (tests, tools) until ``predicate(state)`` holds, re-checked at every state change."""
        async with asyncio.timeout(timeout):
            async with self.changed:
                await self.changed.wait_for(lambda: predicate(self))

    def recheck(self, why: str) -> None:
        """The CA became unreachable: not ready until the start-up checks pass again."""
        if self.locked or (self.task is not None and not self.task.done()):
            return
        self.ready = False
        self.reason = why
        self.metrics.ready.set(0)
        log.warning("the CA is unreachable after start-up (%s); running the start-up checks again", why,
                    extra={"func": "ra_startup"})
        # diag branch: a fresh context, so that the checks' lines are not written as the request's
        self.task = asyncio.get_running_loop().create_task(startup_loop(self), context=contextvars.Context())


    def retry_login(self, why: str = "retry asked") -> None:
        """Start the start-up checks again, also after a lockout (reload, or an administrator)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.locked, self.auth_failures = False, 0
        self.ready = False
        self.reason = f"start-up checks running again ({why})"
        self.metrics.ready.set(0)
        self.task = asyncio.get_running_loop().create_task(startup_loop(self))


# --------------------------------------------------------------------------- start-up


def log_trust_store(trust: pki.TrustStore) -> None:
    """Each trust anchor once for the web side and once for EST, as the document's error.log shows."""
    if not len(trust):
        log.warning("CA Chain requested but this value has not yet been set (trust store is empty)",
                    extra={"func": "ossl_init_cert_store",
                           "fix": "Set [ra] trust_store to the CA's root (and intermediates) in PEM."})
    for cert in trust.certs:
        log.warning("Adding cert to store (%s)", pki.name_to_slash(cert.subject), extra={"func": "ossl_init_cert_store"})
    est_log.info("onlineca %s (EST server, RFC 7030)", __version__, extra={"func": "est_log_version"})
    for cert in trust.certs:
        est_log.info("Adding cert to store (%s)", pki.name_to_slash(cert.subject),
                     extra={"func": "ossl_init_cert_store_from_raw"})


async def startup_loop(state: RAState) -> None:
    """Run the start-up checks until they pass, with exponential backoff; never raises."""
    ra = state.config.ra
    delay = ra.backoff_initial
    while True:
        state.attempts += 1
        state.metrics.startup_attempts.inc()
        try:
            connector = state.connector
            if isinstance(connector, CertsrvConnector):
                chain = await connector.prepare()
            else:  # the local signer: nothing to reach, its chain is its own
                chain = await connector.cacerts(None)
        except CAAuthError as exc:
            state.auth_failures += 1
            state.reason = f"{exc.code}: {exc.message}"
            if state.auth_failures >= ra.max_login_failures:
                state.locked = True
                state.reason = (f"CA_AUTH: the CA refused the RA's login {state.auth_failures} times in a row; the "
                                f"RA stopped logging in so that the CA account does not lock")
                state.failures += 1
                log.error("RA not ready: the CA refused the login of %s %d times in a row (max_login_failures = %d); "
                          "no further login until the configuration is reloaded", ra.ca_user or "the RA",
                          state.auth_failures, ra.max_login_failures,
                          extra={"func": "ra_startup", "fix": LOCKOUT_FIX})
                await state._notify()
                return
            log.warning("RA not ready after attempt %d (%s; refused login %d of at most %d); next attempt in %.1f s",
                        state.attempts, state.reason, state.auth_failures, ra.max_login_failures, delay,
                        extra={"func": "ra_startup", "fix": LOCKOUT_FIX})
        except OnlineCAError as exc:
            state.reason = f"{exc.code}: {exc.message}"
            log.warning("RA not ready after attempt %d (%s); next attempt in %.1f s", state.attempts,
                        state.reason, delay, extra={"func": "ra_startup", "fix": exc.hint})
        except Exception as exc:
            state.reason = f"internal error: {type(exc).__name__}"
            log.exception("RA not ready after attempt %d (internal error); next attempt in %.1f s",
                          state.attempts, delay, extra={"func": "ra_startup"})
        else:
            state.chain, state.ready, state.reason = chain, True, "ready"
            state.auth_failures = 0
            state.metrics.ready.set(1)
            log.info("RA ready after %d attempt(s): %s connector, CA %s, accepting EST requests",
                     state.attempts, ra.connector, pki.name_to_slash(chain[0].subject),
                     extra={"func": "ra_startup"})
            await state._notify()
            return
        state.failures += 1
        await state._notify()
        await asyncio.sleep(delay)  # the backoff itself
        delay = min(delay * 2, ra.backoff_max)


async def monitor_loop(state: RAState) -> None:
    """While ready, ask the CA every ``ready_check_interval`` seconds whether it still answers
    (one login page request): a CA that died sends the RA back to its start-up checks, and
    /readyz to 503, without waiting for a client to find out.  A slow CA stays "ready"."""
    interval = state.config.ra.ready_check_interval
    while True:
        await asyncio.sleep(interval)  # a period, not a synchronisation
        connector = state.connector
        if not state.ready or not isinstance(connector, CertsrvConnector):
            continue
        try:
            await connector.probe()
        except (*UNREACHABLE, CAAuthError) as exc:
            state.recheck(f"{exc.code}: {exc.message}")
            await state._notify()
        except OnlineCAError as exc:  # slow, or an odd answer: reachable; the next request will tell
            log.info("background check of the CA: %s", exc.message, extra={"func": "ra_ready_check"})


LOCKOUT_FIX = ("Correct [ra] ca_password ($ONLINECA_RA_CA_PASSWORD) or ca_user to what the CA knows, then reload "
               "the RA (SIGHUP, systemctl reload): after max_login_failures refused logins it stops logging in.")


# --------------------------------------------------------------------------- HTTP glue


def _result_label(operation: str, status: int) -> str:
    if status == 200:
        return "issued" if operation in ENROLL_OPERATIONS else "ok"
    return {202: "pending", 204: "ok", 401: "unauthorized", 503: "unavailable"}.get(
        status, "refused" if 400 <= status < 500 else "error")


_EST_CODE_BY_STATUS = {401: "EST_ERR_AUTH_FAIL", 503: "EST_ERR_CA_ENROLL_RETRY", 400: "EST_ERR_BAD_PKCS10"}


def _operation(path: str) -> str:
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return last if last in _OPERATIONS else "other"


def _sent_credentials(request: web.Request) -> bool:
    """Whether the client authenticated at all: an Authorization header or a TLS client certificate."""
    if request.headers.get("Authorization"):
        return True
    sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
    return bool(sslobj is not None and sslobj.getpeercert(binary_form=True))


def make_middleware(state: RAState) -> web.middleware:  # type: ignore[valid-type]
    connections = ConnectionNumbers()

    @web.middleware
    async def ra_gate(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if not request.path.startswith(m.WELL_KNOWN):
            return await handler(request)
        # diag branch: CAPF's X-Request-ID (or a new one) on every line about this request and on
        # the CA requests made for it; diagnose's probes marked as such (proto.request_id).
        ctx = RequestContext(clean_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id(),
                             connections.of(request.transport), request.remote or "", request.host,
                             f"{request.method} {request.path[:200]} HTTP/{request.version.major}.{request.version.minor}",
                             probe=PROBE_HEADER in request.headers)
        token = CURRENT.set(ctx)
        try:
            resp = await _gate(request, handler, ctx)
        finally:
            CURRENT.reset(token)
        resp.headers[REQUEST_ID_HEADER] = ctx.request_id
        return resp

    async def _gate(request: web.Request, handler, ctx: RequestContext):  # type: ignore[no-untyped-def]
        ra = state.config.ra  # read per request: a reload may have changed it
        operation = _operation(request.path)
        if not state.ready:
            if operation == "cacerts":
                log.warning("CA Chain requested but this value has not yet been set", extra={"func": "ra_gate"})
            resp: web.StreamResponse = web.Response(
                status=503, text=f"the RA is not ready: {state.reason}\n",
                headers={"Retry-After": str(ra.unavailable_retry_after)})
        else:
            started = time.perf_counter()
            try:
                resp = await handler(request)
            except asyncio.CancelledError:
                # The client went away before the answer (NGINX's 499); a certificate the CA issues
                # meanwhile is kept for the client's retry (est.backend.ask).
                logging.getLogger(ACCESS_LOGGER).info(access_line(request, 499, 0, time.perf_counter() - started))
                state.metrics.requests.labels(operation=operation, result="abandoned").inc()
                log.error("%s: the client closed the connection before the RA answered (%s, user %s, %.3f s); "
                          "status 499", operation, request.remote or "-", request.get(EST_USER) or "-",
                          time.perf_counter() - started,
                          extra={"func": "est_server_handle_simple_enroll",
                                 "fix": "The client gave up before the CA answered: raise the client's timeout "
                                        "or find why the CA is slow; its retry collects a certificate issued "
                                        "meanwhile."})
                raise
        if resp.status == 503 and "Retry-After" not in resp.headers:
            resp.headers["Retry-After"] = str(ra.unavailable_retry_after)
        result = "probe" if ctx.probe else _result_label(operation, resp.status)
        state.metrics.requests.labels(operation=operation, result=result).inc()
        state.metrics.last_result.labels(operation=operation, result=result).set_to_current_time()
        if ctx.probe and resp.status == 400:  # diag branch: the probe sends no CSR on purpose
            log.info("diagnose probe of %s: credentials accepted, no CSR sent, nothing enrolled", operation,
                     extra={"func": "est_server_handle_simple_enroll"})
        elif operation in ENROLL_OPERATIONS and resp.status == 401 and not _sent_credentials(request):
            # libEST clients always ask first without credentials and answer the challenge: that
            # is the HTTP authentication handshake, not a failure (libEST logs it as info too).
            log.info("Enrollment asked for HTTP authentication: the client sent no credentials yet, "
                     "401 challenge sent (rc=22 EST_ERR_AUTH_FAIL until it answers)",
                     extra={"func": "est_server_handle_simple_enroll"})
        elif operation in ENROLL_OPERATIONS and resp.status >= 400:
            code = _EST_CODE_BY_STATUS.get(resp.status, "EST_ERR_CA_ENROLL_FAIL")
            log.error("Enrollment failed with rc=%d (%s)", est_number(code), code,
                      extra={"func": "est_server_handle_simple_enroll", "fix": fix_for(code)})
        return resp

    return ra_gate


def _json(obj: dict[str, object], status: int = 200, **headers: str) -> web.Response:
    return web.Response(status=status, text=json.dumps(obj), content_type="application/json", headers=headers)


def make_connector(config: Config, metrics: RAMetrics, trust: pki.TrustStore) -> CABackend:
    ra = config.ra
    if ra.connector == "local":
        if ra.client_auth == "passthrough":
            raise ConfigError("client_auth = 'passthrough' needs connector = 'certsrv'",
                              hint="Use client_auth = 'users' or 'certificate' with the local connector.")
        return local_signer(ra)
    if ra.ca_auth in ("basic", "ntlm") and not ra.ca_password.get_secret_value():
        raise ConfigError(f"[ra] ca_password is empty: the RA would log in to the CA as {ra.ca_user!r} with an "
                          "empty password, and a real AD account locks after a few such logins",
                          hint="Set $ONLINECA_RA_CA_PASSWORD (or [ra] ca_password) to the CA account's password.")
    if not len(trust):
        raise ConfigError("[ra] trust_store is empty: the RA cannot verify the CA's web certificate nor its chain",
                          hint="Set trust_store to a PEM file with the CA's root (and intermediates).")
    return CertsrvConnector(ra, trust=trust, observe=metrics.observe)


def load_trust(config: Config) -> pki.TrustStore:
    if not config.ra.trust_store:
        return pki.TrustStore([])
    try:
        return files.load_trust_store(config.ra.trust_store)
    except (OSError, ParseError) as exc:
        raise ConfigError(f"[ra] trust_store {config.ra.trust_store}: {exc}") from None


RA_STATE = web.AppKey("ra_state", RAState)


def est_settings(config: Config, connector: CABackend) -> ESTServerSettings:
    """The EST server's settings for this RA configuration (users file read here)."""
    ra, est = config.ra, config.est
    settings = settings_from_config(est.model_copy(update={"users_file": ""}))
    settings.retry_after = ra.unavailable_retry_after
    settings.body_timeout = config.connections.body_timeout
    settings.pending_retry_after = ra.pending_retry_after
    settings.vouch_agents = tuple(ra.vouch_agents)  # which RA agents may vouch for a key (pin; docs/ra.md)
    # The labels that name another template are served too.
    settings.labels = tuple(dict.fromkeys([*settings.labels, *ra.label_templates]))
    # The EST server's own deadline must leave room for every CA timeout of one enrollment.
    settings.request_timeout = max(est.request_timeout,
                                   ra.connect_timeout + ra.login_timeout + 2 * ra.enroll_timeout + 1)
    if ra.client_auth == "users":
        if not est.users_file:
            raise ConfigError("client_auth = 'users' needs [est] users_file",
                              hint="Make one with 'onlineca est hash-password'.")
        settings.password_check = settings_from_config(est).password_check
    elif ra.client_auth == "passthrough":
        if not isinstance(connector, CertsrvConnector):
            raise ConfigError("client_auth = 'passthrough' needs connector = 'certsrv'",
                              hint="Use client_auth = 'users' or 'certificate' with the local connector.")
        settings.password_check = connector.check_password
    else:
        settings.password_check = None
        if not est.client_trust_store:
            raise ConfigError("client_auth = 'certificate' needs [est] client_trust_store",
                              hint="Point it at the CA that issues the EST clients' certificates.")
    return settings


def make_ra_app(config: Config, log_dir: str | Path, *, log_format: str | None = None,
                connector: CABackend | None = None, db: Database | None = None) -> web.Application:
    """The RA application; start-up checks begin when it starts serving.  ``db`` holds the
    pending requests (default: ``[database] url``), migrated at start."""
    ra, est = config.ra, config.est
    detach = attach_ra_logs(log_dir, log_format or config.logging.format, config.logging.level)
    own_db = db is None
    try:
        trust = load_trust(config)
        metrics = RAMetrics()
        connector = connector or make_connector(config, metrics, trust)
        db = db or Database(config.database_url)
        pending = DatabasePendingStore(db, ra.ca_url if ra.connector == "certsrv" else "local")
        state = RAState(config, connector, metrics, pending)
        state.trust = trust
        if isinstance(connector, CertsrvConnector):
            connector.unreachable = state.recheck
        settings = est_settings(config, connector)
    except BaseException:
        detach()
        raise
    app = make_est_app(connector, settings, pending=state.pending)
    app.middlewares.append(make_middleware(state))
    app[RA_STATE] = state

    async def healthz(_request: web.Request) -> web.Response:
        return _json({"status": "alive", "ready": state.ready})

    async def readyz(_request: web.Request) -> web.Response:
        body = {"ready": state.ready, "reason": state.reason, "attempts": state.attempts,
                "connector": state.config.ra.connector,
                # what this RA runs with, for diagnose to compare with its own configuration
                "ca_url": state.config.ra.ca_url, "template": state.config.ra.template,
                "trust_store": [pki.fingerprint(c) for c in state.trust.certs],
                "pid": os.getpid()}  # which worker answered, under --workers
        if state.ready:
            return _json(body)
        return _json(body, 503, **{"Retry-After": str(state.config.ra.unavailable_retry_after)})

    async def metrics_view(_request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(metrics.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)

    async def _start(_app: web.Application) -> None:
        await asyncio.to_thread(pending.db.migrate)
        pruned = await pending.prune(ra.pending_keep_days)
        if pruned:
            log.info("forgot %d pending request(s) nobody asked about for %g days", pruned, ra.pending_keep_days,
                     extra={"func": "ra_startup"})
        log_trust_store(trust)
        log.warning("pop_enabled %s in [est]. %s EST Proof of Possession",
                    "on" if est.pop_tls_unique else "off", "Enabling" if est.pop_tls_unique else "Disabling",
                    extra={"func": "ra_postconf"})
        state.task = asyncio.get_running_loop().create_task(startup_loop(state))
        state.monitor = asyncio.get_running_loop().create_task(monitor_loop(state))

    async def _stop(_app: web.Application) -> None:
        for task in (state.task, state.monitor):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if isinstance(state.connector, CertsrvConnector):
            await state.connector.close()
        if own_db:
            pending.db.dispose()
        detach()

    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app


@dataclass
class RunningRA(RunningESTServer):
    """A started RA: ``url`` is its EST base, ``base`` its origin (``/readyz``, ``/metrics``)."""

    # The --tls-cert/--tls-key the RA was started with (they win over the file on reload too).
    tls_args: tuple[str | os.PathLike[str] | None, str | os.PathLike[str] | None] = (None, None)

    @property
    def state(self) -> RAState:
        return self.app[RA_STATE]

    async def wait_ready(self, timeout: float = 30.0) -> None:
        await self.state.wait_until(lambda s: s.ready, timeout)

    async def reload(self, config: Config) -> list[str]:
        """SIGHUP: the new configuration, trust stores, users file and certificates, checked whole
        before anything changes (a ``ConfigError`` leaves the running RA as it was); then the
        start-up checks run again (also after a login lockout).  Returns what changed (logged)."""
        state = self.state
        old = state.config
        if config.database_url != old.database_url:
            raise ConfigError("[database] url changed: the RA keeps its pending requests there; restart it to change it")
        trust = load_trust(config)
        connector = make_connector(config, state.metrics, trust)
        try:
            settings = est_settings(config, connector)
            ctx = _server_context(config, *self.tls_args)
        except BaseException:
            if isinstance(connector, CertsrvConnector):
                await connector.close()
            raise
        changes = config_changes(old, config)
        if [c.fingerprint for c in trust.certs] != [c.fingerprint for c in state.trust.certs]:
            changes.append("[ra] trust_store contents")
        previous = state.connector
        state.config, state.trust, state.connector = config, trust, connector
        if isinstance(connector, CertsrvConnector):
            connector.unreachable = state.recheck
        handler: Any = self.app[EST_HANDLER]
        handler.backend, handler.s = connector, settings
        self.set_ssl_context(ctx)
        self.set_limits(ConnectionLimits(**config.connections.model_dump()))
        log.warning("configuration reloaded (SIGHUP): %s; running the start-up checks again",
                    ", ".join(changes) or "nothing changed", extra={"func": "ra_reload"})
        log_trust_store(trust)
        state.retry_login("configuration reloaded")
        if isinstance(previous, CertsrvConnector) and previous is not connector:
            await previous.close()
        return changes


def _server_context(config: Config, tls_cert: str | os.PathLike[str] | None,
                    tls_key: str | os.PathLike[str] | None) -> ssl.SSLContext:
    """The RA's TLS server context: its certificate, and the EST clients' trust store."""
    ra = config.ra
    cert_file, key_file = tls_cert or ra.tls_cert, tls_key or ra.tls_key
    if not (cert_file and key_file):
        raise ConfigError("the RA needs a TLS certificate and key",
                          hint="Set [ra] tls_cert and tls_key, or pass --tls-cert and --tls-key.")
    client_trust = None
    if config.est.client_trust_store:
        try:
            client_trust = files.load_trust_store(config.est.client_trust_store)
        except (OSError, ParseError) as exc:
            raise ConfigError(f"[est] client_trust_store: {exc}") from None
    try:
        return tls.server_context(cert_file, key_file, client_trust=client_trust.certs if client_trust else (),
                                  tls12_only=config.est.pop_tls_unique)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the RA's TLS certificate {cert_file} / {key_file}: {exc}") from None


def config_changes(old: Config, new: Config) -> list[str]:
    """The keys that differ between two configurations, secrets named but never shown."""
    out: list[str] = []
    a, b = old.model_dump(), new.model_dump()
    for section in sorted(set(a) | set(b)):
        va, vb = a.get(section), b.get(section)
        if isinstance(va, dict) and isinstance(vb, dict):
            for key in sorted(set(va) | set(vb)):
                if va.get(key) != vb.get(key):
                    secret = "password" in key or isinstance(vb.get(key), SecretStr)
                    out.append(f"[{section}] {key}" + ("" if secret else f" = {vb.get(key)!r}"))
        elif va != vb:
            out.append(f"{section} = {vb!r}")
    return out


async def start_ra(config: Config, log_dir: str | Path, *, host: str | None = None, port: int | None = None,
                   tls_cert: str | os.PathLike[str] | None = None, tls_key: str | os.PathLike[str] | None = None,
                   log_format: str | None = None, connector: CABackend | None = None,
                   db: Database | None = None) -> RunningRA:
    """Start the RA over HTTPS (port 0: any free port); returns once it accepts connections (the
    start-up checks then run in the background: see ``wait_ready`` and /readyz)."""
    files.private_umask()  # its database (pending requests) and logs are its owner's only
    ra = config.ra
    ctx = _server_context(config, tls_cert, tls_key)
    app = make_ra_app(config, log_dir, log_format=log_format, connector=connector, db=db)
    host = host or ra.host
    runner, bound = await start_https(app, host, ra.port if port is None else port, ctx,
                                      limits=ConnectionLimits(**config.connections.model_dump()), logger=log,
                                      tls_hint="The client's certificate must chain to [est] client_trust_store: "
                                               "give it one from that CA, or add its issuer and root there.",
                                      access_log_class=ESTAccessLogger, access_log=logging.getLogger(ACCESS_LOGGER))
    log.info("RA listening on https://%s:%s (EST %s, connector %s, client auth %s)", host, bound, m.WELL_KNOWN,
             ra.connector, ra.client_auth, extra={"func": "ra_server_start"})
    running = RunningRA(host, bound, runner, app, ctx)
    running.tls_args = (tls_cert, tls_key)
    return running


__all__ = ["RA_STATE", "RAMetrics", "RAState", "RunningRA", "make_ra_app", "start_ra"]
