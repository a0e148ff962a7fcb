"""``onlineca demo`` as a user runs it: a real process that builds the lab, starts CA, RA and CAPF,
enrolls and renews phones, prints one JSON object and leaves no server behind."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, int(port))) == 0


@pytest.mark.slow
def test_demo_json_enrolls_renews_and_stops(tmp_path):
    cmd = [sys.executable, "-m", "onlineca", "--data-dir", str(tmp_path), "demo", "--devices", "4", "--json",
           "--free-ports"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert report["enrolled"] == 4 and report["failed"] == 0 and report["renewed"] >= 1, report
    assert isinstance(report["seconds"], (int, float)) and report["seconds"] > 0
    assert report["renewal"]["clock"] == "simulated"
    # Every auth mode, both key types and both kinds of phone took part (public-flow phones renew
    # by asking again).
    groups = {(g["flow"], g["group"]) for g in report["groups"]}
    assert {("extended", "auth string / RSA 2048"), ("public", "null string / RSA 2048"),
            ("extended", "MIC / EC 256"), ("public", "auth string / RSA 1024")} == groups
    assert report["flows"]["public"] == {"devices": 2, "enrolled": 2, "renewed": 2, "failed": 0}
    assert report["flows"]["extended"]["renewed"] == 2
    # CAPF revoked every LSC the renewals replaced, through our CA's revoke endpoint.
    assert report["revocations"]["revoked"] == 4 and report["revocations"]["failed"] == 0, report["revocations"]
    # The demo's data and logs are where it says, and the CAPF trace has the document's lines.
    assert report["data_dir"] == str(tmp_path / "demo")
    capf_log = (tmp_path / "demo" / "logs" / "capf.log").read_text()
    assert "Online Cert Signing successful" in capf_log and "Sending STORE_CERT_REQ msg" in capf_log
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr
    # The lab's configuration (for 'onlineca --config ... diagnose') is valid, 0600, with the real ports.
    lab_config = Path(report["config"])
    assert stat.S_IMODE(lab_config.stat().st_mode) == 0o600
    check = subprocess.run([sys.executable, "-m", "onlineca", "config", "check", str(lab_config)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert f'ca_url = "{report["servers"]["ca"]}"' in lab_config.read_text()
    # Servers gone: nothing listens on the ports the demo used.
    ca = report["servers"]["ca"].split("//")[1].split("/")[0]
    ra = report["servers"]["ra"].split("//")[1].split("/")[0]
    for address in (ca, ra, report["servers"]["capf"]):
        assert not _listening(address), f"{address} still listening after the demo exited"

    # Running it again in the same folder works (the folder is the demo's own: it is emptied).
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["enrolled"] == 4


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")
    proc = subprocess.run([sys.executable, "-m", "onlineca", "demo", "--dir", str(tmp_path / "mine"), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "was not made by 'onlineca demo'" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep me"


def _serving(lab: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"--config {lab}/onlineca.toml" in line]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_with_workers_runs_each_tier_as_serve_processes(tmp_path):
    """``--workers 2``: CA, RA and CAPF as 'onlineca --config <lab>/onlineca.toml <tier> serve
    --workers 2' processes (a supervisor and two workers each), started from the lab's written
    configuration alone; the fleet enrolls, renews with the real clock, and nothing is left running."""
    cmd = [sys.executable, "-m", "onlineca", "--data-dir", str(tmp_path), "demo", "--devices", "4", "--json",
           "--free-ports", "--workers", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["enrolled"] == 4 and report["renewed"] == 4 and report["failed"] == 0, report
    assert report["servers"]["workers"] == 2 and report["renewal"]["clock"] == "due dates moved"
    assert report["flows"]["public"]["renewed"] == 2  # public-flow phones asked again, CAPF in its own process
    assert report["revocations"]["revoked"] == 4 and report["revocations"]["failed"] == 0, report["revocations"]
    logs = tmp_path / "demo" / "logs"
    for role, says in (("ca", "CA serving"), ("ra", "RA serving"), ("capf", "CAPF serving")):
        first = (logs / f"{role}-serve.err").read_text().splitlines()[0]
        assert first.startswith(says) and "[2 workers, supervisor pid" in first, first
    assert "Online Cert Signing successful" in (logs / "capf.log").read_text()
    assert not _serving(tmp_path / "demo"), "a server process outlived the demo"
    for address in (report["servers"]["ca"].split("//")[1].split("/")[0],
                    report["servers"]["ra"].split("//")[1].split("/")[0], report["servers"]["capf"]):
        assert not _listening(address), f"{address} still listening after the demo exited"
