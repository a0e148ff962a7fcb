"""``onlineca config check`` on real files: URLs, files, key/certificate pairs, certificate dates
and chains, ports; every message with the absolute path; nothing written anywhere."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from click.testing import CliRunner

from onlineca import pki
from onlineca.cli import main_group
from onlineca.infra import files


def _pki(d: Path) -> None:
    root_key = pki.generate_key("ec", 256)
    root = pki.build_certificate(subject="CN=Check Root", public_key=root_key.public_key(), issuer_key=root_key,
                                 is_ca=True)
    (d / "root.pem").write_bytes(pki.cert_pem(root))
    other_key = pki.generate_key("ec", 256)
    other = pki.build_certificate(subject="CN=Other Root", public_key=other_key.public_key(), issuer_key=other_key,
                                  is_ca=True)
    (d / "other-root.pem").write_bytes(pki.cert_pem(other))
    for name, validity, issuer in (("good", 100, root_key), ("expired", 1, root_key), ("soon", 10, root_key)):
        key = pki.generate_key("ec", 256)
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=5 if name == "expired" else 0, minutes=5)
        cert = pki.build_certificate(subject=f"CN={name}", public_key=key.public_key(), issuer_key=issuer,
                                     issuer_cert=root, validity_days=validity, not_before=start, sans=["localhost"])
        (d / f"{name}.pem").write_bytes(pki.cert_pem(cert))
        files.write_private_key(d / f"{name}.key", key)


def test_config_check_finds_each_problem_and_names_absolute_paths(tmp_path: Path) -> None:
    _pki(tmp_path)
    conf = tmp_path / "onlineca.toml"
    conf.write_text(
        'data_dir = "data"\n'
        '[ca]\ntls_cert = "good.pem"\ntls_key = "expired.key"\nport = 8084\n'   # key of another cert; port clash
        '[ra]\ntls_cert = "good.pem"\ntls_key = "good.key"\nca_url = "http://ca.example/certsrv"\n'
        'trust_store = "missing.pem"\n'
        '[capf]\ntls_cert = "expired.pem"\ntls_key = "expired.key"\nra_trust_store = "other-root.pem"\n'
        '[admin]\ntls_cert = "soon.pem"\ntls_key = "soon.key"\nport = 443\n')
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(main_group, ["config", "check", str(conf)])
    out = result.stdout
    assert result.exit_code == 1, out
    assert out.startswith(f"configuration: {conf} (from the command line)\n")
    t = tmp_path
    expected = [
        f"error    [ca] tls_key: {t / 'expired.key'} does not belong to {t / 'good.pem'}",
        "error    [ra] ca_url: 'http://ca.example/certsrv': must be an https:// URL",
        f"error    [ra] trust_store: {t / 'missing.pem'}: no such file",
        f"error    [capf] tls_cert: {t / 'expired.pem'}: CN=expired expired on",
        f"ok       [capf] tls_key: {t / 'expired.key'} belongs to {t / 'expired.pem'}",
        f"error    [ra] tls_cert: {t / 'good.pem'}: does not chain to [capf] ra_trust_store",
        f"warning  [admin] tls_cert: {t / 'soon.pem'}: CN=soon expires in",
        "error    [ra] port: 127.0.0.1:8084 is also [ca] port",
        "warning  [admin] port: 127.0.0.1:443 is below 1024",
        f"warning  data_dir: {t / 'data'}: does not exist yet",
    ]
    for line in expected:
        assert line.replace("CN=", "/CN=") in out or line in out, line + "\n---\n" + out
    assert f"{conf}: 6 error(s)" in out.splitlines()[-1] or "error(s)" in out.splitlines()[-1]
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
    as_json = json.loads(CliRunner().invoke(main_group, ["config", "check", "--json", str(conf)]).stdout)
    assert as_json["config"] == str(conf) and as_json["ok"] is False


def test_config_check_accepts_what_ca_init_made(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data")]
    assert runner.invoke(main_group, [*base, "ca", "init", "--password", "x"]).exit_code == 0
    result = runner.invoke(main_group, [*base, "config", "check"])
    assert result.exit_code == 0, result.stdout
    assert f"chains to /CN=onlineca Lab Root CA/O=onlineca ({tmp_path / 'data' / 'ca' / 'root.pem'})" in result.stdout
    assert f"{tmp_path / 'data' / 'ca' / 'web.key'} belongs to {tmp_path / 'data' / 'ca' / 'web.pem'}" in result.stdout
