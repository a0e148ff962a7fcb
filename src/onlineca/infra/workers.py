"""``--workers N``: one server command as N processes on one port (SO_REUSEPORT) under a supervisor.

The supervisor is the command the administrator started: it holds the server's data-dir lock (the
caller takes it), reserves the port (a port of 0 becomes one free port every worker shares), starts
N copies of its own command line with ``ONLINECA_WORKER_INDEX`` set (the first alone, so a new
data dir is prepared once), prints one readiness line
once every worker has printed its own, forwards SIGHUP, SIGTERM and SIGINT to them, and starts a
worker again when one dies (not while stopping).  A worker is an ordinary server that binds with
SO_REUSEPORT, so the kernel spreads new connections over the workers; they share state only
through the database, as several CAPF nodes already do.  This module never decides anything about
requests, and never runs a server itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

WORKER_ENV = "ONLINECA_WORKER_INDEX"
COUNT_ENV = "ONLINECA_WORKER_COUNT"
# A worker prints its readiness line after this mark, so the supervisor can tell it from log
# lines (the journald and stdout targets write those on the same stream) and repeat it once.
READY_MARK = "onlineca-worker-ready: "
# What a server prints in answer to SIGHUP (cli.app._reloader): the supervisor repeats each
# distinct answer once per SIGHUP, not once per worker.
RELOAD_LINES = ("reloaded:", "reload refused", "reload failed", "reload (SIGHUP) is not supported")
# Seconds a worker that died waits before it is started again (a crash loop costs little).
RESTART_DELAY = 1.0
# Seconds the workers have to stop after SIGTERM before they are killed.
STOP_TIMEOUT = 30.0
# Seconds every worker has to print its readiness line at start.
START_TIMEOUT = 120.0


def worker_index() -> int | None:
    """This process's worker number under a supervisor, or None (a server on its own)."""
    value = os.environ.get(WORKER_ENV, "")
    return int(value) if value.isdigit() else None


def reuse_port() -> bool:
    """Whether this server's listeners must bind with SO_REUSEPORT (it is one of N workers)."""
    return worker_index() is not None


def share(limit: int) -> int:
    """A worker's share of a limit the server counts in memory (the RA's refused-login throttle):
    ``limit // N`` (at least 1), so N workers together allow no more than one server would (for a
    limit of at least N); a client may meet one worker's share sooner.  The whole limit on its own."""
    count = os.environ.get(COUNT_ENV, "")
    n = int(count) if worker_index() is not None and count.isdigit() and int(count) > 0 else 1
    return max(1, limit // n)


def worker_suffix() -> str:
    """``-w1`` for worker 1, empty on its own: what keeps node ids of workers distinct."""
    index = worker_index()
    return "" if index is None else f"-w{index}"


def default_workers() -> int:
    return os.cpu_count() or 1


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """The port the workers will share, held for them: first bound alone (no SO_REUSEPORT), so a
    port another server holds is refused here as without workers (OSError), and port 0 becomes a
    free port; then a socket bound to it with SO_REUSEPORT (not listening) is kept open until the
    workers stop, so that no other server can take it meanwhile.  The caller closes the socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers bind
        probe.bind((host, port))
        port = int(probe.getsockname()[1])
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock, port


def _die_with_parent() -> None:
    """In the new worker, before it runs: the kernel kills it (SIGKILL) when the thread that
    started it ends, so a supervisor killed with SIGKILL leaves no worker holding the port
    (PR_SET_PDEATHSIG, Linux); a no-op elsewhere."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    ready: threading.Event = field(default_factory=threading.Event)
    first_line: str = ""
    pump: threading.Thread | None = None


class Supervisor:
    """N workers of ``argv`` (the command line, run as it is with the worker's environment)."""

    def __init__(self, argv: Sequence[str], count: int, *, err: IO[str] | None = None,
                 on_ready: Callable[[str], None] | None = None) -> None:
        if count < 1:
            raise ValueError("at least one worker")
        self.argv, self.count = list(argv), count
        self.err = err or sys.stderr
        self.on_ready = on_ready
        self.workers: dict[int, _Worker] = {}
        self._stopping = threading.Event()
        self.stop_requested = False  # SIGTERM/SIGINT seen (set by the signal handler)
        self._lock = threading.Lock()
        # Workers' lines before the supervisor's readiness line wait here: that line comes first.
        self._held: list[str] | None = []
        self._reload_said: set[str] = set()
        self._restart_at: dict[int, float] = {}

    # -- processes ---------------------------------------------------------------------------

    def _spawn(self, index: int) -> _Worker:
        env = {**os.environ, WORKER_ENV: str(index), COUNT_ENV: str(self.count)}
        env.pop("NOTIFY_SOCKET", None)  # systemd hears the supervisor (MAINPID), never a worker
        proc = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=_die_with_parent)
        worker = _Worker(index, proc)
        worker.pump = threading.Thread(target=self._pump, args=(worker,), daemon=True,
                                       name=f"worker-{index}-stderr")
        worker.pump.start()
        return worker

    def _pump(self, worker: _Worker) -> None:
        """The worker's stderr, line by line, onto ours, as it wrote them.  Its readiness line
        (after ``READY_MARK``) or its error line (``error: ...`` before it) is kept for the
        supervisor instead; what the workers print while starting is shown once (worker 0's:
        they all print the same)."""
        assert worker.proc.stderr is not None
        starting = True
        for raw in worker.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            if starting and line.startswith(READY_MARK):
                worker.first_line = line[len(READY_MARK):]
                worker.ready.set()
                starting = False
                continue
            if starting and line.startswith("error:"):  # the supervisor says it, once
                worker.first_line = line
                worker.ready.set()
                continue
            if self._held is not None and worker.index != 0:
                continue
            if line.startswith(RELOAD_LINES):  # every worker answers a SIGHUP: each answer once
                with self._lock:
                    if line in self._reload_said:
                        continue
                    self._reload_said.add(line)
            self._say(line)
        worker.ready.set()  # it ended without a readiness line: start() sees it exited

    def _say(self, line: str) -> None:
        with self._lock:
            if self._held is not None:
                self._held.append(line)
            else:
                print(line, file=self.err, flush=True)

    def release_held(self) -> None:
        """Print the workers' lines held back until the readiness line, and the rest as they come."""
        with self._lock:
            held, self._held = self._held or [], None
            for line in held:
                print(line, file=self.err, flush=True)

    def signal_all(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            with self._lock:
                self._reload_said.clear()
        for worker in list(self.workers.values()):
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signum)

    # -- life --------------------------------------------------------------------------------

    def start(self) -> str:
        """Start every worker and wait for their readiness lines; the first one's line.  Worker 0
        starts alone and the others once it is ready: what a server does on its first start in a
        new data dir (the database's migrations, CAPF enrolling its certificate and making its own
        CA) then happens once, not raced by N processes.  A worker that exits first fails the
        start (``RuntimeError`` with its last words), after stopping the others."""
        deadline = time.monotonic() + START_TIMEOUT
        self.workers[0] = self._spawn(0)
        self._await_ready(self.workers[0], deadline)
        for index in range(1, self.count):
            self.workers[index] = self._spawn(index)
        for worker in list(self.workers.values())[1:]:
            self._await_ready(worker, deadline)
        return self.workers[0].first_line

    def _await_ready(self, worker: _Worker, deadline: float) -> None:
        while not worker.ready.wait(0.1):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker {worker.index} was not ready after {START_TIMEOUT:.0f} s")
        if worker.first_line.startswith("error:") or not worker.first_line:
            self.stop()
            raise RuntimeError(worker.first_line.removeprefix("error:").strip() or
                               f"worker {worker.index} exited ({worker.proc.returncode}) before it was ready")

    def check(self) -> None:
        """Start again any worker that died, ``RESTART_DELAY`` after it did (call it often, from
        the thread that started the workers: they are tied to it, see ``_die_with_parent``)."""
        now = time.monotonic()
        for index, worker in list(self.workers.items()):
            code = worker.proc.poll()
            if code is None or self._stopping.is_set() or self.stop_requested:
                continue
            self._say(f"worker {index} (pid {worker.proc.pid}) exited ({code}); starting it again")
            del self.workers[index]  # a death before the stop is not the stop's exit status
            self._restart_at[index] = now + RESTART_DELAY
        for index, when in list(self._restart_at.items()):
            if now >= when and not self._stopping.is_set() and not self.stop_requested:
                del self._restart_at[index]
                self.workers[index] = self._spawn(index)

    def stop(self) -> int:
        """SIGTERM to every worker, SIGKILL to those still there after ``STOP_TIMEOUT``; the first
        non-zero exit status (0 when all stopped cleanly)."""
        self._stopping.set()
        self.signal_all(signal.SIGTERM)
        status = 0
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in self.workers.values():
            try:
                code = worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                code = worker.proc.wait()
            if worker.pump is not None:
                worker.pump.join(5)
            if code not in (0, -signal.SIGTERM) and status == 0:
                status = code
        return status


def run_supervisor(argv: Sequence[str], count: int, *, on_ready: Callable[[str], None],
                   on_stop: Callable[[], object] | None = None) -> int:
    """Start ``count`` workers of ``argv``, call ``on_ready(first worker's line)``, then supervise
    until SIGTERM or SIGINT (SIGHUP is forwarded); the exit status.  Runs on the main thread."""
    sup = Supervisor(argv, count)

    # The handler only sets a plain attribute: an Event's set() here could wait forever for the
    # lock the interrupted main thread holds inside the same Event's wait().
    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            sup.signal_all(signal.SIGHUP)
        else:
            sup.stop_requested = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        try:
            on_ready(sup.start())
        finally:
            sup.release_held()
        while not sup.stop_requested:
            time.sleep(0.2)
            sup.check()
        if on_stop is not None:
            on_stop()
        return sup.stop()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)




# --------------------------------------------------------------------------- the event loop

LOOP_ENV = "ONLINECA_EVENT_LOOP"


def install_event_loop() -> str:
    """Use uvloop for the servers' event loops when it is importable (``pip install
    onlineca[speed]``) unless ``ONLINECA_EVENT_LOOP=asyncio``; ``=uvloop`` insists on it (ImportError
    otherwise).  The name of the loop in use.  A server command calls it once, before its loop."""
    wanted = os.environ.get(LOOP_ENV, "auto").strip().lower() or "auto"
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        if wanted == "uvloop":
            raise
        return "asyncio"
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


__all__ = [
    "COUNT_ENV",
    "LOOP_ENV",
    "READY_MARK",
    "WORKER_ENV",
    "Supervisor",
    "default_workers",
    "install_event_loop",
    "reserve_port",
    "reuse_port",
    "run_supervisor",
    "share",
    "worker_index",
    "worker_suffix",
]
