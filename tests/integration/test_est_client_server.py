"""Our EST client against our EST server over real TLS on 127.0.0.1: every operation, both auth
methods, CA labels, 202/Retry-After, tls-unique PoP, and every failure a CAPF operator meets."""

from __future__ import annotations

import asyncio
import base64
import http.client
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from tests.conftest import free_port

from onlineca import pki
from onlineca.errors import ConfigError, ESTCodedError
from onlineca.est.backend import LocalSigner
from onlineca.est.client import ESTClient, bootstrap_cacerts
from onlineca.est.server import ESTServerSettings, start_est_server
from onlineca.infra import files as fs
from onlineca.infra.users import UsersFile
from onlineca.proto import est as m
from onlineca.proto.est import CsrAttribute, CsrAttrs
from onlineca.proto.libest import enrollment_rv_line, est_number, rv_text
from onlineca.proto.results import Denied, EnrollRequest, Pending

USER, PASSWORD = "ciscora", "s3cret-Passw0rd"


@dataclass
class Env:
    lab: object
    signer: LocalSigner
    users: UsersFile
    device_key: pki.PrivateKey
    device_cert: x509.Certificate
    device_cert_pem: Path
    device_key_pem: Path


@pytest.fixture(scope="module")
def env(lab_pki, tmp_path_factory) -> Env:
    d = tmp_path_factory.mktemp("est")
    key, cert = lab_pki.issue("CN=SEP74A02FC0A675,O=onlineca tests", sans=["SEP74A02FC0A675.lab"],
                              extended_key_usage=["client_auth"])
    (d / "device.pem").write_bytes(pki.cert_pem(cert))
    fs.write_private_key(d / "device.key", key)
    signer = LocalSigner(lab_pki.issuing_key, lab_pki.issuing, ca_chain=[lab_pki.root], validity_days=30)
    return Env(lab_pki, signer, UsersFile.from_plain({USER: PASSWORD}), key, cert, d / "device.pem", d / "device.key")


def _settings(env: Env, **kw) -> ESTServerSettings:
    kw.setdefault("password_check", env.users)
    return ESTServerSettings(**kw)


async def _server(env: Env, backend=None, *, cert=None, key=None, **kw):
    return await start_est_server(
        backend or env.signer, cert_file=cert or env.lab.server_cert_pem, key_file=key or env.lab.server_key_pem,
        settings=_settings(env, **kw), client_trust=pki.TrustStore([env.lab.root, env.lab.issuing]))


@pytest.fixture
async def server(env):
    srv = await _server(env, labels=["lsc"])
    yield srv
    await srv.close()


def _client(env: Env, url: str, **kw) -> ESTClient:
    kw.setdefault("cafile", env.lab.root_pem)
    return ESTClient(url, **kw)


def _csr(subject: str = "CN=SEP001122334455,O=onlineca tests", sans=(), **kw):
    key = pki.generate_key("ec", 256)
    return key, pki.build_csr(key, subject, sans, **kw)


# ------------------------------------------------------------------ every operation


async def test_cacerts_anonymous(env, server):
    async with _client(env, server.url) as est:
        certs = await est.cacerts()
    assert certs == [env.lab.issuing, env.lab.root]


async def test_simpleenroll_basic_auth(env, server):
    key, csr = _csr(sans=["phone.lab"])
    async with _client(env, server.url, user=USER, password=PASSWORD) as est:
        res = await est.simpleenroll(csr)
    assert res.certificate.subject == csr.subject and res.certificates == [res.certificate]
    assert pki.same_public_key(res.certificate.public_key(), key)
    assert pki.san_names(res.certificate) == ["phone.lab"]
    pki.validate_chain(res.certificate, [env.lab.issuing], pki.TrustStore([env.lab.root]))
    assert "client_auth" not in pki.key_usage_names(res.certificate)
    assert pki.key_usage_names(res.certificate) == {"digital_signature", "key_encipherment"}
    eku = res.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [pki.EKU_NAMES["client_auth"]]
    assert enrollment_rv_line("EST_ERR_NONE", res.pkcs7_length) == \
        f"Enrollment rv = 0 (EST_ERR_NONE) with pkcs7 length = {len(res.pkcs7)}"


async def test_simpleenroll_client_certificate_for_its_own_names(env, server):
    # Authenticated by its certificate alone, a client asks only for its own names (RFC 7030 3.3.2).
    csr = pki.build_csr(pki.generate_key("ec", 256), env.device_cert.subject, ["SEP74A02FC0A675.lab"])
    async with _client(env, server.url, cert_file=env.device_cert_pem, key_file=env.device_key_pem) as est:
        res = await est.simpleenroll(csr)
        with pytest.raises(ESTCodedError) as ei:
            await est.simpleenroll(_csr()[1])
    assert res.certificate.subject == csr.subject
    assert ei.value.http_status == 403


async def test_simplereenroll_renews_the_authenticating_certificate(env, server):
    key = pki.generate_key("ec", 256)
    csr = pki.build_csr(key, env.device_cert.subject, ["SEP74A02FC0A675.lab"])
    async with _client(env, server.url, cert_file=env.device_cert_pem, key_file=env.device_key_pem) as est:
        res = await est.simplereenroll(csr)
    assert res.certificate.subject == env.device_cert.subject
    assert pki.same_public_key(res.certificate.public_key(), key)
    assert res.certificate.serial_number != env.device_cert.serial_number


async def test_simplereenroll_with_mismatched_subject_is_refused(env, server):
    _, csr = _csr("CN=SOMEONE-ELSE,O=onlineca tests", ["SEP74A02FC0A675.lab"])
    async with _client(env, server.url, cert_file=env.device_cert_pem, key_file=env.device_key_pem) as est:
        with pytest.raises(ESTCodedError) as ei:
            await est.simplereenroll(csr)
    assert ei.value.http_status == 400 and ei.value.code == "EST_ERR_HTTP_BAD_REQ" and est_number(ei.value.code) == 13
    assert "differs from the certificate being renewed" in ei.value.message


async def test_simplereenroll_with_mismatched_san_is_refused(env, server):
    csr = pki.build_csr(pki.generate_key("ec", 256), env.device_cert.subject, ["other.lab"])
    async with _client(env, server.url, cert_file=env.device_cert_pem, key_file=env.device_key_pem) as est:
        with pytest.raises(ESTCodedError) as ei:
            await est.simplereenroll(csr)
    assert ei.value.http_status == 400


async def test_simplereenroll_needs_a_client_certificate(env, server):
    _, csr = _csr()
    async with _client(env, server.url, user=USER, password=PASSWORD) as est:
        with pytest.raises(ESTCodedError) as ei:
            await est.simplereenroll(csr)
    assert ei.value.http_status == 403 and ei.value.code == "EST_ERR_AUTH_FAIL"


async def test_csrattrs(env):
    ec_attr = CsrAttribute("1.2.840.10045.2.1", (m.der_oid("1.3.132.0.34"),))
    attrs = CsrAttrs(("1.2.840.113549.1.9.7", ec_attr, "1.2.840.10045.4.3.3"))
    signer = LocalSigner(env.lab.issuing_key, env.lab.issuing, attrs=attrs)
    srv = await _server(env, signer)
    try:
        async with _client(env, srv.url) as est:
            assert await est.csrattrs() == attrs
    finally:
        await srv.close()


async def test_csrattrs_empty_is_204(env, server):
    async with _client(env, server.url) as est:
        assert await est.csrattrs() == CsrAttrs()
        status, _, body = await est.request("csrattrs")
    assert status == 204 and body == b""


async def test_serverkeygen(env, server):
    _, csr = _csr("CN=keygen-device,O=onlineca tests")
    async with _client(env, server.url, user=USER, password=PASSWORD) as est:
        res = await est.serverkeygen(csr)
    key = pki.load_private_key(res.private_key_der)
    assert pki.key_spec(key) == ("ec", 256)
    assert pki.same_public_key(res.certificates[0].public_key(), key)
    assert not pki.same_public_key(res.certificates[0].public_key(), csr.public_key())
    assert res.certificates[0].subject == csr.subject


async def test_serverkeygen_disabled_is_501(env):
    srv = await _server(env, serverkeygen=False)
    try:
        async with _client(env, srv.url, user=USER, password=PASSWORD) as est:
            with pytest.raises(ESTCodedError) as ei:
                await est.serverkeygen(_csr()[1])
        assert ei.value.code == "EST_ERR_HTTP_UNSUPPORTED" and ei.value.http_status == 501
    finally:
        await srv.close()


# ------------------------------------------------------------------ labels, pending, PoP


class Recording:
    """A backend that records each request, answers Pending ``pending`` times, then signs."""

    def __init__(self, signer: LocalSigner, pending: int = 0, retry_after: int = 1) -> None:
        self.signer, self.pending, self.retry_after = signer, pending, retry_after
        self.requests: list[EnrollRequest] = []

    async def cacerts(self, label):
        return await self.signer.cacerts(label)

    async def csrattrs(self, label):
        return CsrAttrs()

    async def enroll(self, request):
        self.requests.append(request)
        if len(self.requests) <= self.pending:
            return Pending(retry_after=self.retry_after)
        return await self.signer.enroll(request)


async def test_ca_label_reaches_the_backend_and_unknown_labels_are_404(env):
    backend = Recording(env.signer)
    srv = await _server(env, backend, labels=["lsc"])
    try:
        async with _client(env, srv.url, label="lsc", user=USER, password=PASSWORD) as est:
            assert await est.cacerts() == [env.lab.issuing, env.lab.root]
            await est.simpleenroll(_csr()[1])
        assert backend.requests[0].label == "lsc"
        assert backend.requests[0].user == USER and backend.requests[0].credentials.password == PASSWORD
        assert PASSWORD not in repr(backend.requests[0])
        async with _client(env, srv.url, label="other", user=USER, password=PASSWORD) as est:
            with pytest.raises(ESTCodedError) as ei:
                await est.simpleenroll(_csr()[1])
        assert ei.value.code == "EST_ERR_HTTP_NOT_FOUND" and ei.value.http_status == 404
    finally:
        await srv.close()


@pytest.mark.parametrize("pending,retry_after,max_retries,max_retry_wait,waits_expected", [
    (2, 7, 3, 300, [7.0, 7.0]),   # pending twice, then issued: waited what the server asked, twice
    (99, 3, 1, 300, [3.0]),       # still pending after the retry bound
    (1, 600, 3, 60, []),          # asks for longer than we may wait: left to the caller, no early retry
])
async def test_pending_and_retry_after(env, pending, retry_after, max_retries, max_retry_wait, waits_expected):
    backend = Recording(env.signer, pending=pending, retry_after=retry_after)
    srv = await _server(env, backend)
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    try:
        async with _client(env, srv.url, user=USER, password=PASSWORD, sleep=record, max_retries=max_retries,
                           max_retry_wait=max_retry_wait) as est:
            if pending <= max_retries and retry_after <= max_retry_wait:
                res = await est.simpleenroll(_csr()[1])
                assert res.certificate.issuer == env.lab.issuing.subject
                assert len(backend.requests) == pending + 1
            else:
                with pytest.raises(ESTCodedError) as ei:
                    await est.simpleenroll(_csr()[1])
                assert ei.value.code == "EST_ERR_CA_ENROLL_RETRY" and est_number(ei.value.code) == 26
                assert ei.value.retry_after == retry_after and ei.value.http_status == 202
        assert waits == waits_expected
    finally:
        await srv.close()


class Refusing(Recording):
    def __init__(self, signer, answer) -> None:
        super().__init__(signer)
        self.answer = answer

    async def enroll(self, request):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize("answer,status,code,shown", [
    (Denied("the CA refused the credentials", 401), 401, "EST_ERR_AUTH_FAIL", "the CA refused the credentials"),
    (Denied("template does not allow this subject", 403), 403, "EST_ERR_AUTH_FAIL", "template does not allow"),
    (Denied("CA unreachable", 502), 502, "EST_ERR_CA_ENROLL_FAIL", "CA unreachable"),
    (RuntimeError("secret internal detail"), 500, "EST_ERR_CA_ENROLL_FAIL", "internal error"),
])
async def test_backend_refusals_reach_the_client(env, answer, status, code, shown):
    srv = await _server(env, Refusing(env.signer, answer))
    try:
        async with _client(env, srv.url, user=USER, password=PASSWORD) as est:
            with pytest.raises(ESTCodedError) as ei:
                await est.simpleenroll(_csr()[1])
        assert ei.value.http_status == status and ei.value.code == code and shown in ei.value.message
        assert "secret internal detail" not in ei.value.message
    finally:
        await srv.close()


class Hanging(Recording):
    async def enroll(self, request):
        await asyncio.Event().wait()


async def test_backend_timeout_is_503_with_retry_after(env):
    srv = await _server(env, Hanging(env.signer), request_timeout=0.2, retry_after=42)
    try:
        async with _client(env, srv.url, user=USER, password=PASSWORD, max_retries=0) as est:
            with pytest.raises(ESTCodedError) as ei:
                await est.simpleenroll(_csr()[1])
        assert ei.value.http_status == 503 and ei.value.retry_after == 42
        assert ei.value.code == "EST_ERR_CA_ENROLL_RETRY"
    finally:
        await srv.close()


def _pop_post(port: int, cafile: Path, challenge: str | None, key=None) -> tuple[int, bytes]:
    """A TLS 1.2 client that reads tls-unique from its own connection before building the CSR."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.connect()
        binding = conn.sock.get_channel_binding("tls-unique")
        password = m.tls_unique_challenge(binding) if challenge is None else challenge
        csr = pki.build_csr(key or pki.generate_key("ec", 256), "CN=pop-device", challenge_password=password)
        headers, body = m.encode_pkcs10(csr)
        headers["Authorization"] = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        conn.request("POST", "/.well-known/est/simpleenroll", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


async def test_tls_unique_proof_of_possession(env):
    srv = await _server(env, pop_tls_unique=True)
    try:
        status, body = await asyncio.to_thread(_pop_post, srv.port, env.lab.root_pem, None)
        assert status == 200, body
        assert m.parse_certs_only(body, m.CT_PKCS7_CERTS)[0].subject == x509.Name.from_rfc4514_string("CN=pop-device")
        status, body = await asyncio.to_thread(_pop_post, srv.port, env.lab.root_pem, "AAAAAAAAAAAAAAAA")
        assert status == 401 and b"tls-unique" in body
        # Our client's PoP: the CSR is built on the open TLS 1.2 connection.
        key = pki.generate_key("ec", 256)
        async with _client(env, srv.url, user=USER, password=PASSWORD) as est:
            res = await est.enroll_with_pop(key, "CN=pop-client,O=onlineca tests", ["pop.lab"])
        assert pki.same_public_key(res.certificate.public_key(), key) and pki.san_names(res.certificate) == ["pop.lab"]
        # A client that does not do PoP is refused with the libEST code for it.
        async with _client(env, srv.url, user=USER, password=PASSWORD) as est:
            with pytest.raises(ESTCodedError) as ei:
                await est.simpleenroll(_csr()[1])
        assert ei.value.http_status == 401
    finally:
        await srv.close()


# ------------------------------------------------------------------ failures


async def test_wrong_password_is_401_auth_fail(env, server, caplog):
    caplog.set_level(logging.INFO, logger="onlineca.est")
    async with _client(env, server.url, user=USER, password="wrong") as est:
        with pytest.raises(ESTCodedError) as ei:
            await est.simpleenroll(_csr()[1])
    assert ei.value.http_status == 401 and ei.value.code == "EST_ERR_AUTH_FAIL" and est_number(ei.value.code) == 22
    assert rv_text(ei.value.code) == "22 (EST_ERR_AUTH_FAIL)"
    await server.close()
    access = [r.getMessage() for r in caplog.records if r.name == "onlineca.est.access"]
    assert any(f'{USER} [' in a and '"POST /.well-known/est/simpleenroll HTTP/1.1" 401' in a for a in access)
    assert not any("wrong" in r.getMessage() for r in caplog.records)


async def test_no_credentials_gets_a_basic_challenge(env, server):
    async with _client(env, server.url) as est:
        with pytest.raises(ESTCodedError) as ei:
            await est.simpleenroll(_csr()[1])
    assert ei.value.http_status == 401


async def test_untrusted_server(env, server, tmp_path):
    other_key = pki.generate_key("ec", 256)
    other = pki.build_certificate(subject="CN=Some Other Root", public_key=other_key.public_key(),
                                  issuer_key=other_key, is_ca=True)
    (tmp_path / "other.pem").write_bytes(pki.cert_pem(other))
    async with _client(env, server.url, cafile=tmp_path / "other.pem") as est:
        with pytest.raises(ESTCodedError) as ei:
            await est.cacerts()
    assert ei.value.code == "EST_ERR_CACERT_VERIFICATION" and est_number(ei.value.code) == 60


async def test_hostname_mismatch(env, tmp_path):
    key, cert = env.lab.issue("CN=localhost", sans=["localhost"], extended_key_usage=["server_auth"])
    (tmp_path / "s.pem").write_bytes(pki.certs_pem([cert, env.lab.issuing]))
    fs.write_private_key(tmp_path / "s.key", key)
    srv = await _server(env, cert=tmp_path / "s.pem", key=tmp_path / "s.key")
    try:
        async with _client(env, srv.url) as est:  # https://127.0.0.1:port, cert names only localhost
            with pytest.raises(ESTCodedError) as ei:
                await est.cacerts()
        assert ei.value.code == "EST_ERR_FQDN_MISMATCH" and est_number(ei.value.code) == 53
        async with _client(env, f"https://localhost:{srv.port}") as est:
            assert len(await est.cacerts()) == 2
    finally:
        await srv.close()


async def test_bad_content_type_sent_is_415(env, server):
    _, body = m.encode_pkcs10(_csr()[1])
    async with _client(env, server.url, user=USER, password=PASSWORD) as est:
        with pytest.raises(ESTCodedError) as ei:
            await est.request("simpleenroll", "POST", body, {"Content-Type": "text/plain"})
    assert ei.value.code == "EST_ERR_BAD_CONTENT_TYPE" and est_number(ei.value.code) == 19 and ei.value.http_status == 415


async def test_bad_pkcs10_is_400(env, server):
    async with _client(env, server.url, user=USER, password=PASSWORD) as est:
        with pytest.raises(ESTCodedError) as ei:
            await est.request("simpleenroll", "POST", b"bm90IGEgQ1NS\r\n", {"Content-Type": m.CT_PKCS10})
    assert ei.value.http_status == 400 and "PKCS#10" in ei.value.message


async def test_bad_content_type_received(env):
    """A server that answers cacerts with an HTML page (a wrong URL, a proxy login page)."""
    async def html(request):
        return web.Response(text="<html>login</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/.well-known/est/cacerts", html)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(env.lab.server_cert_pem, env.lab.server_key_pem)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    try:
        async with _client(env, f"https://127.0.0.1:{runner.addresses[0][1]}") as est:
            with pytest.raises(ESTCodedError) as ei:
                await est.cacerts()
        assert ei.value.code == "EST_ERR_BAD_CONTENT_TYPE"
    finally:
        await runner.cleanup()


async def test_oversize_body_is_413(env):
    srv = await _server(env, max_body_bytes=4096)
    try:
        async with _client(env, srv.url, user=USER, password=PASSWORD) as est:
            with pytest.raises(ESTCodedError) as ei:
                await est.request("simpleenroll", "POST", b"A" * 20000, {"Content-Type": m.CT_PKCS10})
        assert ei.value.code == "EST_ERR_BAD_CONTENT_LEN" and ei.value.http_status == 413
    finally:
        await srv.close()


async def test_server_killed_mid_request_is_ssl_read(env):
    """A server that completes TLS, reads the request, then closes: libEST's rv = 35."""
    got_request = asyncio.Event()

    async def accept_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        got_request.set()
        writer.transport.abort()

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(env.lab.server_cert_pem, env.lab.server_key_pem)
    srv = await asyncio.start_server(accept_then_close, "127.0.0.1", 0, ssl=ctx)
    port = srv.sockets[0].getsockname()[1]
    try:
        async with _client(env, f"https://127.0.0.1:{port}", user=USER, password=PASSWORD) as est:
            with pytest.raises(ESTCodedError) as ei:
                await est.simpleenroll(_csr()[1])
        assert got_request.is_set()
        assert ei.value.code == "EST_ERR_SSL_READ" and est_number(ei.value.code) == 35
        assert enrollment_rv_line(ei.value.code, 0) == "Enrollment rv = 35 (EST_ERR_SSL_READ) with pkcs7 length = 0"
    finally:
        srv.close()
        await srv.wait_closed()


async def test_nothing_listening_is_ip_connect(env):
    async with _client(env, f"https://127.0.0.1:{free_port()}", connect_timeout=5) as est:
        with pytest.raises(ESTCodedError) as ei:
            await est.cacerts()
    assert ei.value.code == "EST_ERR_IP_CONNECT" and est_number(ei.value.code) == 43


async def test_client_timeout_is_ssl_read(env):
    """The server accepts and never answers: after the timeout the client reports rv = 35."""
    async def stall(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.Event().wait()

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(env.lab.server_cert_pem, env.lab.server_key_pem)
    srv = await asyncio.start_server(stall, "127.0.0.1", 0, ssl=ctx)
    try:
        async with _client(env, f"https://127.0.0.1:{srv.sockets[0].getsockname()[1]}", timeout=0.5) as est:
            with pytest.raises(ESTCodedError) as ei:
                await est.cacerts()
        assert ei.value.code == "EST_ERR_SSL_READ"
    finally:
        srv.close()


async def test_bootstrap_accepts_only_on_confirmation(env, server):
    seen: list[str] = []

    def confirm(certs):
        seen.extend(pki.fingerprint(c) for c in certs)
        return True

    certs = await bootstrap_cacerts(server.url, confirm)
    assert seen == [pki.fingerprint(env.lab.issuing), pki.fingerprint(env.lab.root)]
    async with ESTClient(server.url, trust_certs=certs, user=USER, password=PASSWORD) as est:
        assert (await est.simpleenroll(_csr()[1])).certificate.issuer == env.lab.issuing.subject
    with pytest.raises(ESTCodedError) as ei:
        await bootstrap_cacerts(server.url, lambda certs: False)
    assert ei.value.code == "EST_ERR_CACERT_VERIFICATION"


async def test_untrusted_client_certificate_is_refused(env, server, tmp_path):
    other_key = pki.generate_key("ec", 256)
    other = pki.build_certificate(subject="CN=rogue", public_key=other_key.public_key(), issuer_key=other_key)
    (tmp_path / "rogue.pem").write_bytes(pki.cert_pem(other))
    fs.write_private_key(tmp_path / "rogue.key", other_key)
    async with _client(env, server.url, cert_file=tmp_path / "rogue.pem", key_file=tmp_path / "rogue.key") as est:
        with pytest.raises(ESTCodedError) as ei:
            await est.simpleenroll(_csr()[1])
    assert ei.value.code in ("EST_ERR_SSL_CONNECT", "EST_ERR_SSL_READ")


async def test_wrong_method_and_unknown_operation(env, server):
    async with _client(env, server.url) as est:
        with pytest.raises(ESTCodedError) as ei:
            await est.request("simpleenroll", "GET")
        assert ei.value.http_status == 405
        with pytest.raises(ESTCodedError) as ei:
            await est.request("fullcmc", "POST", b"x", {"Content-Type": "application/pkcs7-mime"})
        assert ei.value.http_status == 501


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_tls_below_1_2_is_refused(env, server):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(env.lab.root_pem)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx, server_hostname="127.0.0.1")
        writer.close()


@pytest.mark.parametrize("content_type,body", [
    (m.CT_PKCS10, b"\x00\xff" * 300),
    (m.CT_PKCS10, base64.b64encode(b"\x30\x82\xff\xff" + b"A" * 500)),
    (m.CT_PKCS10, b"-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n"),
    ("application/pkcs10; charset=\u00e9", b"MIIB"),
    ("", b""),
    ("multipart/mixed; boundary=x", b"--x\r\n\r\n--x--"),
])
async def test_hostile_bodies_get_4xx_never_500(env, server, content_type, body):
    async with _client(env, server.url, user=USER, password=PASSWORD) as est:
        for op in ("simpleenroll", "serverkeygen"):
            with pytest.raises(ESTCodedError) as ei:
                await est.request(op, "POST", body, {"Content-Type": content_type} if content_type else {})
            assert 400 <= ei.value.http_status < 500, ei.value


async def test_a_taken_port_is_a_clear_config_error(env, server):
    with pytest.raises(ConfigError, match=rf"cannot listen on 127\.0\.0\.1:{server.port}: "):
        await start_est_server(env.signer, cert_file=env.lab.server_cert_pem, key_file=env.lab.server_key_pem,
                               port=server.port)
