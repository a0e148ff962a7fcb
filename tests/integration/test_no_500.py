"""Issue 11 item 9: no input gets a 500 from the CA or the EST server/RA.

The cases the attack found (a multipart or chunked certfnsh.asp body, a broken multipart body,
serverkeygen for an RSA size the server does not make: 16384, 1536, 512), then hypothesis over
real HTTP: random methods, paths, queries, headers and bodies against the CA's pages and the EST
endpoints, until no 500 remains.  Both servers run in one background event loop on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st

from onlineca import pki
from onlineca.ca import engine as eng, users as ca_users
from onlineca.ca.web import start_ca
from onlineca.config import Config
from onlineca.est.backend import LocalSigner
from onlineca.est.server import ESTServerSettings, start_est_server
from onlineca.infra.users import UsersFile

USER, PASSWORD = "alice", "alice-Fuzz-1"
VECTORS = Path(__file__).parent.parent / "vectors" / "pki"


@dataclass
class Servers:
    ca: str
    est: str
    root: Path
    session: requests.Session


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    d = tmp_path_factory.mktemp("no500")
    config = Config(data_dir=str(d / "data"), log_dir=str(d / "logs"), ca={"key_type": "ec"})
    files = eng.init_ca(config, config.data_path)
    ca_users.add_user(eng.users_path(config, config.data_path), USER, PASSWORD)
    loop = asyncio.new_event_loop()
    started: dict[str, object] = {}
    ready = threading.Event()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        ca = await start_ca(config, config.data_path, config.log_path, host="127.0.0.1", port=0)
        signer = LocalSigner.from_files(str(files.issuing_cert), str(files.issuing_key), str(files.root_cert))
        est = await start_est_server(signer, cert_file=files.web_cert, key_file=files.web_key,
                                     settings=ESTServerSettings(password_check=UsersFile.from_plain({USER: PASSWORD})))
        started.update(ca=ca.url, est=est.url)
        ready.set()
        await stop.wait()
        await est.close()
        await ca.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(60)
    session = requests.Session()
    session.trust_env = False
    session.verify = str(files.root_cert)
    try:
        yield Servers(str(started["ca"]), str(started["est"]), files.root_cert, session)
    finally:
        session.close()
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def _auth(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            "User-Agent": "Mozilla/5.0 fuzz"}


def _csr_pem() -> str:
    return pki.csr_pem(pki.build_csr(pki.generate_key("ec", 256), "CN=no500")).decode()


def test_certfnsh_as_multipart_chunked_or_broken_is_never_a_500(servers: Servers) -> None:
    url = servers.ca + "/certfnsh.asp"
    fields = {"Mode": "newreq", "CertRequest": _csr_pem(), "CertAttrib": "CertificateTemplate:CiscoRA\r\n"}
    s = servers.session
    r = s.post(url, files={k: (None, v) for k, v in fields.items()}, headers=_auth())  # multipart
    assert r.status_code == 200 and "certnew.cer?ReqID=" in r.text
    body = "&".join(f"{k}={quote(v)}" for k, v in fields.items()).encode()
    r = s.post(url, data=iter([body[:50], body[50:]]), headers={**_auth(),  # chunked (no Content-Length)
                                                                 "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and "certnew.cer?ReqID=" in r.text
    for ctype, raw in (("multipart/form-data; boundary=XX", b"--XX\r\nbroken"), ("multipart/form-data", b"x"),
                       ("multipart/form-data; boundary=XX", iter([b"--XX\r\n", b"Content-Disposition: x\r\n"])),
                       ("application/x-www-form-urlencoded; charset=utf-99", b"Mode=newreq"),
                       ("application/x-www-form-urlencoded", b"\xff\xfe=%ff%fe&Mode=%zz")):
        r = s.post(url, data=raw, headers={**_auth(), "Content-Type": ctype})
        assert r.status_code < 500, (ctype, raw, r.status_code)


@pytest.mark.parametrize("bits", [16384, 1536, 512])
def test_serverkeygen_for_a_key_size_the_server_does_not_make_is_400(servers: Servers, bits: int) -> None:
    if bits in (16384, 512):  # vectors: 16384 takes minutes to make, 512 cryptography will not make
        csr_pem = (VECTORS / f"rsa{bits}-csr.pem").read_bytes()
    else:
        from cryptography.hazmat.primitives.asymmetric import rsa
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        csr_pem = pki.csr_pem(pki.build_csr(key, "CN=odd-size"))
    der = pki.csr_der(pki.parse_csr(csr_pem, verify=False))
    r = servers.session.post(servers.est + "/serverkeygen", data=base64.b64encode(der),
                             headers={**_auth(), "Content-Type": "application/pkcs10"}, timeout=30)
    assert r.status_code == 400 and "serverkeygen makes RSA 2048/3072/4096" in r.text


_METHODS = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"])
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_CA_PAGES = st.sampled_from(["", "/", "/certrqxt.asp", "/certfnsh.asp", "/certnew.cer", "/certnew.p7b",
                             "/certcarc.asp", "/certckpn.asp", "/CERTNEW.CER", "/default.asp", "/x.asp", "/..%2f"])
_EST_OPS = st.sampled_from(["cacerts", "simpleenroll", "simplereenroll", "serverkeygen", "csrattrs", "fullcmc",
                            "lsc/cacerts", "a/b/simpleenroll", "%2e%2e/cacerts", "", "x" * 70 + "/cacerts"])
_CTYPES = st.sampled_from(["application/pkcs10", "application/x-www-form-urlencoded", "multipart/form-data",
                           "multipart/form-data; boundary=B", "text/plain", "application/pkcs10; charset=\xff",
                           "", "a/b; c"])
_AUTH = st.one_of(st.just(_auth()), st.just({}), st.just(_auth("nobody", "x")),
                  _TEXT.map(lambda t: {"Authorization": "Basic " + t.encode("utf-8", "replace").hex()}),
                  st.binary(max_size=40).map(lambda b: {"Authorization": "Negotiate " + base64.b64encode(b).decode()}))
_BODY = st.one_of(st.binary(max_size=600), _TEXT.map(str.encode),
                  st.dictionaries(st.sampled_from(["Mode", "CertRequest", "CertAttrib", "ReqID", "TargetStoreFlags"]),
                                  _TEXT, max_size=4).map(lambda d: "&".join(f"{k}={quote(v)}" for k, v in d.items())
                                                         .encode()),
                  st.just(b"Mode=chkpnd&ReqID=99999999999999999999"), st.just(b"Mode=newreq&CertRequest=MII"))
_QUERY = st.dictionaries(st.sampled_from(["ReqID", "Enc", "Renewal", "Mode", "reqid", "ENC"]),
                         st.one_of(_TEXT, st.sampled_from(["CACert", "b64", "bin", "0", "-1", "1" * 30])),
                         max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(method=_METHODS, page=_CA_PAGES, query=_QUERY, auth=_AUTH, ctype=_CTYPES, body=_BODY)
def test_fuzzed_ca_pages_never_answer_500(servers: Servers, method: str, page: str, query: dict[str, str],
                                          auth: dict[str, str], ctype: str, body: bytes) -> None:
    headers = {**auth, **({"Content-Type": ctype} if ctype else {})}
    r = servers.session.request(method, servers.ca + page, params=query, headers=headers,
                                data=body if method not in ("GET", "HEAD") else None, timeout=30,
                                allow_redirects=False)
    assert r.status_code < 500 or r.status_code == 503, (method, page, query, r.status_code, r.text[:300])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(method=_METHODS, op=_EST_OPS, auth=_AUTH, ctype=_CTYPES,
       body=st.one_of(_BODY, st.binary(max_size=300).map(base64.b64encode),
                      st.builds(lambda _: base64.b64encode(pki.csr_der(pki.build_csr(pki.generate_key("ec", 256),
                                                                                     "CN=fuzz")))[:-4], st.none())))
def test_fuzzed_est_endpoints_never_answer_500(servers: Servers, method: str, op: str, auth: dict[str, str],
                                               ctype: str, body: bytes) -> None:
    headers = {**auth, **({"Content-Type": ctype} if ctype else {})}
    r = servers.session.request(method, f"{servers.est}/{op}", headers=headers,
                                data=body if method not in ("GET", "HEAD") else None, timeout=30)
    assert r.status_code < 500 or r.status_code in (501, 503), (method, op, r.status_code, r.text[:300])
