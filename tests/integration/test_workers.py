"""``ra serve --workers 2``: two real worker processes answer on one port under a
supervisor that holds the RA's lock, a worker killed with SIGKILL is replaced, and SIGTERM stops
them all.  Real processes, real TLS on 127.0.0.1; the local-signer RA needs no CA server."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from onlineca.ca.engine import init_ca
from onlineca.config import load_config
from onlineca.infra.users import hash_password

ROOT = Path(__file__).resolve().parents[2]


def _config(d: Path) -> Path:
    data, ca_dir = d / "data", d / "data" / "ca"
    (d / "est-users").write_text(f"bench:{hash_password('bench-Passw0rd')}\n")
    toml = d / "ra.toml"
    toml.write_text(
        f'data_dir = "{data}"\nlog_dir = "{d / "logs"}"\n[ca]\nusers_file = "{d / "ca-users"}"\n'
        f'[ra]\nconnector = "local"\nclient_auth = "users"\nca_url = "https://127.0.0.1:1/certsrv"\ntrust_store = "{ca_dir / "root.pem"}"\n'
        f'tls_cert = "{ca_dir / "web.pem"}"\ntls_key = "{ca_dir / "web.key"}"\n'
        f'local_key = "{ca_dir / "issuing.key"}"\nlocal_cert = "{ca_dir / "chain.pem"}"\n'
        f'[est]\nusers_file = "{d / "est-users"}"\n')
    init_ca(load_config(toml, environ={}), data)
    return toml


def _readyz(base: str, cafile: Path) -> dict[str, object]:
    ctx = ssl.create_default_context(cafile=str(cafile))
    with urllib.request.urlopen(f"{base}/readyz", context=ctx, timeout=10) as resp:  # a new connection each time
        return dict(json.loads(resp.read()))


def _pids_answering(base: str, cafile: Path, want: set[int], seconds: float = 60) -> set[int]:
    """The pids seen over fresh connections until all of ``want`` answered (a worker started
    again answers once it listens) or ``seconds`` passed."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while not want <= seen and time.monotonic() < deadline:
        seen.add(int(_readyz(base, cafile)["pid"]))  # type: ignore[call-overload]
    return seen


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.mark.timeout(180)
def test_two_workers_serve_and_a_killed_one_is_replaced(tmp_path: Path) -> None:
    toml = _config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "onlineca", "--config", str(toml), "ra", "serve", "--port", "0",
                             "--workers", "2"], stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("RA serving https://127.0.0.1:"), line + proc.stderr.read()[-2000:]
        assert "[2 workers, supervisor pid" in line
        base = line.split()[2].split("/.well-known")[0].rstrip("/")
        base = "/".join(base.split("/")[:3])
        cafile = tmp_path / "data" / "ca" / "root.pem"
        workers = _children(proc.pid)
        assert len(workers) == 2 and proc.pid not in workers
        assert _pids_answering(base, cafile, want=workers) == workers  # both workers answer, nobody else

        # A second RA on the data dir is refused: the supervisor holds the lock for its workers.
        second = subprocess.run([sys.executable, "-m", "onlineca", "--config", str(toml), "ra", "serve", "--port", "0",
                                 "--workers", "1"], capture_output=True, text=True, env=env, timeout=60)
        assert second.returncode == 1 and "already runs" in second.stderr

        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        for said in proc.stderr:  # the supervisor says so (the workers' own lines come first)
            if "starting it again" in said:
                assert f"(pid {victim}) exited (-9)" in said
                break
        deadline = time.monotonic() + 60
        replaced: set[int] = set()
        while time.monotonic() < deadline and len(replaced) != 2:
            replaced = _children(proc.pid) - {victim}
        assert len(replaced) == 2 and victim not in replaced
        assert _pids_answering(base, cafile, want=replaced) == replaced  # the new worker serves too
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert not _children(proc.pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(120)
def test_a_supervisor_killed_with_sigkill_takes_its_workers_with_it(tmp_path: Path) -> None:
    toml = _config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "onlineca", "--config", str(toml), "ra", "serve", "--port", "0",
                             "--workers", "2"], stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "[2 workers, supervisor pid" in line, line
    workers = _children(proc.pid)
    assert len(workers) == 2
    proc.kill()
    proc.wait(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        pass
    assert not any(_alive(pid) for pid in workers)
