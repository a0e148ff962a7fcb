"""The CA in this test's own event loop: while another connection holds its SQLite database's write
lock, a submission waits in a worker thread and every other page still answers (the loop never
freezes); and certnew.cer answers with the very bytes the engine stored, which reach an EST
client through the RA unchanged."""

from __future__ import annotations

import asyncio
import base64
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import event

from onlineca import pki
from onlineca.ca import engine as eng, users as ca_users
from onlineca.ca.web import RunningCA, start_ca
from onlineca.config import Config
from onlineca.store import Database

USER, PASSWORD = "alice", "alice-Secret-1"
ISSUED = re.compile(r"certnew\.cer\?ReqID=(\d+)&")


@dataclass
class CA:
    running: RunningCA
    db: Database
    db_file: Path
    session: aiohttp.ClientSession

    async def get(self, page: str, **params: str) -> tuple[int, bytes]:
        async with self.session.get(f"{self.running.url}/{page}", params=params) as resp:
            return resp.status, await resp.read()

    async def submit(self, cn: str) -> str:
        csr = pki.csr_pem(pki.build_csr(pki.generate_key("ec", 256), f"CN={cn}")).decode()
        form = {"Mode": "newreq", "CertRequest": csr, "CertAttrib": "CertificateTemplate:CiscoRA\r\n"}
        async with self.session.post(f"{self.running.url}/certfnsh.asp", data=form) as resp:
            assert resp.status == 200
            return await resp.text()


@pytest.fixture
async def ca(tmp_path: Path) -> AsyncIterator[CA]:
    config = Config(data_dir=str(tmp_path / "data"), log_dir=str(tmp_path / "logs"), ca={"key_type": "ec"})
    files = eng.init_ca(config, config.data_path)
    ca_users.add_user(eng.users_path(config, config.data_path), USER, PASSWORD)
    db = Database(config.database_url)
    running = await start_ca(config, config.data_path, config.log_path, host="127.0.0.1", port=0, db=db)
    ctx = pki_context(files.root_cert)
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), timeout=aiohttp.ClientTimeout(total=30),
                                    headers={"Authorization": f"Basic {basic}", "User-Agent": "tests"})
    try:
        yield CA(running, db, config.paths.database, session)
    finally:
        await session.close()
        await running.close()


def pki_context(root: Path):  # type: ignore[no-untyped-def]
    from onlineca.infra import files as fs, tls
    return tls.client_context(fs.load_cert_file(root))


async def test_pages_answer_while_the_database_is_write_locked(ca: CA) -> None:
    first = ISSUED.search(await ca.submit("before-the-lock"))
    assert first is not None
    loop = asyncio.get_running_loop()
    inserting = asyncio.Event()

    def before_execute(conn, cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT"):
            loop.call_soon_threadsafe(inserting.set)  # a worker thread is about to wait for the lock

    event.listen(ca.db.engine, "before_cursor_execute", before_execute)
    locker = sqlite3.connect(ca.db_file, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
        submission = asyncio.ensure_future(ca.submit("during-the-lock"))
        await asyncio.wait_for(inserting.wait(), 30)
        # The submission now waits in a worker thread for the lock; everything else answers.
        for page, params in (("certrqxt.asp", {}), ("certcarc.asp", {}), ("certckpn.asp", {}),
                             ("certnew.cer", {"ReqID": first.group(1), "Enc": "bin"}),
                             ("certnew.p7b", {"ReqID": "CACert", "Renewal": "0", "Enc": "bin"})):
            status, _body = await ca.get(page, **params)
            assert status == 200, page
        assert not submission.done()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert "Certificate Issued" in await submission
    event.remove(ca.db.engine, "before_cursor_execute", before_execute)


async def test_certnew_cer_is_the_stored_der_byte_for_byte(ca: CA) -> None:
    m = ISSUED.search(await ca.submit("stored-der"))
    assert m is not None
    stored = ca.running.engine.get(int(m.group(1))).cert_der
    assert stored
    status, body = await ca.get("certnew.cer", ReqID=m.group(1), Enc="bin")
    assert status == 200 and body == stored
    status, body = await ca.get("certnew.cer", ReqID=m.group(1), Enc="b64")
    assert status == 200 and body == pki.pem_armor(stored, eol=b"\r\n")
    status, body = await ca.get("certnew.p7b", ReqID=m.group(1), Enc="bin")
    assert status == 200 and stored in body  # the PKCS#7 embeds the same bytes


async def test_a_lock_held_past_busy_timeout_is_answered_as_a_busy_server(tmp_path: Path) -> None:
    """Issue 11 item 7: the wait for the lock is bounded ([database] busy_timeout) and answered as
    a busy IIS does (503 + Retry-After), not a 500; the CA serves normally once the lock is gone."""
    config = Config(data_dir=str(tmp_path / "data"), log_dir=str(tmp_path / "logs"), ca={"key_type": "ec"},
                    database={"busy_timeout": 0.3})
    files = eng.init_ca(config, config.data_path)
    ca_users.add_user(eng.users_path(config, config.data_path), USER, PASSWORD)
    running = await start_ca(config, config.data_path, config.log_path, host="127.0.0.1", port=0)
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki_context(files.root_cert)),
                                    headers={"Authorization": f"Basic {basic}", "User-Agent": "tests"})
    ca = CA(running, Database(config.database_url), config.paths.database, session)
    try:
        assert "Certificate Issued" in await ca.submit("before-the-lock")
        locker = sqlite3.connect(ca.db_file, isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")
            csr = pki.csr_pem(pki.build_csr(pki.generate_key("ec", 256), "CN=during-the-lock")).decode()
            form = {"Mode": "newreq", "CertRequest": csr, "CertAttrib": "CertificateTemplate:CiscoRA\r\n"}
            async with session.post(f"{running.url}/certfnsh.asp", data=form) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "5"
                assert "RPC_S_SERVER_TOO_BUSY" in await resp.text()
            status, _ = await ca.get("certcarc.asp")
            assert status == 200
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert "Certificate Issued" in await ca.submit("after-the-lock")
        assert " 503 " in (tmp_path / "logs" / "ca-iis.log").read_text()
    finally:
        await session.close()
        await running.close()
        ca.db.dispose()
