"""Issue 11 item 8: an unknown user costs the same scrypt as a known one (no timing oracle).

Not a timing assert: the test records the scrypt parameters each check runs with, by wrapping
``hashlib.scrypt`` (the primitive, not the code under test), and requires them to be the same
for a known user with a wrong password, an unknown user, and a name of another domain at the CA."""

from __future__ import annotations

import hashlib

import pytest

from onlineca.infra.users import UsersFile, hash_password


@pytest.fixture
def scrypt_calls(monkeypatch):
    calls: list[tuple[int, int, int]] = []
    real = hashlib.scrypt

    def recording(password, *, salt, n, r, p, dklen=64, maxmem=0):  # type: ignore[no-untyped-def]
        calls.append((n, r, p))
        return real(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)

    monkeypatch.setattr(hashlib, "scrypt", recording)
    return calls


async def test_unknown_users_cost_the_same_scrypt(scrypt_calls):
    users = UsersFile({"alice": hash_password("right", n=2 ** 12, r=8, p=1)})
    scrypt_calls.clear()
    assert not await users("alice", "wrong")
    assert not await users("mallory", "wrong")
    assert not await users("", "")
    assert scrypt_calls == [(2 ** 12, 8, 1)] * 3


async def test_the_cas_basic_login_spends_the_same_on_a_foreign_domain(tmp_path, scrypt_calls):
    from onlineca.ca.auth import CALogin
    from onlineca.ca.users import add_user
    add_user(tmp_path / "users", "alice", "right-Passw0rd")
    login = CALogin(tmp_path / "users", domain="ONLINECA")
    users = login.current_users()
    scrypt_calls.clear()
    for name in ("alice", "nobody", "OTHER\\alice"):
        assert not await users(login.account(name) or name, "wrong")
    assert len(set(scrypt_calls)) == 1 and len(scrypt_calls) == 3
