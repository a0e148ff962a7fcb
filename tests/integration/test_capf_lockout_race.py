"""Issue 11 item 1: the auth-string lockout cannot be raced.

100 phones guess a device's auth string at once, over real TLS, with a lockout after 5 wrong
strings: at most 5 strings are ever compared (each attempt is counted in the database by one
conditional UPDATE before the comparison, and one session at a time holds the device's lease,
whichever node it runs on), and the right string, once the device is locked out, is refused
too: no LSC for the guesser's key.  On SQLite with CAPF in-process, and on PostgreSQL with two
``onlineca capf serve`` processes sharing the database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from capf_lab import RA_PASSWORD, RA_USER, CAPFLab, CountingSigner, close_lab, local_signer, make_lab
from processes import Server, config_file

from onlineca.phone.client import PhoneAuth, SessionResult, Target, phone_ssl_context, run_session
from onlineca.phone.device import Phone
from onlineca.phone.mic import MICAuthority
from onlineca.store import Database, devices as inv

NAME = "SEPGUESSME0001"
SECRET = "135790"
LIMIT = 5
GUESSERS = 100
FAST = {"max_auth_failures": LIMIT, "auth_failure_delay": 0.01, "auth_failure_max_delay": 0.05,
        "lockout_minutes": 30}


def _wrong(i: int) -> str:
    guess = f"{(int(SECRET) + 1 + i) % 10 ** 6:06d}"
    assert guess != SECRET
    return guess


def _compared(db: Database) -> int:
    """Wrong strings CAPF compared: each one records the status Invalid Authentication String."""
    with db.session() as s:
        return sum(1 for e in inv.device_events(s, NAME, 10_000)
                   if e.event == "STATUS" and "UPGRADE_FAILED_INVALID_AUTH_STR" in e.detail)


def _heard_wrong(results: list[SessionResult]) -> int:
    """Phones told their string was wrong (as opposed to busy or locked out)."""
    return sum(1 for r in results if (r.reason_info or "").startswith("wrong authentication string"))


def _locked(db: Database) -> bool:
    with db.session() as s:
        return inv.get_device(s, NAME).locked_until is not None


async def _guess_until_locked(targets: list[Target], db: Database) -> list[SessionResult]:
    """Waves of 100 parallel wrong guesses (spread over the nodes) until the device is locked."""
    results: list[SessionResult] = []
    for _wave in range(20):
        wave = await asyncio.gather(*(run_session(Phone(NAME), targets[i % len(targets)],
                                                  PhoneAuth("string", _wrong(i)))
                                      for i in range(GUESSERS)))
        results += wave
        if _locked(db):
            break
    return results


async def _right_guess_refused(targets: list[Target], db: Database) -> None:
    for target in targets:
        result = await run_session(Phone(NAME), target, PhoneAuth("string", SECRET))
        assert result.outcome != "installed" and result.reason == "LOCKED_OUT", result
    with db.session() as s:
        device = inv.get_device(s, NAME)
        assert device.lsc_serial is None and not inv.lsc_history(s, NAME)


async def test_parallel_guesses_on_sqlite_compare_at_most_the_limit(tmp_path: Path, lab_pki) -> None:  # type: ignore[no-untyped-def]
    lab = await make_lab(tmp_path, lab_pki, f"sqlite:///{tmp_path / 'capf.db'}", **FAST)
    try:
        lab.add_device(NAME, operation="Install/Upgrade", auth_mode="By Authentication String", auth_string=SECRET)
        assert lab.db is not None
        enrolls = lab.backend.enrolls  # CAPF's own certificate
        results = await _guess_until_locked([lab.target()], lab.db)
        assert _locked(lab.db)
        assert 1 <= _compared(lab.db) <= LIMIT, f"{_compared(lab.db)} wrong strings compared, limit {LIMIT}"
        assert _heard_wrong(results) == _compared(lab.db)
        assert all(r.outcome != "installed" for r in results)
        await lab.sessions_done()
        await _right_guess_refused([lab.target()], lab.db)
        assert lab.backend.enrolls == enrolls
    finally:
        await close_lab(lab)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_parallel_guesses_on_two_capf_processes_over_postgresql(tmp_path: Path, lab_pki, db_url: str) -> None:  # type: ignore[no-untyped-def]
    lab = CAPFLab(tmp_path, lab_pki, db_url, CountingSigner(local_signer(lab_pki)),
                  MICAuthority.init(tmp_path / "mic-ca", name="CN=Test Manufacturing CA,O=Phones Inc"))
    lab.db = Database(db_url)
    lab.db.migrate()
    await lab.start_ra()
    nodes: list[Server] = []
    try:
        lab.add_device(NAME, operation="Install/Upgrade", auth_mode="By Authentication String", auth_string=SECRET)
        for n in (1, 2):
            node_dir = tmp_path / f"node{n}"
            node_dir.mkdir()
            conf = config_file(node_dir / "onlineca.toml", {
                "database": {"url": db_url},
                "capf": {"ra_url": f"https://127.0.0.1:{lab.est_port}/.well-known/est", "ra_user": RA_USER,
                         "ra_password": RA_PASSWORD, "ra_trust_store": str(lab_pki.root_pem), **FAST}},
                top={"data_dir": str(node_dir / "data"), "log_dir": str(node_dir / "logs")})
            nodes.append(Server(conf, ["capf", "serve", "--port", "0", "--no-scheduler"], "CAPF serving"))
        await asyncio.gather(*(node.start() for node in nodes))
        ids = {(tmp_path / f"node{n}" / "data" / "capf" / "node-id").read_text().strip() for n in (1, 2)}
        assert len(ids) == 2  # two nodes, each with its own stable id
        ctx = phone_ssl_context(lab_pki.root_pem)
        targets = []
        for node in nodes:
            host, port = node.address.rsplit(":", 1)
            targets.append(Target(host, int(port), ctx, server_hostname="127.0.0.1", read_timeout=30))
        enrolls = lab.backend.enrolls  # the nodes' own certificates
        results = await _guess_until_locked(targets, lab.db)
        assert _locked(lab.db)
        assert 1 <= _compared(lab.db) <= LIMIT, f"{_compared(lab.db)} wrong strings compared, limit {LIMIT}"
        assert _heard_wrong(results) == _compared(lab.db)
        assert all(r.outcome != "installed" for r in results)
        await _right_guess_refused(targets, lab.db)
        assert lab.backend.enrolls == enrolls
    finally:
        for node in nodes:
            await node.stop()
        await lab.stop_ra()
        lab.db.dispose()
