"""The benches' servers as processes of their own (``onlineca ca|ra|capf serve [--workers N]``) and
what /proc says about them: CPU seconds and resident memory, summed over a server's supervisor and
workers.  ``ra_bench`` (CA and RA), ``capf_bench --tiers-process`` and ``memory_bench`` (CA, RA and
CAPF) start their servers here.  Linux only (/proc); it never decides what a bench measures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

READY_POLL = 0.1  # seconds between two looks at a starting server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants alive now (a supervisor and its ``--workers``)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in task.read_text().split():
                pids += _tree(int(child))
    return pids


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` and its live descendants have used so far."""
    total = 0.0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mb(pid: int) -> float:
    """One process's resident set (VmRSS) in MB; 0 when it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int) -> float:
    """One process's proportional set (Pss, shared pages divided among their users) in MB; 0 when gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class ServerProcess:
    """One ``onlineca <role> serve`` process (with its workers): its address from its readiness line."""

    role: str
    proc: subprocess.Popen[bytes]
    errors: Path  # its stderr (the readiness line, warnings); a file, so nothing has to drain a pipe
    address: str = ""  # what the readiness line names: a URL (CA, RA) or host:port (CAPF)

    @property
    def origin(self) -> str:
        """``https://host:port`` of a URL address."""
        parts = urlsplit(self.address)
        return f"{parts.scheme}://{parts.netloc}"

    def cpu_seconds(self) -> float:
        return tree_cpu(self.proc.pid)

    def rss(self) -> dict[str, object]:
        """MB resident: the sum over the supervisor and its workers, each worker's own, and the sum
        of their proportional sets (the shared libraries' pages counted once between them)."""
        pids = _tree(self.proc.pid)
        workers = [round(rss_mb(p), 1) for p in pids[1:]]
        return {"total_mb": round(sum(rss_mb(p) for p in pids), 1), "workers_mb": workers,
                "supervisor_mb": round(rss_mb(pids[0]), 1), "total_pss_mb": round(sum(pss_mb(p) for p in pids), 1)}

    def fail(self, why: str) -> SystemExit:
        return SystemExit(f"{self.role} serve {why}: {self.errors.read_text(errors='replace')[-2000:]}")

    def wait_line(self, timeout: float = 120.0) -> str:
        """Wait for the readiness line (``<ROLE> serving ADDRESS ...``); keep and return ADDRESS."""
        mark = f"{self.role.upper()} serving "
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.errors.read_text(errors="replace").splitlines():
                if line.startswith(mark):
                    self.address = line.split()[2]
                    return self.address
            if self.proc.poll() is not None:
                raise self.fail(f"exited ({self.proc.returncode})")
            time.sleep(READY_POLL)
        raise self.fail("printed no readiness line")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(role: str, cli_args: Sequence[str], serve_args: Sequence[str], env: Mapping[str, str],
                 errors: Path) -> ServerProcess:
    """``python -m onlineca CLI_ARGS <role> serve SERVE_ARGS`` with ``env``, stderr to ``errors``
    (appended); returns at once (``wait_line`` waits for it)."""
    with errors.open("ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "onlineca", *cli_args, role, "serve", *serve_args],
                                env=dict(env), stdout=subprocess.DEVNULL, stderr=err)
    return ServerProcess(role, proc, errors)


def wait_ready(url: str, cafile: Path, server: ServerProcess, timeout: float = 60.0) -> None:
    """Poll ``url`` (the RA's /readyz) until it answers 200."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise server.fail(f"exited ({server.proc.returncode}) before {url} was ready")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(READY_POLL)
    raise server.fail(f"was not ready at {url}")


__all__ = ["ServerProcess", "free_port", "pss_mb", "rss_mb", "start_server", "tree_cpu", "wait_ready"]
