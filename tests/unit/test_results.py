"""One Issued | Pending | Denied for every hop: what our CA's pages say, the certsrv page parsers
read back as the same values the EST server answers from (200 with the CA's very DER, 202 with
Retry-After, the denial's status); an issued certificate is parsed at most once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from onlineca import pki
from onlineca.est import backend
from onlineca.proto import est as m, results
from onlineca.proto.certsrv import client, hresults as hr, server as pages
from onlineca.proto.results import BasicCredentials, Denied, EnrollRequest, Issued, Pending

CA = "Lab Issuing CA"


@pytest.fixture(scope="module")
def cert():
    key = pki.generate_key("ec", 256)
    return pki.build_certificate(subject="CN=SEP74A02FC0A675", public_key=key.public_key(), issuer_key=key)


async def test_the_certsrv_side_and_the_est_side_share_the_classes(cert):
    for name in ("Issued", "Pending", "Denied"):
        assert getattr(client, name) is getattr(results, name)
    issuer_key = pki.generate_key("ec", 256)
    issuer = pki.build_certificate(subject="CN=CA", public_key=issuer_key.public_key(), issuer_key=issuer_key,
                                   is_ca=True)
    signer = backend.LocalSigner(issuer_key, issuer)
    assert isinstance(signer, backend.CABackend)
    got = await signer.enroll(EnrollRequest(csr=pki.build_csr(pki.generate_key("ec", 256), "CN=x")))
    assert isinstance(got, Issued) and "certificate" in got.__dict__  # signed here: no parse needed
    assert got.chain_der == (pki.cert_der(issuer),)


def test_a_ca_page_read_back_is_what_the_est_server_answers(cert):
    der = pki.cert_der(cert)
    issued = client.parse_certnew_cer("application/pkix-cert", der, 10)
    assert issued == Issued(der, req_id=10) and issued.cert_der is der  # the bytes as downloaded
    reply = m.certs_only_reply([issued.cert_der])
    assert reply.status == 200 and m.parse_certs_only(reply.body, dict(reply.headers)["Content-Type"]) == [cert]
    assert reply.body == m.certs_only_reply([cert]).body  # the same PKCS#7 as from the object

    pending = client.parse_certfnsh(pages.pending(CA, 42))
    assert pending == Pending(42, hr.TAKEN_UNDER_SUBMISSION) and pending.disposition == results.PENDING
    assert pending.retry_after is None  # the EST server answers its own pending_retry_after then

    message = hr.policy_denial(hr.CERTSRV_E_TEMPLATE_DENIED, "The permissions on the template deny it.")
    denied = client.parse_certfnsh(pages.denied(CA, 43, message))
    assert isinstance(denied, Denied) and (denied.req_id, denied.hresult) == (43, hr.CERTSRV_E_TEMPLATE_DENIED)
    assert denied.http_status == 403 and denied.disposition == results.DENIED
    assert client.denial_error(denied).code == "CA_TEMPLATE"


def test_issued_parses_once_and_keeps_the_object(cert):
    made = Issued.of(cert, (b"\x30\x00",), req_id=7)
    assert made.certificate is cert and made.cert_der == pki.cert_der(cert)
    chained = made.with_chain((b"\x30\x01",))
    assert chained.certificate is cert and chained.chain_der == (b"\x30\x01",) and chained.req_id == 7
    read = Issued(pki.cert_der(cert))
    assert read.certificate is read.certificate  # parsed on first use, then kept


def test_denied_keeps_the_ra_positional_form_and_says_failed():
    assert Denied("the CA refused the request", 401) == Denied(message="the CA refused the request", http_status=401)
    assert Denied("Error Parsing Request", hresult=hr.CRYPT_E_ASN1_BADTAG, failed=True).disposition == results.FAILED


def test_enroll_request_carries_the_csr_der_and_hides_the_password():
    key = pki.generate_key("ec", 256)
    csr = pki.build_csr(key, "CN=x")
    req = EnrollRequest(csr=csr, credentials=BasicCredentials("capf", "s3cret"))
    assert req.csr_der == pki.csr_der(csr)
    assert "s3cret" not in repr(req) and str(req.credentials) == "capf:***"
    assert EnrollRequest(csr=csr, csr_der=b"as received").csr_der == b"as received"


def test_the_pure_modules_load_no_io_library():
    code = ("import sys, onlineca.proto.results, onlineca.proto.certsrv.hresults, onlineca.proto.certsrv.client, "
            "onlineca.proto.certsrv.server, onlineca.policy.ca\n"
            "bad = {'asyncio', 'aiohttp', 'sqlalchemy', 'click', 'rich', 'pydantic', 'onlineca.config'} & set(sys.modules)\n"
            "print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class _HeldThenIssued:
    """A CA that holds each request pending (ReqID 42) until it is asked again about it."""

    def __init__(self, cert) -> None:  # type: ignore[no-untyped-def]
        self.cert, self.calls = cert, []  # type: ignore[var-annotated]

    async def enroll(self, request):  # type: ignore[no-untyped-def]
        self.calls.append("enroll")
        return Pending(42, hr.TAKEN_UNDER_SUBMISSION)

    async def poll(self, req_id, request):  # type: ignore[no-untyped-def]
        self.calls.append(f"poll {req_id}")
        return Issued.of(self.cert, req_id=req_id)


async def test_the_same_csr_sent_again_polls_its_pending_request(cert):
    ca, pending = _HeldThenIssued(cert), backend.PendingRequests(limit=1)
    csr = pki.build_csr(pki.generate_key("ec", 256), "CN=x")
    assert isinstance(await pending.ask(ca, EnrollRequest(csr=csr)), Pending) and list(pending.values()) == [42]
    assert isinstance(await pending.ask(ca, EnrollRequest(csr=csr)), Issued) and not pending
    assert ca.calls == ["enroll", "poll 42"]
    for cn in ("CN=a", "CN=b"):  # beyond the limit, the oldest is forgotten
        await pending.ask(ca, EnrollRequest(csr=pki.build_csr(pki.generate_key("ec", 256), cn)))
    assert len(pending) == 1
