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


# --------------------------------------------------------------------------- issue 15: as a service

from onlineca.config import ConfigSource, _Section, example_toml, field_docs, find_config, is_path_key  # noqa: E402


def _models(model: type = Config, seen: set[type] | None = None) -> list[type]:
    seen = seen if seen is not None else set()
    out = [model]
    for field in model.model_fields.values():
        inner = getattr(field.annotation, "__args__", None)
        sub = inner[0] if inner else field.annotation
        if isinstance(sub, type) and issubclass(sub, _Section) and sub not in seen:
            seen.add(sub)
            out += _models(sub, seen)
    return out


def test_every_key_has_a_description_and_the_example_prints_it_with_its_default(tmp_path: Path) -> None:
    docs = field_docs()
    for model in _models():
        for name, field in model.model_fields.items():
            sub = getattr(field.annotation, "__args__", [field.annotation])[0]
            if isinstance(sub, type) and issubclass(sub, _Section):
                continue
            assert docs.get(model.__name__, {}).get(name), f"{model.__name__}.{name} has no docstring"
    text = CliRunner().invoke(main_group, ["config", "example"]).stdout
    assert text == example_toml()
    for model in _models():
        for name in model.model_fields:
            assert f"\n{name} = " in text or f"\n# {name} = " in text or f"[{name}]" in text or \
                f"[[ca.{name}]]" in text, name
    assert "[[ca.templates]]" in text and 'name = "WebServer"' in text and 'name = "CiscoRA"' in text
    assert load_config(_file(tmp_path, text), environ={}) == Config()  # the defaults, exactly


def test_path_keys_are_known_by_name() -> None:
    paths = sorted(f"{m.__name__}.{n}" for m in _models() for n in m.model_fields if is_path_key(n))
    assert paths == sorted([
        "Config.data_dir", "Config.log_dir", "CAConfig.tls_cert", "CAConfig.tls_key", "CAConfig.users_file",
        "CAConfig.key_passphrase_file", "CAConfig.pkcs11_module", "CAConfig.pkcs11_pin_file",
        "RAConfig.tls_cert", "RAConfig.tls_key", "RAConfig.ca_client_cert", "RAConfig.ca_client_key",
        "RAConfig.trust_store", "RAConfig.local_key", "RAConfig.local_cert", "ESTConfig.users_file",
        "ESTConfig.client_trust_store", "CAPFConfig.ra_trust_store", "CAPFConfig.tls_cert", "CAPFConfig.tls_key",
        "CAPFConfig.mic_trust_store", "CAPFConfig.key_passphrase_file", "CAPFConfig.ca_revoke_trust_store",
            "AlertsConfig.webhook_trust_store", "AdminConfig.tls_cert", "AdminConfig.tls_key",
        "AdminConfig.client_trust_store"])


def test_relative_paths_are_relative_to_the_config_file_not_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    path = _file(etc, 'data_dir = "data"\nlog_dir = "/var/log/x"\n[ra]\ntrust_store = "pki/root.pem"\n'
                      'tls_cert = "~/ra.pem"\n[capf]\nmic_trust_store = "../mic"\n')
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("etc/onlineca.toml"), environ={"HOME": "/home/op"})
    assert cfg.data_path == etc / "data"
    assert cfg.log_path == Path("/var/log/x")
    assert cfg.ra.trust_store == str(etc / "pki/root.pem")
    assert cfg.ra.tls_cert == str(Path("~/ra.pem").expanduser())
    assert cfg.capf.mic_trust_store == str(etc / "../mic")
    # the environment is the caller's shell: relative to the working directory
    cfg = load_config(path, environ={"ONLINECA_RA_TRUST_STORE": "here.pem", "ONLINECA_DATA_DIR": "ignored-by-file"})
    assert cfg.ra.trust_store == "here.pem"


def test_search_path_order(tmp_path: Path) -> None:
    cwd, home, xdg = tmp_path / "cwd", tmp_path / "home", tmp_path / "xdg"
    for d in (cwd, home / ".config" / "onlineca", xdg / "onlineca"):
        d.mkdir(parents=True)
    env = {"HOME": str(home)}
    assert find_config(None, env, cwd=cwd).path in (None, Path("/etc/onlineca/onlineca.toml"))
    user = _file(home / ".config" / "onlineca", "")
    assert find_config(None, env, cwd=cwd) == ConfigSource(user, "~/.config/onlineca/onlineca.toml")
    assert find_config(None, {**env, "XDG_CONFIG_HOME": str(xdg)}, cwd=cwd).path != user  # XDG wins over ~/.config
    local = _file(cwd, "")
    assert find_config(None, env, cwd=cwd) == ConfigSource(local, "./onlineca.toml")
    assert find_config(None, {**env, "ONLINECA_CONFIG": str(user)}, cwd=cwd) == ConfigSource(user, "$ONLINECA_CONFIG")
    assert find_config(tmp_path / "x.toml", {**env, "ONLINECA_CONFIG": str(user)}, cwd=cwd) == \
        ConfigSource(tmp_path / "x.toml", "--config")


def test_the_command_line_finds_onlineca_toml_in_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    _file(tmp_path, 'data_dir = "from-the-file"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ONLINECA_CONFIG", raising=False)
    monkeypatch.delenv("ONLINECA_DATA_DIR", raising=False)
    result = CliRunner().invoke(main_group, ["config", "check"])
    assert result.stdout.startswith(f"configuration: {tmp_path / 'onlineca.toml'} (from ./onlineca.toml)\n")
    assert f"data_dir: {tmp_path / 'from-the-file'}" in result.stdout


def test_a_missing_config_file_names_its_absolute_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main_group, ["--config", "nope.toml", "ca", "requests", "list"])
    assert result.exit_code == 1 and "Usage:" not in result.output
    assert result.stderr.startswith(f"error: {tmp_path / 'nope.toml'}: no such file")
