"""Running as a service, with real processes: the systemd units (checked by systemd-analyze), one
server per data dir and role, READY=1/STOPPING=1 on $NOTIFY_SOCKET, log files reopened on SIGHUP
and after rotation, and the journald log target."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from onlineca.cli import main_group
from onlineca.infra import systemd

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onlineca", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=120)


@pytest.fixture(scope="module")
def ca_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("svc") / "data"
    done = _cli("--data-dir", str(data), "ca", "init", "--password", "Svc-Passw0rd!")
    assert done.returncode == 0, done.stderr
    return data


@contextlib.contextmanager
def ca_serve(data: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``onlineca ca serve`` on a free port in its own process; yields it and its URL once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "onlineca", "--data-dir", str(data), *extra, "ca", "serve",
                             "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env or ENV)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the readiness line (after log lines, under the journald target)
        while line.startswith("<"):
            line = proc.stderr.readline()
        assert line.startswith("CA serving https://"), line + proc.stderr.read()
        yield proc, line.split()[2]
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def _get(url: str, data: Path) -> None:
    done = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", str(data / "ca" / "root.pem"), "-o",
                           "/dev/null", url], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_service_install_writes_units_that_systemd_analyze_accepts(tmp_path: Path) -> None:
    out = tmp_path / "units"
    result = CliRunner().invoke(main_group, ["--data-dir", str(tmp_path / "d"), "service", "install", "--dir",
                                             str(out), "--config", str(tmp_path / "onlineca.toml")])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["onlineca", *sorted(systemd.unit_name(r) for r in ("ca", "ra", "capf", "admin"))]
    ca = (out / "onlineca-ca.service").read_text()
    for line in ("Type=notify", "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes",
                 "CapabilityBoundingSet=", "User=onlineca", "StateDirectory=onlineca", "StateDirectoryMode=0700",
                 "UMask=0077", "LimitNOFILE=65536", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line + "\n" in ca, line
    assert "ProtectHome=" in ca and " ca serve\n" in ca and "--log-target file" in ca
    assert "postrotate" in (out / "onlineca").read_text()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing (.ci/run installs Debian's systemd package)")
        pytest.skip("systemd-analyze is not installed")
    # the units name man:onlineca(1): give systemd-analyze the generated page to find
    man = tmp_path / "man" / "man1"
    man.mkdir(parents=True)
    assert CliRunner().invoke(main_group, ["manpage", "--out", str(man / "onlineca.1")]).exit_code == 0
    done = subprocess.run([analyze, "verify", *sorted(str(p) for p in out.glob("*.service"))], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MANPATH": str(tmp_path / "man")})
    ours = [line for line in (done.stdout + done.stderr).splitlines() if "onlineca" in line]
    print(done.stdout + done.stderr)
    assert done.returncode == 0 and ours == [], done.stdout + done.stderr


def test_a_second_server_on_the_same_data_dir_says_who_holds_it(ca_data: Path) -> None:
    with ca_serve(ca_data) as (first, _url):
        second = _cli("--data-dir", str(ca_data), "ca", "serve", "--port", "0")
        assert second.returncode == 1
        assert f"a ca server already runs on {ca_data} (PID {first.pid}, started " in second.stderr, second.stderr
        assert str(ca_data / "ca.lock") in second.stderr
    # the lock dies with its holder: a new server starts
    with ca_serve(ca_data):
        pass


def test_ready_and_stopping_reach_the_notify_socket(ca_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(60)  # a bound on a failure, not a synchronisation
        with ca_serve(ca_data, env={**ENV, "NOTIFY_SOCKET": str(path)}) as (proc, _url):
            ready = sock.recv(4096).decode()
            assert ready.startswith("READY=1\n") and f"MAINPID={proc.pid}" in ready and "STATUS=CA serving" in ready
            proc.send_signal(signal.SIGTERM)
            assert sock.recv(4096).decode() == "STOPPING=1"
            assert proc.wait(30) == 0


def test_sighup_reopens_the_log_files_after_logrotate_moved_them(ca_data: Path) -> None:
    logs = ca_data / "logs"
    with ca_serve(ca_data) as (proc, url):
        _get(url + "/", ca_data)
        for name in ("ca.log", "ca-iis.log"):
            (logs / name).rename(logs / f"{name}.1")  # what logrotate does
        proc.send_signal(signal.SIGHUP)
        # one whole HTTPS request later the loop has run the signal's callback (it came first)
        _get(url + "/certrqxt.asp", ca_data)
        assert proc.poll() is None, "SIGHUP must not stop the server"
        assert "SIGHUP: 2 log file(s) reopened" in (logs / "ca.log").read_text()
        assert "/certsrv/certrqxt.asp" in (logs / "ca-iis.log").read_text()
        assert "/certsrv/certrqxt.asp" not in (logs / "ca-iis.log.1").read_text()
        assert (logs / "ca-iis.log").read_text().startswith("#Software: ")  # a new IIS file has its headers


def test_the_iis_log_follows_a_rename_without_sighup(ca_data: Path) -> None:
    logs = ca_data / "logs"
    with ca_serve(ca_data) as (_proc, url):
        (logs / "ca-iis.log").rename(logs / "ca-iis.log.2")
        _get(url + "/certrqxt.asp", ca_data)
        assert "/certsrv/certrqxt.asp" in (logs / "ca-iis.log").read_text()


def test_journald_target_writes_priority_lines_on_stderr_and_no_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _cli("--data-dir", str(data), "ca", "init", "--password", "x").returncode == 0
    logs = tmp_path / "logs"
    with ca_serve(data, "--log-dir", str(logs), "--log-target", "journald") as (proc, url):
        _get(url + "/", data)
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        rest = proc.stderr.read()
        assert proc.wait(30) == 0
    lines = rest.splitlines()
    assert any(line.startswith("<6>onlineca.ca: CA ") for line in lines), rest
    assert any(line.startswith("configuration: ") for line in lines)
    assert not any(line[:3] == "<6>" and line[3:7].isdigit() for line in lines)  # no timestamp of ours
    assert not logs.exists()
