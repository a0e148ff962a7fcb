"""The whole chain on 127.0.0.1: our EST client -> RA -> our CA (certsrv connector) and the local
connector; the start-up sequence as the source document logs it; at most two CA requests per
enrollment (read on the CA's IIS log); pending then approved, pending then denied, denied at once;
passthrough credentials (a wrong password as the document logs it); health, readiness, metrics."""

from __future__ import annotations

import re

import pytest
from tests.integration.ra_lab import (  # noqa: F401  (fixtures)
    PASSWORD,
    USER,
    ca_lab,
    error_log,
    est_csr,
    get,
    iis_requests,
    local_ra,
    ra_running,
    raw_enroll,
    run_ca,
)

from onlineca import pki
from onlineca.errors import ESTCodedError
from onlineca.est.client import ESTClient
from onlineca.infra import files as fs
from onlineca.proto import est as m


@pytest.fixture
async def ca(ca_lab, tmp_path):
    running = await run_ca(ca_lab, tmp_path / "ca-logs")
    yield running
    await running.close()


def client(ca_lab, r, **kw) -> ESTClient:
    kw.setdefault("user", USER)
    kw.setdefault("password", PASSWORD)
    return ESTClient(r.base, cafile=ca_lab.root_pem, **kw)


async def test_startup_sequence_and_enrollment_through_our_ca(ca_lab, ca, tmp_path):
    logs = tmp_path / "ra-logs"
    async with ra_running(ca_lab, logs, ca.url) as r:
        text = error_log(logs)
        root = pki.name_to_slash(ca.engine.root.subject)
        # The trust store, once in the NGINX form and once in libEST's form.
        assert re.search(rf"\[warn\] \d+#0: ossl_init_cert_store: Adding cert to store \({re.escape(root)}\)", text)
        assert re.search(rf"\*\*\*EST \[INFO\]\[ossl_init_cert_store_from_raw:\d+\]--> Adding cert to store "
                         rf"\({re.escape(root)}\)", text)
        assert re.search(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[info\] \d+#0: login_to_certsrv_ca: Secure connection to "
                         rf"MS CertServ completed successfully using the following URL {re.escape(ca.url)}$", text, re.M)
        assert (f"retrieve_cacerts: Secure connection to MS CertServ completed successfully using the following URL "
                f"{ca.url}/certnew.p7b?ReqID=CACert&Renewal=0&Enc=bin") in text
        assert "ra_certsrv_ca_plugin_postconf: CA Cert chain retrieved from CA, will be passed to EST" in text
        assert "check_certsrv_template: certificate template 'CiscoRA' is offered" in text
        status, _h, body = await get(r.base + "/readyz", ca_lab.root_pem)
        assert status == 200 and b'"ready": true' in body

        async with client(ca_lab, r) as est:
            chain = await est.cacerts()
            assert chain[0] == ca.engine.issuing and ca.engine.root in chain
            key, csr = est_csr()
            got = await est.simpleenroll(csr)
        assert got.certificate.issuer == ca.engine.issuing.subject
        assert pki.same_public_key(got.certificate.public_key(), key)
        assert ca.engine.list(disposition=None)[-1].requester.endswith(USER)
        access = (logs / "access.log").read_text()
        assert '"POST /.well-known/est/simpleenroll HTTP/1.1" 200' in access and f" - {USER} [" in access


async def test_the_cas_der_reaches_the_est_client_unchanged(ca_lab, ca, tmp_path):
    async with ra_running(ca_lab, tmp_path / "ra-logs", ca.url) as r, client(ca_lab, r) as est:
        got = await est.simpleenroll(est_csr()[1])
    stored = ca.engine.list(disposition=None)[-1].cert_der
    assert stored and stored in m.decode_base64_body(got.pkcs7)  # the CA's bytes, in the RA's PKCS#7
    assert pki.cert_der(got.certificate) == stored


async def test_at_most_two_ca_requests_per_enrollment(ca_lab, ca, tmp_path):
    """Counted on the CA's IIS log: after start-up, each enrollment is one POST and one GET."""
    ca_logs = tmp_path / "ca-logs"
    users = tmp_path / "est-users"
    from onlineca.infra.users import hash_password
    users.write_text(f"capf:{hash_password('capf-pw', n=2 ** 10)}\n")
    async with ra_running(ca_lab, tmp_path / "ra-logs", ca.url, ra={"client_auth": "users"},
                     est={"users_file": str(users)}) as r:
        before = len(iis_requests(ca_logs))
        async with client(ca_lab, r, user="capf", password="capf-pw") as est:
            for i in range(3):
                await est.simpleenroll(est_csr(f"CN=SEP00000000000{i}")[1])
        lines = iis_requests(ca_logs)[before:]
        assert len(lines) == 6, lines
        assert [ln.split()[3:5] for ln in lines[:2]] == [["POST", "/certsrv/certfnsh.asp"], ["GET", "/certsrv/certnew.cer"]]


async def test_passthrough_checks_credentials_at_the_ca_once(ca_lab, ca, tmp_path):
    ca_logs = tmp_path / "ca-logs"
    # client_auth = passthrough (the default)
    async with ra_running(ca_lab, tmp_path / "ra-logs", ca.url) as r:
        before = len(iis_requests(ca_logs))
        async with client(ca_lab, r, user="capf2", password="other-Passw0rd") as est:
            for i in range(2):
                await est.simpleenroll(est_csr(f"CN=SEP10000000000{i}")[1])
        lines = iis_requests(ca_logs)[before:]
        # One login with the client's credentials (then cached), two requests per enrollment.
        assert len(lines) == 5, lines
        assert all(" capf2 " in ln or "\\capf2 " in ln for ln in lines if " 200 " in ln)


async def test_passthrough_concurrent_first_requests_share_one_client(ca_lab, ca, tmp_path):
    import asyncio
    async with ra_running(ca_lab, tmp_path / "ra-logs", ca.url) as r:
        answers = await asyncio.gather(*(raw_enroll(r, est_csr(f"CN=SEP2000000000{i}")[1], cafile=ca_lab.root_pem)
                                         for i in range(6)))
        assert [a[0] for a in answers] == [200] * 6
        assert len(r.state.connector._clients) == 1


async def test_passthrough_wrong_password_is_401_as_the_document_logs_it(ca_lab, ca, tmp_path):
    logs = tmp_path / "ra-logs"
    async with ra_running(ca_lab, logs, ca.url) as r:
        status, headers, _ = await raw_enroll(r, est_csr()[1], password="wrong", cafile=ca_lab.root_pem)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        text = error_log(logs)
        assert "ra_certsrv_auth_curl_data_cb: the CA refused the EST client's credentials for user ciscora" in text
        assert re.search(r"\*\*\*EST \[WARNING\]\[est_http_authenticate:\d+\]--> HTTP authentication failed. "
                         r"Auth type=1", text)
        # (NGINX's request context, *N and ", client: ...", is on lines about a request)
        assert re.search(r"\[error\] \d+#0: \*\d+ est_server_handle_simple_enroll: Enrollment failed with rc=22 "
                         r"\(EST_ERR_AUTH_FAIL\), client: .* -- fix: ", text)
        assert "[Error 401: Unauthorized]" in text
        assert '"POST /.well-known/est/simpleenroll HTTP/1.1" 401' in (logs / "access.log").read_text()
        # The right password still works (the refusal was not cached as a success, nor vice versa).
        status, _h, _b = await raw_enroll(r, est_csr()[1], cafile=ca_lab.root_pem)
        assert status == 200
        assert "wrong" not in text and PASSWORD not in error_log(logs)


async def test_pending_then_approved(ca_lab, ca, tmp_path):
    async with ra_running(ca_lab, tmp_path / "ra-logs", ca.url, ra={"template": "Approval"}) as r:
        key, csr = est_csr("CN=SEP-PENDING-1")
        status, headers, _ = await raw_enroll(r, csr, cafile=ca_lab.root_pem)
        assert status == 202 and headers["Retry-After"] == "1"
        (req_id,) = r.state.pending.req_ids()
        # Asked again before approval: still pending, same request at the CA (no new submission).
        status, headers, _ = await raw_enroll(r, csr, cafile=ca_lab.root_pem)
        assert status == 202
        assert [row.req_id for row in ca.engine.list(disposition="pending")] == [req_id]
        ca.engine.approve(req_id)
        status, _h, body = await raw_enroll(r, csr, cafile=ca_lab.root_pem)
        assert status == 200
        (cert,) = m.parse_certs_only(body, "application/pkcs7-mime")
        assert pki.same_public_key(cert.public_key(), key) and not r.state.pending.req_ids()


async def test_pending_then_denied_carries_the_disposition_message(ca_lab, ca, tmp_path):
    logs = tmp_path / "ra-logs"
    async with ra_running(ca_lab, logs, ca.url, ra={"template": "Approval"}) as r:
        _key, csr = est_csr("CN=SEP-PENDING-2")
        async with client(ca_lab, r, max_retries=0) as est:
            with pytest.raises(ESTCodedError) as exc:
                await est.simpleenroll(csr)
            assert exc.value.http_status == 202 and exc.value.retry_after == 1
            (req_id,) = r.state.pending.req_ids()
            ca.engine.deny(req_id)
            with pytest.raises(ESTCodedError) as exc:
                await est.simpleenroll(csr)
        assert exc.value.http_status == 403 and "Denied by administrator" in str(exc.value)
        assert f"the CA denied request {req_id}: Denied by administrator" in error_log(logs)


async def test_denied_at_once_is_403_with_the_cas_message(ca_lab, ca, tmp_path):
    async with ra_running(ca_lab, tmp_path / "ra-logs", ca.url, ra={"template": "RSAOnly"}) as r:
        status, _h, body = await raw_enroll(r, est_csr("CN=SEP-EC-KEY")[1], cafile=ca_lab.root_pem)
        assert status == 403 and b"the CA denied request" in body
        row = ca.engine.list(disposition="denied")[-1]
        assert "does not allow ec keys" in row.disposition_message
        assert f"the CA denied request {row.req_id}: Denied by Policy Module 0x80090008, The template RSAOnly does " \
               "not allow ec keys".encode() in body


async def test_local_connector(ca_lab, tmp_path):
    files = ca_lab.files
    async with ra_running(ca_lab, tmp_path / "ra-logs", "https://127.0.0.1:1/certsrv", **local_ra(ca_lab, tmp_path)) as r:
        async with client(ca_lab, r) as est:
            assert (await est.cacerts())[0].subject == pki.load_certificate(files.issuing_cert.read_bytes()).subject
            key, csr = est_csr("CN=SEP-LOCAL")
            got = await est.simpleenroll(csr)
        assert pki.same_public_key(got.certificate.public_key(), key)
        assert "RA ready after 1 attempt(s): local connector" in error_log(tmp_path / "ra-logs")


async def test_client_certificate_auth(ca_lab, ca, tmp_path):
    """client_auth = certificate: a TLS client certificate from a trusted CA, no password; CAPF's
    certificate holds the RA-agent EKU (id-kp-cmcRA), so it may enroll its phones' names."""
    issuing = ca.engine.issuing
    key = pki.generate_key("ec", 256)
    cert = pki.build_certificate(subject="CN=capf.lab", public_key=key.public_key(), issuer_key=ca.engine.issuing_key,
                                 issuer_cert=issuing, extended_key_usage=["client_auth", "1.3.6.1.5.5.7.3.28"])
    (tmp_path / "capf.pem").write_bytes(pki.certs_pem([cert, issuing]))
    fs.write_private_key(tmp_path / "capf.key", key)
    logs = tmp_path / "ra-logs"
    async with ra_running(ca_lab, logs, ca.url, ra={"client_auth": "certificate"},
                     est={"client_trust_store": str(ca_lab.root_pem)}) as r:
        async with ESTClient(r.base, cafile=ca_lab.root_pem, cert_file=tmp_path / "capf.pem",
                             key_file=tmp_path / "capf.key") as est:
            got = await est.simpleenroll(est_csr("CN=SEP-CERT-AUTH")[1])
        assert got.certificate.issuer == issuing.subject
        # A password is no way in when only certificates are accepted.
        status, _h, _b = await raw_enroll(r, est_csr()[1], cafile=ca_lab.root_pem)
        assert status == 401
        assert " - capf.lab [" in (logs / "access.log").read_text()


async def test_health_and_metrics(ca_lab, ca, tmp_path):
    async with ra_running(ca_lab, tmp_path / "ra-logs", ca.url) as r:
        await raw_enroll(r, est_csr()[1], cafile=ca_lab.root_pem)
        await raw_enroll(r, est_csr()[1], password="nope", cafile=ca_lab.root_pem)
        status, _h, body = await get(r.base + "/healthz", ca_lab.root_pem)
        assert status == 200
        status, headers, body = await get(r.base + "/metrics", ca_lab.root_pem)
        text = body.decode()
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert 'onlineca_ra_requests_total{operation="simpleenroll",result="issued"} 1.0' in text
        assert 'onlineca_ra_requests_total{operation="simpleenroll",result="unauthorized"} 1.0' in text
        assert 'onlineca_ra_ca_latency_seconds_count{operation="enroll"} 1.0' in text
        assert 'onlineca_ra_ca_errors_total{kind="CA_AUTH"} 1.0' in text
        assert "onlineca_ra_ready 1.0" in text


async def test_a_challenge_answered_by_a_successful_retry_is_info_not_an_error(ca_lab, ca, tmp_path):
    """Issue 12 item 3: libEST asks first without credentials and answers the 401 challenge."""
    import ssl as _ssl

    import aiohttp
    logs = tmp_path / "ra-logs"
    async with ra_running(ca_lab, logs, ca.url) as r:
        headers, body = m.encode_pkcs10(est_csr("CN=SEP-LIBEST-STYLE")[1])
        ctx = _ssl.create_default_context(cafile=str(ca_lab.root_pem))
        async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s,
                    s.post(r.url + "/simpleenroll", data=body, headers=headers) as resp):
            assert resp.status == 401 and "Basic" in resp.headers["WWW-Authenticate"]
        status, _h, _b = await raw_enroll(r, est_csr("CN=SEP-LIBEST-STYLE")[1], cafile=ca_lab.root_pem)
        assert status == 200
        text = error_log(logs)
        assert "[error]" not in text
        assert re.search(r"\[info\] \d+#0: (?:\*\d+ )?est_server_handle_simple_enroll: Enrollment asked for HTTP "
                         r"authentication: the client sent no credentials yet", text)
        from onlineca.diagnose.analyze import analyze_paths
        assert analyze_paths([logs / "error.log"]).causes() == []  # logs analyze sees a clean enrollment
