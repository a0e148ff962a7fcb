"""EST server settings from the [est] section, the users file, and label validation."""

from __future__ import annotations

import asyncio

import pytest

from onlineca.config import ESTConfig
from onlineca.errors import ConfigError
from onlineca.est.backend import LocalSigner
from onlineca.est.server import ESTServerSettings, make_est_app, settings_from_config
from onlineca.infra.users import UsersFile, hash_password


def test_settings_from_config(tmp_path):
    (tmp_path / "users").write_text(f"# comment\n\nciscora:{hash_password('pw', n=2 ** 10)}\n")
    s = settings_from_config(ESTConfig(serverkeygen=False, pop_tls_unique=True, max_body_bytes=4096,
                                       request_timeout=5, retry_after=9, labels=["lsc"],
                                       users_file=str(tmp_path / "users")))
    assert (s.serverkeygen, s.pop_tls_unique, s.max_body_bytes, s.request_timeout, s.retry_after, s.labels) == \
        (False, True, 4096, 5, 9, ("lsc",))
    assert asyncio.run(s.password_check("ciscora", "pw")) is True
    assert asyncio.run(s.password_check("ciscora", "PW")) is False
    assert asyncio.run(s.password_check("nobody", "pw")) is False
    assert settings_from_config(ESTConfig()).password_check is None


@pytest.mark.parametrize("line", ["ciscora", "ciscora:plaintext", "ciscora:scrypt$1$2"])
def test_bad_users_file_lines_are_config_errors(tmp_path, line):
    (tmp_path / "users").write_text(line + "\n")
    with pytest.raises(ConfigError) as ei:
        UsersFile.from_path(tmp_path / "users")
    assert "users:1" in ei.value.message


def test_missing_users_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        UsersFile.from_path(tmp_path / "nope")


def test_an_undecodable_users_file_is_a_config_error(tmp_path):
    (tmp_path / "users").write_bytes(b"\xff\xfeciscora:\x00\n")
    with pytest.raises(ConfigError, match="cannot read EST users file"):
        UsersFile.from_path(tmp_path / "users")


def test_the_ca_reads_the_same_users_format(tmp_path):
    from onlineca.ca.users import read_entries

    assert read_entries(tmp_path / "none") == {}  # the CA starts without users; EST refuses that
    hashed = hash_password("pw", n=2 ** 10)
    (tmp_path / "users").write_text(f"# CA users\nalice:{hashed}\n")
    assert read_entries(tmp_path / "users") == {"alice": hashed}
    (tmp_path / "users").write_text(f"alice:{hashed}\n\nbob\n")
    with pytest.raises(ConfigError) as ei:
        read_entries(tmp_path / "users")
    assert "users:3" in ei.value.message and "onlineca ca users" in ei.value.hint


def test_verified_password_is_remembered_not_stored():
    users = UsersFile.from_plain({"u": "secret"}, n=2 ** 10)
    assert asyncio.run(users("u", "secret"))
    assert all(b"secret" not in v for v in users._verified.values())
    assert asyncio.run(users("u", "secret")) and not asyncio.run(users("u", "secreT"))


@pytest.mark.parametrize("label", ["cacerts", "a/b", "with space", ""])
def test_bad_labels_refused_at_start(lab_pki, label):
    signer = LocalSigner(lab_pki.issuing_key, lab_pki.issuing)
    with pytest.raises(ConfigError):
        make_est_app(signer, ESTServerSettings(labels=[label]))
