"""``onlineca demo --keep-running`` starts the console beside the lab and prints its URL and a
one-time admin password that logs in; ``onlineca admin`` manages accounts and tokens from the
command line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200"}


@pytest.mark.slow
def test_demo_keep_running_serves_the_console_with_a_one_time_password(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "onlineca", "demo", "--devices", "2", "--keep-running",
                             "--free-ports", "--dir", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    try:
        assert proc.stdout is not None
        found = None
        for line in proc.stdout:  # the demo's own output says when the console is up
            found = re.search(r"Console: (https://\S+)\s+\(log in as admin, password (\S+): shown once\)", line)
            if found:
                break
        assert found, proc.stderr.read() if proc.stderr else ""
        url, password = found.group(1), found.group(2)
        s = requests.Session()
        s.verify = str(folder / "ca" / "root.pem")  # the console's certificate is issued by the lab's CA
        s.trust_env = False
        page = s.get(url + "login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = s.post(url + "login", data={"csrf": token, "name": "admin", "password": password, "next": "/devices"})
        assert r.status_code == 200 and "Devices" in r.text
        assert r.text.count('data-status="CERT_STATUS_UPGRADE_SUCCESS"') == 2  # the demo's two phones, renewed
        r = s.get(url + "ca/requests")
        assert "issued" in r.text  # the lab CA's own requests, from its database
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def test_admin_commands_manage_accounts_and_tokens(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "onlineca", "--data-dir", str(tmp_path), "admin", *args],
                              capture_output=True, text=True, env=ENV, timeout=120)

    r = run("users", "add", "alice", "--role", "operator")
    assert r.returncode == 0 and "password for alice:" in r.stdout
    password = r.stdout.rsplit("password for alice: ", 1)[1].split()[0]
    assert run("users", "set", "alice", "--role", "viewer").returncode == 0
    r = run("tokens", "create", "alice", "--name", "ci", "--days", "3")
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].startswith("oca_")
    assert "viewer" in run("tokens", "list").stdout
    r = run("audit", "--json")
    assert r.returncode == 0 and '"account.create"' in r.stdout and password not in r.stdout
    r = run("users", "remove", "nobody")
    assert r.returncode == 1 and r.stderr.startswith("error: no account named 'nobody'")
    csv = run("audit", "--csv").stdout
    assert csv.splitlines()[0].startswith("id,at,actor,role,source")
