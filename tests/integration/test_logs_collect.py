"""``onlineca logs collect``: after our CA and RA ran (and a CAPF log is in the log dir), the bundle
holds every log of the log dir, the redacted configuration, the diagnose report, the analysis and
the versions; a known password from the configuration file and one from the environment appear
nowhere in it, not even where a log line leaked one.  No root needed: the test runs as whoever
runs the suite, and an unreadable log is named, not fatal."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from click.testing import CliRunner
from tests.integration.test_diagnose import PASSWORD, USER, CALab, ca_lab, lab  # noqa: F401  (fixtures)

from onlineca.cli import main_group

ENV_PASSWORD = "Env-0nly-Secret-7781"
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "seed_logs"


def _bundle(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_bundle_holds_every_log_and_no_secret(lab: CALab, tmp_path):
    logs = tmp_path / "logs"
    port = lab.serve(log_dir=logs)
    ra_cfg = lab.config(f"https://127.0.0.1:{port}/certsrv", log_dir=logs)
    ra = lab.start_ra(ra_cfg, log_dir=logs)
    lab.loop.run(ra.wait_ready(10))
    # CAPF's trace (the component the original collection tool forgot), and a line that leaked a secret.
    (logs / "capf.log").write_text((VECTORS / "capf_enroll_ssl_read.log").read_text())
    (logs / "capf").mkdir()
    (logs / "capf" / "capf.log.1").write_text(f"12:00:00.000 | debug connecting with {PASSWORD} and {ENV_PASSWORD}\n")
    lab.config(f"https://127.0.0.1:{port}/certsrv", log_dir=logs,
               capf=f'ra_url = "{ra.url}"\nra_user = "{USER}"\nra_trust_store = "{lab.files.root_cert}"')
    config_file = lab.dir / "diag.toml"
    assert PASSWORD in config_file.read_text()
    out = tmp_path / "case" / "bundle.tar.gz"
    res = CliRunner(env={"ONLINECA_CAPF_RA_PASSWORD": ENV_PASSWORD}).invoke(
        main_group, ["--config", str(config_file), "logs", "collect", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.stat().st_mode & 0o777 == 0o600
    files = _bundle(out)

    expected_logs = {f"logs/{p.relative_to(logs).as_posix()}" for p in logs.rglob("*") if p.is_file()}
    assert expected_logs >= {"logs/error.log", "logs/access.log", "logs/ca-iis.log", "logs/ca.log", "logs/capf.log",
                             "logs/capf/capf.log.1"}
    assert {n for n in files if n.startswith("logs/")} == expected_logs
    assert b"login_to_certsrv_ca: Secure connection to MS CertServ" in files["logs/error.log"]
    assert b"GET /certsrv" in files["logs/ca-iis.log"]
    assert {"config.json", "versions.json", "diagnose.json", "diagnose.txt", "analysis.json",
            "MANIFEST.sha256"} <= set(files)

    for name, body in files.items():
        assert PASSWORD.encode() not in body, name
        assert ENV_PASSWORD.encode() not in body, name
    config = json.loads(files["config.json"])
    assert config["config"]["ra"]["ca_password"] == "***" and config["config"]["ra"]["ca_user"] == USER
    assert config["environment"]["ONLINECA_CAPF_RA_PASSWORD"] == "***"
    assert b"connecting with *** and ***" in files["logs/capf/capf.log.1"]

    versions = json.loads(files["versions.json"])
    assert {"onlineca", "python", "cryptography", "openssl (python ssl)"} <= set(versions)
    report = json.loads(files["diagnose.json"])
    assert report["schema"] == "onlineca.diagnose/1"
    # No CAPF runs here (its port is closed), and CAPF's EST password (from the environment) is not
    # the CA account's: the RA refuses it.
    assert [f["code"] for f in report["findings"]] == ["CAPF_CONNECT", "RA_EST_AUTH"]
    analysis = json.loads(files["analysis.json"])
    assert {h["code"] for h in analysis["hits"] if h["source"] == "logs/capf.log"} == {"RA_NO_ANSWER"}
    manifest = files["MANIFEST.sha256"].decode()
    assert all(f"  {n}\n" in manifest for n in files if n != "MANIFEST.sha256")


def test_unreadable_log_is_named_not_fatal(tmp_path, monkeypatch):
    from onlineca.diagnose import collect
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "ok.log").write_text("fine\n")
    huge = logs / "huge.log"
    huge.write_text("x" * 2000)
    monkeypatch.setattr(collect, "MAX_LOG_BYTES", 1000)  # as root, size is what can make a log unreadable here
    (logs / "link.log").symlink_to("/etc/hostname")
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'log_dir = "{logs}"\n')
    out = tmp_path / "b.tar.gz"
    res = CliRunner().invoke(main_group, ["--config", str(cfg_file), "logs", "collect", "--no-diagnose",
                                          "--out", str(out)])
    assert res.exit_code == 0, res.output
    files = _bundle(out)
    assert "logs/ok.log" in files and "logs/huge.log" not in files and "diagnose.json" not in files
    assert "logs/link.log" not in files  # links are not followed out of the log dir
    assert str(huge) in json.loads(files["collect.json"])["unreadable"]
