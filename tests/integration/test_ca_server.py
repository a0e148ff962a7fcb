"""The CA over real TLS on 127.0.0.1, driven by third-party clients: the ``certsrv`` PyPI package,
``curl`` (replaying the source document's seven-request IIS sequence) and ``openssl verify``;
and every kind of bad input, which must get AD CS's error page, never a 500, while the server
keeps serving.  The CA runs in its own thread and event loop because these clients block."""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import certsrv
import pytest
import requests
from click.testing import CliRunner

from onlineca import pki
from onlineca.ca import engine as eng, users as ca_users
from onlineca.ca.web import IIS_LOG_NAME, RunningCA, start_ca
from onlineca.cli import main_group
from onlineca.config import CAPaths, DataDir, load_config
from onlineca.errors import ConfigError

ALICE, ALICE_PW = "alice", "alice-Secret-1"
BOB, BOB_PW = "bob", "bob-Secret-2"
TIMEOUT = 20

CONFIG = """
data_dir = "{data}"
log_dir = "{logs}"
[ca]
key_type = "ec"
domain = "MICHAMEN"
max_request_bytes = 16384
[[ca.templates]]
name = "CiscoRA"
display_name = "Cisco RA"
validity_days = 30
[[ca.templates]]
name = "Manual"
manager_approval = true
[[ca.templates]]
name = "BobOnly"
enroll = ["bob"]
[[ca.templates]]
name = "RSAOnly"
allowed_key_types = ["rsa"]
min_rsa_bits = 2048
"""


class CAThread:
    """The CA in a thread of its own (its own event loop), started and stopped on readiness."""

    def __init__(self, config_path: Path) -> None:
        self.config = load_config(config_path)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.ca: RunningCA | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        try:
            self.ca = loop.run_until_complete(
                start_ca(self.config, self.config.data_path, self.config.log_path, port=0))
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        loop.run_forever()
        loop.run_until_complete(self.ca.close())
        loop.close()

    def start(self) -> RunningCA:
        self.thread.start()
        assert self.ready.wait(30), "CA did not start"
        if self.error:
            raise self.error
        assert self.ca is not None
        return self.ca

    def stop(self) -> None:
        if self.loop is not None and self.ca is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@dataclass
class Lab:
    dir: Path
    config_path: Path
    ca: RunningCA
    files: CAPaths

    @property
    def root(self) -> str:
        return str(self.files.root_cert)

    @property
    def iis_log(self) -> Path:
        return self.dir / "logs" / IIS_LOG_NAME

    def url(self, page: str = "") -> str:
        return f"{self.ca.url}/{page}"

    def client(self, user: str = ALICE, password: str = ALICE_PW) -> certsrv.Certsrv:
        c = certsrv.Certsrv(self.ca.server, user, password, cafile=self.root, timeout=TIMEOUT)
        c.session.trust_env = False
        return c

    def session(self, user: str | None = ALICE, password: str = ALICE_PW, agent: str = "Mozilla/5.0 tests") -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        s.verify = self.root
        s.headers["User-Agent"] = agent
        if user:
            s.auth = (user, password)
        return s

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(main_group, ["--config", str(self.config_path), *args])
        assert result.exit_code == 0, result.output
        return result.output


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("ca")
    config_path = d / "onlineca.toml"
    config_path.write_text(CONFIG.format(data=d / "data", logs=d / "logs"))
    config = load_config(config_path)
    files = eng.init_ca(config, config.data_path)
    upath = eng.users_path(config, config.data_path)
    ca_users.add_user(upath, ALICE, ALICE_PW)
    ca_users.add_user(upath, BOB, BOB_PW)
    server = CAThread(config_path)
    ca = server.start()
    yield Lab(d, config_path, ca, files)
    server.stop()


@pytest.fixture(scope="module")
def ec_key():
    return pki.generate_key("ec", 256)


def csr_pem(key, cn: str = "SEP74A02FC0A675", sans=()) -> str:
    return pki.csr_pem(pki.build_csr(key, f"CN={cn}", sans=sans)).decode()


# --------------------------------------------------------------------------- the certsrv package

def test_get_cert_b64_and_bin(lab, ec_key):
    client = lab.client()
    pem = client.get_cert(csr_pem(ec_key, sans=["sep.example.com"]), "CiscoRA", encoding="b64")
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    cert = pki.load_certificate(pem)
    assert pki.common_name(cert.subject) == "SEP74A02FC0A675"
    assert pki.san_names(cert) == ["sep.example.com"]
    assert pki.same_public_key(cert.public_key(), ec_key.public_key())
    assert cert.issuer == lab.ca.engine.issuing.subject
    der = client.get_cert(csr_pem(ec_key), "CiscoRA", encoding="bin")
    assert der[:1] == b"\x30" and pki.load_certificate(der).issuer == cert.issuer


def test_get_ca_cert_and_chain(lab):
    client = lab.client()
    issuing = pki.load_certificate(lab.files.issuing_cert.read_bytes())
    root = pki.load_certificate(lab.files.root_cert.read_bytes())
    assert pki.load_certificate(client.get_ca_cert("b64")) == issuing
    assert pki.load_certificate(client.get_ca_cert("bin")) == issuing
    for enc in ("bin", "b64"):
        body = client.get_chain(enc)
        assert set(pki.parse_pkcs7(body)) == {issuing, root}
    assert client.get_chain("b64").startswith(b"-----BEGIN CERTIFICATE-----\r\n")


def test_check_credentials(lab):
    assert lab.client().check_credentials() is True
    assert lab.client(ALICE, "wrong").check_credentials() is False
    assert lab.client("mallory", ALICE_PW).check_credentials() is False


def test_pending_then_approved(lab, ec_key):
    client = lab.client()
    with pytest.raises(certsrv.CertificatePendingException) as caught:
        client.get_cert(csr_pem(ec_key, "pending-device"), "Manual")
    req_id = int(caught.value.req_id)
    with pytest.raises(certsrv.CouldNotRetrieveCertificateException, match="Taken Under Submission"):
        client.get_existing_cert(req_id)
    page = lab.session().get(lab.url("certckpn.asp"), timeout=TIMEOUT).text
    assert f"CheckPending2('{req_id}'" in page
    assert f"ReqID {req_id}: issued" in lab.cli("ca", "requests", "approve", str(req_id))
    cert = pki.load_certificate(client.get_existing_cert(req_id, "b64"))
    assert pki.common_name(cert.subject) == "pending-device"
    chk = lab.session().post(lab.url("certfnsh.asp"), data={"Mode": "chkpnd", "ReqID": str(req_id)}, timeout=TIMEOUT)
    assert f"certnew.cer?ReqID={req_id}&amp;Enc=b64" in chk.text


def test_pending_then_denied_by_administrator(lab, ec_key):
    client = lab.client()
    with pytest.raises(certsrv.CertificatePendingException) as caught:
        client.get_cert(csr_pem(ec_key, "to-deny"), "Manual")
    lab.cli("ca", "requests", "deny", str(caught.value.req_id))
    with pytest.raises(certsrv.CouldNotRetrieveCertificateException, match="Denied by"):
        client.get_existing_cert(caught.value.req_id)
    listed = lab.cli("ca", "requests", "list", "--disposition", "denied", "--json")
    assert f'"req_id": {caught.value.req_id}' in listed and "0x80094014" in listed


@pytest.mark.parametrize("template,hresult", [
    ("BobOnly", "0x80094012"),      # alice may not enroll for it
    ("NoSuchTemplate", "0x80094800"),
    ("RSAOnly", "0x80090008"),      # an EC key on an RSA-only template
])
def test_denied_requests_carry_the_disposition_message(lab, ec_key, template, hresult):
    with pytest.raises(certsrv.RequestDeniedException) as caught:
        lab.client().get_cert(csr_pem(ec_key), template)
    assert str(caught.value).startswith(f"Denied by Policy Module  {hresult}, ")


def test_template_list_is_per_user(lab, ec_key):
    page_alice = lab.session().get(lab.url("certrqxt.asp"), timeout=TIMEOUT).text
    page_bob = lab.session(BOB, BOB_PW).get(lab.url("certrqxt.asp"), timeout=TIMEOUT).text
    names = lambda page: re.findall(r'<Option Value="E;([^;"]+);', page)  # noqa: E731
    assert names(page_alice) == ["CiscoRA", "Manual", "RSAOnly"]
    assert names(page_bob) == ["CiscoRA", "Manual", "BobOnly", "RSAOnly"]
    assert pki.load_certificate(lab.client(BOB, BOB_PW).get_cert(csr_pem(ec_key), "BobOnly"))


# --------------------------------------------------------------------------- curl and openssl

def _curl(lab: Lab, *args: str, agent: str = "CiscoRA 1.0") -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", lab.root, "-A", agent, *args],
                          capture_output=True, timeout=30, check=True)


def test_curl_replays_the_source_document_sequence_and_the_iis_log_shows_it(lab, ec_key, tmp_path):
    auth = ("-u", f"{ALICE}:{ALICE_PW}")
    status = ("-o", "/dev/null", "-w", "%{http_code}")
    agent = "CiscoRA 1.0 replay"
    csr_file = tmp_path / "r.csr"
    csr_file.write_text(csr_pem(ec_key, "SEP-REPLAY"))
    codes = [_curl(lab, *status, lab.ca.url, agent=agent).stdout,
             _curl(lab, *status, *auth, lab.ca.url, agent=agent).stdout,
             _curl(lab, *status, *auth, lab.url("certrqxt.asp"), agent=agent).stdout,
             _curl(lab, *status, lab.ca.url, agent=agent).stdout,
             _curl(lab, *status, *auth, lab.ca.url, agent=agent).stdout]
    page = _curl(lab, *auth, "-e", lab.url("certrqxt.asp"), "--data-urlencode", "Mode=newreq",
                 "--data-urlencode", f"CertRequest@{csr_file}",
                 "--data-urlencode", "CertAttrib=CertificateTemplate:CiscoRA\r\n",
                 "--data-urlencode", "TargetStoreFlags=0", "--data-urlencode", "SaveCert=yes",
                 lab.url("certfnsh.asp"), agent=agent).stdout.decode()
    req_id = re.search(r"certnew\.cer\?ReqID=(\d+)&amp;Enc=b64", page).group(1)
    codes.append(b"200")
    got = _curl(lab, "-w", "\n%{http_code}", *auth, f"{lab.url('certnew.cer')}?ReqID={req_id}&ENC=b64", agent=agent)
    body, code = got.stdout.rsplit(b"\n", 1)
    codes.append(code)
    assert [c.decode() for c in codes] == ["401", "301", "200", "401", "301", "200", "200"]
    assert pki.common_name(pki.load_certificate(body).subject) == "SEP-REPLAY"

    lines = [ln.split(" ") for ln in lab.iis_log.read_text().splitlines() if "CiscoRA+1.0+replay" in ln]
    # the document's 15 fields, then the X-Request-ID custom field ("-": curl sent none)
    assert len(lines) == 7 and all(len(f) == 16 and f[15] == "-" for f in lines)
    port = str(lab.ca.port)
    # fields 2..: s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip UA Referer status sub win32
    user = "MICHAMEN\\alice"
    want = [
        ["GET", "/certsrv", "-", port, "-", "401", "1", "2148074254"],
        ["GET", "/certsrv", "-", port, user, "301", "0", "0"],
        ["GET", "/certsrv/certrqxt.asp", "-", port, user, "200", "0", "0"],
        ["GET", "/certsrv", "-", port, "-", "401", "1", "2148074254"],
        ["GET", "/certsrv", "-", port, user, "301", "0", "0"],
        ["POST", "/certsrv/certfnsh.asp", "-", port, user, "200", "0", "0"],
        ["GET", "/certsrv/certnew.cer", f"ReqID={req_id}&ENC=b64", port, user, "200", "0", "0"],
    ]
    assert [[f[3], f[4], f[5], f[6], f[7], f[11], f[12], f[13]] for f in lines] == want
    assert all(f[2] == "127.0.0.1" and f[8] == "127.0.0.1" and f[14].isdigit() for f in lines)
    assert [f[10] for f in lines] == ["-"] * 5 + [lab.url("certrqxt.asp"), "-"]
    assert re.match(r"\d{4}-\d\d-\d\d$", lines[0][0]) and re.match(r"\d\d:\d\d:\d\d$", lines[0][1])
    head = lab.iis_log.read_text().splitlines()[:4]
    assert head[0] == "#Software: Microsoft Internet Information Services 10.0" and head[1] == "#Version: 1.0"
    assert head[2].startswith("#Date: ") and head[3] == (
        "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) "
        "cs(Referer) sc-status sc-substatus sc-win32-status time-taken X-Request-ID")  # + the custom field


def test_what_the_ca_issues_verifies_with_openssl_against_the_p7b_chain(lab, ec_key, tmp_path):
    pem = lab.client().get_cert(csr_pem(ec_key, "openssl-check"), "CiscoRA")
    (tmp_path / "leaf.pem").write_bytes(pem)
    auth = ("-u", f"{ALICE}:{ALICE_PW}")
    p7b = _curl(lab, *auth, f"{lab.url('certnew.p7b')}?ReqID=CACert&Renewal=0&Enc=b64").stdout
    assert p7b.startswith(b"-----BEGIN CERTIFICATE-----")
    # openssl reads the b64 p7b once its markers say PKCS7.
    (tmp_path / "chain.p7b").write_bytes(p7b.replace(b"CERTIFICATE-----", b"PKCS7-----"))
    chain = subprocess.run(["openssl", "pkcs7", "-print_certs", "-in", str(tmp_path / "chain.p7b")],
                           capture_output=True, check=True, timeout=30).stdout
    (tmp_path / "chain.pem").write_bytes(chain)
    ok = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "chain.pem"), str(tmp_path / "leaf.pem")],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ": OK" in ok.stdout
    # A certificate from another CA does not verify against that chain (the check can fail).
    other = pki.generate_key("ec", 256)
    (tmp_path / "other.pem").write_bytes(pki.cert_pem(pki.build_certificate(
        subject="CN=openssl-check", public_key=other.public_key(), issuer_key=other)))
    bad = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "chain.pem"), str(tmp_path / "other.pem")],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0


def test_p7b_of_an_issued_request_holds_leaf_and_chain(lab, ec_key):
    s = lab.session()
    page = s.post(lab.url("certfnsh.asp"), timeout=TIMEOUT, data={
        "Mode": "newreq", "CertRequest": csr_pem(ec_key, "p7b-leaf"), "CertAttrib": "CertificateTemplate:CiscoRA"})
    req_id = re.search(r"certnew\.cer\?ReqID=(\d+)&", page.text).group(1)
    assert f'location="certnew.cer?ReqID={req_id}&"+getEncoding();' in page.text
    got = s.get(lab.url("certnew.p7b"), params={"reqid": req_id, "enc": "bin"}, timeout=TIMEOUT)
    assert got.headers["Content-Type"] == "application/x-pkcs7-certificates"
    # certificates is a SET OF in PKCS#7: DER fixes its order, so compare as a set.
    assert {pki.common_name(c.subject) for c in pki.parse_pkcs7(got.content)} == {
        "p7b-leaf", "onlineca Lab Issuing CA", "onlineca Lab Root CA"}


def test_non_browser_clients_get_the_same_bytes_as_text_html(lab):
    s = lab.session(agent="CiscoRA 1.0")
    got = s.get(lab.url("certnew.cer"), params={"ReqID": "CACert", "Enc": "bin"}, timeout=TIMEOUT)
    assert got.headers["Content-Type"].startswith("text/html")
    assert pki.load_certificate(got.content) == lab.ca.engine.issuing


@pytest.mark.parametrize("csr_text", [
    "-----BEGIN CERTIFICATE REQUEST-----\r\n{b64lines}\r\n-----END CERTIFICATE REQUEST-----\r\n",
    "-----BEGIN NEW CERTIFICATE REQUEST-----{b64}-----END NEW CERTIFICATE REQUEST-----",
    "{b64}",
    "{b64lines}",
])
def test_certrequest_forms_ad_cs_accepts(lab, ec_key, csr_text):
    der = pki.csr_der(pki.build_csr(ec_key, "CN=form-check"))
    b64 = base64.b64encode(der).decode()
    text = csr_text.format(b64=b64, b64lines="\r\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)))
    page = lab.session().post(lab.url("certfnsh.asp"), timeout=TIMEOUT, data={
        "Mode": "newreq", "CertRequest": text, "CertAttrib": "CertificateTemplate:ciscora\nSAN:dns=x",
        "FriendlyType": "Saved-Request Certificate", "TargetStoreFlags": "0", "SaveCert": "yes"})
    assert page.status_code == 200 and re.search(r"certnew\.cer\?ReqID=\d+&", page.text)


# --------------------------------------------------------------------------- bad input

def _bad_csrs(key) -> dict[str, str]:
    der = pki.csr_der(pki.build_csr(key, "CN=bad-input"))
    flipped = der[:-1] + bytes([der[-1] ^ 0x01])
    b64 = lambda d: base64.b64encode(d).decode()  # noqa: E731
    return {"garbage": "this is not a request!", "base64-garbage": b64(b"\x04\x03abc" * 10),
            "truncated": b64(der[: len(der) // 2]), "wrong-signature": b64(flipped)}


@pytest.mark.parametrize("case,hresult", [
    ("garbage", "0x80070057"), ("base64-garbage", "0x8009310b"), ("truncated", "0x80093102"),
    ("wrong-signature", "0x80090006"),
])
def test_bad_requests_are_denied_with_the_asn1_or_signature_code(lab, ec_key, case, hresult):
    page = lab.session().post(lab.url("certfnsh.asp"), timeout=TIMEOUT, data={
        "Mode": "newreq", "CertRequest": _bad_csrs(ec_key)[case], "CertAttrib": "CertificateTemplate:CiscoRA"})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    message = re.search(r'The disposition message is "([^"]+)', page.text).group(1)
    assert hresult in message and "Traceback" not in page.text


def test_small_rsa_key_is_refused_by_the_template_minimum(lab):
    small = pki.generate_key("rsa", 1024)
    with pytest.raises(certsrv.RequestDeniedException, match="0x80094811"):
        lab.client().get_cert(csr_pem(small), "RSAOnly")


@pytest.mark.parametrize("form,hresult", [
    ({"Mode": "newreq", "CertAttrib": "CertificateTemplate:CiscoRA"}, "0x80070057"),   # no CertRequest
    ({"CertRequest": "x", "CertAttrib": "CertificateTemplate:CiscoRA"}, "0x80070057"),  # no Mode
    ({"Mode": "bogus"}, "0x80070057"),
    ({"Mode": "chkpnd"}, "0x80092004"),
    ({"Mode": "chkpnd", "ReqID": "999999"}, "0x80092004"),
    ({"Mode": "newreq", "CertRequest": "{csr}"}, "0x80094801"),                          # no template
])
def test_missing_fields_get_the_denied_page(lab, ec_key, form, hresult):
    data = {k: v.replace("{csr}", csr_pem(ec_key)) for k, v in form.items()}
    page = lab.session().post(lab.url("certfnsh.asp"), data=data, timeout=TIMEOUT)
    assert page.status_code == 200
    assert hresult in re.search(r'The disposition message is "([^"]+)', page.text).group(1)


@pytest.mark.parametrize("page,params,hresult", [
    ("certnew.cer", {"ReqID": "CACert", "Enc": "pem"}, "0x80070057"),
    ("certnew.p7b", {"ReqID": "CACert", "Renewal": "0", "Enc": "der"}, "0x80070057"),
    ("certnew.cer", {"ReqID": "999999", "Enc": "b64"}, "0x80092004"),
    ("certnew.cer", {"ReqID": "abc", "Enc": "b64"}, "0x80070057"),
    ("certnew.cer", {"ReqID": "1 OR 1=1", "Enc": "b64"}, "0x80070057"),
    ("certnew.cer", {"Enc": "b64"}, "0x80070057"),
    ("certnew.p7b", {"ReqID": "CACert", "Renewal": "7", "Enc": "bin"}, "0x80070057"),
])
def test_bad_downloads_get_the_error_page(lab, page, params, hresult):
    got = lab.session().get(lab.url(page), params=params, timeout=TIMEOUT)
    assert got.status_code == 200 and got.headers["Content-Type"].startswith("text/html")
    assert re.search("Disposition message:[^\t]+\t\t([^\r\n]+)", got.text)
    assert hresult in got.text and "Traceback" not in got.text


def test_someone_elses_request_is_access_denied(lab, ec_key):
    pem = lab.client(BOB, BOB_PW).get_cert(csr_pem(ec_key, "bobs"), "CiscoRA")
    req_id = lab.ca.engine.list(requester=BOB)[-1].req_id
    assert pki.load_certificate(pem) == pki.load_certificate(lab.client(BOB, BOB_PW).get_existing_cert(req_id))
    with pytest.raises(certsrv.CouldNotRetrieveCertificateException):
        lab.client().get_existing_cert(req_id)
    assert "0x80070005" in lab.session().get(lab.url("certnew.cer"), params={"ReqID": req_id}, timeout=TIMEOUT).text


def test_oversize_body_is_413_and_the_server_keeps_serving(lab):
    big = "A" * 40000
    got = lab.session().post(lab.url("certfnsh.asp"), data={"Mode": "newreq", "CertRequest": big}, timeout=TIMEOUT)
    assert got.status_code == 413 and "Request Entity Too Large" in got.text
    chunked = lab.session().post(lab.url("certfnsh.asp"), data=iter([b"Mode=newreq&CertRequest=", b"A" * 40000]),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=TIMEOUT)
    assert chunked.status_code == 413
    assert "var nRenewals=0;" in lab.session().get(lab.url("certcarc.asp"), timeout=TIMEOUT).text


def test_unauthenticated_and_unknown_pages(lab):
    anon = lab.session(user=None)
    for page in ("", "certrqxt.asp", "certnew.cer?ReqID=CACert&Enc=b64"):
        got = anon.get(lab.url(page), timeout=TIMEOUT, allow_redirects=False)
        assert got.status_code == 401 and got.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert lab.session(ALICE, "wrong").get(lab.url(), timeout=TIMEOUT).status_code == 401
    bad_header = anon.get(lab.url(), headers={"Authorization": "Basic !!!notbase64"}, timeout=TIMEOUT)
    assert bad_header.status_code == 401
    assert lab.session().get(lab.url("nothere.asp"), timeout=TIMEOUT).status_code == 404
    assert lab.session().get(lab.url("certfnsh.asp"), timeout=TIMEOUT).status_code == 405
    assert "Welcome" in lab.session().get(lab.url(), timeout=TIMEOUT).text
    failed = [ln for ln in lab.iis_log.read_text().splitlines() if " 401 1 1326 " in ln]
    assert failed, "a wrong password is logged as IIS's 401 1 1326"


# --------------------------------------------------------------------------- the project's own client

async def test_the_ras_certsrv_client_against_this_ca(lab, ec_key):
    from onlineca.certsrv.client import CertsrvClient
    from onlineca.proto.results import Denied, Issued, Pending

    async with CertsrvClient(lab.ca.url, username=ALICE, password=ALICE_PW, trust=lab.root) as client:
        await client.login()
        assert [t.name for t in await client.check_template("CiscoRA")] == ["CiscoRA", "Manual", "RSAOnly"]
        issued = await client.enroll(pki.build_csr(ec_key, "CN=via-ra-client"), "CiscoRA")
        assert isinstance(issued, Issued) and pki.common_name(issued.certificate.subject) == "via-ra-client"
        chain = await client.ca_chain()
        assert chain == [lab.ca.engine.issuing, lab.ca.engine.root]
        pending = await client.enroll(pki.build_csr(ec_key, "CN=via-ra-pending"), "Manual")
        assert isinstance(pending, Pending) and pending.req_id in await client.pending_requests()
        lab.ca.engine.approve(pending.req_id, "test")
        assert isinstance(await client.check_pending(pending.req_id), Issued)
        denied = await client.enroll(pki.build_csr(ec_key, "CN=x"), "BobOnly")
        assert isinstance(denied, Denied) and denied.hresult == 0x80094012


# --------------------------------------------------------------------------- NTLM

async def test_ntlm_three_legs_on_one_connection(tmp_path, monkeypatch):
    pytest.importorskip("spnego")
    from onlineca.certsrv.client import CertsrvClient
    from onlineca.errors import CAAuthError
    from onlineca.proto.results import Issued

    monkeypatch.setenv("NTLM_USER_FILE", "")  # create_app points it at the CA's store; restored after
    config_path = tmp_path / "ntlm.toml"
    config_path.write_text(f'data_dir = "{tmp_path / "data"}"\nlog_dir = "{tmp_path / "logs"}"\n'
                           '[ca]\nkey_type = "ec"\ndomain = "LAB"\nntlm_auth = true\n')
    config = load_config(config_path)
    eng.init_ca(config, config.data_path)
    ca_users.add_user(eng.users_path(config, config.data_path), ALICE, ALICE_PW, ntlm_domain="LAB")
    server = CAThread(config_path)
    ca = server.start()
    try:
        anon = requests.get(ca.url + "/", verify=str(DataDir(Path(config.data_path)).ca.root_cert), timeout=TIMEOUT)
        assert anon.status_code == 401
        assert anon.raw.headers.getlist("WWW-Authenticate") == ["Negotiate", "NTLM", 'Basic realm="127.0.0.1"']
        for token in ("TlRMTVNTUAADAAAA", "!!!", "TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAF1YAAAADw=="[:20]):
            hostile = requests.get(ca.url + "/", headers={"Authorization": f"NTLM {token}"},
                                   verify=str(DataDir(Path(config.data_path)).ca.root_cert), timeout=TIMEOUT)
            assert hostile.status_code == 401
        trust = str(DataDir(Path(config.data_path)).ca.root_cert)
        key = pki.generate_key("ec", 256)
        async with CertsrvClient(ca.url, auth="ntlm", username=f"LAB\\{ALICE}", password=ALICE_PW, trust=trust) as c:
            await c.login()
            got = await c.enroll(pki.build_csr(key, "CN=ntlm-device"), "CiscoRA")
            assert isinstance(got, Issued)
        async with CertsrvClient(ca.url, auth="ntlm", username=f"LAB\\{ALICE}", password="wrong", trust=trust) as c:
            with pytest.raises(CAAuthError):
                await c.login()
    finally:
        server.stop()
    lines = [ln.split(" ") for ln in (tmp_path / "logs" / IIS_LOG_NAME).read_text().splitlines()
             if not ln.startswith("#")]
    legs = [(f[11], f[12], f[13], f[7]) for f in lines]
    assert ("401", "1", "590610", "-") in legs                       # the challenge leg
    assert ("200", "0", "0", "LAB\\alice") in legs                   # authenticated, as DOMAIN\user
    assert lab_row_for(ca, "ntlm-device").requester == ALICE
    assert legs[-1][:3] == ("401", "1", "1326")                      # the wrong password


def lab_row_for(ca: RunningCA, cn: str):
    return next(r for r in ca.engine.list() if r.subject == f"/CN={cn}")


@pytest.mark.parametrize("body,ctype", [
    (b"Mode=newreq&CertRequest=\xff\xfe%ZZ%&CertAttrib=CertificateTemplate:CiscoRA", "application/x-www-form-urlencoded"),
    (b"--xx\r\nContent-Disposition: form-data; name=Mode\r\n\r\nnewreq\r\n--x", "multipart/form-data; boundary=xx"),
    (b"\x00\x01\x02garbage", "application/octet-stream"),
    (b"Mode=newreq&CertRequest=" + b"%41" * 100, "multipart/form-data"),
])
def test_malformed_bodies_never_500(lab, body, ctype):
    got = lab.session().post(lab.url("certfnsh.asp"), data=body, headers={"Content-Type": ctype}, timeout=TIMEOUT)
    assert got.status_code in (200, 400, 413) and "Traceback" not in got.text
    if got.status_code == 200:
        assert 'The disposition message is "' in got.text
    assert lab.session().get(lab.url("certcarc.asp"), timeout=TIMEOUT).status_code == 200
    assert "internal error" not in (lab.dir / "logs" / "ca.log").read_text()


async def test_a_taken_port_from_the_config_is_named_in_the_error(lab):
    # No port argument: [ca] port is the one the lab's CA already holds; the message names it.
    config = load_config(lab.config_path)
    config = config.model_copy(update={"ca": config.ca.model_copy(update={"port": lab.ca.port})})
    with pytest.raises(ConfigError, match=rf"cannot listen on 127\.0\.0\.1:{lab.ca.port}: ") as caught:
        await start_ca(config, config.data_path, config.log_path, host="127.0.0.1")
    assert caught.value.hint == "Choose another --port or stop what uses it."
