"""infra.transport.classify on real failures, made with real sockets on 127.0.0.1: a refused port,
an unresolvable ``.invalid`` name, a TLS server whose certificate the client does not trust (and
one whose name does not match), a server that accepts and never answers (a read timeout, and a
TLS handshake that never comes), and a server that closes without answering; each through
aiohttp and through bare asyncio/ssl, and each as the EST client words it."""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from tests.conftest import free_port

from onlineca import pki
from onlineca.est.client import map_transport_error
from onlineca.infra import tls
from onlineca.infra.transport import TransportFailure, classify


async def _failure(url: str, *, ssl_ctx: ssl.SSLContext | bool = False, server_hostname: str | None = None,
                   timeout: aiohttp.ClientTimeout | None = None) -> BaseException:
    """The exception one aiohttp GET raises (the test fails if it does not raise)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx),
                                     timeout=timeout or aiohttp.ClientTimeout(total=10)) as session:
        try:
            async with session.get(url, server_hostname=server_hostname) as resp:
                await resp.read()
        except (aiohttp.ClientError, OSError) as exc:
            return exc
    raise AssertionError(f"GET {url} did not fail")


async def _raw_failure(call: Awaitable[object]) -> BaseException:
    try:
        await call
    except (OSError, asyncio.IncompleteReadError) as exc:
        return exc
    raise AssertionError("the call did not fail")


class _Server:
    """A TCP server on 127.0.0.1 running ``handler(reader, writer, release)`` per connection; on
    exit ``release`` is set and every handler is awaited."""

    def __init__(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Event],
                                         Awaitable[None]]) -> None:
        self.handler = handler
        self.release = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)  # type: ignore[arg-type]
        try:
            await self.handler(reader, writer, self.release)
        finally:
            writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._run, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.release.set()
        self.server.close()
        await self.server.wait_closed()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, release: asyncio.Event) -> None:
    await release.wait()  # accept, never answer, until the test is done


async def _close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, release: asyncio.Event) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
async def tls_server(lab_pki) -> AsyncIterator[int]:
    """An HTTPS server with the lab's web certificate (CN=localhost, SANs localhost and 127.0.0.1)."""
    app = web.Application()
    app.router.add_get("/", _ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0,
                       ssl_context=tls.server_context(lab_pki.server_cert_pem, lab_pki.server_key_pem))
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def _est_code(exc: BaseException) -> str:
    return map_transport_error(exc, "https://ra.example").code


async def test_a_refused_port() -> None:
    port = free_port()  # bound, then closed: nothing listens
    exc = await _failure(f"http://127.0.0.1:{port}/")
    f = classify(exc)
    assert f == TransportFailure("refused", "Connection refused", f.detail, errno.ECONNREFUSED)
    assert f.during_connect and _est_code(exc) == "EST_ERR_IP_CONNECT"
    raw = classify(await _raw_failure(asyncio.open_connection("127.0.0.1", port)))
    assert (raw.kind, raw.reason) == ("refused", "Connection refused")


async def test_an_unresolvable_name() -> None:
    exc = await _failure("https://no-such-ca.onlineca.invalid/certsrv")
    assert classify(exc).kind == "dns" and _est_code(exc) == "EST_ERR_IP_GETADDR"
    raw = classify(await _raw_failure(asyncio.open_connection("no-such-ca.onlineca.invalid", 443)))
    assert raw.kind == "dns" and raw.during_connect


async def test_a_certificate_from_an_untrusted_ca(tls_server) -> None:
    stranger = pki.generate_key("ec", 256)
    other_root = pki.build_certificate(subject="CN=Some Other Root", public_key=stranger.public_key(),
                                       issuer_key=stranger, is_ca=True)
    ctx = tls.client_context([other_root])
    exc = await _failure(f"https://127.0.0.1:{tls_server}/", ssl_ctx=ctx)
    f = classify(exc)
    assert f.kind == "tls_verify" and f.verify_code == 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert f.verify_message == "unable to get local issuer certificate"
    assert _est_code(exc) == "EST_ERR_CACERT_VERIFICATION"
    raw = classify(await _raw_failure(asyncio.open_connection("127.0.0.1", tls_server, ssl=ctx)))
    assert (raw.kind, raw.verify_code) == ("tls_verify", 20)


async def test_a_certificate_for_another_name(tls_server, lab_pki) -> None:
    ctx = tls.client_context([lab_pki.root])
    exc = await _failure(f"https://127.0.0.1:{tls_server}/", ssl_ctx=ctx, server_hostname="ca.example.com")
    f = classify(exc)
    assert f.kind == "tls_verify" and f.verify_code == 62  # X509_V_ERR_HOSTNAME_MISMATCH
    assert _est_code(exc) == "EST_ERR_FQDN_MISMATCH"


async def test_a_server_that_accepts_and_never_answers(lab_pki) -> None:
    async with _Server(_silent) as port:
        exc = await _failure(f"http://127.0.0.1:{port}/", timeout=aiohttp.ClientTimeout(sock_read=0.3))
        assert classify(exc).kind == "timeout" and not classify(exc).during_connect
        assert _est_code(exc) == "EST_ERR_SSL_READ"
        # TLS: the TCP connection is accepted, the handshake never answered.
        exc = await _failure(f"https://127.0.0.1:{port}/", ssl_ctx=tls.client_context([lab_pki.root]),
                             timeout=aiohttp.ClientTimeout(sock_connect=0.3))
        assert classify(exc).kind == "connect_timeout" and _est_code(exc) == "EST_ERR_SSL_READ"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = await _raw_failure(asyncio.wait_for(reader.read(1), 0.3))
        writer.close()
        assert classify(raw).kind == "timeout"


async def test_a_server_that_closes_without_answering() -> None:
    async with _Server(_close_at_once) as port:
        exc = await _failure(f"http://127.0.0.1:{port}/")
        assert classify(exc).kind == "closed" and _est_code(exc) == "EST_ERR_SSL_READ"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = await _raw_failure(reader.readexactly(1))
        writer.close()
        assert classify(raw).kind == "closed"


def test_what_is_not_a_network_failure() -> None:
    f = classify(ValueError("no"))
    assert f.kind == "unknown" and not f.during_connect
    assert map_transport_error(aiohttp.InvalidURL("x"), "u").code == "EST_ERR_UNKNOWN"
