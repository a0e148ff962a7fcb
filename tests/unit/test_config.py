"""Configuration: defaults, `onlineca config check|example`, one clear message per bad file, env secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from onlineca.cli import main_group
from onlineca.config import Config, load_config
from onlineca.errors import ConfigError

SECRET = "s3cret-Never-Print-Me"


def _check(path: Path, env: dict[str, str] | None = None):
    return CliRunner().invoke(main_group, ["config", "check", str(path)], env=env)


def _file(tmp_path: Path, body: str, name: str = "onlineca.toml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def test_defaults_load_without_a_file(tmp_path: Path) -> None:
    cfg = load_config(None, environ={})
    assert cfg == Config()
    assert (cfg.ca.port, cfg.ra.port, cfg.capf.port) == (8443, 8084, 3804)
    assert cfg.ra.ca_password.get_secret_value() == ""
    assert [t.name for t in cfg.ca.templates] == ["CiscoRA", "WebServer"]
    # the data dir is always absolute (messages name files whatever the working directory)
    assert cfg.database_url == f"sqlite:///{Path('onlineca-data').absolute() / 'onlineca.db'}"
    cfg = load_config(None, environ={"ONLINECA_DATA_DIR": str(tmp_path)})
    assert cfg.log_path == tmp_path / "logs"


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    path = _file(tmp_path, '[ra]\nport = 9084\nca_user = "enroller"\n[logging]\nformat = "json"\n')
    result = _check(path)
    assert result.exit_code == 0, result.output
    assert "OK" in result.stdout
    cfg = load_config(path, environ={})
    assert (cfg.ra.port, cfg.ra.ca_user, cfg.logging.format) == (9084, "enroller", "json")


@pytest.mark.parametrize(("body", "key", "what"), [
    ('[ra]\nport = "abc"\n', "ra.port", "valid integer"),
    ("[ra]\nport = 70000\n", "ra.port", "less than or equal to 65535"),
    ("[ra]\nbogus = 1\n", "ra.bogus", "unknown key"),
    ('[ra]\nconnector = "soap"\n', "ra.connector", "'certsrv' or 'local'"),
    ("[capf]\nmax_concurrent_enrollments = 0\n", "capf.max_concurrent_enrollments", "greater than or equal to 1"),
    ('[ca]\n[[ca.templates]]\nname = "X"\nvalidity_days = 0\n', "ca.templates[0].validity_days", "greater"),
    ('[ca]\n[[ca.templates]]\nname = "X"\nkey_usage = ["sign_everything"]\n', "ca.templates[0].key_usage[0]", ""),
    ("ra = 1\n", "ra", "valid dictionary"),
])
def test_config_check_names_the_bad_key(tmp_path: Path, body: str, key: str, what: str) -> None:
    result = _check(_file(tmp_path, body))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one message, not a pydantic dump
    assert f": {key}: " in lines[0] and what in lines[0]
    assert "Traceback" not in result.output


def test_config_check_rejects_bad_toml(tmp_path: Path) -> None:
    result = _check(_file(tmp_path, "[ra\nport = 1\n"))
    assert result.exit_code == 1
    assert "not valid TOML" in result.stderr and "line 1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_check_missing_and_non_utf8_files(tmp_path: Path) -> None:
    result = _check(tmp_path / "absent.toml")
    assert result.exit_code == 1 and "no such file" in result.stderr
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[ca]\nroot_name = "CN=Caf\xe9"\n')
    result = _check(bad)
    assert result.exit_code == 1 and "cannot read" in result.stderr


def test_a_bad_global_config_fails_with_one_error_line(tmp_path: Path) -> None:
    # A failure, not bad usage (DESIGN.md): exit 1, as 'config check' and 'ra serve' report it.
    path = _file(tmp_path, "[ra]\nport = -1\n")
    result = CliRunner().invoke(main_group, ["--config", str(path), "config", "example"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "ra.port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_env_overrides_a_secret_and_it_never_prints(tmp_path: Path) -> None:
    path = _file(tmp_path, '[ra]\nca_password = "from-file"\n')
    cfg = load_config(path, environ={"ONLINECA_RA_CA_PASSWORD": SECRET, "ONLINECA_CAPF_RA_PASSWORD": SECRET})
    assert cfg.ra.ca_password.get_secret_value() == SECRET
    assert cfg.capf.ra_password.get_secret_value() == SECRET
    for text in (str(cfg), repr(cfg), cfg.model_dump_json(), str(cfg.model_dump()), f"{cfg.ra}"):
        assert SECRET not in text
    result = _check(path, env={"ONLINECA_RA_CA_PASSWORD": SECRET})
    assert result.exit_code == 0 and SECRET not in result.output


def test_env_overrides_are_validated_and_named(tmp_path: Path) -> None:
    cfg = load_config(None, environ={"ONLINECA_RA_PORT": "9999", "ONLINECA_DATABASE_URL": "sqlite:///x.db"})
    assert cfg.ra.port == 9999 and cfg.database_url == "sqlite:///x.db"
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"ONLINECA_RA_PORT": "eighty"})
    assert "ra.port" in info.value.message and "$ONLINECA_RA_PORT" in info.value.message


@pytest.mark.parametrize("body", [
    f'[ra]\nca_password = ["{SECRET}"]\n',
    f'[database]\nurl = ["postgresql://u:{SECRET}@h/db"]\n',
    f'[capf]\nra_password = {{ x = "{SECRET}" }}\n',
])
def test_errors_never_echo_a_secret(tmp_path: Path, body: str) -> None:
    result = _check(_file(tmp_path, body))
    assert result.exit_code == 1 and SECRET not in result.output


def test_config_example_passes_config_check(tmp_path: Path) -> None:
    example = CliRunner().invoke(main_group, ["config", "example"])
    assert example.exit_code == 0 and "[ra]" in example.stdout
    path = _file(tmp_path, example.stdout)
    result = _check(path)
    assert result.exit_code == 0, result.output
    cfg = load_config(path, environ={})
    assert cfg.ra.template == "CiscoRA" and cfg.ca.templates[0].name == "CiscoRA"
