"""Issue 12 item 2: every request body our clients send (EST client, with and without PoP, and
the certsrv client) carries a Content-Length and is never chunked: libEST's server answers a
chunked body with ``400 ... Content-Length is negative``.  A TLS 1.2 server on 127.0.0.1 records
the headers of each request it gets."""

from __future__ import annotations

import pytest
from aiohttp import web

from onlineca import pki
from onlineca.certsrv.client import CertsrvClient
from onlineca.errors import CertsrvFailure, ESTCodedError
from onlineca.est.client import ESTClient
from onlineca.infra import tls


@pytest.fixture
async def recorder(lab_pki):
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.headers), await request.read()))
        return web.Response(status=500, text="recorded")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = tls.server_context(lab_pki.server_cert_pem, lab_pki.server_key_pem, tls12_only=True)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    yield f"https://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


async def test_every_body_our_clients_send_has_a_content_length(recorder, lab_pki):
    url, seen = recorder
    key = pki.generate_key("ec", 256)
    csr = pki.build_csr(key, "CN=SEP-WIRE")
    async with ESTClient(url, cafile=lab_pki.root_pem, user="u", password="p", max_retries=0) as est:
        for call in (lambda: est.simpleenroll(csr), lambda: est.serverkeygen(csr),
                     lambda: est.enroll_with_pop(key, "CN=SEP-WIRE"),
                     lambda: est.enroll_with_pop(key, "CN=SEP-WIRE", reenroll=True)):
            with pytest.raises(ESTCodedError):
                await call()
    async with CertsrvClient(url + "/certsrv", username="u", password="p", trust=lab_pki.root_pem) as ca:
        with pytest.raises(CertsrvFailure):
            await ca.submit(csr, "CiscoRA")
    posts = [(path, headers, body) for path, headers, body in seen if headers.get("Content-Type")]
    assert [p for p, _h, _b in posts] == ["/.well-known/est/simpleenroll", "/.well-known/est/serverkeygen",
                                          "/.well-known/est/simpleenroll", "/.well-known/est/simplereenroll",
                                          "/certsrv/certfnsh.asp"]
    for path, headers, body in posts:
        assert "Transfer-Encoding" not in headers, path
        assert int(headers["Content-Length"]) == len(body) > 0, path
