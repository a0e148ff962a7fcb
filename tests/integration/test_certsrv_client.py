"""The certsrv client against real HTTPS servers on 127.0.0.1: the happy path, pending and denied
requests, keep-alive (two CA requests per enrollment), and every failure of the source document
(untrusted, self-signed, wrong name, not yet valid, expired web certificate; unresolvable host;
connection refused; a CA slower than the login or enrollment timeout; wrong password; mistyped
template), each with its code and curl's wording.  TLS wording is also checked against real curl.

The AD CS pages come from ``ADCSPages`` below, a small aiohttp app that serves the page formats
of certsrv-notes.md (our CA, onlineca.ca, is tested against the same client once it lands).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import html
import re
import shutil
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from tests.conftest import free_port

from onlineca import pki
from onlineca.certsrv.client import CertsrvClient
from onlineca.errors import (
    CAAuthError,
    CAConnectError,
    CADNSError,
    CAPageError,
    CATemplateError,
    CATimeoutError,
    CATLSError,
    CertsrvFailure,
)
from onlineca.infra import files as fs
from onlineca.pki.csr import csr_pem
from onlineca.proto.certsrv import client as p, hresults as hr
from onlineca.proto.results import Denied, Issued, Pending

USER, PASSWORD = "ciscora", "s3cret-Pa55"


# --- a CA that speaks the AD CS page formats ---------------------------------------------------

@dataclass
class Req:
    status: str  # issued | pending | denied
    cert: object = None
    message: str = ""


@dataclass
class ADCSPages:
    lab: object
    templates: dict = field(default_factory=lambda: {"CiscoRA": "Cisco RA", "Approval": "Manager Approval"})
    require_client_cert: bool = False
    ntlm: bool = False                        # NTLM only (as IIS with Windows authentication)
    close_after: set = field(default_factory=set)  # paths whose answer closes the connection
    wrong_key: bool = False                   # issue certificates for another key (a broken CA)
    slow: dict = field(default_factory=dict)  # path -> asyncio.Event the handler waits on
    log: list = field(default_factory=list)   # (method, path_qs, peer, authorized)
    reqs: dict = field(default_factory=dict)
    next_id: int = 10
    ntlm_contexts: dict = field(default_factory=dict)  # connection -> server context mid-handshake
    ntlm_connections: set = field(default_factory=set)  # connections NTLM authenticated

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def _ntlm(self, request: web.Request) -> bool | web.Response:
        conn = id(request.transport)
        if conn in self.ntlm_connections:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "NTLM" or not token:
            return False
        import spnego
        ctx = self.ntlm_contexts.pop(conn, None) or spnego.server(protocol="ntlm")
        try:
            out = ctx.step(base64.b64decode(token))
        except Exception:
            return False
        if ctx.complete:
            self.ntlm_connections.add(conn)
            return True
        self.ntlm_contexts[conn] = ctx
        return web.Response(status=401, headers={"WWW-Authenticate": "NTLM " + base64.b64encode(out).decode()})

    def _authorized(self, request: web.Request) -> bool | web.Response:
        if self.ntlm:
            return self._ntlm(request)
        if self.require_client_cert:
            return bool(request.transport.get_extra_info("peercert"))
        want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return request.headers.get("Authorization") == want

    async def handle(self, request: web.Request) -> web.StreamResponse:
        authorized = self._authorized(request)
        self.log.append((request.method, request.path_qs, request.transport.get_extra_info("peername"),
                         authorized is True))
        if request.path in self.slow:
            await self.slow[request.path].wait()
        if isinstance(authorized, web.Response):
            return authorized  # an NTLM challenge
        if not authorized:
            resp = web.Response(status=401, text="<html>401 - Unauthorized</html>", content_type="text/html")
            resp.headers.add("WWW-Authenticate", "Negotiate")
            resp.headers.add("WWW-Authenticate", "NTLM")
            if not self.ntlm:
                resp.headers.add("WWW-Authenticate", 'Basic realm="lab-dc"')
            return resp
        page = request.path.removeprefix("/certsrv").lstrip("/")
        if request.path == "/certsrv":
            raise web.HTTPMovedPermanently("/certsrv/")
        handler = {"": self.home, "certrqxt.asp": self.certrqxt, "certfnsh.asp": self.certfnsh,
                   "certnew.cer": self.certnew_cer, "certnew.p7b": self.certnew_p7b,
                   "certcarc.asp": self.certcarc, "certckpn.asp": self.certckpn}.get(page)
        if handler is None:
            return web.Response(status=404, text="<html>404 - File or directory not found.</html>",
                                content_type="text/html")
        resp = await handler(request)
        if request.path in self.close_after:
            resp.force_close()
        return resp

    @staticmethod
    def html(body: str) -> web.Response:
        return web.Response(text=f"<HTML><Head><Title>Microsoft Active Directory Certificate Services</Title></Head>"
                                 f"<Body>{body}</Body></HTML>", content_type="text/html")

    async def home(self, request):
        return self.html("<P ID=locPageTitle> <B> Welcome </B>")

    async def certrqxt(self, request):
        opts = "".join(f'\t\t\t<Option Value="E;{n};1;0;0;16;1;0;;;;;{html.escape(d)}">{html.escape(d)}</Option>\n'
                       for n, d in self.templates.items())
        return self.html(f"<Select Name=lbCertTemplate ID=lbCertTemplateID>\n{opts}\t\t</Select>"
                         '<Form Name=SubmittedData Action="certfnsh.asp" Method=Post></Form>')

    def _disposition_page(self, req_id: int) -> web.Response:
        r = self.reqs[req_id]
        if r.status == "issued":
            return self.html(f'<P ID=locPageTitle> <B> Certificate Issued </B>\n'
                             f'<A Href="certnew.cer?ReqID={req_id}&amp;Enc=b64">Download certificate</A>\n'
                             f'<Script>location="certnew.cer?ReqID={req_id}&"+getEncoding();</Script>')
        if r.status == "pending":
            return self.html(f"<P ID=locPageTitle> <B> Certificate Pending </B>\n"
                             f"<P> Your certificate request has been received.\nYour Request Id is {req_id}.\n"
                             f'<P>The disposition message is "Taken Under Submission".')
        return self.html(f"<P ID=locPageTitle> <B> Certificate Request Denied </B>\r\n"
                         f"<P>Your Request Id is {req_id}.\r\n"
                         f'<P>The disposition message is "{r.message}\r\n".')

    async def certfnsh(self, request):
        form = await request.post()
        if form.get("Mode") == "chkpnd":
            req_id = int(form.get("ReqID", "0"))
            if req_id not in self.reqs:
                return self.html('<P>The disposition message is "The request ID is not valid. 0x80094004"')
            return self._disposition_page(req_id)
        req_id, self.next_id = self.next_id, self.next_id + 1
        m = re.search(r"CertificateTemplate:([^\r\n]*)", form.get("CertAttrib", ""))
        template = m.group(1) if m else ""
        try:
            csr = pki.parse_csr(form.get("CertRequest", ""))
        except Exception:
            self.reqs[req_id] = Req("denied", message="Error Parsing Request  ASN1 bad tag value met. 0x8009310b")
            return self._disposition_page(req_id)
        if not template:
            self.reqs[req_id] = Req("denied", message="Denied by Policy Module  0x80094801, The request contains "
                                                      "no certificate template information.")
        elif template not in self.templates:
            self.reqs[req_id] = Req("denied", message="Denied by Policy Module  0x80094800, The request was for a "
                                    "certificate template that is not supported by the Active Directory "
                                    f"Certificate Services policy: {template}.")
        elif pki.common_name(csr.subject).startswith("deny"):
            self.reqs[req_id] = Req("denied", message="Denied by Policy Module  0x80094014, The request was denied "
                                                      "by a certificate manager or CA administrator.")
        elif template == "Approval":
            self.reqs[req_id] = Req("pending", cert=csr)
        else:
            self.reqs[req_id] = Req("issued", cert=self._sign(csr))
        return self._disposition_page(req_id)

    def _sign(self, csr):
        public_key = pki.generate_key("ec", 256).public_key() if self.wrong_key else csr.public_key()
        return pki.build_certificate(subject=csr.subject, public_key=public_key,
                                     issuer_key=self.lab.issuing_key, issuer_cert=self.lab.issuing,
                                     extended_key_usage=["client_auth"])

    def approve(self, req_id: int) -> None:
        r = self.reqs[req_id]
        self.reqs[req_id] = Req("issued", cert=self._sign(r.cert))

    @staticmethod
    def _cert_body(cert, enc: str) -> bytes:
        return pki.cert_der(cert) if enc == "bin" else pki.cert_pem(cert)

    async def certnew_cer(self, request):
        req_id, enc = request.query.get("ReqID", ""), request.query.get("Enc", "b64")
        if req_id == "CACert":
            return web.Response(body=self._cert_body(self.lab.issuing, enc), content_type="application/pkix-cert")
        r = self.reqs.get(int(req_id)) if req_id.isdigit() else None
        if r is not None and r.status == "issued":
            return web.Response(body=self._cert_body(r.cert, enc), content_type="application/pkix-cert")
        message = {None: "(none)", "pending": "Taken Under Submission"}.get(r and r.status, r and r.message)
        result = ("The operation completed successfully. 0x0 (WIN32: 0)" if r and r.status == "pending"
                  else "The request ID is not valid. 0x80094004 (-2146877436)")
        return self.html("<P ID=locPageTitle> <B> Error </B>\r\n<DL>"
                         "\t<DT ID=locDispMsgLabel><Font Size=-1><B>Disposition message:</B></Font></DT><DD>\r\n"
                         f"\t\t{message}\r\n\t</DD>\r\n"
                         "\t<DT ID=locResultLabel><Font Size=-1><B>Result:</B></Font></DT><DD>\r\n"
                         f"\t\t{result}\r\n\t</DD>\r\n</DL>")

    async def certnew_p7b(self, request):
        der = pki.pkcs7_der([self.lab.issuing, self.lab.root])
        if request.query.get("Enc") == "b64":
            body = b"-----BEGIN CERTIFICATE-----\r\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\r\n"
        else:
            body = der
        return web.Response(body=body, content_type="application/x-pkcs7-certificates")

    async def certcarc(self, request):
        return self.html("<Script>\n\tvar nRenewals=0;\n</Script>")

    async def certckpn(self, request):
        ids = [i for i, r in self.reqs.items() if r.status == "pending"]
        if not ids:
            return self.html("<P ID=locNoPend> You have no pending certificate requests.\n</P>")
        rows = "".join(f"<TR><TD><A Href=\"#\" OnClick=\"CheckPending2('{i}', '0', 'yes');return false;\">"
                       f"Saved-Request Certificate</A></TD></TR>" for i in ids)
        return self.html(f"<P ID=locSelectCert> Select the certificate request you want to view:<Table>{rows}</Table>")


# --- web certificates and servers ---------------------------------------------------------------

@dataclass
class WebCerts:
    dir: Path

    def pair(self, name: str) -> tuple[str, str]:
        return str(self.dir / f"{name}.pem"), str(self.dir / f"{name}.key")


@pytest.fixture(scope="module")
def web_certs(lab_pki, tmp_path_factory) -> WebCerts:
    """The CA web server's certificate in each state the source document fails on (EC keys: fast)."""
    d = tmp_path_factory.mktemp("webcerts")
    now = dt.datetime.now(dt.UTC)
    names = ["localhost", "127.0.0.1"]

    def write(name, key, certs):
        (d / f"{name}.pem").write_bytes(pki.certs_pem(certs))
        fs.write_private_key(d / f"{name}.key", key)

    write("good", lab_pki.server_key, [lab_pki.server, lab_pki.issuing])
    other_root_key = pki.generate_key("ec", 256)
    other_root = pki.build_certificate(subject="CN=Unknown Root CA,O=elsewhere", public_key=other_root_key.public_key(),
                                       issuer_key=other_root_key, is_ca=True)
    key = pki.generate_key("ec", 256)
    write("untrusted", key, [pki.build_certificate(subject="CN=localhost", public_key=key.public_key(),
                                                   issuer_key=other_root_key, issuer_cert=other_root, sans=names)])
    key = pki.generate_key("ec", 256)
    write("self_signed", key, [pki.build_certificate(subject="CN=localhost", public_key=key.public_key(),
                                                     issuer_key=key, sans=names)])
    for name, kw in (("wrong_name", dict(subject="CN=lab-dc")),
                     ("not_yet_valid", dict(subject="CN=localhost", sans=names, not_before=now + dt.timedelta(days=2))),
                     ("expired", dict(subject="CN=localhost", sans=names, not_before=now - dt.timedelta(days=10),
                                      validity_days=1))):
        key, cert = lab_pki.issue(extended_key_usage=["server_auth"], **kw)
        write(name, key, [cert, lab_pki.issuing])
    key, cert = lab_pki.issue("CN=ciscora", extended_key_usage=["client_auth"])
    write("client", key, [cert])
    return WebCerts(d)


@dataclass
class Running:
    pages: ADCSPages
    port: int
    url: str


@pytest.fixture
async def serve(lab_pki, web_certs):
    """Start an AD CS page server over TLS with the named web certificate; stops them all at the end."""
    runners, events = [], []

    async def start(cert: str = "good", host: str = "127.0.0.1", **kw) -> Running:
        pages = ADCSPages(lab_pki, **kw)
        events.extend(pages.slow.values())
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*web_certs.pair(cert))
        if pages.require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(lab_pki.root_pem))
            ctx.load_verify_locations(cafile=str(lab_pki.dir / "issuing.pem"))
        runner = web.AppRunner(pages.app(), handle_signals=False)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()  # listening on return
        runners.append(runner)
        return Running(pages, port, f"https://{host}:{port}/certsrv")

    yield start
    for e in events:
        e.set()
    for r in runners:
        await r.cleanup()


def client(url: str, lab_pki, **kw) -> CertsrvClient:
    kw.setdefault("username", USER)
    kw.setdefault("password", PASSWORD)
    return CertsrvClient(url, trust=lab_pki.root_pem, **kw)


def csr_for(cn: str) -> tuple[object, bytes]:
    key = pki.generate_key("ec", 256)
    return key, csr_pem(pki.build_csr(key, f"CN={cn}"))


# --- happy path -----------------------------------------------------------------------------

async def test_login_templates_enroll_and_chain(serve, lab_pki):
    ca = await serve()
    async with client(ca.url, lab_pki) as c:
        await c.login()
        offered = await c.check_template("CiscoRA")
        assert [t.name for t in offered] == ["CiscoRA", "Approval"]
        key, csr = csr_for("SEP74A02FC0A675")
        got = await c.enroll(csr, "CiscoRA")
        assert isinstance(got, Issued) and got.req_id == 10
        assert pki.same_public_key(got.certificate.public_key(), key) and pki.common_name(got.certificate.subject) == "SEP74A02FC0A675"
        chain = await c.ca_chain()
        assert chain == [lab_pki.issuing, lab_pki.root]
        assert pki.validate_chain(got.certificate, chain, pki.TrustStore([lab_pki.root]))[-1] == lab_pki.root
        assert await c.ca_chain(None, enc="b64") == chain
        assert await c.renewal_count() == 0
        assert await c.ca_certificate() == lab_pki.issuing
        again = await c.fetch(got.req_id, enc="b64")
        assert again == got


async def test_enrollment_costs_two_requests_on_one_kept_alive_connection(serve, lab_pki):
    ca = await serve()
    async with client(ca.url, lab_pki) as c:
        await c.login()
        before = len(ca.pages.log)
        for i in range(3):
            assert isinstance(await c.enroll(csr_for(f"SEP{i:012d}")[1], "CiscoRA"), Issued)
    after = ca.pages.log[before:]
    assert [(m, pq.split("?")[0]) for m, pq, _, _ in after] == [
        ("POST", "/certsrv/certfnsh.asp"), ("GET", "/certsrv/certnew.cer")] * 3
    assert all(authorized for *_, authorized in ca.pages.log)  # Basic sent pre-emptively: never a 401
    assert len({peer for _, _, peer, _ in ca.pages.log}) == 1   # one TCP connection, kept alive


async def test_pending_then_approved(serve, lab_pki):
    ca = await serve()
    async with client(ca.url, lab_pki) as c:
        await c.login()
        got = await c.enroll(csr_for("SEP000000000042")[1], "Approval")
        assert isinstance(got, Pending) and got.message == "Taken Under Submission"
        assert await c.pending_requests() == [got.req_id]
        assert await c.fetch(got.req_id) == Pending(got.req_id, "Taken Under Submission")
        assert isinstance(await c.check_pending(got.req_id), Pending)
        ca.pages.approve(got.req_id)
        issued = await c.check_pending(got.req_id)
        assert isinstance(issued, Issued) and pki.common_name(issued.certificate.subject) == "SEP000000000042"
        assert await c.pending_requests() == []


async def test_denied_carries_hresult_and_disposition_message(serve, lab_pki):
    ca = await serve()
    async with client(ca.url, lab_pki) as c:
        got = await c.enroll(csr_for("deny-me")[1], "CiscoRA")
    assert isinstance(got, Denied) and got.hresult == 0x80094014 and got.req_id == 10
    assert "denied by a certificate manager" in got.message
    err = p.denial_error(got)
    assert err.code == "CA_DENIED" and "0x80094014" in err.message


async def test_client_certificate_login(serve, lab_pki, web_certs):
    ca = await serve(require_client_cert=True)
    cert, key = web_certs.pair("client")
    async with CertsrvClient(ca.url, auth="cert", client_cert=cert, client_key=key, trust=lab_pki.root_pem) as c:
        await c.login()
        assert isinstance(await c.enroll(csr_for("SEPCERTAUTH0001")[1], "CiscoRA"), Issued)
    assert all(authorized for *_, authorized in ca.pages.log)


# --- the source document's failures -----------------------------------------------------------

async def _curl_error(url: str, cafile: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--cacert", str(cafile), "-o", "/dev/null", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
    _out, err = await proc.communicate()
    m = re.match(r"curl: \((\d+)\) (.*)", err.decode())
    assert m, err
    return int(m.group(1)), m.group(2).strip()


@pytest.mark.parametrize("cert,host,code,curl_code,curl_message", [
    ("untrusted", "127.0.0.1", "CA_TLS_UNTRUSTED", 60, "SSL certificate problem: unable to get local issuer certificate"),
    ("self_signed", "127.0.0.1", "CA_TLS_SELF_SIGNED", 60, "SSL certificate problem: self-signed certificate"),
    ("not_yet_valid", "127.0.0.1", "CA_TLS_NOT_YET_VALID", 60, "SSL certificate problem: certificate is not yet valid"),
    ("expired", "127.0.0.1", "CA_TLS_EXPIRED", 60, "SSL certificate problem: certificate has expired"),
    ("wrong_name", "localhost", "CA_TLS_NAME_MISMATCH", 51,
     "SSL: certificate subject name 'lab-dc' does not match target host name 'localhost'"),
])
async def test_web_certificate_failures(serve, lab_pki, cert, host, code, curl_code, curl_message):
    ca = await serve(cert, host=host)
    async with client(ca.url, lab_pki) as c:
        with pytest.raises(CATLSError) as info:
            await c.login()
    err = info.value
    assert (err.code, err.curl_code, err.curl_message) == (code, curl_code, curl_message)
    assert err.hint and ca.pages.log == []  # nothing, credentials least of all, was sent
    # Real curl words the same cause the same way (curl >= 7.62 numbers a name mismatch 60, not 51).
    if shutil.which("curl"):
        real_code, real_message = await _curl_error(ca.url + "/", lab_pki.root_pem)
        assert real_message == curl_message
        assert real_code == (60 if code == "CA_TLS_NAME_MISMATCH" else curl_code)
    if code == "CA_TLS_NAME_MISMATCH":
        assert err.details["subject"] == "/CN=lab-dc"
    if code == "CA_TLS_NOT_YET_VALID":
        assert "valid from" in err.message


async def test_unresolvable_host(lab_pki):
    async with client("https://lab-dcc.example.invalid/certsrv", lab_pki) as c:
        with pytest.raises(CADNSError) as info:
            await c.login()
    assert info.value.reason == "return code 6 (Could not resolve: lab-dcc.example.invalid (Domain name not found))"


async def test_connection_refused(lab_pki):
    port = free_port()  # nothing listens there
    async with client(f"https://127.0.0.1:{port}/certsrv", lab_pki) as c:
        with pytest.raises(CAConnectError) as info:
            await c.login()
    assert info.value.curl_code == 7
    assert re.fullmatch(rf"Failed to connect to 127\.0\.0\.1 port {port} after \d+ ms: Connection refused",
                        info.value.curl_message)


async def test_ca_slower_than_the_login_timeout(serve, lab_pki):
    ca = await serve(slow={"/certsrv/": asyncio.Event()})
    async with client(ca.url, lab_pki, login_timeout=0.3, enroll_timeout=5) as c:
        with pytest.raises(CATimeoutError) as info:
            await c.login()
    err = info.value
    assert err.details["phase"] == "login" and err.details["timeout"] == 0.3
    assert re.fullmatch(r"Operation timed out after \d+ milliseconds with 0 bytes received", err.curl_message)
    assert int(re.search(r"after (\d+)", err.curl_message).group(1)) >= 300


async def test_ca_slower_than_the_enrollment_timeout(serve, lab_pki):
    ca = await serve(slow={"/certsrv/certfnsh.asp": asyncio.Event()})
    async with client(ca.url, lab_pki, login_timeout=5, enroll_timeout=0.3) as c:
        await c.login()  # the login timeout is separate and not exceeded
        with pytest.raises(CATimeoutError) as info:
            await c.enroll(csr_for("SEPSLOW00000001")[1], "CiscoRA")
    assert info.value.details["phase"] == "enroll"
    assert info.value.details["url"].endswith("/certsrv/certfnsh.asp")


async def test_wrong_password(serve, lab_pki):
    ca = await serve()
    async with client(ca.url, lab_pki, password="wrong") as c:
        with pytest.raises(CAAuthError) as info:
            await c.login()
        assert not c.logged_in
    assert info.value.reason == "return code 22 (The requested URL returned error: 401)"
    assert "wrong" not in repr(c) and "wrong" not in str(info.value)


async def test_mistyped_template(serve, lab_pki):
    ca = await serve()
    async with client(ca.url, lab_pki) as c:
        await c.login()
        with pytest.raises(CATemplateError) as info:
            await c.check_template("CsicoRA")
        assert info.value.details["nearest"] == "CiscoRA" and "'CiscoRA'" in info.value.hint
        got = await c.enroll(csr_for("SEPTYPO00000001")[1], "CsicoRA")
    assert isinstance(got, Denied) and got.hresult == hr.CERTSRV_E_UNSUPPORTED_CERT_TYPE
    assert p.denial_error(got).code == "CA_TEMPLATE"


async def test_not_a_certsrv_server(serve, lab_pki):
    ca = await serve()
    async with client(ca.url.replace("/certsrv", "/other"), lab_pki) as c:
        with pytest.raises(CertsrvFailure) as info:
            await c.templates()
    assert info.value.code == "CA_HTTP" and info.value.details["status"] == 404


async def test_connect_timeout_is_separate(lab_pki):
    """A peer that accepts TCP but never completes TLS: the connect timeout fires, not login's."""
    silent = []
    server = await asyncio.start_server(lambda r, w: silent.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with client(f"https://127.0.0.1:{port}/certsrv", lab_pki, connect_timeout=0.3, login_timeout=5) as c:
            with pytest.raises(CATimeoutError) as info:
                await c.login()
    finally:
        for w in silent:
            w.close()
        server.close()
        await server.wait_closed()
    assert info.value.details["phase"] == "connect"
    assert re.fullmatch(r"Connection timed out after \d+ milliseconds", info.value.curl_message)


@pytest.fixture
def ntlm_users(tmp_path, monkeypatch):
    users = tmp_path / "ntlm_users"
    users.write_text(f"LAB:{USER}:{PASSWORD}\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))  # pyspnego's server-side credential store


async def test_ntlm_login_and_two_requests_per_enrollment(serve, lab_pki, ntlm_users):
    ca = await serve(ntlm=True)
    async with client(ca.url, lab_pki, auth="ntlm", username=f"LAB\\{USER}") as c:
        await c.login()
        assert [a for *_, a in ca.pages.log] == [False, True]  # negotiate (challenged), authenticate
        before = len(ca.pages.log)
        for i in range(2):
            assert isinstance(await c.enroll(csr_for(f"SEPNTLM{i:08d}")[1], "CiscoRA"), Issued)
    assert len(ca.pages.log) - before == 4 and all(a for *_, a in ca.pages.log[before:])
    assert len({peer for _, _, peer, _ in ca.pages.log}) == 1


async def test_ntlm_reauthenticates_a_new_connection(serve, lab_pki, ntlm_users):
    ca = await serve(ntlm=True, close_after={"/certsrv/certrqxt.asp"})
    async with client(ca.url, lab_pki, auth="ntlm", username=f"LAB\\{USER}") as c:
        await c.login()
        await c.check_template("CiscoRA")  # the CA closes this connection after answering
        assert isinstance(await c.enroll(csr_for("SEPNTLMAGAIN001")[1], "CiscoRA"), Issued)
    assert len({peer for _, _, peer, _ in ca.pages.log}) == 2


async def test_ntlm_wrong_password(serve, lab_pki, ntlm_users):
    ca = await serve(ntlm=True)
    async with client(ca.url, lab_pki, auth="ntlm", username=f"LAB\\{USER}", password="wrong") as c:
        with pytest.raises(CAAuthError) as info:
            await c.login()
    assert info.value.reason == "return code 22 (The requested URL returned error: 401)"


async def test_basic_client_against_an_ntlm_only_ca(serve, lab_pki):
    ca = await serve(ntlm=True)
    async with client(ca.url, lab_pki) as c:
        with pytest.raises(CAAuthError) as info:
            await c.login()
    assert info.value.details["offered"] == ["Negotiate", "NTLM"]
    assert "does not offer basic authentication" in info.value.hint


async def test_the_certsrv_package_reads_the_same_pages(serve, lab_pki):
    """The reference client (the certsrv PyPI package) against the same server: the pages our
    client is tested on are the ones existing AD CS clients understand."""
    certsrv = pytest.importorskip("certsrv")
    ca = await serve()
    key, csr = csr_for("SEPREFERENCE001")

    def reference_client():
        ref = certsrv.Certsrv(f"127.0.0.1:{ca.port}", USER, PASSWORD, cafile=str(lab_pki.root_pem))
        ref.session.trust_env = False
        return ref.get_cert(csr, "CiscoRA", encoding="b64"), ref.get_chain(encoding="bin"), ref.get_ca_cert()

    cert_pem, chain_der, ca_pem = await asyncio.to_thread(reference_client)
    assert pki.same_public_key(pki.load_certificate(cert_pem).public_key(), key)
    assert pki.order_chain(pki.parse_pkcs7(chain_der)) == [lab_pki.issuing, lab_pki.root]
    assert pki.load_certificate(ca_pem) == lab_pki.issuing
    async with client(ca.url, lab_pki) as c:
        assert await c.ca_chain() == [lab_pki.issuing, lab_pki.root]


@pytest.fixture
async def idle_closing_ca(web_certs):
    """A CA that answers one request per connection and then, like IIS at its idle timeout, closes
    the kept-alive connection just as the next request arrives, without answering it."""
    seen = []  # (connection number, request line, answered)
    writers = []
    count = 0

    async def handle(reader, writer):
        nonlocal count
        count += 1
        conn, served = count, 0
        writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                if served:
                    seen.append((conn, line, False))
                    break
                body = b"<Script>var nRenewals=0;</Script>"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
                seen.append((conn, line, True))
                served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*web_certs.pair("good"))
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/certsrv", seen
    for w in writers:
        w.close()
    server.close()
    await server.wait_closed()


async def test_a_get_is_asked_again_on_a_closed_kept_alive_connection(idle_closing_ca, lab_pki):
    url, seen = idle_closing_ca
    async with client(url, lab_pki) as c:
        assert await c.renewal_count() == 0
        assert await c.renewal_count() == 0  # dropped on the old connection, answered on a new one
    assert [(conn, answered) for conn, _, answered in seen] == [(1, True), (1, False), (2, True)]


async def test_a_post_is_never_asked_twice(idle_closing_ca, lab_pki):
    url, seen = idle_closing_ca
    async with client(url, lab_pki) as c:
        await c.renewal_count()
        with pytest.raises(CAConnectError) as info:
            await c.submit(csr_for("SEPPOSTONCE0001")[1], "CiscoRA")
    assert info.value.reason == "return code 52 (Empty reply from server)"
    assert [line.split()[0] for _, line, _ in seen] == ["GET", "POST"]


# --- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    (dict(url="ftp://ca/certsrv"), "ca_url"),
    (dict(username=""), "ca_user is empty"),
    (dict(auth="cert"), "ca_client_cert"),
    (dict(enroll_timeout=0), "enroll_timeout"),
    (dict(trust="/nonexistent/trust.pem"), "trust store"),
])
def test_bad_settings_are_config_errors(lab_pki, kw, match):
    from onlineca.errors import ConfigError
    args = dict(url="https://127.0.0.1:8443/certsrv", username=USER, password=PASSWORD, trust=lab_pki.root_pem)
    args.update(kw)
    with pytest.raises(ConfigError, match=match):
        CertsrvClient(args.pop("url"), **args)


async def test_from_config_uses_the_ra_section(serve, lab_pki):
    from pydantic import SecretStr

    from onlineca.config import RAConfig
    ca = await serve()
    ra = RAConfig(ca_url=ca.url + "/", ca_user=USER, ca_password=SecretStr(PASSWORD),
                  trust_store=str(lab_pki.root_pem), login_timeout=3, enroll_timeout=4, connect_timeout=2)
    async with CertsrvClient.from_config(ra) as c:
        assert (c.base, c.connect_timeout, c.timeouts) == (ca.url, 2, {"login": 3, "enroll": 4})
        assert PASSWORD not in repr(c)
        await c.login()
        await c.check_template(ra.template)


async def test_a_certificate_for_another_key_is_refused(serve, lab_pki):
    ca = await serve(wrong_key=True)
    async with client(ca.url, lab_pki) as c:
        with pytest.raises(CAPageError, match="does not hold the public key"):
            await c.enroll(csr_for("SEPWRONGKEY0001")[1], "CiscoRA")


# --- our CA (onlineca.ca), spoken to by the same client ------------------------------------------

@pytest.fixture
async def our_ca(tmp_path):
    """onlineca's own CA on 127.0.0.1 (EC keys), a user, and a manager-approval template."""
    from onlineca.ca.engine import init_ca, users_path
    from onlineca.ca.users import add_user
    from onlineca.ca.web import IIS_LOG_NAME, start_ca
    from onlineca.config import CAConfig, Config, TemplateConfig
    config = Config(data_dir=str(tmp_path), ca=CAConfig(key_type="ec", templates=[
        TemplateConfig(name="CiscoRA", display_name="Cisco RA"),
        TemplateConfig(name="Approval", display_name="Manager Approval", manager_approval=True)]))
    files = init_ca(config, tmp_path)
    add_user(users_path(config, tmp_path), USER, PASSWORD)
    running = await start_ca(config, tmp_path, tmp_path / "logs", host="127.0.0.1", port=0)
    running.trust = files.root_cert
    running.iis = tmp_path / "logs" / IIS_LOG_NAME
    yield running
    await running.close()


def iis_requests(path: Path) -> list[tuple[str, str, str]]:
    """(method, uri-stem, status) of each W3C line of the CA's IIS log."""
    out = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            fields = line.split()
            out.append((fields[3], fields[4], fields[11]))  # sc-status, 12th of the default fields
    return out


async def test_our_ca_login_templates_enroll_chain(our_ca):
    async with CertsrvClient(our_ca.url, username=USER, password=PASSWORD, trust=our_ca.trust) as c:
        await c.login()
        assert "CiscoRA" in [t.name for t in await c.check_template("CiscoRA")]
        key, csr = csr_for("SEP74A02FC0A675")
        before = len(iis_requests(our_ca.iis))
        for _ in range(3):
            got = await c.enroll(csr, "CiscoRA")
            assert isinstance(got, Issued) and pki.same_public_key(got.certificate.public_key(), key)
        enrolled = iis_requests(our_ca.iis)[before:]
        chain = await c.ca_chain(None)
        assert pki.validate_chain(got.certificate, chain, fs.load_trust_store(our_ca.trust))
        assert await c.ca_certificate() == chain[0]
        assert await c.fetch(got.req_id, enc="b64") == got
    # The CA's own log: two requests per enrollment after login, none answered 401.
    assert [(m, stem) for m, stem, _ in enrolled] == [
        ("POST", "/certsrv/certfnsh.asp"), ("GET", "/certsrv/certnew.cer")] * 3
    assert all(status == "200" for *_, status in enrolled)


async def test_our_ca_pending_approved_and_denied(our_ca):
    async with CertsrvClient(our_ca.url, username=USER, password=PASSWORD, trust=our_ca.trust) as c:
        await c.login()
        first = await c.enroll(csr_for("SEPPENDING00001")[1], "Approval")
        second = await c.enroll(csr_for("SEPPENDING00002")[1], "Approval")
        assert isinstance(first, Pending) and isinstance(second, Pending)
        assert isinstance(await c.fetch(first.req_id), Pending)
        our_ca.engine.approve(first.req_id)
        our_ca.engine.deny(second.req_id)
        issued = await c.check_pending(first.req_id)
        assert isinstance(issued, Issued) and pki.common_name(issued.certificate.subject) == "SEPPENDING00001"
        denied = await c.fetch(second.req_id)
        assert isinstance(denied, Denied) and p.denial_error(denied).code == "CA_DENIED"


async def test_our_ca_refusals(our_ca):
    async with CertsrvClient(our_ca.url, username=USER, password="wrong", trust=our_ca.trust) as c:
        with pytest.raises(CAAuthError):
            await c.login()
    async with CertsrvClient(our_ca.url, username=USER, password=PASSWORD, trust=our_ca.trust) as c:
        with pytest.raises(CATemplateError) as info:
            await c.check_template("CsicoRA")
        assert info.value.details["nearest"] == "CiscoRA"
        got = await c.enroll(csr_for("SEPTYPO00000001")[1], "CsicoRA")
        assert isinstance(got, Denied) and got.hresult == hr.CERTSRV_E_UNSUPPORTED_CERT_TYPE
        assert p.denial_error(got).code == "CA_TEMPLATE"
