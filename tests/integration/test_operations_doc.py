"""docs/operations.md, part one, run as written: the production install top to bottom.

Blocks marked ```sh test run in one bash session (``set -euo pipefail``, state carried from block
to block as an administrator's shell carries it) in a temporary folder that stands in for
/etc/onlineca, /var/lib/onlineca, /var/log/onlineca, /var/backups/onlineca, /etc/systemd/system
and /etc/logrotate.d; ``sudo -E -u onlineca`` is dropped (the test's user runs everything).
Blocks marked ```sh root need root or systemd, so each of their lines is checked in a dry-run
form: ``systemctl enable --now`` starts each unit's ExecStart (from the unit file ``onlineca
service install`` wrote, with the same folders stood in) with a $NOTIFY_SOCKET and waits for its
READY=1, ``systemctl reload`` sends SIGHUP, ``systemctl stop`` sends SIGTERM and expects
STOPPING=1 and exit 0, ``journalctl --grep`` reads what the unit printed; ``apt-get``,
``python3 -m venv``, ``pip``, ``ln``, ``useradd`` and ``install`` are checked for their shape
(``install -d`` makes the folders); any other command fails the test, so the page can only
hold commands this test knows how to check.  The servers listen on the default ports.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from onlineca import pki

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
STAND_INS = ("/etc/systemd/system", "/etc/logrotate.d", "/etc/onlineca", "/var/lib/onlineca", "/var/log/onlineca",
             "/var/backups/onlineca")
DONE = "__onlineca_block_done__"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def part_one_blocks() -> list[tuple[str, str]]:
    """(tag, text) of every ```sh test / ```sh root block before 'Part two'."""
    text = DOC.read_text().split("# Part two")[0]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```sh (test|root)\n(.*?)```", text, re.S)]


def logical_lines(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.split(" #")[0].strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class Unit:
    proc: subprocess.Popen[bytes]
    notify: socket.socket
    log: Path


@dataclass
class Host:
    """The stand-in machine: folders, the administrator's shell, the units started."""

    root: Path
    env: dict[str, str]
    units: dict[str, Unit] = field(default_factory=dict)
    shell: subprocess.Popen[str] | None = None

    def path(self, text: str) -> str:
        for real in STAND_INS:  # only where a path starts (a unit file already holds stood-in paths)
            text = re.sub(r"(?<![\w./-])" + re.escape(real), lambda _m, real=real: str(self.root) + real, text)
        return text

    # -- sh test blocks
    def run_test_block(self, block: str) -> str:
        if self.shell is None:
            self.shell = subprocess.Popen(["bash"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, cwd=self.root / "home", env=self.env)
            assert self.shell.stdin is not None
            self.shell.stdin.write("set -euo pipefail\n")
        script = self.path(block).replace("sudo -E -u onlineca ", "")
        assert self.shell.stdin is not None and self.shell.stdout is not None
        # the marker on a line of its own, whether or not the block's last output ended its line
        self.shell.stdin.write("{\n" + script + "\n} </dev/null\nprintf '\\n%s\\n' " + DONE + "\n")
        self.shell.stdin.flush()
        out = []
        for line in self.shell.stdout:
            if line.strip() == DONE:
                return "".join(out)
            out.append(line)
        pytest.fail(f"a block failed (exit {self.shell.wait()}):\n{block}\n--- output ---\n{''.join(out)}")

    # -- sh root blocks
    def run_root_line(self, line: str) -> None:
        argv = shlex.split(self.path(line))
        cmd = argv[0]
        if cmd == "apt-get":
            assert argv[1] == "install" and "python3-venv" in argv, line
        elif cmd == "python3":
            assert argv[1:3] == ["-m", "venv"], line
        elif cmd.endswith("/bin/pip"):
            assert argv[1] == "install" and argv[-1] == "onlineca", line
        elif cmd == "ln":
            assert argv[1] == "-s" and argv[-1] == "/usr/local/bin/onlineca", line
        elif cmd == "useradd":
            assert "--system" in argv and argv[-1] == "onlineca", line
        elif cmd == "install":
            assert argv[1] == "-d", line
            for folder in (a for a in argv[2:] if a.startswith("/") and not a.startswith("-")):
                Path(folder).mkdir(parents=True, exist_ok=True)
        elif cmd == "systemctl":
            self.systemctl(argv[1:])
        elif cmd == "journalctl":
            unit, pattern = argv[argv.index("--unit") + 1], argv[argv.index("--grep") + 1]
            assert pattern in self.units[unit].log.read_text(), f"{unit} printed no {pattern!r}"
        elif cmd == "logrotate":
            snippet = Path(argv[-1])
            body = snippet.read_text()  # the units' log dir is /var/log/onlineca wherever the snippet is
            assert "/var/log/onlineca/*.log {" in body and "postrotate" in body and "--signal=HUP" in body
            if shutil.which("logrotate") and subprocess.run(["id", "onlineca"], capture_output=True).returncode == 0:
                done = subprocess.run(["logrotate", "--debug", "--state", str(self.root / "logrotate.state"),
                                       str(snippet)], capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, done.stderr
        else:
            pytest.fail(f"docs/operations.md: a root command this test cannot check: {line}")

    def systemctl(self, args: list[str]) -> None:
        verb, names = args[0], [a for a in args[1:] if not a.startswith("--")]
        unit_dir = self.root / "etc/systemd/system"
        if verb == "daemon-reload":
            assert sorted(p.name for p in unit_dir.glob("onlineca-*.service"))
        elif verb == "enable" and "--now" in args:
            for name in names:
                self.start(name, (unit_dir / name).read_text())
        elif verb == "reload":
            for name in names:
                self.units[name].proc.send_signal(signal.SIGHUP)
            for name in names:
                assert self.units[name].proc.poll() is None, f"{name} died on SIGHUP"
        elif verb == "stop":
            for name in names:
                unit = self.units.pop(name)
                unit.proc.send_signal(signal.SIGTERM)
                assert unit.notify.recv(4096) == b"STOPPING=1"
                assert unit.proc.wait(60) == 0, unit.log.read_text()
                unit.notify.close()
        else:
            pytest.fail(f"systemctl {verb}: not a verb this test knows")

    def start(self, name: str, text: str) -> None:
        exec_start = next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart="))
        argv = shlex.split(self.path(exec_start))
        assert Path(argv[0]).name == "onlineca" or argv[1:3] == ["-m", "onlineca"], exec_start
        argv = [sys.executable, "-m", "onlineca", *argv[argv.index("--config"):]]
        env = dict(self.env)
        env_file = next((line.split("=", 1)[1].lstrip("-") for line in text.splitlines()
                         if line.startswith("EnvironmentFile=")), None)
        if env_file and Path(self.path(env_file)).exists():
            for line in Path(self.path(env_file)).read_text().splitlines():
                key, _, value = line.partition("=")
                env[key] = value
        sock_path = self.root / f"{name}.notify"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(sock_path))
        notify.settimeout(1)  # each wait is bounded, so a unit that died is seen at once
        env["NOTIFY_SOCKET"] = str(sock_path)
        for folder in ("var/lib/onlineca", "var/log/onlineca"):  # StateDirectory=, LogsDirectory=
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.journal"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd="/")
        ready = ""
        for _ in range(120):
            try:
                ready = notify.recv(4096).decode()
                break
            except TimeoutError:
                if proc.poll() is not None:
                    break
        if not ready:
            proc.kill()
            pytest.fail(f"{name}: no READY=1 (exit {proc.wait()})\n{log.read_text()}")
        notify.settimeout(60)
        assert ready.startswith("READY=1"), ready
        self.units[name] = Unit(proc, notify, log)

    def close(self) -> None:
        for unit in self.units.values():
            if unit.proc.poll() is None:
                unit.proc.kill()
                unit.proc.wait(30)
            unit.notify.close()
        if self.shell is not None and self.shell.poll() is None:
            self.shell.kill()
            self.shell.wait(30)


def _ports_free(*ports: int) -> list[int]:
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no owner
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def test_the_production_install_runs_as_written(tmp_path: Path) -> None:
    blocks = part_one_blocks()
    assert [tag for tag, _ in blocks].count("root") >= 4 and len(blocks) >= 10
    busy = _ports_free(8443, 8084, 3804, 8080)
    if busy:
        pytest.fail(f"the page uses the default ports; these are taken: {busy}")
    for d in ("home", "etc/systemd/system", "etc/logrotate.d"):
        (tmp_path / d).mkdir(parents=True)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT / "src"),
           "HOME": str(tmp_path / "home"), "ONLINECA_SYSTEMD_DIR": str(tmp_path / "etc/systemd/system"),
           "ONLINECA_LOGROTATE_DIR": str(tmp_path / "etc/logrotate.d")}
    for var in ("ONLINECA_CONFIG", "ONLINECA_DATA_DIR", "NOTIFY_SOCKET"):
        env.pop(var, None)
    if shutil.which("onlineca", path=env["PATH"]) is None:
        shim = tmp_path / "bin"
        shim.mkdir()
        (shim / "onlineca").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m onlineca "$@"\n')
        (shim / "onlineca").chmod(0o755)
        env["PATH"] = f"{shim}:{env['PATH']}"
    host = Host(tmp_path, env)
    outputs = []
    try:
        for tag, block in blocks:
            if tag == "test":
                outputs.append(host.run_test_block(block))
            else:
                for line in logical_lines(block):
                    host.run_root_line(line)
    finally:
        host.close()
    text = "\n".join(outputs)
    print(text)
    data = tmp_path / "var/lib/onlineca"
    assert pki.pem_label((data / "ca" / "issuing.key").read_bytes()) == "ENCRYPTED PRIVATE KEY"
    assert f"configuration: {tmp_path}/etc/onlineca/onlineca.toml (from $ONLINECA_CONFIG)" in text
    assert "SEP74A02FC0A675: installed" in text
    assert "OK (" in text and (tmp_path / "var/backups/onlineca/onlineca.tar.gz").exists()
    assert (tmp_path / "var/lib/onlineca-restored" / "ca" / "root.pem").exists()
    assert "SIGHUP: " in (tmp_path / "var/log/onlineca/ca.log").read_text()
