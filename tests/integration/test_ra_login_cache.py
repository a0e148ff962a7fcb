"""Issue 11 item 3: a low-privilege user cannot knock out enrollments through the RA.

The CA accepts only its own domain (``OTHER\\\\user`` is refused, ``ONLINECA\\\\user`` and
``user@onlineca`` are the same account); the RA keeps one kept-alive CA client per account
(``D1\\\\capf2``, ``D2\\\\capf2``... are one account and cannot push CAPF's client out), never
forwards a login that failed recently with the same credentials, and throttles refused logins
per account and per address.  Cycling 40 domain spellings leaves every CAPF enrollment issued."""

from __future__ import annotations

import asyncio
import base64
import ssl

import aiohttp
from tests.integration.ra_lab import (  # noqa: F401  (fixtures)
    PASSWORD,
    USER,
    ca_lab,
    est_csr,
    iis_requests,
    raw_enroll,
    run_ca,
    run_ra,
)


async def _basic(url: str, cafile, user: str, password: str) -> int:
    ctx = ssl.create_default_context(cafile=str(cafile))
    headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s, \
            s.get(url + "/", headers=headers, allow_redirects=False) as resp:
        return resp.status


async def test_the_ca_accepts_only_its_own_domain(ca_lab, tmp_path):
    ca = await run_ca(ca_lab, tmp_path / "ca-logs")
    try:
        for name, want in ((USER, 200), (f"ONLINECA\\{USER}", 200), (f"onlineca\\{USER}", 200),
                           (f"{USER}@ONLINECA", 200), (f"OTHER\\{USER}", 401), (f"{USER}@evil.example", 401)):
            assert await _basic(ca.url, ca_lab.root_pem, name, PASSWORD) == want, name
    finally:
        await ca.close()


async def test_cycling_domain_spellings_does_not_knock_out_capf(ca_lab, tmp_path):
    ca_logs = tmp_path / "ca-logs"
    ca = await run_ca(ca_lab, ca_logs)
    ra = await run_ra(ca_lab, tmp_path / "ra-logs", ca.url,
                      ra={"passthrough_cache_size": 4, "max_failed_logins_per_user": 3,
                          "max_failed_logins_per_address": 10})
    try:
        await ra.wait_ready()
        results: list[int] = []

        async def capf() -> None:
            for i in range(20):
                status, _h, _b = await raw_enroll(ra, est_csr(f"CN=SEPCAPF{i:04d}")[1], cafile=ca_lab.root_pem)
                results.append(status)

        async def attacker() -> list[int]:
            got = []
            for i in range(40):  # the right password of capf2, in forty domains
                got.append((await raw_enroll(ra, est_csr()[1], user=f"D{i}\\capf2", password="other-Passw0rd",
                                             cafile=ca_lab.root_pem))[0])
            for _ in range(5):  # and the same wrong password again and again
                got.append((await raw_enroll(ra, est_csr()[1], user="capf2", password="guess",
                                             cafile=ca_lab.root_pem))[0])
            return got

        _none, refused = await asyncio.gather(capf(), attacker())
        assert results == [200] * 20 and ra.state.ready
        assert set(refused) == {401}
        # The CA saw at most the per-account limit of refused logins for capf2, whatever the spelling.
        capf2_refusals = [ln for ln in iis_requests(ca_logs) if " 401 1 1326 " in ln]
        assert len(capf2_refusals) <= 3, capf2_refusals
        assert len(ra.state.connector._clients) <= 4
        issued = [r for r in ca.engine.list(disposition="issued", limit=100000) if r.subject.startswith("/CN=SEPCAPF")]
        assert len(issued) == 20  # each once: no retry after a 503, no second issue
    finally:
        await ra.close()
        await ca.close()
