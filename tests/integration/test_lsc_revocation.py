"""CAPF revokes the LSCs it replaces and those of deleted devices, through the whole chain on
127.0.0.1 (``onlineca.lab``: our /certsrv CA, the RA, CAPF): a phone enrolls, gets a new LSC,
CAPF's maintenance pass has the CA revoke the old one over the CA's revoke endpoint, and the real
``openssl verify -crl_check`` refuses the old LSC with the CA's published CRL while it accepts the
new one.  Against a CA without the endpoint (AD CS), the same LSCs are recorded for an
administrator (``manual``), listed with the ``certutil -revoke`` line and exported as CSV, until
``capf revocations done``.  The revocation queue's entry point for other code
(``store.devices.mark_for_revocation``) is idempotent and skips expired certificates."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from onlineca import pki
from onlineca.cli import main_group
from onlineca.infra import tls
from onlineca.lab import Servers, make_lab, prepare_folder, start_servers, write_lab_config
from onlineca.phone.client import PhoneAuth, Target, phone_ssl_context, run_session
from onlineca.phone.device import Phone
from onlineca.pki import revocation as rev
from onlineca.store import Database, devices as inv, lsc_revocations as queue
from onlineca.store.capf_models import LSC

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
NULL = PhoneAuth("null")


class Chain:
    def __init__(self, root: Path) -> None:
        self.root = root
        prepare_folder(root)
        self.config, _mic = make_lab(root)
        self.servers = Servers()
        self.db = Database(self.config.database_url)

    async def start(self, *, revoke_url: bool = True) -> Chain:
        await start_servers(self.config, self.root, self.servers, default_ports=False)
        capf = self.servers.capf
        assert capf is not None and capf.ops is not None
        if not revoke_url:  # as against AD CS: no revoke endpoint to name
            capf.ops.revoker.cfg = capf.ops.revoker.cfg.model_copy(update={"ca_revoke_url": ""})
        return self

    async def close(self) -> None:
        await self.servers.close()
        self.db.dispose()

    def add(self, name: str) -> None:
        with self.db.session() as s:
            inv.add_device(s, name, actor="test", operation="Install/Upgrade")

    def set(self, name: str, **settings: Any) -> None:
        with self.db.session() as s:
            inv.set_device(s, name, actor="test", **settings)

    async def enroll(self, phone: Phone) -> str:
        capf = self.servers.capf
        assert capf is not None
        target = Target(capf.host, capf.port, phone_ssl_context(self.root / "ca" / "root.pem"))
        result = await run_session(phone, target, NULL)
        assert result.outcome == "installed", result
        assert result.lsc_serial is not None
        return result.lsc_serial.lower().replace(":", "")

    def lsc_states(self, name: str) -> dict[str, str]:
        with self.db.session() as s:
            return {r.serial: r.state for r in inv.lsc_history(s, name)}

    def queue(self) -> list[dict[str, Any]]:
        with self.db.session() as s:
            return [queue.revocation_dict(r) for r in queue.list_revocations(s)]

    async def crl(self) -> bytes:
        ca = self.servers.ca
        assert ca is not None
        url = ca.engine.revocation.urls.crl
        ctx = tls.client_context([pki.load_certificate((self.root / "ca" / "root.pem").read_bytes())])
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session, \
                session.get(url) as resp:
            assert resp.status == 200, url
            return await resp.read()

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(main_group, ["--config", str(self.root / "onlineca.toml"), *args])
        assert result.exit_code == 0, result.output
        return result.output


def _verify(chain: Chain, crl_der: bytes, cert: Path) -> subprocess.CompletedProcess[str]:
    crl = chain.root / "issuing-crl.pem"
    crl.write_bytes(pki.pem_armor(crl_der, "X509 CRL"))
    return subprocess.run(["openssl", "verify", "-crl_check", "-CAfile", str(chain.root / "ca" / "chain.pem"),
                           "-CRLfile", str(crl), str(cert)], capture_output=True, text=True, timeout=60)


async def test_capf_revokes_a_replaced_lsc_at_our_ca_and_openssl_refuses_it(tmp_path: Path) -> None:
    chain = await Chain(tmp_path / "lab").start()
    try:
        name = "SEP0000000A0001"
        chain.add(name)
        phone = Phone.create(chain.root / "phones" / name, name)
        first = await chain.enroll(phone)
        old_lsc = tmp_path / "old-lsc.pem"
        old_lsc.write_bytes((phone.folder / "lsc.pem").read_bytes())
        chain.set(name, operation="Install/Upgrade")   # a new LSC, as a renewal gives one
        second = await chain.enroll(phone)
        assert second != first
        assert chain.lsc_states(name) == {first: "superseded", second: "installed"}
        [queued] = chain.queue()
        assert (queued["serial"], queued["reason"], queued["state"]) == (first, "superseded", "pending")
        assert queued["why"] == f"replaced by serial {second}"

        capf = chain.servers.capf
        assert capf is not None
        await capf.maintenance_once()
        assert chain.lsc_states(name)[first] == "revoked"
        assert chain.queue()[0]["state"] == "revoked"
        crl_der = await chain.crl()
        assert rev.load_crl(crl_der).get_revoked_certificate_by_serial_number(int(first, 16)) is not None
        refused = await asyncio.to_thread(_verify, chain, crl_der, old_lsc)
        transcript = (f"$ openssl verify -crl_check -CAfile ca/chain.pem -CRLfile issuing-crl.pem old-lsc.pem\n"
                      f"{refused.stdout}{refused.stderr}")
        (tmp_path / "openssl-transcript.txt").write_text(transcript)
        print(transcript)
        assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
        accepted = await asyncio.to_thread(_verify, chain, crl_der, phone.folder / "lsc.pem")
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr

        # The device deleted: its live LSC is revoked too (cessationOfOperation).
        with chain.db.session() as s:
            inv.delete_device(s, name, actor="test")
        await capf.maintenance_once()
        states = {r["serial"]: (r["state"], r["reason"]) for r in chain.queue()}
        assert states[second] == ("revoked", "cessationOfOperation")
        crl_der = await chain.crl()
        refused = await asyncio.to_thread(_verify, chain, crl_der, phone.folder / "lsc.pem")
        assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
        text = await _metrics(capf)
        assert 'onlineca_capf_lsc_revocations{state="revoked"} 2.0' in text
    finally:
        await chain.close()


async def _metrics(capf: Any) -> str:
    server = await capf.ops.start_server("127.0.0.1", 0)
    async with aiohttp.ClientSession() as session, session.get(f"{server.base}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_without_a_revoke_endpoint_capf_records_what_an_administrator_must_revoke(tmp_path: Path) -> None:
    chain = await Chain(tmp_path / "lab").start(revoke_url=False)
    try:
        name = "SEP0000000A0002"
        chain.add(name)
        phone = Phone.create(chain.root / "phones" / name, name)
        first = await chain.enroll(phone)
        chain.set(name, operation="Install/Upgrade")
        await chain.enroll(phone)
        capf = chain.servers.capf
        assert capf is not None
        await capf.maintenance_once()
        [row] = chain.queue()
        assert row["state"] == "manual" and row["certutil"] == f"certutil -revoke {first} 4"
        assert chain.lsc_states(name)[first] == "superseded"
        write_lab_config(chain.config, chain.servers.endpoints)
        listed = chain.cli("capf", "revocations", "list")
        assert first in listed and "manual" in listed
        out = chain.cli("capf", "revocations", "export", "-")
        rows = list(csv.DictReader(io.StringIO(out)))
        assert rows[0]["serial"] == first and rows[0]["certutil"].startswith("certutil -revoke")
        chain.cli("capf", "revocations", "done", first)
        assert chain.queue()[0]["state"] == "revoked" and chain.lsc_states(name)[first] == "revoked"
    finally:
        await chain.close()


def test_mark_for_revocation_is_idempotent_and_skips_expired_certificates(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'q.db'}")
    db.migrate()
    now = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    try:
        with db.session() as s:
            first = inv.mark_for_revocation(s, device_name="SEP000000000001", serial="0A1B", issuer="CN=X", reason="keyCompromise",
                                            why="found by reconcile", not_after=now + dt.timedelta(days=3), now=now)
            again = inv.mark_for_revocation(s, device_name="SEP000000000001", serial="0a1b", issuer="CN=X", now=now)
            expired = inv.mark_for_revocation(s, device_name="SEP000000000001", serial="ff", issuer="CN=X",
                                              not_after=now - dt.timedelta(days=1), now=now)
            assert first is not None and again is first and expired is None
        with db.session() as s:
            [row] = queue.list_revocations(s)
            assert (row.serial, row.reason, row.state) == ("0a1b", "keyCompromise", "pending")
            assert [e.event for e in inv.device_events(s, "SEP000000000001")] == ["LSC_REVOCATION_REQUESTED"]
            assert s.query(LSC).count() == 0
    finally:
        db.dispose()
