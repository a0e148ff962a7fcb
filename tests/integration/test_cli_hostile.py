"""Issue 11 item 9, the command line: hostile input gives one line and the documented exit code.

A 5,000-deep TOML file, a ReqID larger than any integer column, a configuration that is a FIFO,
a data or log dir this user may not write, a database another process holds locked: each is
``error: ...`` on one line and exit 1 (bad usage: exit 2), never a traceback.  Then a small fuzz:
hostile values in every position of a few commands through click's CliRunner, none of which may
end in a traceback.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from onlineca.cli import main_group

ONLINECA = [sys.executable, "-m", "onlineca"]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ONLINECA, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _one_line(run: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    out = run.stdout + run.stderr
    assert run.returncode == code, out
    assert "Traceback" not in out and words in out, out
    if code == 1:
        assert len([ln for ln in run.stderr.splitlines() if ln.strip()]) == 1, out


def test_deep_toml_huge_req_id_fifo_read_only_dirs_and_a_locked_database(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    _one_line(_run("--config", str(deep), "config", "check"), 1, "nested too deep")

    data = tmp_path / "data"
    assert _run("--data-dir", str(data), "ca", "init").returncode == 0
    _one_line(_run("--data-dir", str(data), "ca", "requests", "show", "1180591620717411303424"), 2, "REQ_ID")

    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    _one_line(_run("--config", str(fifo), "config", "check", timeout=30), 1, "not a regular file")

    # /sys refuses new folders even to root; an unwritable folder does the same to anyone else.
    _one_line(_run("--data-dir", "/sys/onlineca-test", "capf", "devices", "add", "SEPNOWHERE001"), 1,
              "Operation not permitted")
    _one_line(_run("--data-dir", str(data), "--log-dir", "/sys/onlineca-logs", "ca", "serve", "--port", "0"), 1,
              "/sys/onlineca-logs")
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        _one_line(_run("--data-dir", str(ro / "d"), "capf", "devices", "add", "SEPNOWHERE001"), 1, "Permission denied")

    busy = tmp_path / "busy.toml"
    busy.write_text("[database]\nbusy_timeout = 0.2\n")
    assert _run("--data-dir", str(data), "capf", "devices", "list").returncode == 0  # made and migrated
    holder = sqlite3.connect(data / "onlineca.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        _one_line(_run("--config", str(busy), "--data-dir", str(data), "capf", "devices", "add", "SEPLOCKED0001"), 1,
                  "the database is locked by another process")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


HOSTILE = ["", "-", "--", "0", "-1", "1180591620717411303424", "-99999999999999999999999", "1e309", "nan",
           "9" * 400, "x" * 5000, "SEP" + "A" * 300, "%s%n%x", "{0}{1}", "../../../../etc/passwd", "/dev/zero",
           "\u202e\u0000\ud7ff", "é" * 70, "'; DROP TABLE device; --", "2027-13-45", "30d" * 50, "+99999999999d"]

COMMANDS = [
    ["ca", "requests", "show", "{}"],
    ["ca", "requests", "show", "{}", "--pem"],
    ["ca", "requests", "list", "--disposition", "{}"],
    ["capf", "devices", "show", "{}"],
    ["capf", "devices", "add", "{}"],
    ["capf", "devices", "add", "SEPFUZZ000001", "--rsa-key-size", "{}"],
    ["capf", "devices", "add", "SEPFUZZ000002", "--deadline", "{}"],
    ["capf", "devices", "set", "SEPFUZZ000001", "--auth-string", "{}"],
    ["capf", "devices", "list", "--limit", "{}"],
    ["capf", "devices", "list", "--lsc-expires-before", "{}"],
    ["capf", "devices", "delete", "{}"],
    ["capf", "report", "--expiring-within", "{}"],
    ["capf", "renew", "--now", "{}"],
    ["capf", "reconcile", "--grace", "{}"],
    ["capf", "profiles", "add", "{}", "--renewal-days-before", "{}"],
    ["config", "check", "{}"],
]


@pytest.mark.timeout(600)
def test_hostile_argv_never_ends_in_a_traceback(tmp_path: Path) -> None:
    runner = CliRunner()
    data = str(tmp_path / "data")
    assert runner.invoke(main_group, ["--data-dir", data, "ca", "init"]).exit_code == 0
    bad = []
    for command in COMMANDS:
        for value in HOSTILE:
            argv = ["--data-dir", data, *[value if part == "{}" else part for part in command]]
            result = runner.invoke(main_group, argv)
            crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
            if crashed or result.exit_code not in (0, 1, 2) or "Traceback" in result.output:
                bad.append(f"{command} {value[:40]!r}: exit {result.exit_code} {result.exception!r}")
    assert bad == [], "\n".join(bad[:20])
