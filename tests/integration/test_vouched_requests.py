"""Vouched requests (``pki.vouch``): the request an RA agent signs for a key whose holder cannot
(a public-flow phone's), and the contract that RA and CA keep about it (docs/ra.md, docs/ca.md).
The EST server takes one only from an authorised agent over a TLS client certificate, and only
the agent's own; our CA issues it only under a template with ``vouched_keys`` and only for an
agent certificate it issued itself; without that it answers what AD CS answers
(NTE_BAD_SIGNATURE)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

from onlineca import pki
from onlineca.ca import engine as eng
from onlineca.config import CAConfig, Config, RAConfig, TemplateConfig
from onlineca.errors import ESTCodedError, ParseError
from onlineca.est.backend import LocalSigner
from onlineca.est.client import ESTClient
from onlineca.est.server import ESTServerSettings, agent_allowed, start_est_server
from onlineca.infra import files
from onlineca.infra.users import UsersFile
from onlineca.pki import vouch
from onlineca.proto.certsrv import hresults as hr
from onlineca.proto.results import EnrollRequest, EnrollResult
from onlineca.store import Database

PHONE = "CN=SEP74A02FC0E001"


def _phone_key() -> pki.PublicKey:
    return pki.generate_key("rsa", 1024).public_key()


def test_a_vouched_request_names_and_is_signed_by_its_agent(lab_pki) -> None:  # type: ignore[no-untyped-def]
    agent_key, agent = lab_pki.issue("CN=CAPF-lab,O=onlineca tests")
    csr = vouch.build_vouched_request(PHONE, _phone_key(), agent_key, agent)
    assert not csr.is_signature_valid  # not by the key it carries: that is the point
    assert vouch.vouched_by(csr) == vouch.agent_hash(agent)
    vouch.verify_vouched_request(csr, agent)
    _, other = lab_pki.issue("CN=CAPF-other,O=onlineca tests", key=agent_key)  # same key, another certificate
    with pytest.raises(ParseError, match="another certificate"):
        vouch.verify_vouched_request(csr, other)
    forger_key = pki.generate_key("ec", 256)
    with pytest.raises(ParseError, match="does not verify"):  # names the agent, signed by someone else
        vouch.verify_vouched_request(_resigned(csr, forger_key), agent)
    plain = pki.build_csr(pki.generate_key("ec", 256), PHONE)
    assert vouch.vouched_by(plain) is None
    with pytest.raises(ParseError, match="not a vouched request"):
        vouch.verify_vouched_request(plain, agent)
    # A pin is a fingerprint; a subject pattern pins nothing (anyone may get a certificate so named).
    assert agent_allowed(agent, [f"sha256:{pki.fingerprint(agent)}"])
    assert not agent_allowed(agent, ["CN=CAPF-*"]) and not agent_allowed(agent, [f"sha256:{pki.fingerprint(other)}"])


def _resigned(csr, key):  # type: ignore[no-untyped-def]
    """``csr``'s request info (naming its agent), signed by ``key`` instead: a forgery."""
    from onlineca.pki import der, tbs
    info = csr.tbs_certrequest_bytes
    body = info + tbs.signature_algorithm_der(key, "sha256") + der.tlv(0x03, b"\x00" + tbs.sign_data(key, info))
    return pki.parse_csr(der.tlv(der.SEQUENCE, body), verify=False)


class Recorder:
    """The EST server's backend: signs, and notes the voucher of each request."""

    def __init__(self, signer: LocalSigner) -> None:
        self.signer, self.vouchers = signer, []

    async def cacerts(self, label):  # type: ignore[no-untyped-def]
        return await self.signer.cacerts(label)

    async def csrattrs(self, label):  # type: ignore[no-untyped-def]
        return await self.signer.csrattrs(label)

    async def enroll(self, request: EnrollRequest) -> EnrollResult:
        self.vouchers.append(request.voucher)
        return await self.signer.enroll(request)

    async def poll(self, req_id, request):  # type: ignore[no-untyped-def]
        return await self.signer.poll(req_id, request)


ID_KP_CMC_RA = "1.3.6.1.5.5.7.3.28"


def _client_files(tmp_path: Path, lab_pki, subject: str, *, agent: bool = False,  # type: ignore[no-untyped-def]
                  stem: str = "") -> tuple[pki.PrivateKey, object, Path, Path]:
    key, cert = lab_pki.issue(subject, extended_key_usage=["client_auth", *([ID_KP_CMC_RA] if agent else [])])
    stem = stem or subject[3:12]
    cert_file, key_file = tmp_path / f"{stem}.pem", tmp_path / f"{stem}.key"
    cert_file.write_bytes(pki.certs_pem([cert, lab_pki.issuing]))
    files.write_private_key(key_file, key)
    return key, cert, cert_file, key_file


async def test_the_est_server_takes_vouched_requests_from_authorised_agents_only(tmp_path: Path, lab_pki) -> None:  # type: ignore[no-untyped-def]
    backend = Recorder(LocalSigner(lab_pki.issuing_key, lab_pki.issuing, ca_chain=[lab_pki.root]))
    settings = ESTServerSettings(password_check=UsersFile.from_plain({"capf": "pw-capf-1"}))
    server = await start_est_server(backend, cert_file=lab_pki.server_cert_pem, key_file=lab_pki.server_key_pem,
                                    settings=settings, client_trust=pki.TrustStore([lab_pki.root]))
    agent_key, agent, agent_pem, agent_keyfile = _client_files(tmp_path, lab_pki, "CN=CAPF-lab", agent=True)
    other_key, other, other_pem, other_keyfile = _client_files(tmp_path, lab_pki, "CN=PHONE-tool")
    # Issue 11: CN=CAPF-* is a name anyone allowed to choose a subject can get: not an agent.
    named_key, named, named_pem, named_keyfile = _client_files(tmp_path, lab_pki, "CN=CAPF-lab", stem="alice")

    def client(cert: Path | None = None, key: Path | None = None) -> ESTClient:
        return ESTClient(server.url, cafile=lab_pki.root_pem, user="capf", password="pw-capf-1", cert_file=cert,
                         key_file=key, max_retries=0)
    try:
        async with client(agent_pem, agent_keyfile) as est:
            issued = await est.simpleenroll(vouch.build_vouched_request(PHONE, _phone_key(), agent_key, agent))
            assert issued.certificate.public_key().key_size == 1024 and backend.vouchers[-1] == agent
            # An ordinary request from the same client is checked and signed as always.
            await est.simpleenroll(pki.build_csr(pki.generate_key("ec", 256), "CN=SEP74A02FC0E002"))
            assert backend.vouchers[-1] is None
            # Vouched by another certificate than the one presented: refused.
            with pytest.raises(ESTCodedError) as err:
                await est.simpleenroll(vouch.build_vouched_request(PHONE, _phone_key(), other_key, other))
            assert err.value.http_status == 400
        # Not an agent; named like one but without the RA-agent EKU; no certificate at all.
        for cert, key, signer_key, signer in ((other_pem, other_keyfile, other_key, other),
                                              (named_pem, named_keyfile, named_key, named),
                                              (None, None, agent_key, agent)):
            async with client(cert, key) as est:
                with pytest.raises(ESTCodedError) as err:
                    await est.simpleenroll(vouch.build_vouched_request(PHONE, _phone_key(), signer_key, signer))
                assert err.value.http_status == 403 and "only an RA agent" in err.value.message
        assert len(backend.vouchers) == 2
    finally:
        await server.close()
    # vouch_agents pins which agents: another agent's fingerprint keeps this one out.
    _, pinned, _, _ = _client_files(tmp_path, lab_pki, "CN=CAPF-other", agent=True)
    for pins, allowed in (((f"sha256:{pki.fingerprint(pinned)}",), False), ((f"sha256:{pki.fingerprint(agent)}",), True)):
        settings = ESTServerSettings(password_check=UsersFile.from_plain({"capf": "pw-capf-1"}), vouch_agents=pins)
        server = await start_est_server(backend, cert_file=lab_pki.server_cert_pem, key_file=lab_pki.server_key_pem,
                                        settings=settings, client_trust=pki.TrustStore([lab_pki.root]))
        try:
            async with client(agent_pem, agent_keyfile) as est:
                request = vouch.build_vouched_request(PHONE, _phone_key(), agent_key, agent)
                if allowed:
                    await est.simpleenroll(request)
                else:
                    with pytest.raises(ESTCodedError) as err:
                        await est.simpleenroll(request)
                    assert err.value.http_status == 403 and "vouch_agents" in err.value.message
        finally:
            await server.close()


def test_vouch_agents_take_fingerprints_only() -> None:
    with pytest.raises(ValidationError, match="not a sha256"):
        RAConfig(vouch_agents=["CN=CAPF-*"])
    assert RAConfig(vouch_agents=["sha256:" + "ab" * 32]).vouch_agents


@pytest.fixture
def engine(tmp_path: Path) -> eng.CAEngine:  # type: ignore[misc]
    config = Config(data_dir=str(tmp_path), ca=CAConfig(templates=[
        TemplateConfig(name="CiscoRA"), TemplateConfig(name="Vouched", vouched_keys=True, min_rsa_bits=1024)]))
    eng.init_ca(config, tmp_path, key_type="ec")
    db = Database(f"sqlite:///{tmp_path / 'ca.db'}")
    db.migrate()
    yield eng.CAEngine(config, tmp_path, db)
    db.dispose()


def test_the_ca_issues_a_vouched_key_only_under_a_vouched_template_and_for_its_own_agent(engine, lab_pki) -> None:  # type: ignore[no-untyped-def]
    agent_key = pki.generate_key("ec", 256)
    agent = pki.build_certificate(subject="CN=CAPF-lab,O=onlineca", public_key=agent_key.public_key(),
                                  issuer_key=engine.issuing_key, issuer_cert=engine.issuing,
                                  extended_key_usage=["client_auth", ID_KP_CMC_RA])
    # A certificate of this CA without the RA-agent EKU (any user's) vouches for nothing.
    plain_agent = pki.build_certificate(subject="CN=CAPF-lab,O=onlineca", public_key=agent_key.public_key(),
                                        issuer_key=engine.issuing_key, issuer_cert=engine.issuing,
                                        extended_key_usage=["client_auth"])
    unproven = pki.csr_pem(vouch.build_vouched_request(PHONE, _phone_key(), agent_key, plain_agent)).decode()
    csr = vouch.build_vouched_request(PHONE, _phone_key(), agent_key, agent)
    pem = pki.csr_pem(csr).decode()

    def attrib(template: str, voucher=agent) -> str:  # type: ignore[no-untyped-def]
        return f"CertificateTemplate:{template}\r\nonlinecaVoucher:{base64.b64encode(pki.cert_der(voucher)).decode()}"

    issued = engine.submit("ciscora", pem, attrib("Vouched"))
    assert issued.disposition == eng.ISSUED and issued.certificate.public_key().key_size == 1024
    # What AD CS does with every such request: the same here without vouched_keys, without the
    # voucher, or with a voucher another CA issued.
    stranger_key, stranger = lab_pki.issue("CN=CAPF-lab,O=onlineca")
    forged = pki.csr_pem(vouch.build_vouched_request(PHONE, _phone_key(), stranger_key, stranger)).decode()
    for request, attributes in ((pem, attrib("CiscoRA")), (pem, "CertificateTemplate:Vouched"),
                                (forged, attrib("Vouched", stranger)), (pem, attrib("Vouched", stranger)),
                                (unproven, attrib("Vouched", plain_agent))):
        denied = engine.submit("ciscora", request, attributes)
        assert denied.hresult == hr.NTE_BAD_SIGNATURE and "Error Verifying Request Signature" in denied.message
