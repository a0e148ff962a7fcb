"""Issue 12 item 7: what a client certificate may ask the RA for (RFC 7030 3.3.2, 3.7, 4.2.2).

A client authenticated by its certificate alone may enroll (and re-enroll) only its own subject
and subjectAltName, unless it is an RA agent: named in ``[est] ra_agents``, or holding the
id-kp-cmcRA EKU (CAPF's certificate).  In passthrough a client certificate never becomes the
RA's own CA account.  Every combination: client_auth certificate / users / passthrough, a phone,
an agent by EKU and an agent by name, its own identity, another subject, an extra SAN, simpleenroll,
serverkeygen and simplereenroll."""

from __future__ import annotations

import pytest
from tests.integration.ra_lab import (  # noqa: F401  (fixtures)
    PASSWORD,
    USER,
    ca_lab,
    iis_requests,
    local_ra,
    run_ca,
    run_ra,
)

from onlineca import pki
from onlineca.errors import ESTCodedError
from onlineca.est.client import ESTClient
from onlineca.infra import files as fs

CMC_RA = "1.3.6.1.5.5.7.3.28"


def _client_cert(lab, d, name: str, subject: str, sans: list[str], ekus: list[str]):
    key = pki.generate_key("ec", 256)
    issuing = pki.load_certificate(lab.files.issuing_cert.read_bytes())
    cert = pki.build_certificate(subject=subject, public_key=key.public_key(),
                                 issuer_key=fs.read_private_key(lab.files.issuing_key), issuer_cert=issuing,
                                 sans=sans, extended_key_usage=ekus)
    (d / f"{name}.pem").write_bytes(pki.certs_pem([cert, issuing]))
    fs.write_private_key(d / f"{name}.key", key)
    return cert, d / f"{name}.pem", d / f"{name}.key"


@pytest.fixture
def clients(ca_lab, tmp_path):
    return {
        "phone": _client_cert(ca_lab, tmp_path, "phone", "CN=SEP-AUTHZ-PHONE,O=onlineca tests", ["sep.lab"],
                              ["client_auth"]),
        "agent-eku": _client_cert(ca_lab, tmp_path, "capf", "CN=CAPF-AUTHZ,O=onlineca tests", ["capf.lab"],
                                  ["client_auth", "server_auth", CMC_RA]),
        "agent-name": _client_cert(ca_lab, tmp_path, "named", "CN=capf-by-name,O=onlineca tests", [],
                                   ["client_auth"]),
    }


async def _try(ra, lab, cert_files, op: str, subject: str, sans: list[str], **auth) -> int:
    _cert, cert_file, key_file = cert_files if cert_files else (None, None, None)
    async with ESTClient(ra.base, cafile=lab.root_pem, cert_file=cert_file, key_file=key_file, max_retries=0,
                         **auth) as est:
        csr = pki.build_csr(pki.generate_key("ec", 256), subject, sans)
        try:
            await getattr(est, op)(csr)
        except ESTCodedError as exc:
            return exc.http_status or 0
        return 200


def _sans(cert) -> list[str]:
    from cryptography import x509
    try:
        return [str(v) for v in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                .get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return []


@pytest.mark.parametrize("mode", ["certificate", "users"])
async def test_a_certificate_asks_only_for_its_own_names_unless_it_is_an_ra_agent(ca_lab, tmp_path, clients,
                                                                                   mode):
    kw = local_ra(ca_lab, tmp_path)
    kw["ra"]["client_auth"] = mode
    kw["est"].update(client_trust_store=str(ca_lab.root_pem), ra_agents=["CN=capf-by-name,O=onlineca tests"])
    if mode == "certificate":
        kw["est"].pop("users_file")
    ra = await run_ra(ca_lab, tmp_path / "ra-logs", "https://127.0.0.1:1/certsrv", **kw)
    try:
        await ra.wait_ready()
        for who, files in clients.items():
            cert = files[0]
            own_subject = pki.name_to_slash(cert.subject).lstrip("/").replace("/", ",")
            own_sans = _sans(cert)
            agent = who != "phone"
            for op in ("simpleenroll", "serverkeygen"):
                assert await _try(ra, ca_lab, files, op, own_subject, own_sans) == 200, (who, op, "own")
                assert await _try(ra, ca_lab, files, op, "CN=SEP-VICTIM,O=onlineca tests", []) == \
                    (200 if agent else 403), (who, op, "other subject")
                assert await _try(ra, ca_lab, files, op, own_subject, [*own_sans, "victim.lab"]) == \
                    (200 if agent else 403), (who, op, "extra SAN")
            # Renewal keeps the names for everyone, agents included (RFC 7030 4.2.2).
            assert await _try(ra, ca_lab, files, "simplereenroll", own_subject, own_sans) == 200, (who, "re own")
            assert await _try(ra, ca_lab, files, "simplereenroll", "CN=SEP-VICTIM,O=onlineca tests", []) == 400
        if mode == "users":  # a users-file account (HTTP Basic) is trusted with any name, as before
            assert await _try(ra, ca_lab, None, "simpleenroll", "CN=SEP-VICTIM,O=onlineca tests", [],
                              user=USER, password=PASSWORD) == 200
            assert await _try(ra, ca_lab, clients["phone"], "simpleenroll", "CN=SEP-VICTIM,O=onlineca tests", [],
                              user=USER, password=PASSWORD) == 200
    finally:
        await ra.close()


async def test_passthrough_never_turns_a_client_certificate_into_the_ras_ca_account(ca_lab, tmp_path, clients):
    ca_logs = tmp_path / "ca-logs"
    ca = await run_ca(ca_lab, ca_logs)
    ra = await run_ra(ca_lab, tmp_path / "ra-logs", ca.url, est={"client_trust_store": str(ca_lab.root_pem)})
    try:
        await ra.wait_ready()
        before = len(ca.engine.list(disposition=None, limit=100000))
        for who, files in clients.items():
            subject = pki.name_to_slash(files[0].subject).lstrip("/").replace("/", ",")
            for op in ("simpleenroll", "serverkeygen", "simplereenroll"):
                assert await _try(ra, ca_lab, files, op, subject, _sans(files[0])) == 401, (who, op)
        assert len(ca.engine.list(disposition=None, limit=100000)) == before  # nothing reached the CA
        # With the client's own CA credentials it enrolls, as that CA user.
        assert await _try(ra, ca_lab, clients["phone"], "simpleenroll", "CN=SEP-AUTHZ-PHONE,O=onlineca tests",
                          ["sep.lab"], user="capf2", password="other-Passw0rd") == 200
        assert ca.engine.list(disposition=None, limit=100000)[-1].requester == "capf2"
        assert await _try(ra, ca_lab, None, "simpleenroll", "CN=SEP-ANY,O=onlineca tests", [],
                          user=USER, password=PASSWORD) == 200
    finally:
        await ra.close()
        await ca.close()
