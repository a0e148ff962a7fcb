"""Our CA revokes: ``ca revoke`` and the revoke endpoint store the revocation and publish a CRL at
once, at the AD CS path the certificates' CDP names; the real ``openssl`` binary then refuses the
revoked certificate (``verify -crl_check``, ``-crl_check_all``, with delta CRLs ``-use_deltas``)
and accepts a live one, and ``openssl ocsp`` hears "revoked" from /ocsp, signed by the CA or by a
delegated responder.  /metrics answers only the configured addresses; the plain HTTP port
publishes and nothing else.  The CA runs in a thread of its own (the clients here block)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from tests.conftest import free_port
from tests.integration.test_ca_server import CAThread

from onlineca import pki
from onlineca.ca import engine as eng, users as ca_users
from onlineca.cli import main_group
from onlineca.config import CAPaths, load_config
from onlineca.pki import revocation as rev

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")

ALICE, ALICE_PW = "alice", "alice-Secret-1"
BOB, BOB_PW = "bob", "bob-Secret-2"

CONFIG = """
data_dir = "{data}"
log_dir = "{logs}"
[ca]
key_type = "ec"
http_port = {http_port}
revokers = ["alice"]
delta_crl_hours = {delta}
ocsp_signer = "{signer}"
metrics_allow = {allow}
"""


@dataclass
class Lab:
    dir: Path
    config_path: Path
    files: CAPaths
    server: CAThread
    http_port: int

    @property
    def ca(self):  # type: ignore[no-untyped-def]
        assert self.server.ca is not None
        return self.server.ca

    def issue(self, cn: str, user: str = ALICE) -> tuple[Path, str]:
        """A certificate issued to ``user`` (PEM file) and its serial."""
        csr = pki.csr_pem(pki.build_csr(pki.generate_key("ec", 256), f"CN={cn}")).decode()
        out = self.ca.engine.submit(user, csr, "CertificateTemplate:CiscoRA")
        assert out.disposition == eng.ISSUED, out
        path = self.dir / f"{cn}.pem"
        path.write_bytes(pki.der_to_pem(out.cert_der))
        return path, format(out.certificate.serial_number, "x")

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(main_group, ["--config", str(self.config_path), *args])
        assert result.exit_code == 0, result.output
        return result.output

    def get(self, url: str) -> bytes:
        r = requests.get(url, timeout=20)
        assert r.status_code == 200, (url, r.status_code, r.text[:200])
        return r.content

    def session(self, user: str, password: str) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        s.verify = str(self.files.root_cert)
        s.auth = (user, password)
        return s


def _make_lab(d: Path, *, delta: float = 0.0, signer: str = "ca", allow: str = '["127.0.0.1/32"]') -> Lab:
    http_port = free_port()
    config_path = d / "onlineca.toml"
    config_path.write_text(CONFIG.format(data=d / "data", logs=d / "logs", http_port=http_port, delta=delta,
                                         signer=signer, allow=allow))
    config = load_config(config_path)
    files = eng.init_ca(config, config.data_path)
    upath = eng.users_path(config, config.data_path)
    ca_users.add_user(upath, ALICE, ALICE_PW)
    ca_users.add_user(upath, BOB, BOB_PW)
    server = CAThread(config_path)
    server.start()
    return Lab(d, config_path, files, server, http_port)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    lab = _make_lab(tmp_path_factory.mktemp("revoke"))
    yield lab
    lab.server.stop()


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def test_a_revoked_lsc_is_refused_by_openssl_crl_check_and_a_live_one_accepted(lab):
    revoked, revoked_serial = lab.issue("SEP000000000001")
    live, _ = lab.issue("SEP000000000002")
    cert = pki.load_certificate(revoked.read_bytes())
    # CDP and AIA point at the CA's own plain HTTP port, at AD CS's paths.
    [cdp] = rev.distribution_points(cert)
    aia = rev.access_urls(cert)
    base = f"http://localhost:{lab.http_port}/CertEnroll/"
    assert cdp == base + "onlineca%20Lab%20Issuing%20CA.crl"
    assert aia["ca_issuers"] == [base + "onlineca%20Lab%20Issuing%20CA.crt"]
    assert aia["ocsp"] == [f"http://localhost:{lab.http_port}/ocsp"]

    out = lab.cli("ca", "revoke", revoked_serial, "--reason", "keycompromise")
    assert f"serial {revoked_serial}" in out and "keyCompromise" in out
    # What the CDP and AIA name, fetched as a client would (plain HTTP, no credentials).
    crl_der = lab.get(cdp.replace("localhost", "127.0.0.1"))
    assert lab.get(aia["ca_issuers"][0].replace("localhost", "127.0.0.1")) == pki.cert_der(lab.ca.engine.issuing)
    crl = rev.load_crl(crl_der)
    entry = crl.get_revoked_certificate_by_serial_number(int(revoked_serial, 16))
    assert entry is not None and rev.revoked_reason(entry) == "keyCompromise"
    assert crl.is_signature_valid(lab.ca.engine.issuing.public_key())
    crl_pem = lab.dir / "issuing.crl.pem"
    crl_pem.write_bytes(pki.pem_armor(crl_der, "X509 CRL"))
    root_crl = lab.dir / "root.crl.pem"
    root_crl.write_bytes(pki.pem_armor(lab.get(
        f"http://127.0.0.1:{lab.http_port}/CertEnroll/onlineca%20Lab%20Root%20CA.crl"), "X509 CRL"))
    chain = str(lab.files.chain)

    refused = openssl("verify", "-crl_check", "-CAfile", chain, "-CRLfile", str(crl_pem), str(revoked))
    print("$ openssl verify -crl_check -CAfile chain.pem -CRLfile issuing.crl.pem revoked.pem\n"
          + refused.stdout + refused.stderr)
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
    accepted = openssl("verify", "-crl_check", "-CAfile", chain, "-CRLfile", str(crl_pem), str(live))
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    for path, ok in ((revoked, False), (live, True)):
        r = openssl("verify", "-crl_check_all", "-CAfile", chain, "-CRLfile", str(crl_pem), "-CRLfile",
                    str(root_crl), str(path))
        assert (r.returncode == 0) is ok, r.stdout + r.stderr
    # Without the root's CRL, -crl_check_all cannot vouch for the issuing CA: the ARL is needed.
    r = openssl("verify", "-crl_check_all", "-CAfile", chain, "-CRLfile", str(crl_pem), str(live))
    assert r.returncode != 0

    # Revoking again changes nothing and says so.
    again = lab.cli("ca", "revoke", revoked_serial, "--reason", "superseded")
    assert "already revoked" in again and "keyCompromise" in again
    listed = lab.cli("ca", "revocations")
    assert revoked_serial in listed


def test_ocsp_answers_openssl_revoked_and_good_over_post_and_get(lab, tmp_path):
    revoked, serial = lab.issue("SEP000000000003")
    live, _ = lab.issue("SEP000000000004")
    lab.cli("ca", "revoke", serial, "--reason", "superseded")
    issuing = tmp_path / "issuing.pem"
    issuing.write_bytes(pki.cert_pem(lab.ca.engine.issuing))
    url = f"http://127.0.0.1:{lab.http_port}/ocsp"
    for path, word in ((revoked, "revoked"), (live, "good")):
        r = openssl("ocsp", "-issuer", str(issuing), "-cert", str(path), "-url", url, "-CAfile", str(lab.files.chain),
                    "-resp_text")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{path}: {word}" in r.stdout and "Response verify OK" in r.stdout + r.stderr
    # GET: the base64 request in the path (RFC 6960 A.1), with the nonce echoed.
    req_file = tmp_path / "req.der"
    r = openssl("ocsp", "-issuer", str(issuing), "-cert", str(revoked), "-reqout", str(req_file))
    assert r.returncode == 0, r.stderr
    encoded = requests.utils.quote(base64.b64encode(req_file.read_bytes()).decode(), safe="")
    body = lab.get(f"{url}/{encoded}")
    resp = ocsp.load_der_ocsp_response(body)
    assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.certificate_status == ocsp.OCSPCertStatus.REVOKED and resp.serial_number == int(serial, 16)
    # Garbage and another CA's certificates are answered, never with a 500.
    bad = requests.post(url, data=b"\x30\x03\x02\x01\x00", headers={"Content-Type": "application/ocsp-request"},
                        timeout=20)
    assert bad.status_code == 200 and ocsp.load_der_ocsp_response(bad.content).response_status == \
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    other_key = pki.generate_key("ec", 256)
    other = pki.build_certificate(subject="CN=Other CA", public_key=other_key.public_key(), issuer_key=other_key,
                                  is_ca=True)
    foreign = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        *rev.issuer_hashes(other, hashes.SHA1()), 5, hashes.SHA1()).build()
    answer = requests.post(url, data=foreign.public_bytes(serialization.Encoding.DER), timeout=20)
    assert ocsp.load_der_ocsp_response(answer.content).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_the_revoke_endpoint_lets_a_revoker_revoke_only_its_own_certificates(lab):
    _own, own_serial = lab.issue("SEP000000000005", user=ALICE)
    _bobs, bob_serial = lab.issue("SEP000000000006", user=BOB)
    url = f"{lab.ca.url}/onlineca/revoke"
    alice, bob = lab.session(ALICE, ALICE_PW), lab.session(BOB, BOB_PW)
    described = alice.get(url, timeout=20).json()
    assert described["extension"] == "onlineca-revoke" and described["may_revoke"] is True
    assert "cessationOfOperation" in described["reasons"]
    assert requests.post(url, data={"serial": own_serial}, verify=str(lab.files.root_cert), timeout=20).status_code == 401
    done = alice.post(url, data={"serial": own_serial, "reason": "cessationOfOperation"}, timeout=20)
    assert done.status_code == 200, done.text
    assert done.json()["reason"] == "cessationOfOperation" and done.json()["already"] is False
    assert alice.post(url, json={"serial": own_serial}, timeout=20).json()["already"] is True
    assert alice.post(url, data={"serial": bob_serial}, timeout=20).status_code == 403  # bob requested it
    assert bob.post(url, data={"serial": bob_serial}, timeout=20).status_code == 403   # bob is no revoker
    assert alice.post(url, data={"serial": "7fffffff"}, timeout=20).status_code == 404
    assert alice.post(url, data={"serial": own_serial, "reason": "certificateHold"}, timeout=20).status_code == 400
    assert alice.post(url, data={"serial": "zz"}, timeout=20).status_code == 400
    assert alice.post(url, data={}, timeout=20).status_code == 400
    status, record = lab.ca.engine.revocation.store.status(own_serial)
    assert status == "revoked" and record is not None and record.revoked_by == "ONLINECA\\alice"


def test_metrics_answer_the_allowed_addresses_and_the_http_port_publishes_only(lab):
    lab.issue("SEP000000000009")  # stands alone: an issued certificate and a published CRL to count
    lab.cli("ca", "crl", "--publish")
    lab.get(f"http://127.0.0.1:{lab.http_port}/CertEnroll/onlineca%20Lab%20Issuing%20CA.crt")  # a page timed
    text = requests.get(f"http://127.0.0.1:{lab.http_port}/metrics", timeout=20).text
    assert 'onlineca_certificate_expiry_seconds{role="ca_issuing"' in text
    assert "onlineca_ca_crl_next_update_seconds{kind=\"base\"}" in text
    assert "onlineca_ca_requests_total{disposition=\"issued\",template=\"CiscoRA\"}" in text
    assert "onlineca_ca_http_request_duration_seconds_bucket" in text
    assert requests.get(f"http://127.0.0.1:{lab.http_port}/certsrv/", timeout=20).status_code == 403
    assert requests.get(f"http://127.0.0.1:{lab.http_port}/CertEnroll/nothing.crl", timeout=20).status_code == 404


def test_metrics_refuse_an_address_not_listed(tmp_path):
    lab = _make_lab(tmp_path, allow='["10.0.0.0/8"]')
    try:
        assert requests.get(f"http://127.0.0.1:{lab.http_port}/metrics", timeout=20).status_code == 403
    finally:
        lab.server.stop()


def test_delta_crls_carry_new_revocations_and_a_delegated_responder_signs_ocsp(tmp_path):
    lab = _make_lab(tmp_path, delta=24, signer="delegated")
    try:
        revoked, serial = lab.issue("SEP000000000007")
        base_url = f"http://127.0.0.1:{lab.http_port}/CertEnroll/onlineca%20Lab%20Issuing%20CA"
        base_before = rev.load_crl(lab.get(base_url + ".crl"))
        lab.cli("ca", "revoke", serial, "--reason", "keyCompromise")
        base = rev.load_crl(lab.get(base_url + ".crl"))
        delta = rev.load_crl(lab.get(base_url + "+.crl"))
        assert rev.crl_number(base) == rev.crl_number(base_before)  # delta mode: the base waits for its refresh
        assert base.get_revoked_certificate_by_serial_number(int(serial, 16)) is None
        assert delta.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
        assert delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value.crl_number == \
            rev.crl_number(base)
        base_pem, delta_pem = tmp_path / "base.pem", tmp_path / "delta.pem"
        base_pem.write_bytes(pki.pem_armor(rev.crl_der(base), "X509 CRL"))
        delta_pem.write_bytes(pki.pem_armor(rev.crl_der(delta), "X509 CRL"))
        chain = str(lab.files.chain)
        r = openssl("verify", "-crl_check", "-use_deltas", "-CAfile", chain, "-CRLfile", str(base_pem), "-CRLfile",
                    str(delta_pem), str(revoked))
        assert r.returncode != 0 and "certificate revoked" in r.stdout + r.stderr
        issuing = tmp_path / "issuing.pem"
        issuing.write_bytes(pki.cert_pem(lab.ca.engine.issuing))
        r = openssl("ocsp", "-issuer", str(issuing), "-cert", str(revoked), "-url",
                    f"http://127.0.0.1:{lab.http_port}/ocsp", "-CAfile", chain, "-resp_text")
        assert r.returncode == 0 and f"{revoked}: revoked" in r.stdout, r.stdout + r.stderr
        assert "Response verify OK" in r.stdout + r.stderr
        assert "OCSP Responder" in r.stdout  # the delegated responder's certificate signed it
        assert lab.files.ocsp_cert.exists()
    finally:
        lab.server.stop()


def test_the_console_service_revokes_where_the_ca_is_ours_and_audits_it(lab):
    from onlineca.errors import PermissionDenied
    from onlineca.service import ca as service
    from onlineca.service.core import Actor, Services

    _path, serial = lab.issue("SEP000000000008")
    svc = Services(load_config(lab.config_path)).migrate()
    try:
        admin, operator = Actor("root", "admin", "api"), Actor("op", "operator", "api")
        req_id = next(r["req_id"] for r in service.list_requests(svc, admin, limit=1000)[1] if r["serial"] == serial)
        assert service.ca_is_ours(svc)
        with pytest.raises(PermissionDenied):
            service.revoke(svc, operator, req_id, "superseded")
        got = service.revoke(svc, admin, req_id, "superseded")
        assert got["outcome"] == "revoked" and got["revoked"] == "superseded" and got["revoked_at"]
        assert service.revoke(svc, admin, req_id, "keyCompromise")["outcome"] == "already revoked"
        listed = {r["serial"]: r["revoked"] for r in service.list_requests(svc, admin, limit=1000)[1]}
        assert listed[serial] == "superseded"
        status, _record = lab.ca.engine.revocation.store.status(serial)
        assert status == "revoked"
    finally:
        svc.close()
