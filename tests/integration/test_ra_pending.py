"""Issue 12 item 1: pending requests are kept by public key + names + requester, in the database.

A libEST-style client signs a new CSR for every retry (ECDSA signatures are randomised, so the
bytes differ); the retry after the CA manager's approval must collect the approved request, not
file a new one, also after an RA restart and through another RA process on the same database
(SQLite and PostgreSQL).  Issue 12 item 11: a client that gives up before the CA answers gets a
499 access line, and the certificate the CA issued anyway is collected by its retry."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from tests.conftest import db_url  # noqa: F401  (fixture)
from tests.integration.ra_lab import (  # noqa: F401  (fixtures)
    PASSWORD,
    USER,
    HoldingProxy,
    ca_lab,
    error_log,
    raw_enroll,
    run_ca,
    run_ra,
)

from onlineca import pki
from onlineca.proto import est as m


@pytest.fixture
async def ca(ca_lab, tmp_path):
    running = await run_ca(ca_lab, tmp_path / "ca-logs")
    yield running
    await running.close()


async def test_ec_request_resigned_on_every_retry_collects_the_approved_one_across_ras(ca_lab, ca, tmp_path,
                                                                                        db_url):
    key = pki.generate_key("ec", 256)
    cn = f"SEP-EC-RESIGN-{uuid.uuid4().hex[:8]}"
    subject, sans = f"CN={cn},O=onlineca tests", ["sep-ec.example"]
    first = pki.build_csr(key, subject, sans)
    ra1 = await run_ra(ca_lab, tmp_path / "ra1", ca.url, ra={"template": "Approval"}, database=db_url)
    try:
        await ra1.wait_ready()
        status, headers, _ = await raw_enroll(ra1, first, cafile=ca_lab.root_pem)
        assert status == 202 and headers["Retry-After"] == "1"
        (req_id,) = ra1.state.pending.req_ids()
        again = pki.build_csr(key, subject, sans)  # re-signed: other bytes, same request
        assert pki.csr_der(again) != pki.csr_der(first)
        status, _h, _b = await raw_enroll(ra1, again, cafile=ca_lab.root_pem)
        assert status == 202
        assert [r.req_id for r in ca.engine.list(disposition="pending") if r.subject.startswith(f"/CN={cn}")] \
            == [req_id]
    finally:
        await ra1.close()  # the RA stops: what it remembered is in the database
    ca.engine.approve(req_id)
    ra2 = await run_ra(ca_lab, tmp_path / "ra2", ca.url, ra={"template": "Approval"}, database=db_url)
    try:
        await ra2.wait_ready()
        status, _h, body = await raw_enroll(ra2, pki.build_csr(key, subject, sans), cafile=ca_lab.root_pem)
        assert status == 200
        (cert,) = m.parse_certs_only(body, "application/pkcs7-mime")
        assert pki.same_public_key(cert.public_key(), key)
        assert pki.cert_der(cert) == ca.engine.get(req_id).cert_der
        assert not ra2.state.pending.req_ids()
    finally:
        await ra2.close()
    assert not [r for r in ca.engine.list(disposition=None) if r.subject.startswith(f"/CN={cn}")
                and r.req_id != req_id]  # no second request at the CA


async def test_another_requester_with_the_same_key_and_names_does_not_collect(ca_lab, ca, tmp_path):
    key = pki.generate_key("ec", 256)
    ra = await run_ra(ca_lab, tmp_path / "ra", ca.url, ra={"template": "Approval"})
    try:
        await ra.wait_ready()
        assert (await raw_enroll(ra, pki.build_csr(key, "CN=SEP-OTHER-REQ"), cafile=ca_lab.root_pem))[0] == 202
        (req_id,) = ra.state.pending.req_ids()
        status, _h, _b = await raw_enroll(ra, pki.build_csr(key, "CN=SEP-OTHER-REQ"), user="capf2",
                                          password="other-Passw0rd", cafile=ca_lab.root_pem)
        assert status == 202
        assert len(ra.state.pending.req_ids()) == 2 and req_id in ra.state.pending.req_ids()
    finally:
        await ra.close()


async def test_a_client_that_gives_up_gets_499_and_its_retry_collects_what_the_ca_issued(ca_lab, ca, tmp_path):
    proxy = HoldingProxy(ca.url, ca_lab.root_pem, ca_lab.web_cert("proxy"))
    url = await proxy.start()
    logs = tmp_path / "ra"
    ra = await run_ra(ca_lab, logs, url, ra={"enroll_timeout": 30.0})
    try:
        await ra.wait_ready()
        proxy.hold.add("/certsrv/certfnsh.asp")
        key = pki.generate_key("ec", 256)
        gave_up = asyncio.ensure_future(raw_enroll(ra, pki.build_csr(key, "CN=SEP-GAVE-UP"), cafile=ca_lab.root_pem))
        while proxy.held < 1:
            await asyncio.sleep(0.01)  # polling a counter the proxy sets, not a synchronisation by time
        gave_up.cancel()  # the client goes away while the CA holds the request
        with pytest.raises(asyncio.CancelledError):
            await gave_up
        await _until(lambda: ' 499 ' in (logs / "access.log").read_text())
        proxy.release.set()  # the CA answers after all: issued
        await _until(lambda: "kept for the client's retry" in error_log(logs))
        status, _h, body = await raw_enroll(ra, pki.build_csr(key, "CN=SEP-GAVE-UP"), cafile=ca_lab.root_pem)
        assert status == 200
        (cert,) = m.parse_certs_only(body, "application/pkcs7-mime")
        assert pki.same_public_key(cert.public_key(), key)
        rows = [r for r in ca.engine.list(disposition=None) if r.subject == "/CN=SEP-GAVE-UP"]
        assert len(rows) == 1 and rows[0].cert_der == pki.cert_der(cert)  # issued once
        text = error_log(logs)
        assert "the client closed the connection before the RA answered" in text
    finally:
        await ra.close()
        await proxy.close()


async def _until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
