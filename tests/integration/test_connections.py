"""Issue 12 item 6 and issue 11 item 6: the servers' connections (``infra.serving``).

Every failed TLS handshake is logged with the client's address and the reason, in NGINX's words
(an untrusted client certificate, a client that speaks plain HTTP, one that never finishes the
handshake); a per-address and a total connection limit; a deadline for the request headers
(slowloris); and, out of file descriptors at accept(), one rate-limited line instead of a
traceback per attempt.  Real TLS servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import textwrap

import pytest
from tests.integration.ra_lab import ca_lab  # noqa: F401  (fixture)

from onlineca import pki
from onlineca.est.backend import LocalSigner
from onlineca.est.server import start_est_server
from onlineca.infra import files as fs
from onlineca.infra.serving import GUARD, ConnectionLimits


@pytest.fixture
def est_log(log_lines):  # type: ignore[no-untyped-def]
    return log_lines("onlineca.est")


async def _server(lab_pki, **limits):
    signer = LocalSigner(lab_pki.issuing_key, lab_pki.issuing, ca_chain=[lab_pki.root])
    return await start_est_server(signer, cert_file=lab_pki.server_cert_pem, key_file=lab_pki.server_key_pem,
                                  client_trust=pki.TrustStore([lab_pki.root]), limits=ConnectionLimits(**limits))


async def _until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def _client_ctx(lab_pki, cert=None, key=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(lab_pki.root_pem))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def test_failed_handshakes_are_logged_with_the_client_address_and_the_reason(lab_pki, est_log, tmp_path):
    srv = await _server(lab_pki, handshake_timeout=0.5)
    try:
        # An untrusted (self-signed) client certificate.
        key = pki.generate_key("ec", 256)
        cert = pki.build_certificate(subject="CN=stranger", public_key=key.public_key(), issuer_key=key)
        (tmp_path / "c.pem").write_bytes(pki.cert_pem(cert))
        fs.write_private_key(tmp_path / "c.key", key)
        ctx = _client_ctx(lab_pki, tmp_path / "c.pem", tmp_path / "c.key")
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the server's verdict arrives within the handshake
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _r, w = await asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx, server_hostname="localhost")
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await _r.read()
        await _until(lambda: any("certificate verify" in line for line in est_log))
        # Plain HTTP to the TLS port (a protocol mismatch).
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: x\r\n\r\n")
        await r.read()
        w.close()
        # A client that never finishes its handshake.
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        assert await r.read() == b""  # closed by the server after handshake_timeout
        w.close()
        await _until(lambda: len([ln for ln in est_log if "SSL_do_handshake() failed" in ln]) >= 3)
        failed = [ln for ln in est_log if "SSL_do_handshake() failed" in ln]
        assert all("while SSL handshaking, client: 127.0.0.1, server: 127.0.0.1:" in ln for ln in failed)
        assert any("client SSL certificate verify error: (" in ln for ln in failed)
        assert any("HTTP_REQUEST" in ln or "WRONG_VERSION" in ln for ln in failed)
        assert any("taking longer than 0.5 seconds" in ln for ln in failed)
        assert srv.app[GUARD].handshake_failures >= 3
    finally:
        await srv.close()


async def test_per_address_limit_and_header_deadline(lab_pki, est_log):
    srv = await _server(lab_pki, max_per_address=2, header_timeout=0.5, idle_timeout=0.5)
    ctx = _client_ctx(lab_pki)
    try:
        held = [await asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx, server_hostname="localhost")
                for _ in range(2)]
        # The third from the same address is closed at once.
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            r, w = await asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx, server_hostname="localhost")
            w.write(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: x\r\n\r\n")
            await r.readexactly(1)
        assert any("max_per_address = 2" in ln for ln in est_log)
        # Slowloris: headers never completed; the server closes the connection.
        r, w = held[0]
        w.write(b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: x\r\n")
        assert await r.read() == b""
        assert any("no complete request within header_timeout = 0.5 s" in ln for ln in est_log)
        # A slot is free again: a real request goes through.
        await _until(lambda: srv.app[GUARD].by_address.get("127.0.0.1", 0) < 2)
        r, w = await asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx, server_hostname="localhost")
        w.write(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await r.read()).startswith(b"HTTP/1.1 200")
        for _r, w in held:
            w.close()
    finally:
        await srv.close()


async def test_total_limit(lab_pki, est_log):
    srv = await _server(lab_pki, max_connections=1)
    ctx = _client_ctx(lab_pki)
    try:
        _r, w = await asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx, server_hostname="localhost")
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            r2, w2 = await asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx, server_hostname="localhost")
            w2.write(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: x\r\n\r\n")
            await r2.readexactly(1)
        assert any("max_connections = 1" in ln for ln in est_log)
        w.close()
    finally:
        await srv.close()


_EMFILE_CHILD = textwrap.dedent('''
    import asyncio, logging, resource, signal, sys
    from onlineca import pki
    from onlineca.est.backend import LocalSigner
    from onlineca.est.server import start_est_server
    from onlineca.infra import files
    from onlineca.infra.serving import ConnectionLimits, _ACCEPT_FILTERED
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    d = sys.argv[1]
    async def main():
        signer = LocalSigner(files.read_private_key(d + "/issuing.key"), pki.load_certificate(open(d + "/issuing.pem", "rb").read()))
        srv = await start_est_server(signer, cert_file=d + "/server.pem", key_file=d + "/server.key",
                                     limits=ConnectionLimits(max_connections=10000, max_per_address=10000))
        import os
        used = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 8, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        print(srv.port, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    asyncio.run(main())
''')


async def test_out_of_file_descriptors_gives_one_line_not_a_flood(lab_pki):
    import threading
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", _EMFILE_CHILD, str(lab_pki.dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    socks = []
    try:
        port = int(await asyncio.to_thread(proc.stdout.readline))
        for _ in range(40):  # more than the child has descriptors for
            socks.append(await asyncio.open_connection("127.0.0.1", port))
        await _until(lambda: any("out of file descriptors" in ln for ln in err), 30)
        # asyncio retries accept() every second while out of descriptors: observe a few retries.
        await asyncio.sleep(2.5)
    finally:
        for _r, w in socks:
            w.close()
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
        await asyncio.to_thread(reader.join, 10)
    text = "".join(err)
    assert "Traceback" not in text
    lines = [ln for ln in err if "out of file descriptors" in ln]
    assert len(lines) == 1, text[-2000:]


async def test_the_ra_logs_a_refused_client_certificate_in_its_error_log(ca_lab, tmp_path):
    from tests.integration.ra_lab import error_log, local_ra, run_ra
    kw = local_ra(ca_lab, tmp_path)
    kw["est"]["client_trust_store"] = str(ca_lab.root_pem)
    logs = tmp_path / "ra-logs"
    ra = await run_ra(ca_lab, logs, "https://127.0.0.1:1/certsrv", **kw)
    try:
        key = pki.generate_key("ec", 256)
        cert = pki.build_certificate(subject="CN=stranger", public_key=key.public_key(), issuer_key=key)
        (tmp_path / "c.pem").write_bytes(pki.cert_pem(cert))
        fs.write_private_key(tmp_path / "c.key", key)
        ctx = ssl.create_default_context(cafile=str(ca_lab.root_pem))
        ctx.load_cert_chain(str(tmp_path / "c.pem"), str(tmp_path / "c.key"))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            r, _w = await asyncio.open_connection("127.0.0.1", ra.port, ssl=ctx, server_hostname="localhost")
            await r.read()
        await _until(lambda: "ngx_ssl_handshake" in error_log(logs))
        line = next(ln for ln in error_log(logs).splitlines() if "ngx_ssl_handshake" in ln)
        assert "[warn]" in line and "SSL_do_handshake() failed (client SSL certificate verify error: (18:" in line
        assert f"while SSL handshaking, client: 127.0.0.1, server: 127.0.0.1:{ra.port}" in line
        assert "-- fix: The client's certificate must chain to [est] client_trust_store" in line
    finally:
        await ra.close()
